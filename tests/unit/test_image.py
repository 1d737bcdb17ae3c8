"""devcluster/image.py without building: what it asks for, and the error when Debian's tools are missing."""

from pathlib import Path

import pytest

from auditwatch.devcluster import image
from auditwatch.devcluster.binaries import BuildError

ROOT = Path(__file__).resolve().parents[2]


def test_missing_tools_names_the_debian_packages_to_install(monkeypatch):
    monkeypatch.setattr(image.shutil, "which", lambda tool: None if tool in ("buildah", "runc") else f"/usr/bin/{tool}")
    assert image.missing_tools() == ["buildah", "runc"]
    with pytest.raises(BuildError, match="apt-get install buildah runc"):
        image.build_image(ROOT)


def test_the_base_is_what_the_dockerfile_starts_from():
    """The short name the Dockerfile's FROM lines give resolves to the local base (localhost/ first)."""
    froms = [line.split()[1] for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    assert froms and {f"localhost/{name}" for name in froms} == {image.BASE}
    assert image.TAG.startswith("localhost/auditwatch:")


def test_the_build_context_is_the_package_only():
    """What the Dockerfile copies is in the context, and the virtualenv and caches are not."""
    ignore = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert ignore == ["*", "!pyproject.toml", "!README.md", "!operator", "**/__pycache__"]
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    copied = [w for ln in lines if ln.startswith("COPY ") and "--from" not in ln for w in ln.split()[1:-1]]
    assert copied and {c.rstrip("/") for c in copied} <= {"pyproject.toml", "README.md", "operator"}
