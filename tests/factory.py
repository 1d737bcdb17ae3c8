"""Hand-written audit events for tests: realistic audit.k8s.io/v1 Events, one keyword per difference."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.pipeline import OutputRow, Table
from auditwatch.spl import plan_search

SEED = Path(__file__).resolve().parents[1] / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"

_MISSING = object()
_AUDIT_IDS = itertools.count(1)


def auditwatch(*args: Any, stdin: bytes = b"", env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """``python -m auditwatch ARGS...`` as a user runs it: (exit code, stdout, stderr)."""
    proc = subprocess.run(
        [sys.executable, "-m", "auditwatch", *map(str, args)],
        input=stdin,
        capture_output=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def event(
    username: str = "system:anonymous",
    groups: Any = ("system:unauthenticated",),
    uri: str = "/api/v1/namespaces/default/pods",
    verb: str = "list",
    ips: Any = ("203.0.113.7",),
    stage: str = "ResponseComplete",
    code: int | None = 403,
    ts: str = "2026-11-27T10:00:00.000000Z",
    agent: str = "kubectl/v1.36.3 (linux/amd64) kubernetes/abc",
    object_ref: dict[str, str] | None = None,
    uid: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    user: dict[str, Any] = {"username": username}
    if uid is not None:
        user["uid"] = uid
    if groups is not None:
        user["groups"] = list(groups)
    ev: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": f"id-{next(_AUDIT_IDS)}",  # unique, as kube-apiserver makes them (webhooks drop repeats)
        "stage": stage,
        "requestURI": uri,
        "verb": verb,
        "user": user,
        "sourceIPs": list(ips),
        "userAgent": agent,
        "requestReceivedTimestamp": ts,
        "stageTimestamp": ts,
    }
    if object_ref is not None:
        ev["objectRef"] = object_ref
    if code is not None:
        ev["responseStatus"] = {"metadata": {}, "code": code}
    ev.update(extra)
    return ev


def line(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":")).encode() + b"\n"


def run(
    search: str, lines: list[bytes], macros: dict[str, str] | None = None, prefilter: bool = True
) -> list[OutputRow]:
    """Rows of ``search`` over ``lines``, as ``auditwatch scan`` computes them."""
    plan = plan_search(search, macros)
    ev = Evaluator(plan, prefilter)
    chunk = b"".join(lines)
    if plan.aggregate is None:
        return [ev.pipeline.output(r) for _, _, r in ev.records(chunk)]
    table = Table(ev.pipeline)
    for _, _, r in ev.records(chunk):
        table.add(r)
    return table.rows()


def seed_search() -> str:
    import yaml

    return yaml.safe_load(SEED.read_text())["spec"]["search"]


def checkpoint(reader: Any, seq: int) -> Any:
    """What a detection does with a tail or subscription once ``seq`` is counted: lets it forget what is
    before ``seq`` (after each chunk), then asks where to resume from (when it reports its status)."""
    reader.forget(seq)
    return reader.position(seq)
