"""A real Apache Kafka broker on loopback for the tests, standing in for Event Hubs' Kafka endpoint, and the
events an AKS diagnostic setting streams to an event hub.

The broker is Apache Kafka's own server (``org.apache.kafka:kafka_2.13`` from Maven Central, its jars
resolved by Maven into the tests' cache on first use) in KRaft mode: one process that is both broker and
controller, with its own data directory. Event Hubs serves the same protocol (produce, fetch, consumer
groups and their offset commits) on port 9093 with SASL over TLS; the operator finds a broker standing in
through ``EVENTHUB_KAFKA_BROKER``. Topics are not created on use, as event hubs are not.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditwatch.devcluster.binaries import cache_dir
from auditwatch.devcluster.certs import make_webhook_certs
from auditwatch.devcluster.cluster import free_port

VERSION = "4.1.1"
POM = f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>auditwatch.tests</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{VERSION}</version>
    </dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
"""
# What Event Hubs' Kafka endpoint takes as SASL PLAIN: user $ConnectionString, the connection string as password.
CONNECTION_STRING = "Endpoint=sb://aks-audit-ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=k0"
CLUSTER = ("/SUBSCRIPTIONS/00000000-0000-0000-0000-000000000000/RESOURCEGROUPS/E2E/PROVIDERS/"
           "MICROSOFT.CONTAINERSERVICE/MANAGEDCLUSTERS/E2E")  # fmt: skip


def kafka_jars() -> Path:
    """The directory of Kafka's server jars and their dependencies, resolved by Maven into the cache once."""
    home = cache_dir() / f"kafka-{VERSION}"
    libs = home / "libs"
    if not (libs / f"kafka_2.13-{VERSION}.jar").exists():
        mvn = shutil.which("mvn")
        assert mvn, "Maven (mvn) is needed to fetch Apache Kafka's jars from Maven Central: README, Tests"
        home.mkdir(parents=True, exist_ok=True)
        (home / "pom.xml").write_text(POM)
        partial = home / "libs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run([mvn, "-q", "-B", "-f", str(home / "pom.xml"), "dependency:copy-dependencies",
                        f"-DoutputDirectory={partial}", "-DincludeScope=runtime"], check=True)  # fmt: skip
        partial.rename(libs)
    return libs


@dataclass
class Broker:
    """A running broker: its plaintext host:port; its listener as Event Hubs' (TLS and SASL: PLAIN with
    the connection string CONNECTION_STRING, or OAUTHBEARER with an unsigned token), its TLS certificate's
    CA; and its process to freeze (an outage that answers nothing)."""

    address: str
    sasl_ssl: str
    ca: Path
    proc: subprocess.Popen[bytes]

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker stopped (SIGSTOP) while the block runs: connections open, nothing answered."""
        os.killpg(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.proc.pid, signal.SIGCONT)


@contextmanager
def kafka_broker(partitions: int = 4) -> Iterator[Broker]:
    """A single-node KRaft Kafka on 127.0.0.1 (``partitions`` per new topic)."""
    java = shutil.which("java")
    assert java, "Java is needed for the Kafka broker"
    classpath = f"{kafka_jars()}/*"
    port, controller, secure = free_port(), free_port(), free_port()
    data = Path(tempfile.mkdtemp(prefix="auditwatch-kafka-"))
    tls = make_webhook_certs(data / "tls", ["127.0.0.1"])
    keystore = data / "tls" / "broker.pem"  # Kafka's PEM key store: the key, then the certificate
    keystore.write_text(tls.server_key.read_text() + tls.server_cert.read_text())
    config = data / "server.properties"
    config.write_text(
        "process.roles=broker,controller\nnode.id=1\n"
        f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}\n"
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller},SASL_SSL://127.0.0.1:{secure}\n"
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port},SASL_SSL://127.0.0.1:{secure}\n"
        "controller.listener.names=CONTROLLER\ninter.broker.listener.name=PLAINTEXT\n"
        "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL\n"
        f"ssl.keystore.type=PEM\nssl.keystore.location={keystore}\n"
        "sasl.enabled.mechanisms=PLAIN,OAUTHBEARER\n"
        "listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule "
        f'required user_$ConnectionString="{CONNECTION_STRING}";\n'
        "listener.name.sasl_ssl.oauthbearer.sasl.jaas.config="
        "org.apache.kafka.common.security.oauthbearer.OAuthBearerLoginModule required;\n"
        f"log.dirs={data / 'logs'}\nnum.partitions={partitions}\nauto.create.topics.enable=false\n"
        "offsets.topic.replication.factor=1\noffsets.topic.num.partitions=1\n"
        "transaction.state.log.replication.factor=1\ntransaction.state.log.min.isr=1\n"
        "group.initial.rebalance.delay.ms=0\n"
    )
    cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")  # may start with "-": --cluster-id=
    subprocess.run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
                    f"--cluster-id={cluster}", "-c", str(config)], check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    log = open(data / "broker.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([java, "-Xmx512m", "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn", "-cp", classpath,
                             "kafka.Kafka", str(config)], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (data / "broker.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the Kafka broker did not start in 60 s"
                time.sleep(0.2)
        yield Broker(f"127.0.0.1:{port}", f"sasl_ssl://127.0.0.1:{secure}", tls.ca, proc)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


def create_hub(broker: str, name: str, partitions: int = 4) -> None:
    """An event hub (a topic) of ``partitions`` partitions."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=broker)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(name, partitions, 1)])
        finally:
            await admin.close()

    asyncio.run(create())


def send(broker: str, hub: str, bodies: list[bytes], partitions: int = 4, first: int = 0) -> None:
    """Send event bodies to a hub, as Azure Monitor does, spread over its partitions in turn from partition
    ``first`` (blocking: from async code, run it in a thread)."""
    from aiokafka import AIOKafkaProducer

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(hub, body, partition=(first + i) % partitions)
                    for i, body in enumerate(bodies)]  # fmt: skip
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(produce())


def hub_body(events: list[dict[str, Any]], category: str = "kube-audit") -> bytes:
    """One Event Hubs event of diagnostic records, as an AKS diagnostic setting streams them."""
    records = [{"time": e.get("stageTimestamp", ""), "resourceId": CLUSTER, "category": category,
                "operationName": "Microsoft.ContainerService/managedClusters/diagnosticLogs/Read",
                "properties": {"log": json.dumps(e), "stream": "stdout", "pod": "kube-apiserver-6b4d8f"}}
               for e in events]  # fmt: skip
    return json.dumps({"records": records}).encode()
