"""A Trino server on loopback for the tests and the benchmark: Trino's own server package and its memory
connector, from Maven Central (checked against their SHA-1 there, cached in ``$AUDITWATCH_CACHE``), run
on the Java 25 it needs with a 1 GB heap. ``trino-server-core`` is Trino without connectors (194 MB, the
full server is 821 MB); the memory connector holds the tables the tests load.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path
from types import TracebackType

from auditwatch.devcluster.binaries import cache_dir
from auditwatch.devcluster.cluster import free_port

VERSION = "476"
MAVEN = "https://repo1.maven.org/maven2/io/trino"
JVM_OPTIONS = ["-server", "-Xmx1G", "-XX:+UseG1GC", "-XX:+ExitOnOutOfMemoryError", "-Djdk.attach.allowAttachSelf=true"]


def java_home() -> str:
    """A JDK of at least 24 (Trino 476's), from JAVA25_HOME or /usr/lib/jvm."""
    found = [os.environ.get("JAVA25_HOME", ""), *sorted(glob.glob("/usr/lib/jvm/*-25-*"))]
    for home in found:
        if home and os.path.exists(os.path.join(home, "bin", "java")):
            return home
    raise RuntimeError("Trino needs Java 24 or later: set JAVA25_HOME (none under /usr/lib/jvm/*-25-*)")


def _fetch(artifact: str, kind: str) -> Path:
    """``io.trino:<artifact>:VERSION`` of type ``kind`` (tar.gz, zip), downloaded once and checked."""
    name = f"{artifact}-{VERSION}.{kind}"
    target = cache_dir() / "trino" / name
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    url = f"{MAVEN}/{artifact}/{VERSION}/{name}"
    with urllib.request.urlopen(url + ".sha1", timeout=60) as answer:
        expected = answer.read().decode().split()[0]
    partial = target.with_suffix(".part")
    digest = hashlib.sha1()
    with urllib.request.urlopen(url, timeout=600) as answer, open(partial, "wb") as out:
        while chunk := answer.read(1 << 20):
            digest.update(chunk)
            out.write(chunk)
    if digest.hexdigest() != expected:
        partial.unlink()
        raise RuntimeError(f"{url}: SHA-1 {digest.hexdigest()}, Maven Central says {expected}")
    partial.rename(target)
    return target


def install() -> Path:
    """The server with the memory connector, unpacked under the cache; its directory."""
    home = cache_dir() / "trino" / f"trino-server-core-{VERSION}"
    if (home / "plugin" / "memory").exists():
        return home
    archive, plugin = _fetch("trino-server-core", "tar.gz"), _fetch("trino-memory", "zip")
    shutil.rmtree(home, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(home.parent, filter="tar")
    with zipfile.ZipFile(plugin) as z:
        z.extractall(home / "plugin")
    (home / "plugin" / f"trino-memory-{VERSION}").rename(home / "plugin" / "memory")
    for launcher in (home / "bin").rglob("launcher*"):
        launcher.chmod(0o755)
    return home


class TrinoServer:
    """``with TrinoServer(workdir) as url:`` a coordinator that is its own worker, a ``memory`` catalog."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> str:
        home = install()
        etc = self.workdir / "etc"
        (etc / "catalog").mkdir(parents=True, exist_ok=True)
        (etc / "node.properties").write_text(
            f"node.environment=test\nnode.id=auditwatch\nnode.data-dir={self.workdir / 'data'}\n"
        )
        (etc / "jvm.config").write_text("\n".join(JVM_OPTIONS) + "\n")
        (etc / "config.properties").write_text(
            "coordinator=true\nnode-scheduler.include-coordinator=true\n"
            f"http-server.http.port={self.port}\ndiscovery.uri={self.url}\n"
            "query.max-memory=512MB\nquery.max-memory-per-node=512MB\n"
        )
        (etc / "catalog" / "memory.properties").write_text("connector.name=memory\n")
        java = java_home()
        env = {**os.environ, "JAVA_HOME": java, "PATH": f"{java}/bin:{os.environ['PATH']}"}
        log = open(self.workdir / "trino.log", "wb")
        self.process = subprocess.Popen(
            [str(home / "bin" / "launcher"), "run", f"--etc-dir={etc}"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
        self._wait()
        return self.url

    def _wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"Trino exited ({self.process.returncode}): see {self.workdir / 'trino.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/v1/info", timeout=2) as answer:
                    if not json.load(answer).get("starting", True):
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"Trino not ready within {timeout:.0f} s: see {self.workdir / 'trino.log'}")

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
