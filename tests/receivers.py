"""Real alert receivers on loopback for the tests: Alertmanager built from its Go module, and a
recording HTTP server standing in for a webhook or Slack endpoint (it keeps every POST it gets).

Alertmanager v0.32 and later embed a UI build (``ui/app/dist``) that the module does not ship, so
``go install`` of them fails; v0.31.1 is the newest that builds from the module proxy as is. Its API
v2 (``/api/v2/alerts``) is the same. Built once into ``$AUDITWATCH_CACHE`` (about a minute).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from auditwatch.devcluster.binaries import cache_dir
from auditwatch.devcluster.cluster import free_port

ALERTMANAGER = "github.com/prometheus/alertmanager/cmd/alertmanager@v0.31.1"
CONFIG = "route: {receiver: none, group_wait: 1s}\nreceivers: [{name: none}]\n"


def alertmanager_binary() -> Path:
    """The alertmanager binary, built with ``go install`` on first use."""
    out = cache_dir() / ("alertmanager-" + ALERTMANAGER.rpartition("@")[2]) / "alertmanager"
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not out.exists():
            tmp = out.parent / "tmp"
            env = {**os.environ, "GOBIN": str(tmp), "CGO_ENABLED": "0", "GOMODCACHE": str(cache_dir() / "gomod")}
            subprocess.run(["go", "install", ALERTMANAGER], env=env, check=True, capture_output=True)
            (tmp / "alertmanager").replace(out)
            shutil.rmtree(tmp)
    return out


class Alertmanager:
    """One Alertmanager on 127.0.0.1 (no clustering); ``stop`` and ``start`` again keep its port and data."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (workdir / "alertmanager.yml").write_text(CONFIG)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "alertmanager.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(alertmanager_binary()), f"--config.file={self.workdir / 'alertmanager.yml'}",
             f"--storage.path={self.workdir / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--cluster.listen-address="],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/-/ready", timeout=2).close()
                return
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log_text = (self.workdir / "alertmanager.log").read_text()
                    raise RuntimeError(f"alertmanager did not start: {log_text}") from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def alerts(self, **labels: str) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds with these labels (its API v2)."""
        query = "&".join(f"filter={urllib.request.quote(f'{k}={json.dumps(v)}')}" for k, v in labels.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=10) as resp:
            return list(json.load(resp))


class Recorder:
    """An HTTP server that answers 200 to every POST and keeps (path, headers, JSON body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict[str, str], Any]] = []
        self.fail = 0  # answer this many next POSTs with 503
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if recorder.fail:
                    recorder.fail -= 1
                    self.send_response(503)
                else:
                    recorder.posts.append((self.path, dict(self.headers), json.loads(body)))
                    self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bodies(self, path: str) -> list[Any]:
        return [body for p, _, body in self.posts if p == path]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
