"""A real CloudWatch Logs API on loopback for the tests: moto's server, and a fault proxy in front.

moto serves the API over HTTP as AWS does (boto3 signs and sends real requests to it). It never
throttles, never answers an empty page with a token, and pages only at 10,000 events; the proxy
adds those, as AWS does them, so that the source's handling of each is tested against real answers.
Events older than 14 days are refused by moto as by AWS: fixtures are stamped near now.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from auditwatch.devcluster.cluster import free_port

REGION = "us-west-2"
FAULT_TOKEN = "fault-empty-page:"


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server mode on 127.0.0.1; yields its endpoint URL."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per request otherwise
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def aws_env(endpoint: str) -> dict[str, str]:
    """What the operator's process needs to find the emulator through the standard AWS chain."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": REGION, "AWS_EC2_METADATA_DISABLED": "true"}  # fmt: skip


class FaultProxy:
    """Forwards CloudWatch Logs calls to moto, and on request answers as AWS can: pages of at most
    ``page_limit`` events, an empty page with a token before each real one (``empty_pages``), the
    next ``throttle`` calls refused with ThrottlingException, or every call refused with ``refuse``."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.page_limit = 0
        self.empty_pages = False
        self.throttle = 0
        self.refuse = ""  # an error code: AccessDeniedException, UnrecognizedClientException...
        self.calls: list[dict[str, Any]] = []  # FilterLogEvents requests seen, after the proxy's changes
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status, answer = proxy.answer(self.headers.get("X-Amz-Target", ""), body, dict(self.headers))
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def answer(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        if target.endswith("FilterLogEvents"):
            request = json.loads(body)
            if self.refuse:
                return 400, json.dumps(
                    {"__type": self.refuse, "message": f"refused by the test ({self.refuse})"}
                ).encode()
            if self.throttle:
                self.throttle -= 1
                return 400, json.dumps({"__type": "ThrottlingException", "message": "Rate exceeded"}).encode()
            token = request.get("nextToken", "")
            if self.empty_pages and not token.startswith(FAULT_TOKEN):
                self.calls.append(request)
                return 200, json.dumps({"events": [], "nextToken": FAULT_TOKEN + token}).encode()
            if token.startswith(FAULT_TOKEN):
                request["nextToken"] = token[len(FAULT_TOKEN) :] or None
                if request["nextToken"] is None:
                    del request["nextToken"]
            if self.page_limit:
                request["limit"] = self.page_limit
            self.calls.append(request)
            body = json.dumps(request).encode()
        forward = urllib.request.Request(
            self.upstream + "/",
            data=body,
            method="POST",
            headers={k: v for k, v in headers.items() if k.lower() != "content-length"},
        )
        try:
            with urllib.request.urlopen(forward, timeout=30) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()


class LogGroupWriter:
    """Puts audit events into a log group as EKS does: one log event per audit Event, in streams."""

    def __init__(self, endpoint: str, group: str) -> None:
        import boto3

        self.group = group
        self.client = boto3.client("logs", region_name=REGION, endpoint_url=endpoint, aws_access_key_id="testing",
                                   aws_secret_access_key="testing")  # fmt: skip
        self.streams: set[str] = set()

    def create_group(self) -> None:
        self.client.create_log_group(logGroupName=self.group)

    def put(self, stream: str, events: list[tuple[int, str]]) -> None:
        """``events``: (timestamp ms, message), put in timestamp order (PutLogEvents wants a batch sorted)."""
        if stream not in self.streams:
            self.client.create_log_stream(logGroupName=self.group, logStreamName=stream)
            self.streams.add(stream)
        ordered = sorted(events, key=lambda e: e[0])
        for i in range(0, len(ordered), 1000):
            batch = [{"timestamp": t, "message": m} for t, m in ordered[i : i + 1000]]
            self.client.put_log_events(logGroupName=self.group, logStreamName=stream, logEvents=batch)
