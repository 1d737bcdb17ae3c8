"""``auditwatch demo``: the whole product on a real, local control plane, in about a minute.

Starts etcd, kube-apiserver and kube-controller-manager (building them on the first run), installs the
CRDs and the operator's RBAC from the source tree, applies the seed ESCU detection, runs the operator
under its own ServiceAccount identity, makes anonymous requests (curl without credentials, kubectl
without a token) and authenticated ones, then shows ``kubectl get findings`` and the Events.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

import yaml

from auditwatch.devcluster import DevCluster
from auditwatch.errors import AuditwatchError

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
NAMESPACE = "auditwatch"


class DemoError(AuditwatchError, RuntimeError):
    pass


def run_demo(keep: bool = False, workdir: str | None = None, out: TextIO = sys.stdout) -> int:
    if not SEED.exists():
        raise DemoError(f"the demo runs from a source checkout; {SEED} not found")

    def step(text: str) -> None:
        print(f"\n==> {text}", file=out, flush=True)

    step("Starting a local control plane: etcd + kube-apiserver (audit log on) + kube-controller-manager")
    started = time.monotonic()
    with DevCluster(workdir=workdir, log=out) as cluster:
        print(f"    ready in {time.monotonic() - started:.0f} s; audit log: {cluster.audit_log}", file=out)
        step("Installing the CRDs and the operator's namespace and RBAC (manifests/)")
        cluster.kubectl("apply", "--server-side", "-k", str(ROOT / "crds"))
        cluster.kubectl(
            "wait",
            "--for=condition=Established",
            "crd/auditdetections.auditwatch.io",
            "crd/detectionfindings.auditwatch.io",
        )
        for name in ("namespace.yaml", "rbac.yaml"):
            cluster.kubectl("apply", "-f", str(ROOT / "manifests" / "base" / name))

        step("Applying the seed ESCU detection (search verbatim), reading this cluster's audit log")
        detection = yaml.safe_load(SEED.read_text())
        detection["spec"]["sources"][0]["file"]["path"] = str(cluster.audit_log)
        cluster.kubectl("apply", "-f", "-", input=json.dumps(detection))
        print(detection["spec"]["search"], file=out)

        step("Starting the operator (auditwatch run) as system:serviceaccount:auditwatch:auditwatch")
        log_path = cluster.workdir / "logs" / "operator.log"
        env = {**os.environ, "KUBECONFIG": str(cluster.operator_kubeconfig)}
        with open(log_path, "wb") as log:
            operator = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "auditwatch",
                    "run",
                    "--liveness",
                    "",
                    "--webhook-listen=",
                    "--allow-path",
                    str(cluster.audit_dir),
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            _traffic(cluster, step, out)
            step("Waiting for the findings (the operator writes them within about a second)")
            name = detection["metadata"]["name"]
            if not _wait_findings(cluster, name):
                print(f"    no finding after 60 s; the operator's log is {log_path}", file=out)
                return 1
            step("kubectl get findings -n auditwatch")
            print(cluster.kubectl("get", "findings", "-n", NAMESPACE).stdout, file=out)
            step("kubectl get events -n auditwatch")
            print(cluster.kubectl("get", "events", "-n", NAMESPACE, "--sort-by=.lastTimestamp").stdout, file=out)
            step("kubectl get auditdetections -n auditwatch")
            print(cluster.kubectl("get", "auditdetections", "-n", NAMESPACE).stdout, file=out)
            if keep:
                step("Left running (--keep). In another shell:")
                print(f"    export KUBECONFIG={cluster.admin_kubeconfig}", file=out)
                print(f"    kubectl get findings -A        # kubectl: {cluster.bins['kubectl']}", file=out)
                print(f"    curl -k {cluster.server}/version   # another anonymous request", file=out)
                print("    Press Ctrl-C here to stop everything.", file=out, flush=True)
                try:
                    while operator.poll() is None:
                        time.sleep(1)
                except KeyboardInterrupt:
                    pass
        finally:
            operator.terminate()
            try:
                operator.wait(20)
            except subprocess.TimeoutExpired:
                operator.kill()
    step("Stopped the operator and the control plane. Done.")
    return 0


def _traffic(cluster: DevCluster, step: object, out: TextIO) -> None:
    assert callable(step)
    curl = shutil.which("curl")
    step("Anonymous requests: curl -k without credentials")
    for path in ("/version", "/api/v1/namespaces/kube-system/secrets", "/apis"):
        if curl:
            cmd = [curl, "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"{cluster.server}{path}"]
            code = subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
            print(f"    curl -k {cluster.server}{path} -> HTTP {code}", file=out)
    step("Anonymous requests: kubectl with no token")
    proc = cluster.kubectl("get", "pods", "-n", "default", kubeconfig=cluster.anonymous_kubeconfig, check=False)
    print(f"    kubectl get pods (no token) -> {proc.stderr.strip().splitlines()[-1]}", file=out)
    step("Authenticated requests (as admin), which must not match")
    for args in (("get", "namespaces"), ("get", "pods", "-A")):
        cluster.kubectl(*args)
        print(f"    kubectl {' '.join(args)} -> ok", file=out)


def _wait_findings(cluster: DevCluster, detection: str, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = cluster.kubectl(
            "get", "detectionfindings", "-n", NAMESPACE, "-l", f"auditwatch.io/detection={detection}", "-o", "json"
        ).stdout
        if json.loads(out)["items"]:
            time.sleep(2)  # let the counts of the last requests land
            return True
        time.sleep(0.5)
    return False
