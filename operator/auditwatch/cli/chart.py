"""``auditwatch chart``: the Helm chart's generated files (its CRDs, values.schema.json, detection packs)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:
    p = sub.add_parser(
        "chart",
        help="write the Helm chart's generated files: its CRDs, values.schema.json and detection packs",
        description="Write the generated files of the Helm chart in DIR: crds/ (the CRDs, as `auditwatch crds` "
        "writes them), values.schema.json (from the chart's values model, bounded as the operator's "
        "settings) and detections/ (the seed detection and the ESCU pack, copied from MANIFESTS/detections). "
        "With --check, write nothing and exit 1 if DIR differs.",
    )
    p.add_argument(
        "directory", nargs="?", default="charts/auditwatch", metavar="DIR", help="the chart (charts/auditwatch)"
    )
    p.add_argument("--manifests", default="manifests", metavar="MANIFESTS", help="the kustomize install (manifests)")
    p.add_argument("--check", action="store_true", help="exit 1 when DIR is not what would be written")
    p.set_defaults(func=chart_command)


def chart_command(args: argparse.Namespace) -> int:
    from pathlib import Path

    from auditwatch.api.chart import values_schema
    from auditwatch.api.crds import crds, render
    from auditwatch.cli.common import write_generated

    files = {f"crds/{name}": render(crd) for name, crd in crds().items()}
    files["values.schema.json"] = values_schema()
    detections = Path(args.manifests) / "detections"
    for pack, found in (("seed", detections.glob("*.yaml")), ("escu", detections.glob("escu/*.yaml"))):
        for path in sorted(found):
            if path.name != "kustomization.yaml":
                files[f"detections/{pack}/{path.name}"] = path.read_text()
    return write_generated(Path(args.directory), files, args.check, "chart")
