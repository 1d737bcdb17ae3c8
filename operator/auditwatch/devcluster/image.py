"""The operator image without Docker or a registry: the ``Dockerfile`` itself, built by buildah.

Its ``FROM debian:bookworm-slim`` cannot be pulled here, so the base is made first from Debian's packages
by mmdebstrap, slimmed as the official image is (minbase, merged /usr, no docs, man pages or locales), and
stored locally as ``localhost/debian:bookworm-slim``, which the short name resolves to with ``--pull=never``.
Elsewhere the same file builds with ``docker build``: one description, nothing to drift. The image runs
under podman with Debian's runc (``PODMAN``): the default crun refuses this machine's hybrid cgroups.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import TextIO

from auditwatch.devcluster.binaries import BuildError

BASE = "localhost/debian:bookworm-slim"
TAG = f"localhost/auditwatch:{version('auditwatch')}"
TOOLS = ("buildah", "mmdebstrap", "podman", "runc")  # each its own Debian package
# podman's default runtime here, crun, refuses this machine's hybrid cgroups.
PODMAN = ["podman", "--runtime", "runc"]
# runc sets the container's rlimits from the spec, and podman's defaults exceed what it may set here.
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
# minbase, slimmed with the excludes of the official slim images (kept for later installs in the image).
SLIM = [
    "--variant=minbase",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",  # else usrmerge, and with it all of Perl, is installed
    "--aptopt=APT::Install-Recommends false",
    *(f"--dpkgopt=path-exclude=/usr/share/{d}/*" for d in ("man", "doc", "info", "locale", "lintian")),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
]


def missing_tools() -> list[str]:
    """The Debian packages to install before an image can be built and run here."""
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _run(args: list[str], log: TextIO, what: str) -> None:
    log.write(f"auditwatch: {what}\n")
    log.flush()
    done = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise BuildError(f"{what} failed (exit {done.returncode}): {' '.join(args)}")


def _has_image(name: str) -> bool:
    return subprocess.run(["podman", "image", "exists", name]).returncode == 0


def ensure_base(log: TextIO = sys.stderr) -> str:
    """``BASE``, made from Debian's packages on first use (about 30 s; 78 MB)."""
    if not _has_image(BASE):
        with tempfile.TemporaryDirectory(prefix="auditwatch-base-") as tmp:
            tar = Path(tmp) / "rootfs.tar"
            _run(["mmdebstrap", *SLIM, "bookworm", str(tar), "http://deb.debian.org/debian"], log,
                 f"making {BASE} from Debian's packages (mmdebstrap)")  # fmt: skip
            _run(["podman", "import", "--quiet", str(tar), BASE], log, f"storing {BASE}")
    return BASE


def build_image(root: Path, archive: Path | None = None, log: TextIO = sys.stderr) -> str:
    """Build ``root``'s Dockerfile as ``TAG`` (and write it to ``archive``, an OCI archive); returns the tag."""
    if missing := missing_tools():
        raise BuildError(f"building the image needs Debian's {', '.join(missing)}: apt-get install {' '.join(missing)}")
    ensure_base(log)
    args = ["buildah", "build", "--isolation=chroot", "--network=host", "--pull=never", "--layers", "-t", TAG]
    # Behind a TLS-inspecting proxy (as here), pip in the build trusts what this machine trusts.
    if (cert := os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")) and Path(cert).is_file():
        args += ["--volume", f"{cert}:/run/host-ca.crt:ro", "--build-arg", "PIP_CERT=/run/host-ca.crt"]
    _run([*args, "-f", str(root / "Dockerfile"), str(root)], log, f"building {TAG} from {root / 'Dockerfile'}")
    if archive:
        archive.parent.mkdir(parents=True, exist_ok=True)
        archive.unlink(missing_ok=True)
        name = TAG.removeprefix("localhost/")
        _run(["buildah", "push", "--quiet", TAG, f"oci-archive:{archive}:{name}"], log, f"writing {archive}")
    return TAG
