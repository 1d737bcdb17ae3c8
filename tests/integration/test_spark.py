"""Spark in local mode against the streaming engine, row for row: every shipped detection and the searches
that use each semantic rule, over the generated corpus (one Spark session for the module)."""

from pathlib import Path

import pytest

from auditwatch.engine.spark_engine import Spark
from auditwatch.ir.plan import within
from auditwatch.offline.scan import scan
from auditwatch.spl import plan_search
from corpus import SEARCHES, SHIPPED, corpus_log, detection_plan, geoip_file, streaming  # noqa: F401 - fixtures


@pytest.fixture(scope="module")
def spark():
    engine = Spark("local[2]", {"spark.sql.shuffle.partitions": "4"})
    yield engine
    engine.stop()


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).stem)
def test_every_shipped_detection_gives_the_streaming_rows_on_spark(path, spark, corpus, geoip):
    plan = detection_plan(path)
    assert list(spark.rows(plan, [corpus], geoip)) == streaming(plan, corpus, geoip)


@pytest.mark.parametrize("search", [s for s in SEARCHES if "| stats" in s])
def test_searches_that_use_each_semantic_rule_give_the_streaming_rows_on_spark(search, spark, corpus, geoip):
    plan = plan_search(search)
    expected = streaming(plan, corpus, geoip)
    assert expected and list(spark.rows(plan, [corpus], geoip)) == expected


def test_a_time_range_gives_the_streaming_rows_on_spark(spark, corpus):
    plan = within(plan_search("verb=get | stats count max(_time) BY user.username"), 1794787200.0, 1795824000.0)
    expected = streaming(plan, corpus)
    assert expected and list(spark.rows(plan, [corpus])) == expected


def test_a_search_without_stats_gives_the_events_in_log_order_file_by_file(spark, corpus, tmp_path):
    second = tmp_path / "b.log"
    second.write_bytes(Path(corpus).read_bytes()[:200_000].rsplit(b"\n", 1)[0] + b"\n")
    plan = plan_search("verb=get user.username=alice")
    expected: list = []
    scan(plan, [str(second), corpus], expected.append, lambda r: r, jobs=1)
    assert len(expected) > 10 and list(spark.rows(plan, [str(second), corpus])) == expected


def test_source_is_the_name_given_for_a_file(spark, corpus):
    plan = plan_search("* | stats count BY source")
    (row,) = spark.rows(plan, [corpus], names={corpus: "s3://bucket/audit.log"})
    assert row["source"] == "s3://bucket/audit.log" and row["count"] > 1000
