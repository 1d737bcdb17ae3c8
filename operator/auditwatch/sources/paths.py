"""Which files a file source may read: only inside the directories the administrator allows."""

from __future__ import annotations

import os


def allowed(path: str, directories: tuple[str, ...]) -> bool:
    """Is ``path``, with symlinks and ``..`` resolved, inside one of ``directories`` (resolved too)?"""
    real = os.path.realpath(path)
    return any(os.path.commonpath([real, d]) == d for d in map(os.path.realpath, directories))


def under_root(root: str, path: str) -> str:
    """``path`` as seen from a process whose view of the node's file system starts at ``root`` (``''``:
    the process sees the node's paths as they are, as a hostPath mount at the same path gives them)."""
    return os.path.join(root, path.lstrip("/")) if root else path
