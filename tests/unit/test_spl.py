import pytest

from auditwatch.ir.plan import Aggregate, And, Compare, FillNull, Filter, In, Keyword, Not, Or, Rename
from auditwatch.spl import SPLError, parse_search
from factory import seed_search


def base(text: str, **macros: str):
    return parse_search(text, macros).base.expr


def test_seed_compiles_to_the_expected_plan():
    query = parse_search(seed_search())
    assert query.base == Filter(
        And(
            (
                Keyword("*"),
                Compare("user.username", "=", "system:anonymous"),
                In("user.groups{}", ("system:unauthenticated",)),
            )
        )
    )
    assert query.commands[1] == FillNull("0", ())
    stats = query.commands[2]
    assert isinstance(stats, Aggregate)
    assert [a.name for a in stats.aggs] == ["count"]
    assert stats.by[0] == "objectRef.name" and stats.by[-1] == "verb" and len(stats.by) == 13
    assert query.commands[3] == Rename((("sourceIPs{}", "src_ip"), ("user.username", "user")))
    assert query.commands[4] == Filter(Keyword("*"))  # the *_filter macro's default


def test_or_binds_tighter_than_implicit_and():
    assert base("a=1 b=2 OR c=3") == And((Compare("a", "=", "1"), Or((Compare("b", "=", "2"), Compare("c", "=", "3")))))


def test_not_binds_tightest_and_parentheses_group():
    assert base("NOT a=1 OR b=2") == Or((Not(Compare("a", "=", "1")), Compare("b", "=", "2")))
    assert base("NOT (a=1 OR b=2)") == Not(Or((Compare("a", "=", "1"), Compare("b", "=", "2"))))
    assert base("a=1 AND b=2") == And((Compare("a", "=", "1"), Compare("b", "=", "2")))


def test_quoted_field_names_operators_and_escaped_quotes():
    assert base('"user.username"="system:anonymous"') == Compare("user.username", "=", "system:anonymous")
    assert base('userAgent!="AWS Security Scanner"') == Compare("userAgent", "!=", "AWS Security Scanner")
    assert base("count>=5") == Compare("count", ">=", "5")
    assert base(r"x=*\"privileged\":true*") == Compare("x", "=", '*"privileged":true*')
    key = "requestObject.metadata.annotations.kubectl.kubernetes.io/last-applied-configuration"
    assert base(f"{key}=*a*") == Compare(key, "=", "*a*")


def test_in_list_with_several_values():
    assert base('ns IN ("default", "kube-system", kube-public)') == In("ns", ("default", "kube-system", "kube-public"))


def test_macros_defaults_custom_and_arguments():
    assert base("`kube_audit` a=1") == And((Keyword("*"), Compare("a", "=", "1")))
    assert base("`kube_audit` a=1", kube_audit="index=k8s") == And(
        (Compare("index", "=", "k8s"), Compare("a", "=", "1"))
    )
    query = parse_search("a=1 | `only(user.username, bob)`", {"only(f, v)": "search $f$=$v$"})
    assert query.commands[1] == Filter(Compare("user.username", "=", "bob"))
    assert parse_search("a=1 | `x_filter`").commands[1] == Filter(Keyword("*"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a=1 | stats BY x", "stats: expected a function such as count, got 'BY' at column 13"),
        ("a=1 | stats count frob", "stats: expected BY or a function, got 'frob' at column 19"),
        ("a=1 | stats count BY", "stats BY: expected a field name, got end of search at column 21"),
        (
            "a=1 | frob x",
            "unsupported command 'frob' (supported: search, fillnull, stats, rename, where, convert, iplocation)"
            " at column 7",
        ),
        ("a=", "search: expected a value after '=', got end of search at column 3"),
        ("a IN (1, 2", "search: expected a value or ')' in the IN list, got end of search at column 11"),
        ("(a=1", "search: expected ')', got end of search at column 5"),
        ("a=1)", "search: unbalanced ')' at column 4"),
        ('a="open', "unterminated quoted string at column 3"),
        ("`nope`", "unknown macro `nope`: define it in spec.macros at column 1"),
        ("a=1 | rename x y", "rename: expected AS, got 'y' at column 16"),
        ("a=1 | stats values by x", "stats values: expected '(' and a field name, got 'by' at column 20"),
    ],
)
def test_errors_name_the_command_position_and_token(text, message):
    with pytest.raises(SPLError) as err:
        parse_search(text)
    assert str(err.value) == message


def test_errors_inside_macros_name_the_macro_and_the_call_column():
    with pytest.raises(SPLError) as err:
        parse_search("a=1 | `bad`", {"bad": "stats count frob"})
    assert str(err.value) == "stats: expected BY or a function, got 'frob' at column 7 (in macro `bad`)"


def test_recursive_macros_are_refused():
    with pytest.raises(SPLError, match="more than 20 levels"):
        parse_search("`loop`", {"loop": "`loop`"})


def test_macro_argument_count_is_checked():
    with pytest.raises(SPLError, match=r"macro `m` is defined as m\(1\), called with 2 argument"):
        parse_search("`m(a, b)`", {"m(x)": "search $x$=1"})
