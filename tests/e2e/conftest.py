"""e2e fixtures: one real control plane for the session, the operator running under manifests/ RBAC.

Nothing here is mocked: etcd, kube-apiserver and kube-controller-manager are the real binaries
(auditwatch.devcluster), the operator is `auditwatch run` in a subprocess with the ServiceAccount
identity bound by manifests/base/rbac.yaml, and requests are real HTTP requests to the API server.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from auditwatch.devcluster import DevCluster
from auditwatch.devcluster.binaries import cache_dir
from auditwatch.devcluster.cluster import free_port
from awslogs import FaultProxy, aws_env, moto_server
from receivers import Alertmanager, Recorder

ROOT = Path(__file__).resolve().parents[2]
WEBHOOK_PORT = free_port()
METRICS_PORT = free_port()
NAMESPACE = "auditwatch"
pytestmark = pytest.mark.e2e


def wait_for(check: Callable[[], Any], timeout: float = 30, what: str | Callable[[], str] = "condition") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what() if callable(what) else what}: last value {last!r}")


class Operator:
    """`auditwatch run` as a subprocess, with the operator's own credentials (``kubeconfig``)."""

    def __init__(self, log_dir: Path, args: list[str], kubeconfig: Path, env: dict[str, str] | None = None,
                 no_capabilities: bool = False) -> None:  # fmt: skip
        self.log_dir, self.args, self.kubeconfig, self.env = log_dir, args, kubeconfig, env or {}
        self.no_capabilities = no_capabilities
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), **self.env}
        log = open(self.log_dir / f"operator-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "auditwatch", "run", "--liveness", "",
                                      *self.args], env=env, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip

    @property
    def prefix(self) -> list[str]:
        """With every capability dropped (``setpriv``), as the install's containers run: the file system's
        owner and mode bits decide what the process may read."""
        return ["setpriv", "--inh-caps=-all", "--bounding-set=-all"] if self.no_capabilities else []

    def kill(self) -> None:
        """SIGKILL: no graceful flush, the worst case for exactly-once counting."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in sorted(self.log_dir.glob("operator-*.log")))


class AuditFollower:
    """The lines kube-apiserver appends to the audit log in ``audit_dir`` (rotated files too), each once."""

    def __init__(self, audit_dir: Path) -> None:
        self.audit_dir = audit_dir
        self.offsets: dict[int, int] = {}  # inode -> bytes taken

    def new_lines(self) -> list[bytes]:
        lines = []
        for path in sorted(self.audit_dir.glob("audit*.log")):
            try:
                with path.open("rb") as f:
                    # The open file's inode: the name may be another file's by now (a rotation between
                    # open and stat once shipped a renamed file's bytes as the new one's).
                    inode = os.fstat(f.fileno()).st_ino
                    f.seek(self.offsets.get(inode, 0))
                    data = f.read()
            except FileNotFoundError:
                continue
            complete = data[: data.rfind(b"\n") + 1]
            self.offsets[inode] = self.offsets.get(inode, 0) + len(complete)
            lines += complete.splitlines()
        return lines


class Forwarder:
    """Forwards what kube-apiserver appends to its audit log elsewhere, as a cloud's log pipeline does: in a
    thread, ``forward(lines)`` every ``pace`` seconds with the lines new since."""

    def __init__(self, audit_dir: Path, pace: float = 0.3) -> None:
        self.follower, self.pace = AuditFollower(audit_dir), pace
        self.idle = threading.Event()  # set after a pass that found nothing new
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def forward(self, lines: list[bytes]) -> None:
        raise NotImplementedError

    def _run(self) -> None:
        while not self.stop.is_set():
            lines = self.follower.new_lines()
            self.forward(lines)
            (self.idle.clear if lines else self.idle.set)()
            self.stop.wait(self.pace)

    def caught_up(self) -> bool:
        """Whether everything written so far is forwarded (a pass since found nothing new)."""
        self.idle.clear()
        return self.idle.wait(10)

    def __enter__(self) -> Any:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
        self.thread.join()


OPENREPORTS = "github.com/openreports/reports-api@v0.2.1"  # the OpenReports API module, with its CRDs
PROMETHEUS_OPERATOR = "github.com/prometheus-operator/prometheus-operator@v0.90.1"  # PodMonitor, PrometheusRule
CERT_MANAGER = "github.com/cert-manager/cert-manager@v1.19.1"  # Certificate


def module_file(module: str, path: str, workdir: Path) -> Path:
    """A file of a Go module (the Go module proxy serves it; cached): the CRDs other projects publish."""
    env = {**os.environ, "GOMODCACHE": str(cache_dir() / "gomod")}
    done = subprocess.run(["go", "mod", "download", "-json", module], cwd=workdir, env=env, capture_output=True,
                          text=True, check=True)  # fmt: skip
    return Path(json.loads(done.stdout)["Dir"]) / path


@contextlib.contextmanager
def installed(prefix: str, **options: Any) -> Iterator[DevCluster]:
    """A control plane of its own for a test module (DevCluster's ``options``), with the CRDs and the
    manifests/ install applied; removed after."""
    workdir = Path(tempfile.mkdtemp(prefix=f"auditwatch-{prefix}-"))
    try:
        with DevCluster(workdir=workdir, **options) as c:
            c.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
            c.kubectl("wait", "--for=condition=Established", "crd/auditdetections.auditwatch.io",
                      "crd/detectionfindings.auditwatch.io")  # fmt: skip
            c.kubectl("apply", "-k", str(ROOT / "manifests"))
            yield c
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def cluster() -> Iterator[DevCluster]:
    # Small audit files so that a test can make kube-apiserver rotate them (--audit-log-maxsize=1 MB).
    with installed("cluster", audit_max_size_mb=1, webhook_port=WEBHOOK_PORT) as c:
        crd = module_file(OPENREPORTS, "config/crd/openreports.io_reports.yaml", c.workdir)
        c.kubectl("apply", "--server-side", "-f", str(crd))
        yield c


@pytest.fixture(scope="session")
def aws() -> Iterator[FaultProxy]:
    """A CloudWatch Logs API (moto's server) behind the fault proxy, on loopback."""
    with moto_server() as url:
        proxy = FaultProxy(url)
        yield proxy
        proxy.close()


@pytest.fixture(scope="session")
def alertmanager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Alertmanager]:
    am = Alertmanager(tmp_path_factory.mktemp("alertmanager"))
    am.start()
    yield am
    am.stop()


@pytest.fixture(scope="session")
def recorder() -> Iterator[Recorder]:
    """Stands in for a chat webhook and a generic JSON webhook receiver."""
    r = Recorder()
    yield r
    r.close()


def alerts_file(workdir: Path, alertmanager: Alertmanager, recorder: Recorder) -> Path:
    """The receivers, as a cluster admin's Secret would hold them: Slack's URL and the token in files."""
    (workdir / "slack-url").write_text(f"{recorder.url}/slack\n")
    (workdir / "token").write_text("e2e-token\n")
    path = workdir / "alerts.yaml"
    path.write_text(json.dumps({"receivers": [
        {"name": "alertmanager", "type": "alertmanager", "endpoint": {"url": alertmanager.url}},
        {"name": "soc", "type": "webhook", "endpoint": {"url": f"{recorder.url}/hook",
                                                         "bearerTokenFile": str(workdir / "token")}},
        {"name": "chat", "type": "slack", "minSeverity": "high", "endpoint": {"urlFile": str(workdir / "slack-url")}},
    ]}))  # fmt: skip
    return path


@pytest.fixture(scope="session")
def operator(
    cluster: DevCluster, aws: FaultProxy, alertmanager: Alertmanager, recorder: Recorder,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Operator]:  # fmt: skip
    workdir = tmp_path_factory.mktemp("operator")
    # cluster-wide, as the install runs; the webhook server is where kube-apiserver sends batches; AWS: the
    # emulated CloudWatch Logs API, found through the standard chain as on EKS.
    args = [*cluster.operator_webhook_args(), "--allow-path", str(cluster.audit_dir),
            "--metrics-listen", f"127.0.0.1:{METRICS_PORT}", "--reports",
            "--alerts", str(alerts_file(workdir, alertmanager, recorder))]  # fmt: skip
    op = Operator(workdir, args, cluster.operator_kubeconfig, aws_env(aws.url))
    op.start()
    yield op
    op.stop()


class Api:
    """Admin access for the tests, and the requests that make audit events."""

    def __init__(self, cluster: DevCluster) -> None:
        self.c = cluster
        self.ctx = ssl.create_default_context()
        for bundle in cluster.ca_bundles:  # each kube-apiserver of an HA control plane signs its own
            self.ctx.load_verify_locations(cafile=str(bundle))

    def request(self, path: str, user_agent: str, token: str | None = None, server: int = 0) -> int:
        """A GET to the ``server``-th kube-apiserver; the status code (0 when it cannot be reached)."""
        headers = {"User-Agent": user_agent}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        req = urllib.request.Request(self.c.servers[server] + path, headers=headers)
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:  # that kube-apiserver is down
            return 0

    def anonymous(self, path: str, user_agent: str, times: int = 1) -> None:
        for _ in range(times):
            self.request(path, user_agent)

    def apply(self, obj: dict[str, Any]) -> None:
        self.c.kubectl("apply", "-f", "-", input=json.dumps(obj))

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return json.loads(self.c.kubectl("get", kind, name, "-n", NAMESPACE, "-o", "json").stdout)

    def findings(self, detection: str) -> list[dict[str, Any]]:
        out = self.c.kubectl("get", "detectionfindings", "-n", NAMESPACE, "-l", f"auditwatch.io/detection={detection}",
                             "-o", "json").stdout  # fmt: skip
        return list(json.loads(out)["items"])

    def events(self, name: str) -> list[dict[str, Any]]:
        out = self.c.kubectl("get", "events", "-n", NAMESPACE, "--field-selector", f"involvedObject.name={name}",
                             "-o", "json").stdout  # fmt: skip
        return list(json.loads(out)["items"])

    def audit_events(
        self, predicate: Callable[[dict[str, Any]], bool], since_inode: int = 0, directory: Path | None = None
    ) -> list[dict[str, Any]]:
        """Every audit event in the log files (current and rotated; of every API server, or of the one
        writing to ``directory``) that satisfies ``predicate``; with ``since_inode``, only in that file
        (the live one when a detection started: where a new detection starts reading) and the ones
        written after it.

        Read again when kube-apiserver rotated its log meanwhile: a rename between listing the files
        and reading them would hide the renamed file's events (seen once: 0 of 210 found)."""
        while True:
            listed = self._audit_files(directory)
            found = []
            try:
                for path in self._since(listed, since_inode):
                    for line in path.read_bytes().splitlines():
                        try:
                            ev = json.loads(line)
                        except ValueError:
                            continue
                        if predicate(ev):
                            found.append(ev)
            except FileNotFoundError:  # an old rotated file removed (--audit-log-maxbackup)
                continue
            if self._audit_files(directory) == listed:
                return found

    @staticmethod
    def _since(files: dict[Path, int], inode: int) -> list[Path]:
        """The files in the order written (modification time); from the one with ``inode`` on, if given."""
        ordered = sorted(files, key=lambda p: (p.stat().st_mtime_ns, p.name))
        first = next((i for i, p in enumerate(ordered) if files[p] == inode), 0)
        return ordered[first:]

    def _audit_files(self, directory: Path | None = None) -> dict[Path, int]:
        """The audit log files by name, with their inodes (a rotation renames the current one)."""
        files = {}
        for path in (p for d in ([directory] if directory else self.c.audit_dirs) for p in d.glob("audit*.log")):
            with contextlib.suppress(FileNotFoundError):
                files[path] = path.stat().st_ino
        return files


@pytest.fixture(scope="session")
def api(cluster: DevCluster) -> Api:
    return Api(cluster)


# Anonymous requests with one user agent: a test counts its own requests only.
AGENT_SEARCH = (
    'user.username="system:anonymous" userAgent="{agent}" | stats count BY user.username sourceIPs{{}} '
    "| rename sourceIPs{{}} as src_ip, user.username as user"
)


def scrape(port: int) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """An operator's Prometheus metrics: (sample name, its labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def ready(api: Api, name: str) -> dict[str, Any]:
    conds = {c["type"]: c for c in api.get("auditdetection", name).get("status", {}).get("conditions", [])}
    return conds.get("Ready", {})


def total(api: Api, name: str) -> int:
    return sum(f.get("status", {}).get("count", 0) for f in api.findings(name))


def detection(name: str, search: str, path: Path, group_by: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "auditwatch.io/v1alpha1",
        "kind": "AuditDetection",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "search": search,
            "sources": [{"name": "apiserver-log", "file": {"path": str(path)}}],
            "finding": {"groupBy": group_by or ["user", "src_ip"], "message": "anonymous calls from $src_ip$",
                        "riskScore": 20, "severity": "low"},
        },
    }  # fmt: skip


def anonymous_with_agent(agent: str | None = None) -> Callable[[dict[str, Any]], bool]:
    """Anonymous, unauthenticated events (what the seed detection counts) with this user agent, or any."""

    def check(ev: dict[str, Any]) -> bool:
        user = ev.get("user", {})
        return (
            user.get("username") == "system:anonymous"
            and "system:unauthenticated" in (user.get("groups") or [])
            and (agent is None or ev.get("userAgent") == agent)
        )

    return check


@contextlib.contextmanager
def traffic(api: Api, agent: str, admin_token: str) -> Iterator[None]:
    """Anonymous requests (what the seed detection counts) and authenticated ones (not), with user agent
    ``agent``, sent to the API server while the block runs."""
    stop = threading.Event()

    def send() -> None:
        n = 0
        while not stop.is_set():
            api.request(f"/version?n={n}", agent)
            api.request("/api", agent, token=admin_token)
            n += 1
            time.sleep(0.02)

    sender = threading.Thread(target=send)
    sender.start()
    try:
        yield
    finally:
        stop.set()
        sender.join()


def counts_by_key(api: Api, name: str, key: list[str]) -> dict[tuple[str, ...], int]:
    """A detection's findings' counts, by the values of their key's fields."""
    return {tuple(f["spec"]["key"][k] for k in key): f["status"]["count"] for f in api.findings(name)}


def counted_through_kills(
    c: DevCluster,
    seed: dict[str, Any],
    replicas: list[Operator],
    shards: tuple[str, ...],
    forwarder: Forwarder,
    agent: str,
    copy_to: Path,
    timeout: float = 90,
) -> tuple[list[dict[str, Any]], dict[tuple[str, ...], int], Path]:
    """The seed detection read by ``replicas`` (one a shard) from where ``forwarder`` sends the audit log,
    while anonymous requests are made and each replica is SIGKILLed and restarted once: waits until it
    counts every anonymous request, checks that it counts no more, each shard its part. Gives each shard's
    source status, the counts by (user, src_ip) (the detection then deleted, its operators running) and a
    copy of the audit log as it was forwarded."""
    api, name = Api(c), seed["metadata"]["name"]
    status = lambda: api.get("auditdetection", name).get("status", {})  # noqa: E731
    for op in replicas:
        op.start()
    api.apply(seed)
    wait_for(lambda: set(status().get("shards", {})) >= set(shards), timeout=60, what="every shard")
    with traffic(api, agent, c.admin_token):
        time.sleep(3)
        replicas[-1].kill()  # SIGKILL mid-stream
        time.sleep(2)
        replicas[-1].start()
        time.sleep(3)
        replicas[0].kill()
        replicas[0].start()
        time.sleep(3)
    assert forwarder.caught_up()
    expected = len(api.audit_events(anonymous_with_agent()))
    published = Path(shutil.copytree(c.audit_dir, copy_to))
    findings = lambda: [(f["metadata"]["name"], f["metadata"].get("ownerReferences"), f.get("status"))  # noqa: E731
                        for f in api.findings(name)]  # fmt: skip
    wait_for(lambda: total(api, name) == expected, timeout=timeout,
             what=lambda: f"the count {total(api, name)} == {expected}; findings {findings()}; {status()}; "
             f"{[op.log()[-2000:] for op in replicas]}")  # fmt: skip
    time.sleep(3)  # and no more: nothing counted twice
    [finding] = api.findings(name)
    parts = [finding["status"]["shards"][s]["count"] for s in shards]
    assert finding["status"]["count"] == sum(parts) == expected > 100 and all(parts), parts
    assert ready(api, name).get("status") == "True"
    sources = [status()["shards"][s]["sources"][0] for s in shards]
    by_key = counts_by_key(api, name, ["user", "src_ip"])
    c.kubectl("delete", "auditdetection", name, "-n", NAMESPACE, "--timeout=60s")
    return sources, by_key, published


def scan_counts(detection_file: Path, logs: list[Path], key: list[str]) -> dict[tuple[str, ...], int]:
    """What `auditwatch scan` counts of a detection over audit log files, summed by a finding key's fields."""
    from factory import auditwatch

    code, out, err = auditwatch("scan", "--detection", detection_file, *logs)
    assert code == 0, err
    counts: dict[tuple[str, ...], int] = {}
    for row in map(json.loads, out.splitlines()):
        k = tuple(row[field] for field in key)
        counts[k] = counts.get(k, 0) + row["count"]
    return counts


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The fault tests stop parts of the shared control plane and fill its log: they run last."""
    items.sort(key=lambda item: item.path.name == "test_faults.py")
