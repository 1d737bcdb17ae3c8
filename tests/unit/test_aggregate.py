"""Rows -> findings: keys, names, bounds, the cap, and the checkpoints that make counts exactly-once."""

from auditwatch.findings.aggregate import (
    MAX_LATEST,
    MAX_VALUES,
    Aggregator,
    finding_name,
    newer,
    render_message,
)
from auditwatch.times import parse_duration

ROW = {"src_ip": "10.0.0.1", "user": "system:anonymous", "verb": "get", "count": 1}


def agg(cap=10):
    return Aggregator("seed", ["user", "src_ip"], "Suspicious kubectl API calls from $user$", cap)


def test_names_are_deterministic_and_differ_by_key():
    a = finding_name("seed", {"user": "u", "src_ip": "1"})
    assert a == finding_name("seed", {"src_ip": "1", "user": "u"})
    assert a != finding_name("seed", {"user": "u", "src_ip": "2"})
    assert a.startswith("seed-") and len(a) == len("seed-") + 10


def test_message_tokens_are_filled_from_the_row():
    assert render_message("Suspicious kubectl API calls from $user$", ROW) == (
        "Suspicious kubectl API calls from system:anonymous"
    )
    assert render_message("$missing$ from $src_ip$", ROW) == " from 10.0.0.1"


def test_rows_of_one_key_make_one_finding_and_counts_add_up():
    a = agg()
    assert a.add(ROW, "log", 0, 100, "2026-11-27T10:00:01Z") == "new"
    assert a.add({**ROW, "verb": "list"}, "log", 100, 200, "2026-11-27T10:00:00Z") == "updated"
    assert a.add({**ROW, "src_ip": "10.0.0.2"}, "log", 200, 300, "2026-11-27T10:00:02Z") == "new"
    first = a.findings[finding_name("seed", {"user": "system:anonymous", "src_ip": "10.0.0.1"})]
    assert first.count == 2 and first.key == {"user": "system:anonymous", "src_ip": "10.0.0.1"}
    assert first.first_seen == "2026-11-27T10:00:00Z" and first.last_seen == "2026-11-27T10:00:01Z"
    assert first.values["verb"] == ["get", "list"]
    assert first.latest[0]["verb"] == "list"
    assert first.message == "Suspicious kubectl API calls from system:anonymous"


def test_values_and_latest_rows_are_bounded():
    a = agg()
    for i in range(MAX_VALUES + 10):
        a.add({**ROW, "requestURI": f"/p{i}"}, "log", i * 10, i * 10 + 10, "t")
    [finding] = a.findings.values()
    assert finding.count == MAX_VALUES + 10
    assert len(finding.values["requestURI"]) == MAX_VALUES and len(finding.latest) == MAX_LATEST


def test_the_cap_drops_new_findings_and_counts_them():
    a = agg(cap=1)
    a.add(ROW, "log", 0, 10, "t")
    assert a.add({**ROW, "src_ip": "10.9.9.9"}, "log", 10, 20, "t") == "dropped"
    assert a.add(ROW, "log", 20, 30, "t") == "updated"
    assert len(a.findings) == 1 and a.dropped == 1


def stored(finding, status, uid="u1", rv="1"):
    """The finding as the API server would return it."""
    return {"metadata": {"name": finding.name, "uid": uid, "resourceVersion": rv},
            "spec": {"key": finding.key, "message": finding.message}, "status": status}  # fmt: skip


def test_written_checkpoints_skip_lines_already_counted_after_a_restart():
    a = agg()
    a.add(ROW, "log", 0, 100, "t")
    a.add(ROW, "log", 100, 200, "t")
    [finding] = a.findings.values()
    status = finding.snapshot().model_dump()
    assert status["count"] == 2 and status["shards"]["default"]["checkpoints"] == {"log": 200}
    # A new process loads that status and reads again from an earlier detection checkpoint.
    b = agg()
    b.load(stored(finding, status))
    assert b.add(ROW, "log", 0, 100, "t") == "skipped"
    assert b.add(ROW, "log", 100, 200, "t") == "skipped"
    assert b.add(ROW, "log", 200, 300, "t") == "updated"
    assert b.findings[finding.name].count == 3


