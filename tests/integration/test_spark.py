"""Spark in local mode against the streaming engine, row for row: every shipped detection and the searches
that use each semantic rule, over the generated corpus (one Spark session for the module)."""

from pathlib import Path

import pytest
import yaml

from auditwatch.engine.pipeline import EngineError
from auditwatch.engine.spark_engine import Spark
from auditwatch.offline.scan import scan
from auditwatch.spl import plan_search
from corpus import SEARCHES, generated_events, geoip_database, lines_of
from factory import SEED

ROOT = Path(__file__).resolve().parents[2]
DETECTIONS = sorted(p for p in (ROOT / "manifests/detections/escu").glob("*.yaml") if p.name != "kustomization.yaml")


@pytest.fixture(scope="module")
def spark():
    engine = Spark("local[2]", {"spark.sql.shuffle.partitions": "4"})
    yield engine
    engine.stop()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("spark") / "audit.log"
    path.write_bytes(lines_of(generated_events(1, 1500), 1))
    return str(path)


@pytest.fixture(scope="module")
def geoip(tmp_path_factory):
    return geoip_database(tmp_path_factory.mktemp("geo") / "city.mmdb")


def streaming(plan, path, geoip=None):
    rows = []
    scan(plan, [path], rows.append, lambda r: r, geoip_db=geoip, jobs=1)
    return rows


@pytest.mark.parametrize("path", [SEED, *DETECTIONS], ids=lambda p: Path(p).stem)
def test_every_shipped_detection_gives_the_streaming_rows_on_spark(path, spark, corpus, geoip):
    spec = yaml.safe_load(Path(path).read_text())["spec"]
    plan = plan_search(spec["search"], spec.get("macros"))
    assert list(spark.rows(plan, [corpus], geoip)) == streaming(plan, corpus, geoip)


@pytest.mark.parametrize("search", [s for s in SEARCHES if "| stats" in s])
def test_searches_that_use_each_semantic_rule_give_the_streaming_rows_on_spark(search, spark, corpus, geoip):
    plan = plan_search(search)
    expected = streaming(plan, corpus, geoip)
    assert expected and list(spark.rows(plan, [corpus], geoip)) == expected


def test_a_search_without_stats_is_refused_by_name(spark, corpus):
    with pytest.raises(EngineError, match="without stats"):
        list(spark.rows(plan_search("verb=get"), [corpus]))
