"""``auditwatch lint``: would the operator run each detection, and what would it do that looks wrong."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import orjson

from auditwatch.cli.common import (
    add_verdict_options,
    make_settings,
    settings_options,
)


def register(sub: Any) -> None:
    p = sub.add_parser(
        "lint",
        help="say whether the operator would run each detection, and what it would do that looks wrong",
        description="Validate each AuditDetection as the operator does, with the operator's settings "
        "(give it the options `auditwatch run` gets): errors are what the operator puts on Ready=False "
        "(InvalidSpec, InvalidSearch, UnsupportedSource, PathNotAllowed, NamespaceNotAllowed when the "
        "manifest names its namespace, and lint errors as LintError), "
        "warnings what it puts on LintClean=False (never-set, unknown-field, no-prefilter, unbounded-key, "
        "key-not-output, never-matches; see auditwatch/rules/lint.py). Exit 1 on errors, and on warnings too "
        "with --strict; 0 otherwise. Fits a GitOps CI step.",
    )
    p.add_argument(
        "detections",
        nargs="+",
        metavar="DETECTION",
        help="AuditDetection manifests (YAML/JSON), directories of them or kustomizations (what they list is "
        "linted; documents that are no AuditDetection are passed over with a note)",
    )
    p.add_argument("--strict", action="store_true", help="warnings fail too")
    p.add_argument(
        "--output",
        "-o",
        choices=("text", "json"),
        default="text",
        help="text: a line per problem; json: one object per file with its Ready condition",
    )
    add_verdict_options(p)
    settings_options(p)
    p.set_defaults(func=lint_command)


def lint_command(args: argparse.Namespace) -> int:
    from auditwatch.api.manifest import ManifestError, NoDetection, manifest_files, read_detection
    from auditwatch.rules.validate import validate

    settings = make_settings(args)
    failed = False
    for path, passed_over in manifest_files(args.detections):
        try:
            if passed_over:
                raise NoDetection(f"{path}: {passed_over}")
            manifest = read_detection(path)
        except NoDetection as exc:
            print(
                orjson.dumps({"file": path, "skipped": str(exc)}).decode() if args.output == "json" else f"note: {exc}"
            )
            continue
        except ManifestError as exc:
            text = str(exc.at(path))
            print(
                json_verdict(path, False, "InvalidManifest", text, [])
                if args.output == "json"
                else f"{path}: error[InvalidManifest]: {exc.message}"
            )
            failed = True
            continue
        spec, meta = manifest.get("spec"), manifest.get("metadata")
        namespace = meta.get("namespace") if isinstance(meta, dict) else None
        verdict = validate(spec if isinstance(spec, dict) else {}, settings, namespace)
        failed |= not verdict.ready or (args.strict and bool(verdict.diagnostics))
        if args.output == "json":
            print(json_verdict(path, verdict.ready, verdict.reason, verdict.message, verdict.diagnostics))
            continue
        for line in [*map(str, verdict.problems), *map(str, verdict.diagnostics)] or ["ok"]:
            print(f"{path}: {line}")
    return 1 if failed else 0


def json_verdict(path: str, ready: bool, reason: str, message: str, diagnostics: Sequence[object]) -> str:
    """One line of `lint -o json`: the Ready condition the operator would set, and lint's diagnostics."""
    verdict = {"file": path, "ready": ready, "reason": str(reason), "message": message}
    return orjson.dumps({**verdict, "diagnostics": [str(d) for d in diagnostics]}).decode()
