"""Reading AuditDetection manifests from files, without the pydantic models.

``scan`` needs only the rule (``spec.search`` and ``spec.macros``, ``spec.sigma`` or ``spec.falco``) and
starts in a fraction of the time when it does not import pydantic; the operator and ``auditwatch lint``
validate the whole object with ``auditwatch.api``.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

from auditwatch.errors import AuditwatchError, Location

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(AuditwatchError, ValueError):
    """A detection manifest that cannot be read or is invalid; the message names the file and field."""


class NoDetection(ManifestError):
    """A file with no AuditDetection in it (a kustomization's Namespace, a CRD...)."""


def read_detection(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The one AuditDetection document in a YAML or JSON file."""
    try:
        with open(path, encoding="utf-8") as f:  # not pathlib: importing it costs scan 7 ms of start-up
            docs = [d for d in yaml.load_all(f.read(), Loader=Loader) if d is not None]
    except OSError as exc:
        raise ManifestError(f"cannot read: {exc.strerror}", Location(str(path))) from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"not valid YAML/JSON: {exc}", Location(str(path))) from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == "AuditDetection"]
    if not found:
        kinds = sorted({str(d.get("kind")) for d in docs if isinstance(d, dict)}) or ["nothing"]
        raise NoDetection(f"no AuditDetection in it ({', '.join(kinds)}): skipped", Location(str(path)))
    if len(found) != 1:
        raise ManifestError(f"expected one AuditDetection document, found {len(found)}", Location(str(path)))
    return found[0]


KUSTOMIZATIONS = ("kustomization.yaml", "kustomization.yml", "Kustomization")


def manifest_files(paths: list[str]) -> list[tuple[str, str]]:
    """(file, "") for each manifest file ``paths`` name, directories and kustomizations opened (what a
    kustomization lists, its resources and components, in order); (path, why) for what is passed over."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()  # each file once, however it is named
    for path in paths:
        _expand(path, found, seen)
    return found


def _expand(path: str, found: list[tuple[str, str]], seen: set[str]) -> None:
    real = os.path.realpath(path)
    if real in seen:
        return
    seen.add(real)
    if os.path.isdir(path):
        marker = next((os.path.join(path, k) for k in KUSTOMIZATIONS if os.path.isfile(os.path.join(path, k))), None)
        if marker is not None:
            _expand(marker, found, seen)
            return
        for name in sorted(os.listdir(path)):
            if name.endswith((".yaml", ".yml", ".json")):
                _expand(os.path.join(path, name), found, seen)
        return
    if os.path.basename(path) not in KUSTOMIZATIONS:
        found.append((path, ""))
        return
    try:
        with open(path, encoding="utf-8") as f:
            kustomization = yaml.load(f.read(), Loader=Loader) or {}
    except (OSError, yaml.YAMLError) as exc:
        found.append((path, f"a kustomization that cannot be read: {exc}"))
        return
    base = os.path.dirname(path)
    for entry in [*(kustomization.get("resources") or []), *(kustomization.get("components") or [])]:
        if not isinstance(entry, str) or "://" in entry or entry.startswith(("github.com/", "git@")):
            found.append((f"{path}: {entry}", "a remote resource: not linted"))
            continue
        _expand(os.path.normpath(os.path.join(base, entry)), found, seen)


def rule_spec(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``spec`` of a detection manifest with its rule checked for shape: exactly one of ``search`` (with
    ``macros``), ``sigma`` (text) or ``falco`` (a mapping)."""
    spec = read_detection(path).get("spec")
    if not isinstance(spec, dict):
        raise ManifestError("must be a mapping", Location(str(path), "spec"))
    given = [k for k in ("search", "sigma", "falco") if spec.get(k) is not None]
    if len(given) != 1:
        raise ManifestError("sets exactly one of search, sigma, falco", Location(str(path), "spec"))
    kind = given[0]
    if kind == "falco":
        if not isinstance(spec["falco"], dict):
            raise ManifestError("must be a mapping", Location(str(path), "spec.falco"))
        return spec
    if not isinstance(spec[kind], str) or not spec[kind].strip():
        raise ManifestError("must be a non-empty string", Location(str(path), f"spec.{kind}"))
    macros = spec.get("macros") or {}
    if not isinstance(macros, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in macros.items()):
        raise ManifestError("must map macro names to SPL strings", Location(str(path), "spec.macros"))
    return spec
