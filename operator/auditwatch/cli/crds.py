"""``auditwatch crds``: the CRDs generated from the API models."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "crds",
        help="write the CRDs generated from the API models",
        description="Write the CustomResourceDefinitions of AuditDetection and DetectionFinding, generated "
        "from the pydantic models, into DIR. With --check, write nothing and exit 1 if DIR differs.",
    )
    p.add_argument("directory", nargs="?", default="crds", metavar="DIR", help="output directory (crds)")
    p.add_argument("--check", action="store_true", help="exit 1 when DIR is not what would be written")
    p.set_defaults(func=crds_command)


def crds_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.api.crds import crds, render, write

    directory = Path(args.directory)
    if args.check:
        stale = [
            n for n, c in crds().items() if not (directory / n).exists() or (directory / n).read_text() != render(c)
        ]
        for name in stale:
            print(f"auditwatch: {directory / name} differs from the models; run `auditwatch crds`", file=sys.stderr)
        return 1 if stale else 0
    for path in write(directory):
        print(f"wrote {path}")
    return 0
