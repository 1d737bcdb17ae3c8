"""Splunk semantics of the engine, rule by rule (the README's 'How a search runs' lists them)."""

from auditwatch.audit.decode import flatten
from factory import event, line, run

EV = [
    line(
        event(
            username="alice",
            groups=["dev", "ops"],
            ips=["10.0.0.1"],
            verb="get",
            code=200,
            object_ref={"resource": "pods", "namespace": "default"},
        )
    ),
    line(event(username="bob", groups=["ops"], ips=["192.168.5.5", "10.9.9.9"], verb="delete", code=403)),
    line(
        event(
            username="carol",
            groups=None,
            ips=["172.16.0.1"],
            verb="create",
            code=201,
            object_ref={"resource": "secrets", "namespace": "kube-system"},
        )
    ),
]


def users(search, lines=EV):
    return sorted(r["user.username"] for r in run(f"{search} | stats count BY user.username", lines))


def test_flatten_joins_keys_marks_arrays_and_stringifies():
    ev = {
        "a": {"b": 1, "c": [True, None, {"d": "x"}, {"d": "y"}], "k.with.dots": {"e": 1.5}},
        "z": {},
        "n": None,
    }
    assert flatten(ev) == {"a.b": ["1"], "a.c{}": ["true"], "a.c{}.d": ["x", "y"], "a.k.with.dots.e": ["1.5"]}


def test_wildcards_and_case():
    assert users("user.username=AL*") == ["alice"]
    assert users("user.username=*o*") == ["bob", "carol"]
    assert users('verb="*"') == ["alice", "bob", "carol"]


def test_multivalue_any_value_matches():
    assert users('user.groups{}="ops"') == ["alice", "bob"]
    assert users("user.groups{} IN (dev, nobody)") == ["alice"]


def test_not_keeps_events_missing_the_field_but_not_equal_does_not():
    assert users("NOT user.groups{}=ops") == ["carol"]
    assert users("user.groups{}!=ops") == []
    assert users("user.groups{}!=dev") == ["bob"]


def test_cidr_values_match_ip_addresses():
    assert users('sourceIPs{}="10.0.0.0/8"') == ["alice", "bob"]
    assert users("sourceIPs{}=172.16.0.0/12") == ["carol"]


def test_numeric_and_text_comparisons():
    assert users("responseStatus.code>=400") == ["bob"]
    assert users("responseStatus.code<201") == ["alice"]
    assert users("responseStatus.code=403") == ["bob"]


def test_or_and_and_precedence():
    assert users("verb=get OR verb=delete user.groups{}=ops") == ["alice", "bob"]
    assert users("user.username=carol OR verb=get objectRef.resource=pods") == ["alice"]


def test_keyword_matches_raw_text():
    assert users("kube-system") == ["carol"]
    assert users('"KUBE-SYS*"') == ["carol"]


def test_stats_functions_and_missing_by_fields():
    rows = run(
        "* | stats count values(verb) as verbs dc(user.username) as users min(responseStatus.code) "
        "max(responseStatus.code) count(objectRef.resource) BY objectRef.namespace",
        EV,
    )
    assert rows == [
        {
            "objectRef.namespace": "default",
            "count": 1,
            "verbs": "get",
            "users": 1,
            "min(responseStatus.code)": "200",
            "max(responseStatus.code)": "200",
            "count(objectRef.resource)": 1,
        },
        {
            "objectRef.namespace": "kube-system",
            "count": 1,
            "verbs": "create",
            "users": 1,
            "min(responseStatus.code)": "201",
            "max(responseStatus.code)": "201",
            "count(objectRef.resource)": 1,
        },
    ]  # bob has no objectRef: dropped from a BY on it
    rows = run("* | stats count values(user.username) as who min(responseStatus.code) as lo", EV)
    assert rows == [{"count": 3, "who": ["alice", "bob", "carol"], "lo": "200"}]


def test_fillnull_with_value_and_fields():
    rows = run("* | fillnull value=none objectRef.namespace | stats count BY objectRef.namespace", EV)
    assert rows == [
        {"objectRef.namespace": "default", "count": 1},
        {"objectRef.namespace": "kube-system", "count": 1},
        {"objectRef.namespace": "none", "count": 1},
    ]


def test_rename_keeps_position_and_replaces_an_existing_field():
    rows = run("user.username=alice | stats count BY verb user.username | rename count as verb", EV)
    assert rows == [{"verb": 1, "user.username": "alice"}]


def test_rename_before_stats_and_search_after_it():
    rows = run("* | rename sourceIPs{} as src_ip | stats count BY src_ip | search src_ip=10.*", EV)
    assert rows == [{"src_ip": "10.0.0.1", "count": 1}, {"src_ip": "10.9.9.9", "count": 1}]


def test_without_stats_every_matched_event_is_a_row():
    rows = run("user.username=carol", EV)
    assert len(rows) == 1 and rows[0]["objectRef.resource"] == "secrets" and rows[0]["sourceIPs{}"] == "172.16.0.1"


def test_an_aggregate_without_values_is_absent_as_in_splunk():
    """`values(x)` over events without x: Splunk shows no field, not an empty list; after a rename too."""
    for search in ('user.username="system:anonymous" | stats values(objectRef.name) as names count BY user.username',
                   'user.username="system:anonymous" | stats values(objectRef.name) count BY user.username '
                   "| rename user.username as user"):  # fmt: skip
        [row] = run(search, [line(event())])
        assert row == {"user.username" if "rename" not in search else "user": "system:anonymous", "count": 1}


def test_min_and_max_order_numbers_before_text_whatever_the_event_order():
    """Splunk's order for min/max: numbers by number, before text; a total order, so any event order (a
    SQL engine's groups have none) gives the same row."""
    values = ["9", "10", "a", "10abc", "1.0", "1", "-2"]
    search = "verb=get | stats min(x) as lo max(x) as hi BY verb"
    for order in (values, values[::-1], sorted(values)):
        lines = [line(event(verb="get", x=v)) for v in order]
        assert run(search, lines) == [{"verb": "get", "lo": "-2", "hi": "a"}]
    assert run(search, [line(event(verb="get", x=v)) for v in ("1.0", "1")]) == [
        {"verb": "get", "lo": "1", "hi": "1.0"}  # equal numbers: by their text
    ]