def test_resume_seq_never_passes_an_unwritten_contribution():
    a = agg()
    a.add(ROW, "log", 100, 200, "t")
    a.add({**ROW, "src_ip": "10.0.0.2"}, "log", 300, 400, "t")
    assert a.resume_seq("log", 1000) == 100
    first, second = a.findings.values()
    first.snapshot()
    assert a.resume_seq("log", 1000) == 100  # being written is not written
    first.written(now=1.0)
    assert a.resume_seq("log", 1000) == 300
    second.snapshot()
    second.written(now=1.0)
    assert a.resume_seq("log", 1000) == 1000
    assert first.checkpoints == {"log": 200} and not first.dirty


def test_rows_counted_while_a_write_is_under_way_stay_pending():
    a = agg()
    a.add(ROW, "log", 100, 200, "t")
    [finding] = a.findings.values()
    status = finding.snapshot()
    a.add({**ROW, "verb": "delete"}, "log", 200, 300, "t")  # the reader runs while the PATCH waits
    assert status.count == 1 and status.shards["default"].checkpoints == {"log": 200}
    assert "delete" not in status.values["verb"]
    finding.written(now=1.0)
    assert finding.checkpoints == {"log": 200} and finding.dirty
    assert a.resume_seq("log", 1000) == 200  # the checkpoint may not pass the row not yet written
    assert finding.snapshot().count == 2


def test_a_failed_write_puts_its_rows_back_to_pending():
    a = agg()
    a.add(ROW, "log", 100, 200, "t")
    [finding] = a.findings.values()
    finding.snapshot()
    a.add(ROW, "log", 200, 300, "t")
    finding.unwritten()
    assert finding.pending == {"log": 100} and not finding.sending and finding.checkpoints == {}


def test_findings_expire_after_the_ttl_unless_unwritten():
    a = agg()
    a.add(ROW, "log", 0, 10, "2026-11-20T00:00:00Z")
    assert a.expire(3600, now=1_900_000_000) == []  # dirty: not written yet, kept
    [finding] = a.findings.values()
    finding.snapshot()
    finding.written(now=0)
    assert [f.name for f in a.expire(3600, now=1_900_000_000)] == [finding.name]
    assert a.findings == {}


def test_durations():
    assert parse_duration("168h") == 168 * 3600
    assert parse_duration("1h30m15s") == 5415


def test_findings_of_whole_event_rows_record_only_the_fields_named():
    a = Aggregator("raw", ["user.username"], "", max_findings=10, fields=("user.username", "verb"))
    a.add({"user.username": "eve", "verb": "get", "requestObject.data.token": "s3cr3t"}, "log", 0, 10, "t")
    [finding] = a.findings.values()
    assert finding.values == {"user.username": ["eve"], "verb": ["get"]}
    assert finding.latest == [{"user.username": "eve", "verb": "get"}]


def test_resource_versions_compare_as_kubernetes_1_35_allows():
    assert newer("10", "9") and newer("100", "99") and not newer("99", "100") and not newer("7", "7")
    assert newer("abc", "7") and not newer("abc", "abc")  # not comparable: later when it differs


def test_another_shards_write_is_observed_only_when_later_and_of_the_same_object():
    a = Aggregator("seed", ["user", "src_ip"], "calls", 10, shard="node-a")
    a.add(ROW, "log", 0, 10, "2024-01-01T00:00:00Z")
    [finding] = a.findings.values()

    def written(uid, version, parts):
        return {"metadata": {"name": finding.name, "namespace": "sec", "uid": uid, "resourceVersion": version},
                "status": {"shards": parts, "values": {"verb": ["list"]}}}  # fmt: skip

    b_part = {"count": 5, "firstSeen": "2023-12-31T00:00:00Z", "lastSeen": "2024-01-02T00:00:00Z"}
    assert not a.observe(written("u1", "12", {"node-b": b_part}))  # not adopted yet: its create or read takes it
    finding.uid, finding.resource_version = "u1", "11"
    assert not a.observe(written("u2", "12", {"node-b": b_part}))  # deleted and made again: not this object
    # node-a's own part as written is behind what it counted since: never taken from the watch.
    assert a.observe(written("u1", "12", {"node-b": b_part, "node-a": {"count": 99}}))
    assert finding.resource_version == "12" and finding.count == 1 and finding.total == 6
    assert finding.seen_first == "2023-12-31T00:00:00Z" and finding.values["verb"] == ["get", "list"]
    assert not a.observe(written("u1", "12", {"node-b": {"count": 7}}))  # the echo of what was taken
    assert not a.observe(written("u1", "11", {"node-b": {"count": 1}}))  # an older write, delivered late
    assert finding.total == 6
