"""A Pod of the chart, run as its container under podman: what a kubelet would do with it, on loopback.

The container gets the pod's image, args, security context (uid and gid, read-only root file system,
capabilities dropped, no privilege escalation), env (fieldRefs filled in as the kubelet does) and volumes:
a hostPath is the host directory given for it, an emptyDir or a volume claim a fresh directory, a Secret
its keys as files. Its ServiceAccount token is mounted where the in-cluster login looks for it, and the
API server is reached on the host network as the Service VIP would be.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from auditwatch.devcluster.image import LIMITS, PODMAN

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"


def pod_template(manifests: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    """The pod template of the ``kind`` workload among rendered ``manifests``."""
    [workload] = [m for m in manifests if m["kind"] == kind]
    return dict(workload["spec"]["template"])


class Pod:
    """One container of a pod template, run by podman from ``start`` (or entering ``with``) to ``stop``."""

    def __init__(self, template: dict[str, Any], image: str, workdir: Path, cluster: Any, namespace: str,
                 host_paths: dict[str, Path], args: list[str], node: str = "cp-0") -> None:  # fmt: skip
        self.template, self.image, self.workdir, self.cluster = template, image, workdir, cluster
        self.namespace, self.host_paths, self.extra_args, self.node = namespace, host_paths, args, node
        self.name = f"auditwatch-{os.getpid()}-{time.monotonic_ns()}"

    @property
    def container(self) -> dict[str, Any]:
        return dict(self.template["spec"]["containers"][0])

    def command(self) -> list[str]:
        spec, container = self.template["spec"], self.container
        pod_sc, sc = spec.get("securityContext", {}), container.get("securityContext", {})
        user = sc.get("runAsUser", pod_sc.get("runAsUser", 65532))
        group = sc.get("runAsGroup", pod_sc.get("runAsGroup", user))
        cmd = [*PODMAN, "run", "-d", "--name", self.name, "--network=host", *LIMITS, f"--user={user}:{group}"]
        if sc.get("readOnlyRootFilesystem"):
            cmd += ["--read-only", "--read-only-tmpfs=false"]  # a pod's /tmp is only what it mounts
        if "ALL" in sc.get("capabilities", {}).get("drop", []):
            cmd += ["--cap-drop=all"]
        if sc.get("allowPrivilegeEscalation") is False:
            cmd += ["--security-opt=no-new-privileges"]
        for name, value in self._env().items():
            cmd += ["-e", f"{name}={value}"]
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            source = self._volume(volumes.get(mount["name"], {"emptyDir": {}}), mount["name"], user)
            cmd += ["-v", f"{source}:{mount['mountPath']}:{'ro' if mount.get('readOnly') else 'rw'}"]
        cmd += ["-v", f"{self._service_account()}:{SERVICE_ACCOUNT}:ro"]
        return [*cmd, self.image, *container.get("args", []), *self.extra_args]

    def _env(self) -> dict[str, str]:
        fields = {"metadata.namespace": self.namespace, "metadata.name": f"{self.name}",
                  "metadata.uid": f"uid-{self.name}", "spec.nodeName": self.node}  # fmt: skip
        env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": self.cluster.server.rsplit(":", 1)[1]}
        for var in self.container.get("env", []):
            ref = var.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
            env[var["name"]] = fields[ref] if ref else var["value"]
        return env

    def _volume(self, volume: dict[str, Any], name: str, user: int) -> Path:
        if "hostPath" in volume:
            return self.host_paths[volume["hostPath"]["path"]]
        path = self.workdir / "volumes" / name
        path.mkdir(parents=True, exist_ok=True)
        if "secret" in volume:
            secret = json.loads(self.cluster.kubectl("get", "secret", volume["secret"]["secretName"], "-n",
                                                     self.namespace, "-o", "json").stdout)  # fmt: skip
            for key, value in secret["data"].items():
                (path / key).write_bytes(base64.b64decode(value))
                os.chown(path / key, user, -1)
        else:  # emptyDir, or the StatefulSet's volume claim: writable by the pod's user
            os.chown(path, user, -1)
        return path

    def _service_account(self) -> Path:
        """What the kubelet projects: a token for the pod's ServiceAccount, the API server's CA, the namespace."""
        path = self.workdir / "serviceaccount"
        path.mkdir(parents=True, exist_ok=True)
        account = self.template["spec"].get("serviceAccountName", "default")
        token = self.cluster.kubectl("create", "token", account, "-n", self.namespace, "--duration=2h").stdout
        (path / "token").write_text(token.strip())
        (path / "ca.crt").write_bytes(self.cluster.ca_bundle.read_bytes())
        (path / "namespace").write_text(self.namespace)
        for f in path.iterdir():
            f.chmod(0o644)
        return path

    def start(self) -> None:
        subprocess.run(self.command(), check=True, capture_output=True, text=True)

    def __enter__(self) -> Pod:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def exec(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*PODMAN, "exec", self.name, *args], capture_output=True, text=True)

    def logs(self) -> str:
        done = subprocess.run([*PODMAN, "logs", self.name], capture_output=True, text=True)
        return done.stdout + done.stderr

    def stop(self) -> None:
        """As the kubelet stops a pod: SIGTERM, then SIGKILL after the grace period; then the container goes."""
        subprocess.run([*PODMAN, "stop", "--time", "20", self.name], capture_output=True)
        subprocess.run([*PODMAN, "rm", "--force", self.name], capture_output=True)
