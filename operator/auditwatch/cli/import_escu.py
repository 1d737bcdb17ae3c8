"""``auditwatch import-escu``: Splunk ESCU detection YAML -> AuditDetection manifests."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from auditwatch.cli.common import EXIT_USAGE, write_manifests


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-escu",
        help="turn Splunk ESCU detection YAML into AuditDetection manifests",
        description="Write one AuditDetection manifest per ESCU detection file: the search verbatim, the "
        "macros it calls (from --macros), rba/tags -> spec.finding, description and known false positives "
        "as annotations, MITRE ATT&CK techniques and analytic stories as labels.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.yml", help="ESCU detection files")
    p.add_argument("-o", "--output", metavar="DIR", help="write <name>.yaml files into DIR (default: stdout)")
    p.add_argument(
        "--macros",
        metavar="DIR",
        help="ESCU macro files (default: the macros/ directory of the checkout the "
        "first file is in: security_content/macros for security_content/detections/cloud/*.yml)",
    )
    p.set_defaults(func=import_escu_command)


def import_escu_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.rules.escu import EscuImportError, import_detection, load_macros

    files = [Path(f) for f in args.files]
    # A checkout of security_content has detections/cloud/*.yml beside macros/ at its top.
    near = [parent / "macros" for parent in files[0].resolve().parents[1:3]]
    macro_dir = Path(args.macros) if args.macros else next((d for d in near if d.is_dir()), near[0])
    macros = load_macros(macro_dir) if macro_dir.is_dir() else {}
    try:
        for path in files:
            write_manifests([import_detection(path, macros)], path.name, "import-escu", args.output)
    except (EscuImportError, OSError) as exc:
        print(f"auditwatch import-escu: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0
