"""``auditwatch import-sigma`` and ``auditwatch import-falco``: rule packs -> AuditDetection manifests."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from auditwatch.cli.common import EXIT_USAGE, write_manifests


def register(sub: Any) -> None:
    p = sub.add_parser(
        "import-sigma",
        help="turn Sigma rules (Kubernetes audit) into AuditDetection manifests",
        description="Write one AuditDetection per Sigma rule file (or per .yml file in a directory): the rule "
        "verbatim in spec.sigma, its level as severity, ATT&CK tags as labels, title, author, references and "
        "false positives as annotations.",
    )
    p.add_argument("paths", nargs="+", metavar="FILE|DIR", help="Sigma rule files, or directories of them")
    p.add_argument("-o", "--output", metavar="DIR", help="write <name>.yaml files into DIR (default: stdout)")
    p.add_argument("--link", default="", metavar="URL", help="where the files are published (the rule's link "
                   "annotation is URL + file name), as the Detection Rule License asks")  # fmt: skip
    p.set_defaults(func=import_sigma_command)
    p = sub.add_parser(
        "import-falco",
        help="turn Falco k8s_audit rules files into AuditDetection manifests",
        description="Read Falco rules files in order, as Falco does (a later file appends to, overrides or "
        "disables what an earlier one defines), and write one AuditDetection per enabled k8s_audit rule with "
        "the macros and lists it uses. Rules that are not imported are listed with the reason.",
    )
    p.add_argument("files", nargs="+", metavar="FILE.yaml", help="rules files, in the order Falco loads them")
    p.add_argument("-o", "--output", metavar="DIR", help="write <name>.yaml files into DIR (default: stdout)")
    p.add_argument("--link", default="", metavar="URL", help="where the rules file is published (annotation)")
    p.set_defaults(func=import_falco_command)


def import_sigma_command(args: argparse.Namespace) -> int:
    from auditwatch.frontend.common import RuleError
    from auditwatch.rules.packs import import_sigma

    files = [f for p in map(Path, args.paths) for f in (sorted(p.glob("*.yml")) if p.is_dir() else [p])]
    try:
        for path in files:
            write_manifests([import_sigma(path, args.link)], path.name, "import-sigma", args.output)
    except (RuleError, OSError) as exc:
        print(f"auditwatch import-sigma: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def import_falco_command(args: argparse.Namespace) -> int:
    from auditwatch.frontend.common import RuleError
    from auditwatch.rules.packs import import_falco

    paths = [Path(f) for f in args.files]
    try:
        objects, skipped = import_falco(paths, args.link)
    except (RuleError, OSError) as exc:
        print(f"auditwatch import-falco: {exc}", file=sys.stderr)
        return EXIT_USAGE
    write_manifests(objects, " + ".join(p.name for p in paths), "import-falco", args.output)
    print(f"imported {len(objects)} rules, {len(skipped)} not imported", file=sys.stderr)
    for reason in skipped:
        print(f"  not imported: {reason}", file=sys.stderr)
    return 0
