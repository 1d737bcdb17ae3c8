"""Reading AuditDetection manifests from files, without the pydantic models.

``scan`` needs only ``spec.search`` and ``spec.macros`` and starts in a fraction of the time when it
does not import pydantic; the operator and ``auditwatch lint`` validate the whole object with
``auditwatch.api``.
"""

from __future__ import annotations

import os
from typing import Any

import yaml

Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class ManifestError(ValueError):
    """A detection manifest that cannot be read or is invalid; the message names the file and field."""


def read_detection(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The one AuditDetection document in a YAML or JSON file."""
    try:
        with open(path, encoding="utf-8") as f:  # not pathlib: importing it costs scan 7 ms of start-up
            docs = [d for d in yaml.load_all(f.read(), Loader=Loader) if d is not None]
    except OSError as exc:
        raise ManifestError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML/JSON: {exc}") from None
    found = [d for d in docs if isinstance(d, dict) and d.get("kind") == "AuditDetection"]
    if len(found) != 1:
        raise ManifestError(f"{path}: expected one AuditDetection document, found {len(found)}")
    return found[0]


def search_and_macros(path: str | os.PathLike[str]) -> tuple[str, dict[str, str]]:
    """``spec.search`` and ``spec.macros`` of a detection manifest, checked for shape."""
    spec = read_detection(path).get("spec")
    if not isinstance(spec, dict):
        raise ManifestError(f"{path}: spec: must be a mapping")
    search = spec.get("search")
    if not isinstance(search, str) or not search.strip():
        raise ManifestError(f"{path}: spec.search: must be a non-empty string")
    macros = spec.get("macros") or {}
    if not isinstance(macros, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in macros.items()):
        raise ManifestError(f"{path}: spec.macros: must map macro names to SPL strings")
    return search, macros
