"""The seed ESCU rule, event by event, each expected row written out by hand."""

import json

from factory import event, line, run, seed_search

SEED = seed_search()


def row(**over):
    """The seed's output row for the default factory event, with overrides (keys after rename)."""
    base = {
        "objectRef.name": "0",
        "objectRef.namespace": "0",
        "objectRef.resource": "0",
        "requestReceivedTimestamp": "2026-11-27T10:00:00.000000Z",
        "requestURI": "/api/v1/namespaces/default/pods",
        "responseStatus.code": "403",
        "src_ip": "203.0.113.7",
        "stage": "ResponseComplete",
        "user.groups{}": "system:unauthenticated",
        "user.uid": "0",
        "user": "system:anonymous",
        "userAgent": "kubectl/v1.36.3 (linux/amd64) kubernetes/abc",
        "verb": "list",
        "count": 1,
    }
    base.update(over)
    return base


def test_non_resource_url_without_objectref_is_filled_with_zero():
    rows = run(SEED, [line(event(uri="/version", verb="get", code=200))])
    assert rows == [row(requestURI="/version", verb="get", **{"responseStatus.code": "200"})]


def test_objectref_fields_are_kept_and_column_order_is_by_then_count():
    ref = {"resource": "secrets", "namespace": "kube-system", "name": "token", "apiVersion": "v1"}
    rows = run(SEED, [line(event(object_ref=ref, verb="get"))])
    assert rows == [
        row(
            verb="get",
            **{
                "objectRef.name": "token",
                "objectRef.namespace": "kube-system",
                "objectRef.resource": "secrets",
            },
        )
    ]
    assert list(rows[0]) == list(row())


def test_request_received_stage_has_no_response_status():
    rows = run(SEED, [line(event(stage="RequestReceived", code=None))])
    assert rows == [row(stage="RequestReceived", **{"responseStatus.code": "0"})]


def test_several_source_ips_give_a_row_each():
    rows = run(SEED, [line(event(ips=["198.51.100.1", "10.1.2.3"]))])
    assert rows == [row(src_ip="10.1.2.3"), row(src_ip="198.51.100.1")]


def test_several_groups_give_a_row_each_and_any_group_matches_in():
    rows = run(SEED, [line(event(groups=["system:unauthenticated", "extra:group"]))])
    assert rows == [row(**{"user.groups{}": "extra:group"}), row()]


def test_values_compare_case_insensitively_but_rows_keep_the_original_case():
    rows = run(SEED, [line(event(username="System:Anonymous", groups=["SYSTEM:UNAUTHENTICATED"]))])
    assert rows == [row(user="System:Anonymous", **{"user.groups{}": "SYSTEM:UNAUTHENTICATED"})]


def test_missing_groups_or_only_other_groups_do_not_match():
    assert run(SEED, [line(event(groups=None))]) == []
    assert run(SEED, [line(event(groups=["system:authenticated"]))]) == []
    assert run(SEED, [line(event(groups=[]))]) == []


def test_look_alike_usernames_do_not_match():
    for name in [
        "system:anonymous2",
        "xsystem:anonymous",
        "system:anonymous ",
        "system:serviceaccount:anonymous",
    ]:
        assert run(SEED, [line(event(username=name))]) == [], name


def test_authenticated_users_do_not_match():
    assert run(SEED, [line(event(username="alice", groups=["system:authenticated"]))]) == []


def test_empty_source_ips_are_filled_with_zero():
    assert run(SEED, [line(event(ips=[]))]) == [row(src_ip="0")]


def test_uid_when_present_is_kept():
    assert run(SEED, [line(event(uid="1234"))]) == [row(**{"user.uid": "1234"})]


def test_duplicate_lines_count_twice():
    ev = line(event())
    assert run(SEED, [ev, ev]) == [row(count=2)]


def test_eventlist_lines_from_the_webhook_are_expanded():
    items = [event(ts="2026-11-27T10:00:01Z"), event(username="bob", groups=["system:authenticated"])]
    for item in items:
        del item["kind"], item["apiVersion"]  # webhook batch items may lack them
    batch = json.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}).encode() + b"\n"
    assert run(SEED, [batch]) == [row(requestReceivedTimestamp="2026-11-27T10:00:01Z")]


def test_malformed_and_truncated_lines_are_skipped_not_fatal():
    good = line(event())
    truncated = good[:120] + b"[Truncated...]\n"
    lines = [b"not json\n", truncated, b"[1,2]\n", b'{"kind":"EventList","items":5}\n', good]
    for prefilter in (True, False):
        assert run(SEED, lines, prefilter=prefilter) == [row()]


def test_rows_are_sorted_by_their_by_values():
    lines = [line(event(ts=f"2026-11-27T10:00:0{i}Z")) for i in (3, 1, 2)]
    assert [r["requestReceivedTimestamp"] for r in run(SEED, lines)] == [
        "2026-11-27T10:00:01Z",
        "2026-11-27T10:00:02Z",
        "2026-11-27T10:00:03Z",
    ]
