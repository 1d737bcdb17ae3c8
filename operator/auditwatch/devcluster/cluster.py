"""``DevCluster``: etcd, kube-apiserver and kube-controller-manager on loopback, as a context manager.

kube-apiserver runs with RBAC, a static token file (an admin in ``system:masters`` and the operator's
ServiceAccount identity, so that the RBAC of ``manifests/`` is what the operator gets), anonymous
authentication on, the audit policy beside this file, the audit log backend writing
``<workdir>/audit/audit.log`` (JSON lines, rotated by size as in production), and with
``webhook_port`` the audit webhook backend (batch mode) sending to the operator at
``https://127.0.0.1:<port>/audit``, as a cluster admin would set it up: the operator serves TLS and
the API server presents a client certificate (``webhook_certs``, made by ``certs.py``).
kube-controller-manager runs the garbage collector, so that ownerReferences delete findings with
their detection, and the namespace controller.

With ``apiservers=3`` it is an HA control plane as kubeadm makes one: three kube-apiservers on the same
etcd, sharing the service-account key, each with its own port, serving certificate and audit log. Each
plays a control-plane node: ``nodes[i]`` is that node's root directory and its log is
``nodes[i]/var/log/kubernetes/audit/audit.log`` (the path kind and kubeadm use), so an operator replica
given that root (``auditwatch run --host-root``) reads it at the path the detections name, as a
DaemonSet pod reads its node's log through a hostPath mount.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TextIO

from auditwatch.devcluster.binaries import ensure_binaries
from auditwatch.devcluster.certs import CLIENT_NAME, WebhookCerts, make_webhook_certs
from auditwatch.errors import AuditwatchError

POLICY = Path(__file__).with_name("audit-policy.yaml")
NODE_AUDIT_DIR = Path("/var/log/kubernetes/audit")  # where kubeadm and kind nodes keep the audit log
OPERATOR_USER = "system:serviceaccount:auditwatch:auditwatch"
OPERATOR_GROUPS = "system:serviceaccounts,system:serviceaccounts:auditwatch,system:authenticated"


class ClusterError(AuditwatchError, RuntimeError):
    """The control plane did not start; the message points at the log file to read."""


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A loopback TCP port nothing listens on, for a server started later: never one this process handed
    out before (the kernel gave a freed port out twice, to the e2e operator and then to etcd: the
    operator could not listen), and below the kernel's ephemeral range where there is room, so that no
    outgoing connection takes it before its server binds it."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except OSError:  # not Linux: IANA's dynamic range
        ephemeral = 49152
    for _ in range(1000):
        port = random.randrange(10000, ephemeral) if ephemeral > 11000 else _kernel_port()
        if port not in _HANDED_OUT and _bindable(port):
            _HANDED_OUT.add(port)
            return port
    raise ClusterError("no free TCP port on 127.0.0.1")


def _kernel_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class DevCluster:
    """A local control plane. ``with DevCluster() as c: c.kubectl("get", "ns")``."""

    def __init__(
        self,
        workdir: str | Path | None = None,
        audit_max_size_mb: int = 100,
        webhook_port: int | None = None,
        log: TextIO = sys.stderr,
        apiservers: int = 1,
    ) -> None:
        self.webhook_port = webhook_port
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="auditwatch-cluster-"))
        self.apiservers = apiservers
        self.nodes = [self.workdir / "nodes" / f"cp-{i}" for i in range(apiservers)] if apiservers > 1 else []
        self.audit_dirs = [n / NODE_AUDIT_DIR.relative_to("/") for n in self.nodes] or [self.workdir / "audit"]
        self.audit_dir = self.audit_dirs[0]
        self.audit_log = self.audit_dir / "audit.log"
        self.webhook_certs = WebhookCerts(self.workdir / "webhook-certs")
        self.audit_max_size_mb = audit_max_size_mb
        self.log = log
        self.ports = [free_port() for _ in range(apiservers)]
        self.port = self.ports[0]
        self.servers = [f"https://127.0.0.1:{port}" for port in self.ports]
        self.server = self.servers[0]
        self.admin_token = os.urandom(16).hex()
        self.operator_token = os.urandom(16).hex()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._args: dict[str, list[str]] = {}
        self.bins: dict[str, Path] = {}

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> DevCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.bins = ensure_binaries(self.log)
        dirs = [self.workdir / d for d in ("etcd", "certs", "logs")]
        for d in (*dirs, *self.audit_dirs, *(self._cert_dir(i) for i in range(self.apiservers))):
            d.mkdir(parents=True, exist_ok=True)
        self._say(f"starting etcd and kube-apiserver in {self.workdir}")
        etcd_port, peer_port = free_port(), free_port()
        self._spawn(
            "etcd",
            [
                str(self.bins["etcd"]),
                "--data-dir",
                str(self.workdir / "etcd"),
                "--listen-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--advertise-client-urls",
                f"http://127.0.0.1:{etcd_port}",
                "--listen-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-advertise-peer-urls",
                f"http://127.0.0.1:{peer_port}",
                "--initial-cluster",
                f"default=http://127.0.0.1:{peer_port}",
                "--unsafe-no-fsync",
                "--log-level",
                "warn",
            ],
        )
        self._write_credentials()
        if self.webhook_port:
            self._write_webhook_kubeconfig()  # once: every API server sends with the same certificates
        for i in range(self.apiservers):
            self._spawn(self.apiserver(i), [str(self.bins["kube-apiserver"]), *self.apiserver_args(etcd_port, i)])
        self._wait_ready()
        self._spawn(
            "kube-controller-manager",
            [
                str(self.bins["kube-controller-manager"]),
                f"--kubeconfig={self.admin_kubeconfig}",
                "--leader-elect=false",
                "--controllers=garbagecollector,namespace",
                "--secure-port=0",
                "--concurrent-gc-syncs=5",
            ],
        )
        self._say(f"control plane ready at {', '.join(self.servers)}")

    @staticmethod
    def apiserver(i: int) -> str:
        """The process name of the i-th kube-apiserver (for ``stop_process``)."""
        return "kube-apiserver" if i == 0 else f"kube-apiserver-{i}"

    def _cert_dir(self, i: int) -> Path:
        return self.workdir / ("certs" if i == 0 else f"certs-{i}")

    def apiserver_args(self, etcd_port: int, i: int = 0) -> list[str]:
        """kube-apiserver's flags (kind-config.yaml sets the same audit flags; a test checks it)."""
        args = [
            f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.ports[i]}",
            f"--cert-dir={self._cert_dir(i)}",
            "--service-cluster-ip-range=10.96.0.0/16",
            f"--service-account-key-file={self.workdir / 'certs/sa.pub'}",
            f"--service-account-signing-key-file={self.workdir / 'certs/sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            "--anonymous-auth=true",
            f"--audit-policy-file={POLICY}",
            f"--audit-log-path={self.audit_dirs[i] / 'audit.log'}",
            "--audit-log-format=json",
            f"--audit-log-maxsize={self.audit_max_size_mb}",
            "--audit-log-maxbackup=10",
        ]
        if self.webhook_port:
            args += [
                f"--audit-webhook-config-file={self.webhook_kubeconfig}",
                "--audit-webhook-mode=batch",
                "--audit-webhook-batch-max-wait=1s",
            ]
        return args

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            if self.procs[name].poll() is None:
                self.stop_process(name)
        self.procs.clear()
        if self._own_workdir and os.environ.get("AUDITWATCH_KEEP_CLUSTER") is None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- clients -------------------------------------------------------------------------------
    @property
    def ca_bundle(self) -> Path:
        """The first kube-apiserver's self-signed certificate (``ca_bundles``: every one's)."""
        return self.ca_bundles[0]

    @property
    def ca_bundles(self) -> list[Path]:
        return [self._cert_dir(i) / "apiserver.crt" for i in range(self.apiservers)]

    def kubeconfig_for(self, i: int, kubeconfig: Path) -> Path:
        """A copy of ``kubeconfig`` that talks to the i-th kube-apiserver."""
        config = json.loads(kubeconfig.read_text())
        config["clusters"][0]["cluster"] |= {
            "server": self.servers[i],
            "certificate-authority": str(self.ca_bundles[i]),
        }
        path = kubeconfig.with_name(f"{kubeconfig.stem}-{i}.kubeconfig")
        path.write_text(json.dumps(config, indent=2))
        return path

    @property
    def admin_kubeconfig(self) -> Path:
        return self.workdir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.workdir / "operator.kubeconfig"

    @property
    def webhook_kubeconfig(self) -> Path:
        """kube-apiserver's audit webhook configuration (``webhook_port``)."""
        return self.workdir / "audit-webhook.kubeconfig"

    @property
    def anonymous_kubeconfig(self) -> Path:
        """No credentials at all: requests made with it are system:anonymous."""
        return self.workdir / "anonymous.kubeconfig"

    def kubectl(
        self, *args: str, kubeconfig: Path | None = None, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run the matching kubectl (as admin unless told otherwise)."""
        cmd = [str(self.bins["kubectl"]), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        proc = subprocess.run(cmd, input=input, capture_output=True, text=True, check=False)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    # -- internals -----------------------------------------------------------------------------
    def _say(self, message: str) -> None:
        print(f"auditwatch: {message}", file=self.log, flush=True)

    def _spawn(self, name: str, args: list[str]) -> None:
        out = open(self.workdir / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
        self.procs[name] = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self._args[name] = args

    def stop_process(self, name: str) -> None:
        """Stop one part of the control plane (``etcd``, ``kube-apiserver``), as an outage would: SIGTERM,
        then SIGKILL after 10 s."""
        proc = self.procs[name]
        if proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_process(self, name: str) -> None:
        """Start a stopped part again with the same flags and data; waits for the API to be ready."""
        assert self.procs[name].poll() is not None, f"{name} is running"
        self._spawn(name, self._args[name])
        self._wait_ready()

    def _write_credentials(self) -> None:
        certs = self.workdir / "certs"
        subprocess.run(["openssl", "genrsa", "-out", str(certs / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(
            ["openssl", "rsa", "-in", str(certs / "sa.key"), "-pubout", "-out", str(certs / "sa.pub")],
            check=True,
            capture_output=True,
        )
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},admin,admin,"system:masters"\n'
            f'{self.operator_token},{OPERATOR_USER},auditwatch-operator,"{OPERATOR_GROUPS}"\n'
        )
        for path, user, token in (
            (self.admin_kubeconfig, "admin", self.admin_token),
            (self.operator_kubeconfig, "auditwatch", self.operator_token),
            (self.anonymous_kubeconfig, "anonymous", None),
        ):
            path.write_text(json.dumps(self._kubeconfig(user, token), indent=2))

    def _kubeconfig(self, user: str, token: str | None) -> dict[str, object]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "auditwatch",
            # kube-apiserver writes its self-signed serving certificate and CA to this bundle at start.
            "clusters": [
                {"name": "auditwatch", "cluster": {"server": self.server, "certificate-authority": str(self.ca_bundle)}}
            ],
            # Without a token: a made-up basic-auth user, which no authenticator accepts, so the API server
            # treats the request as system:anonymous (an empty user would make kubectl prompt for one).
            "users": [{"name": user, "user": {"token": token} if token else {"username": "nobody", "password": "-"}}],
            "contexts": [{"name": "auditwatch", "context": {"cluster": "auditwatch", "user": user}}],
        }

    def operator_webhook_args(self) -> list[str]:
        """`auditwatch run` options for a webhook server this cluster's kube-apiserver can feed."""
        c = self.webhook_certs
        return [
            f"--webhook-listen=127.0.0.1:{self.webhook_port}",
            f"--webhook-tls-cert={c.server_cert}",
            f"--webhook-tls-key={c.server_key}",
            f"--webhook-client-ca={c.ca}",
            f"--webhook-client-name={CLIENT_NAME}",
            f"--webhook-spool={self.workdir / 'webhook-spool'}",
        ]

    def _write_webhook_kubeconfig(self) -> None:
        """Where kube-apiserver's webhook backend sends its batches: the operator's webhook server, over
        TLS (the operator's certificate checked against the webhook CA), with a client certificate."""
        certs = make_webhook_certs(self.webhook_certs.directory, ["127.0.0.1", "localhost"])
        path = self.webhook_kubeconfig
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "webhook",
            "clusters": [
                {
                    "name": "auditwatch",
                    "cluster": {
                        "server": f"https://127.0.0.1:{self.webhook_port}/audit",
                        "certificate-authority": str(certs.ca),
                    },
                }
            ],
            "users": [
                {
                    "name": "kube-apiserver",
                    "user": {"client-certificate": str(certs.client_cert), "client-key": str(certs.client_key)},
                }
            ],
            "contexts": [{"name": "webhook", "context": {"cluster": "auditwatch", "user": "kube-apiserver"}}],
        }
        path.write_text(json.dumps(config, indent=2))

    def _wait_ready(self, timeout: float = 90) -> None:
        """Wait until every running kube-apiserver answers /readyz (a stopped one is not waited for)."""
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        waiting = [i for i in range(self.apiservers) if self.procs[self.apiserver(i)].poll() is None]
        deadline = time.monotonic() + timeout
        while waiting and time.monotonic() < deadline:
            for name in ("etcd", self.apiserver(waiting[0])):
                if (code := self.procs[name].poll()) is not None:
                    raise ClusterError(f"{name} exited with {code}; see {self.workdir}/logs/{name}.log")
            request = urllib.request.Request(
                f"{self.servers[waiting[0]]}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            try:
                with urllib.request.urlopen(request, context=ctx, timeout=2) as resp:
                    if resp.status == 200:
                        waiting.pop(0)
                        continue
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        if waiting:
            raise ClusterError(f"kube-apiserver not ready after {timeout:.0f} s; see {self.workdir}/logs")
