"""``auditwatch crds``: the CRDs generated from the API models."""

from __future__ import annotations

import argparse
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

    from auditwatch.api.crds import crds, render
    from auditwatch.cli.common import write_generated

    files = {name: render(crd) for name, crd in crds().items()}
    return write_generated(Path(args.directory), files, args.check, "crds")
