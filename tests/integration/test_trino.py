"""Trino (Athena's engine) against the streaming engine, row for row: a real Trino server (its server
package and memory connector from Maven Central, devcluster/trino.py), the generated corpus loaded into
a table of lines, every shipped detection and the searches that use each semantic rule."""

import json
from pathlib import Path

import pytest
from sqlglot import exp

from auditwatch.devcluster.trino import TrinoServer
from auditwatch.engine.pipeline import EngineError
from auditwatch.engine.trino import Trino
from auditwatch.ir.plan import IpLocation, within
from auditwatch.spl import plan_search
from corpus import SEARCHES, SHIPPED, corpus_log, detection_plan, geoip_file, streaming  # noqa: F401 - fixtures
from factory import SEED, auditwatch

TABLE = "memory.default.audit_lines"


def load(trino: Trino, table: str, paths: list[str]) -> None:
    """The lines of ``paths`` into ``table`` (source, line), in statements of 300 rows."""
    cursor = trino.connection.cursor()
    cursor.execute(f"CREATE TABLE {table} (source varchar, line varchar)")
    cursor.fetchall()
    rows = [(path, line) for path in paths for line in Path(path).read_text(encoding="utf-8").splitlines()]
    for i in range(0, len(rows), 300):
        cursor.execute(exp.insert(exp.values(rows[i : i + 300]), table).sql("trino"))
        cursor.fetchall()


@pytest.fixture(scope="module")
def trino(tmp_path_factory, corpus):
    with TrinoServer(tmp_path_factory.mktemp("trino")) as url:
        engine = Trino(url)
        load(engine, TABLE, [corpus])
        engine.url = url
        yield engine


def rows(trino, plan, geoip=None):
    return list(trino.rows(plan, TABLE, geoip, source_column="source"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).stem)
def test_every_shipped_detection_gives_the_streaming_rows_on_trino(path, trino, corpus, geoip):
    plan = detection_plan(path)
    if any(isinstance(step, IpLocation) for step in plan.steps):
        with pytest.raises(EngineError, match="trino: iplocation before stats needs a function Trino does not have"):
            rows(trino, plan, geoip)
        return
    got, expected = rows(trino, plan, geoip), streaming(plan, corpus, geoip)
    if plan.aggregate is None:  # events: Trino gives a source's in time order (a table keeps no line order)
        got, expected = sorted(got, key=repr), sorted(expected, key=repr)
    assert got == expected


def test_a_search_without_stats_gives_each_events_row_once_in_time_order(trino, corpus):
    plan = plan_search("verb=get user.username=alice _time>0")  # _time: the rows carry it
    got, expected = rows(trino, plan), streaming(plan, corpus)
    assert len(expected) > 10 and sorted(got, key=repr) == sorted(expected, key=repr)
    times = [float(row["_time"][0]) for row in got]
    assert times == sorted(times)


@pytest.mark.parametrize("search", [s for s in SEARCHES if "| stats" in s and "iplocation" not in s])
def test_searches_that_use_each_semantic_rule_give_the_streaming_rows_on_trino(search, trino, corpus, geoip):
    plan = plan_search(search)
    expected = streaming(plan, corpus, geoip)
    assert expected and rows(trino, plan, geoip) == expected


def test_numbers_read_as_python_writes_them_and_a_time_range(trino, tmp_path):
    """Trino holds JSON numbers as doubles and writes them as Java does (1.25E-5): they come out as the
    streaming engine's (Python's) text, in and out of its positional range."""
    values = [
        1.25e-5,
        -3.5e-7,
        0.0001,
        0.001,
        1234567.0,
        12345678.9,
        1e16,
        1.5e22,
        -2e-300,
        7,
        0.1,
        5e-5,
        9.87654321e15,
    ]
    log = tmp_path / "numbers.log"
    events = [
        {"kind": "Event", "auditID": str(i), "verb": "get", "annotations": {"n": v},
         "requestReceivedTimestamp": f"2026-11-19T0{i % 10}:00:00.5Z"}
        for i, v in enumerate(values)
    ]  # fmt: skip
    log.write_text("".join(json.dumps(e) + "\n" for e in events))
    load(trino, "memory.default.numbers", [str(log)])
    plan = plan_search("verb=get | stats count BY annotations.n")
    got = list(trino.rows(plan, "memory.default.numbers", source_column="source"))
    assert got == streaming(plan, str(log)) and len(got) == len(values)
    ranged = within(plan_search("* | stats count max(_time) BY verb"), 1795572000.0, 1795590000.0)
    assert list(trino.rows(ranged, "memory.default.numbers", source_column="source")) == streaming(ranged, str(log))


def test_the_hunt_command_runs_on_trino_and_prints_its_sql(trino, corpus):
    table = ("--engine", "trino", "--table", TABLE, "--source-column", "source")
    code, hunted, err = auditwatch("hunt", "-d", SEED, *table, "--trino-url", trino.url)
    assert code == 0 and hunted == auditwatch("scan", "-d", SEED, corpus)[1] != "", err
    code, sql, _ = auditwatch("hunt", "-d", SEED, *table, "--print-sql")
    assert code == 0 and sql.startswith("SELECT") and f"FROM {TABLE}" in sql and "JSON_PARSE(line)" in sql
    assert auditwatch("hunt", "-d", SEED, *table, "--trino-url", trino.url, corpus)[0] == 2  # files: not for Trino
    code, _, err = auditwatch(
        "hunt", "-d", SEED, "--engine", "trino", "--trino-url", trino.url, "--table", "memory.default.nothing"
    )
    assert code == 2 and "trino:" in err and "nothing" in err, err
