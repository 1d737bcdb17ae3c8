"""The ``auditwatch`` command: one module per subcommand, each registering its own parser.

Each command module has ``register(subparsers)``, which adds its parser and sets ``func`` to the
function that runs it. Modules import what their command needs inside that function, so that
``auditwatch scan`` does not pay for the operator's imports.
"""

from __future__ import annotations

import argparse
import atexit
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from auditwatch import __version__
from auditwatch.cli import chart, cluster, crds, demo, hunt, import_escu, import_packs, lint, run, scan
from auditwatch.cli.common import EXIT_USAGE
from auditwatch.errors import AuditwatchError

# in the order --help lists them
COMMANDS = (scan, hunt, crds, chart, run, demo, cluster, import_escu, import_packs, lint)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="auditwatch",
        description="Splunk ESCU detections over Kubernetes audit logs, offline or as an in-cluster operator.",
    )
    parser.add_argument("--version", action="version", version=f"auditwatch {__version__}")
    sub = parser.add_subparsers(metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # the reader of our output went away (`| head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except AuditwatchError as exc:
        print(f"auditwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


def entry() -> NoReturn:
    """The ``auditwatch`` command: ``main``, then exit without tearing the interpreter down.

    Exit handlers run and output is flushed as on any exit; only the freeing of every object and
    module is skipped, which is 5% of a large ``scan``'s time (the stats table, ~15 ms).
    """
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    atexit._run_exitfuncs()
    os._exit(code)
