"""``auditwatch chart``: the Helm chart's generated files (its CRDs and values.schema.json)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "chart",
        help="write the Helm chart's generated files: its CRDs and values.schema.json",
        description="Write the generated files of the Helm chart in DIR: crds/ (the CRDs, as `auditwatch crds` "
        "writes them) and values.schema.json (from the chart's values model, bounded as the operator's "
        "settings). With --check, write nothing and exit 1 if DIR differs.",
    )
    p.add_argument(
        "directory", nargs="?", default="charts/auditwatch", metavar="DIR", help="the chart (charts/auditwatch)"
    )
    p.add_argument("--check", action="store_true", help="exit 1 when DIR is not what would be written")
    p.set_defaults(func=chart_command)


def chart_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.api.chart import values_schema
    from auditwatch.api.crds import crds, render

    chart = Path(args.directory)
    files = {Path("crds") / name: render(crd) for name, crd in crds().items()}
    files[Path("values.schema.json")] = values_schema()
    if args.check:
        stale = [p for p, text in files.items() if not (chart / p).exists() or (chart / p).read_text() != text]
        for path in stale:
            print(f"auditwatch: {chart / path} differs; run `auditwatch chart`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in files.items():
        (chart / path).parent.mkdir(parents=True, exist_ok=True)
        (chart / path).write_text(text)
        print(f"wrote {chart / path}")
    return 0
