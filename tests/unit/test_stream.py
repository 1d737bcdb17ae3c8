"""Rows as events arrive: stateless count rows, and windowed rows for other stats and `where`."""

from auditwatch.audit.decode import flatten
from auditwatch.engine.pipeline import Pipeline
from auditwatch.engine.stream import RowStream
from auditwatch.spl import plan_search
from factory import event

SCANNING = (
    '"user.groups{}"="system:unauthenticated" | stats count values(requestURI) as uris BY sourceIPs{} '
    "| where count > 2 | rename sourceIPs{} as src_ip"
)


def stream(search, window=3600):
    return RowStream(Pipeline(plan_search(search)), window)


def add(s, seq, **kw):
    return s.add(flatten(event(**kw)), "log", seq)


def test_count_by_with_renames_needs_no_state():
    s = stream("user.username=system:anonymous | stats count BY user.username | rename user.username as user")
    assert s.stateless
    assert add(s, 0) == [({"user": "system:anonymous", "count": 1}, 1)]
    assert s.hold_seq("log") is None and not s.tables


def test_where_on_count_emits_once_it_passes_then_the_increase():
    s = stream(SCANNING)
    assert not s.stateless
    ts = "2026-11-27T10:00:0{}Z"
    assert add(s, 0, uri="/a", ts=ts.format(1)) == []
    assert add(s, 10, uri="/b", ts=ts.format(2)) == []
    [(row, added)] = add(s, 20, uri="/c", ts=ts.format(3))
    assert row == {"src_ip": "203.0.113.7", "count": 3, "uris": ["/a", "/b", "/c"]} and added == 3
    [(row, added)] = add(s, 30, uri="/a", ts=ts.format(4))
    assert row["count"] == 4 and added == 1
    assert s.hold_seq("log") == 0  # the window still needs its first line after a restart


def test_windows_are_separate_and_old_ones_are_dropped():
    s = stream(SCANNING, window=60)
    for i in range(3):
        add(s, i, ts=f"2026-11-27T10:00:{i:02d}Z")
    assert add(s, 3, ts="2026-11-27T10:01:00Z") == []  # a new window starts from nothing
    assert len(s.tables) == 2 and s.hold_seq("log") == 0
    add(s, 4, ts="2026-11-27T10:02:00Z")  # a third window: the first is dropped
    assert len(s.tables) == 2 and s.hold_seq("log") == 3


def test_rows_without_stats_are_events():
    s = stream("verb=get")
    [(row, added)] = add(s, 0, verb="get")
    assert row["verb"] == "get" and added == 1
