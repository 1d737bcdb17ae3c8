"""Reading one file in several forked processes gives what one process gives, line numbers included."""

from auditwatch.offline import scan as scan_module
from auditwatch.spl import plan_search
from factory import event, line, seed_search


def run(path, jobs):
    rows = []
    result = scan_module.scan(plan_search(seed_search()), [str(path)], rows.append, dict, jobs=jobs)
    return rows, result.counters


def test_parallel_ranges_equal_one_reader(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_BYTES", 0)
    log = tmp_path / "audit.log"
    with open(log, "wb") as f:
        for i in range(600):
            user = "system:anonymous" if i % 7 == 0 else "alice"
            f.write(
                line(event(username=user, ts=f"2026-11-27T10:{i // 60:02d}:{i % 60:02d}Z", ips=[f"10.0.0.{i % 5}"]))
            )
            if i in (100, 450):
                f.write(b'{"user":{"username":"system:anonymous","groups":["system:unauthenticated"[Truncated...]\n')
    one_rows, one = run(log, jobs=1)
    many_rows, many = run(log, jobs=3)
    assert many_rows == one_rows and len(one_rows) == 86
    assert (many.lines, many.skipped, many.events, many.malformed, many.matched) == (
        one.lines,
        one.skipped,
        one.events,
        one.malformed,
        one.matched,
    )
    assert one.malformed == 2 and [n for _, n, _ in many.samples] == [n for _, n, _ in one.samples] == [102, 453]


def test_a_failing_worker_raises_in_the_parent(tmp_path, monkeypatch):
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_BYTES", 0)
    log = tmp_path / "audit.log"
    log.write_bytes(line(event()) * 50)
    real_read = scan_module._read

    def failing(query, use_prefilter, geoip_db, encode, path, start, length, emit=None, bar=None, notes=None):
        if start:
            raise ValueError("worker failed")
        return real_read(query, use_prefilter, geoip_db, encode, path, start, length, emit, bar, notes)

    monkeypatch.setattr(scan_module, "_read", failing)
    try:
        run(log, jobs=2)
    except ValueError as exc:
        assert str(exc) == "worker failed"
    else:
        raise AssertionError("the worker's error was lost")


def test_groups_seen_by_several_readers_are_merged_before_their_rows_are_made(tmp_path, monkeypatch):
    """Each reader encodes its own groups' rows; a group in several ranges is made again from the
    merged aggregates, so ``where`` after ``stats`` sees the whole file's count."""
    monkeypatch.setattr(scan_module, "PARALLEL_MIN_BYTES", 0)
    log = tmp_path / "audit.log"
    with open(log, "wb") as f:
        for i in range(300):
            # alice everywhere (every reader), bob only at the start, carol only at the end
            user = "alice" if i % 3 else ("bob" if i < 150 else "carol")
            f.write(line(event(username=user, ips=[f"10.0.0.{i % 2}"])))
    search = "* | stats count dc(sourceIPs{}) as ips BY user.username | where count > 60"
    runs = {}
    for jobs in (1, 3):
        rows = []
        scan_module.scan(plan_search(search), [str(log)], rows.append, dict, jobs=jobs)
        runs[jobs] = rows
    assert runs[3] == runs[1] == [{"user.username": "alice", "count": 200, "ips": 2}]
