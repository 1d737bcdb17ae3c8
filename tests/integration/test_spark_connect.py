"""`--spark-master sc://HOST:PORT`: a hunt through Spark Connect, against a real Connect server (the one
pyspark ships, started in local mode on loopback), row for row with the streaming engine."""

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyspark
import pytest

from auditwatch.devcluster.cluster import free_port
from auditwatch.engine.spark_engine import Spark
from auditwatch.ir.plan import within
from auditwatch.spl import plan_search
from corpus import SEARCHES, corpus_log, detection_plan, geoip_file, streaming  # noqa: F401 - fixtures
from factory import SEED, auditwatch


@pytest.fixture(scope="module")
def connect(tmp_path_factory) -> Iterator[str]:
    """A Spark Connect server in local mode; yields its sc:// address."""
    home = Path(pyspark.__file__).parent
    port = free_port()
    log = open(tmp_path_factory.mktemp("connect") / "server.log", "wb")  # noqa: SIM115 - closed below
    settings = {"spark.connect.grpc.binding.port": port, "spark.ui.enabled": "false",
                "spark.sql.ansi.enabled": "false", "spark.sql.session.timeZone": "UTC"}  # fmt: skip
    command = [str(home / "bin" / "spark-submit"), "--master", "local[2]"]
    command += [arg for key, value in settings.items() for arg in ("--conf", f"{key}={value}")]
    command += ["--class", "org.apache.spark.sql.connect.service.SparkConnectServer", "spark-internal"]
    env = {**os.environ, "SPARK_HOME": str(home), "PYSPARK_PYTHON": sys.executable}
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert server.poll() is None, f"the Connect server exited: {log.name}"
            assert time.monotonic() < deadline, f"the Connect server did not listen within 120 s: {log.name}"
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        yield f"sc://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


@pytest.fixture(scope="module")
def remote(connect):
    engine = Spark(connect)
    yield engine
    engine.stop()  # before the server goes: else the client retries releasing its session


@pytest.mark.parametrize("search", [s for s in SEARCHES if "| stats" in s][:6])
def test_searches_give_the_streaming_rows_through_spark_connect(search, remote, corpus, geoip):
    plan = plan_search(search)
    expected = streaming(plan, corpus, geoip)
    assert expected and list(remote.rows(plan, [corpus], geoip)) == expected


def test_a_range_and_names_through_spark_connect(remote, corpus):
    plan = within(detection_plan(SEED), 1794787200.0, 1795824000.0)
    expected = streaming(plan, corpus)
    assert expected and list(remote.rows(plan, [corpus])) == expected
    (row,) = remote.rows(plan_search("* | stats count BY source"), [corpus], names={corpus: "s3://bucket/audit.log"})
    assert row["source"] == "s3://bucket/audit.log"


def test_the_hunt_command_takes_a_connect_address(connect, corpus):
    code, hunted, err = auditwatch("hunt", "-d", SEED, "--engine", "spark", "--spark-master", connect, corpus)
    assert code == 0 and hunted == auditwatch("scan", "-d", SEED, corpus)[1] != "", err
