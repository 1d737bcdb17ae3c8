"""``auditwatch hunt`` over S3 as users archive audit logs there, against a real S3 API (moto's server on
loopback, a recording proxy in front that counts the GETs): Firehose's hour layout of CloudWatch
subscription payloads (gzip members concatenated, no name suffix), CloudWatch export tasks, rotated
logs; rows equal to the streaming engine's over the same events, and objects outside the range never read."""

from __future__ import annotations

import gzip
import json
import random
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from auditwatch.audit.decode import epoch_seconds
from auditwatch.devcluster.cluster import free_port
from auditwatch.ir.plan import within
from auditwatch.offline.hunt import hunt
from auditwatch.offline.s3 import in_range
from auditwatch.spl import plan_search
from awslogs import REGION, aws_env, moto_server
from corpus import generated_events, streaming
from factory import auditwatch

BUCKET = "audit-archive"
SEARCH = "* | stats count dc(sourceIPs{}) as ips BY verb user.username"
DAY = "2026-11-19T"


class RecordingProxy:
    """Forwards every request to ``upstream`` and records (method, path) of each."""

    def __init__(self, upstream: str) -> None:
        self.requests: list[tuple[str, str]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def forward(self) -> None:
                proxy.requests.append((self.command, self.path))
                body = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                request = urllib.request.Request(upstream + self.path, data=body or None, method=self.command,
                                                 headers={k: v for k, v in self.headers.items()})  # fmt: skip
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:
                        status, headers, answer = response.status, response.headers, response.read()
                except urllib.error.HTTPError as exc:
                    status, headers, answer = exc.code, exc.headers, exc.read()
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection", "server", "date"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = forward

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def gets(self) -> set[str]:
        """The object keys fetched (GETs of an object, not of a listing)."""
        prefix = f"/{BUCKET}/"
        return {p[len(prefix) :] for m, p in self.requests if m == "GET" and p.startswith(prefix) and "?" not in p}


@pytest.fixture(scope="module")
def s3() -> Iterator[Any]:
    import boto3

    with moto_server() as url:
        client = boto3.client("s3", region_name=REGION, endpoint_url=url, aws_access_key_id="testing",
                              aws_secret_access_key="testing")  # fmt: skip
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client, url


@pytest.fixture
def proxy(s3: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(s3[1])
    for name, value in aws_env(proxy.url).items():
        monkeypatch.setenv(name, value)
    yield proxy
    proxy.server.shutdown()
    proxy.server.server_close()


def events_of_one_day(seed: int, n: int) -> list[dict]:
    """Generated events (tests/corpus.py) stamped across 04:00-12:00 of one day."""
    rng = random.Random(seed)
    events = generated_events(seed, n)
    for ev in events:
        hour, minute, second, micros = (
            rng.randint(4, 11),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.randint(0, 10**6 - 1),
        )
        stamp = f"{DAY}{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"
        for key in ("requestReceivedTimestamp", "stageTimestamp"):
            if isinstance(ev.get(key), str):
                ev[key] = stamp
    return events


def subscription_payload(events: list[dict]) -> bytes:
    body = {"messageType": "DATA_MESSAGE", "owner": "123456789012", "logGroup": "/aws/eks/prod/cluster",
            "logStream": "kube-apiserver-audit-0a1b", "subscriptionFilters": ["to-firehose"],
            "logEvents": [{"id": str(i), "timestamp": 0, "message": json.dumps(e)}
                          for i, e in enumerate(events)]}  # fmt: skip
    return gzip.compress(json.dumps(body).encode())


def firehose_objects(events: list[dict], rng: random.Random) -> dict[str, bytes]:
    """Events as Firehose writes them: each in the hour it reached Firehose (its time plus up to 15
    minutes of delivery and buffering), payloads of up to 40 events, gzip members concatenated."""
    hours: dict[str, list[dict]] = {}
    for ev in events:
        stamp = ev.get("requestReceivedTimestamp") or ev["stageTimestamp"]
        seconds = epoch_seconds(stamp if isinstance(stamp, str) else f"{DAY}05:00:00Z")  # no time: any hour
        arrived = datetime.fromtimestamp((seconds or 0) + rng.uniform(0, 900), UTC)
        hours.setdefault(arrived.strftime("%Y/%m/%d/%H"), []).append(ev)
    return {
        f"eks/{hour}/audit-stream-1-{hour.replace('/', '-')}-00-00-{n}": b"".join(
            subscription_payload(part[i : i + 40]) for i in range(0, len(part), 40)
        )
        for hour, batch in hours.items()
        for n, part in enumerate([batch[: len(batch) // 2], batch[len(batch) // 2 :]])
    }


def local_lines(tmp_path, events: list[dict]) -> str:
    path = tmp_path / "all.log"
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


def test_firehose_hours_outside_the_range_are_never_fetched(s3, proxy, tmp_path):
    client, _ = s3
    events = events_of_one_day(21, 600)
    objects = firehose_objects(events, random.Random(21))
    for key, body in objects.items():
        client.put_object(Bucket=BUCKET, Key=key, Body=body)
    plan = plan_search(SEARCH)
    since, until = epoch_seconds(f"{DAY}07:00:00Z"), epoch_seconds(f"{DAY}08:30:00Z")
    rows: list = []
    result = hunt(plan, [f"s3://{BUCKET}/eks/"], rows.append, since=since, until=until, notes=None)
    expected = streaming(within(plan, since, until), local_lines(tmp_path, events))
    assert rows == expected and len(expected) > 5 and result.files == len(proxy.gets())
    # Read: the hours 07, 08 (the range) and 09 (what happened before 08:30 may have arrived then).
    assert proxy.gets() == {k for k in objects if k.split("/")[4] in ("07", "08", "09")}
    assert all(in_range(k, since, until) == (k in proxy.gets()) for k in objects)
    # And without a range: every object, every event.
    proxy.requests.clear()
    everything: list = []
    hunt(plan, [f"s3://{BUCKET}/eks"], everything.append, notes=None)
    assert proxy.gets() == set(objects) and everything == streaming(plan, local_lines(tmp_path, events))


def test_export_tasks_and_rotated_logs_give_the_rows_of_their_events(s3, proxy, tmp_path):
    """An export task's ``000000.gz`` (lines ``timestamp message``) is decoded; a rotated ``.log.gz`` of
    audit lines is read by the engine as it is; together, the rows of their events."""
    client, _ = s3
    events = events_of_one_day(22, 500)
    exported, rotated = events[:300], events[300:]
    lines = "".join(f"{DAY}06:00:00.000Z {json.dumps(e)}\n" for e in exported)
    client.put_object(
        Bucket=BUCKET, Key="exports/7f3c/kube-apiserver-audit-0a1b/000000.gz", Body=gzip.compress(lines.encode())
    )
    client.put_object(Bucket=BUCKET, Key="selfmanaged/audit-2026-11-19T12-00-00.000.log.gz",
                      Body=gzip.compress("".join(json.dumps(e) + "\n" for e in rotated).encode()))  # fmt: skip
    plan = plan_search(SEARCH)
    rows: list = []
    hunt(plan, [f"s3://{BUCKET}/exports/", f"s3://{BUCKET}/selfmanaged/"], rows.append, notes=None)
    assert rows == streaming(plan, local_lines(tmp_path, events)) and rows
    assert proxy.gets() == {
        "exports/7f3c/kube-apiserver-audit-0a1b/000000.gz",
        "selfmanaged/audit-2026-11-19T12-00-00.000.log.gz",
    }


def test_the_hunt_command_names_a_bucket_it_cannot_read_and_a_bad_time(proxy, tmp_path):
    detection = tmp_path / "d.yaml"
    detection.write_text(json.dumps({"kind": "AuditDetection", "spec": {"search": SEARCH}}))
    code, out, err = auditwatch("hunt", "-d", detection, "s3://no-such-bucket/eks")
    assert code == 2 and out == "" and "s3://no-such-bucket/eks: cannot list: NoSuchBucket" in err, err
    code, _, err = auditwatch("hunt", "-d", detection, "--since", "yesterday", f"s3://{BUCKET}/eks")
    assert (code, err) == (
        2,
        "auditwatch: --since: 'yesterday' is not now, an RFC 3339 time or a duration such as 24h or 30d\n",
    )
    assert auditwatch("hunt", "-d", detection, "--since", "1h", "--until", "2h", f"s3://{BUCKET}/eks")[0] == 2
