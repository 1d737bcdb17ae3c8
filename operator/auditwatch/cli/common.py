"""What several commands share: usage errors, and the options that make the operator's Settings.

`run` and `lint` take the same settings options (lint's verdict is the operator's). Each option's
``dest`` is the Settings field it sets, so ``make_settings`` takes every option given by name, and
a bad value is reported under the option the user typed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from auditwatch.errors import AuditwatchError

if TYPE_CHECKING:
    from auditwatch.api.settings import Settings
    from auditwatch.ir.plan import Plan

EXIT_USAGE = 2


class UsageError(AuditwatchError, ValueError):
    """An option with a value that cannot work; the message names the option."""


def add_webhook_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "audit webhook",
        "kube-apiserver's audit webhook backend POSTs batches here (webhook sources). Only the API server "
        "may: it needs a client certificate the --webhook-client-ca signed, or the bearer token in "
        "--webhook-token-file; without either the server stays off. `auditwatch cluster certs DIR` makes "
        "the certificates.",
    )
    g.add_argument(
        "--webhook-listen",
        default="0.0.0.0:8081",
        metavar="HOST:PORT",
        help="address of the webhook server; '' turns it off (default: 0.0.0.0:8081)",
    )
    g.add_argument(
        "--webhook-tls-cert", metavar="FILE", help="serve TLS with this certificate (PEM; reloaded on change)"
    )
    g.add_argument("--webhook-tls-key", metavar="FILE", help="the certificate's private key (PEM)")
    g.add_argument("--webhook-client-ca", metavar="FILE", help="accept client certificates this CA signed (mTLS)")
    g.add_argument(
        "--webhook-client-name",
        dest="webhook_client_names",
        action="append",
        metavar="CN",
        help="accept only client certificates with this common or DNS name (repeatable)",
    )
    g.add_argument(
        "--webhook-token-file",
        metavar="FILE",
        help="accept requests with this bearer token (a file, e.g. a mounted Secret; reloaded)",
    )
    g.add_argument(
        "--webhook-spool",
        metavar="DIR",
        help="where accepted batches are kept for the detections to read (default: auditwatch-webhook "
        "in the temporary directory, the install's emptyDir /tmp)",
    )
    g.add_argument(
        "--webhook-insecure",
        action="store_true",
        default=None,
        help="accept batches from anyone, over plain HTTP if no certificate: tests only",
    )


def add_detection_namespace_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--detection-namespace",
        dest="detection_namespaces",
        action="append",
        metavar="NS",
        help="run detections only in NS (repeatable; '*' for every namespace; default: the operator's own, "
        "$POD_NAMESPACE, else auditwatch); others get Ready=False, reason NamespaceNotAllowed",
    )


def add_source_options(p: argparse.ArgumentParser) -> None:
    from auditwatch.api.defaults import AUDIT_LOG_DIRS

    p.add_argument(
        "--sources",
        dest="source_kinds",
        type=lambda text: text.split(","),
        metavar="KIND,...",
        help="the kinds of source this install reads (default: file,webhook,cloudwatch,pubsub,azureBlob,eventHub): "
        "file, webhook, pubsub and eventHub sources are read by every replica (each its node's log, its share of "
        "batches, messages or partitions), cloudwatch and azureBlob sources by one (the EKS and AKS installs); a "
        "detection with another kind gets Ready=False, reason UnsupportedSource",
    )
    p.add_argument(
        "--allow-path",
        dest="allow_paths",
        action="append",
        metavar="DIR",
        help="file sources may only read files inside DIR, symlinks resolved (repeatable; default: "
        f"{', '.join(AUDIT_LOG_DIRS)})",
    )


def add_geoip_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--geoip-db",
        default=os.environ.get("AUDITWATCH_GEOIP_DB"),
        metavar="FILE",
        help="MaxMind-format database (GeoLite2-City or compatible) for `iplocation` (default: $AUDITWATCH_GEOIP_DB)",
    )


def add_verdict_options(p: argparse.ArgumentParser) -> None:
    """The settings that decide whether a detection can run: `run` and `lint` take them alike."""
    add_detection_namespace_option(p)
    add_webhook_options(p)
    add_geoip_option(p)
    add_source_options(p)


def settings_options(p: argparse.ArgumentParser) -> None:
    """Call last on a parser of settings options: remembers which option sets which field, for errors."""
    p.set_defaults(settings_options={a.dest: a.option_strings[0] for a in p._actions if a.option_strings})


def make_settings(args: argparse.Namespace) -> Settings:
    """The operator's settings from the options given (one not given keeps the setting's default); a bad
    value is a UsageError naming its option."""
    from pydantic import ValidationError

    from auditwatch.api.settings import Settings

    options: dict[str, str] = args.settings_options
    values: dict[str, Any] = {}
    for name in Settings.model_fields.keys() & options.keys():
        value = getattr(args, name)
        if value is not None:
            values[name] = tuple(value) if isinstance(value, list) else value
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise UsageError("; ".join(_problem(e, options) for e in exc.errors(include_url=False))) from None


def _problem(error: Any, options: dict[str, str]) -> str:
    """A settings problem under the option that sets the field (a problem of several fields: as it is)."""
    loc = error["loc"]
    return f"{options.get(str(loc[0]), loc[0])}: {error['msg']}" if loc else str(error["msg"])


def detection_plan(path: str) -> Plan:
    """The plan of the detection in the manifest at ``path``; a bad rule is an error naming the file and
    the field."""
    from auditwatch.api.manifest import rule_spec
    from auditwatch.frontend.common import RuleError
    from auditwatch.rules.language import rule_plan
    from auditwatch.spl import SPLError

    try:
        return rule_plan(rule_spec(path)).plan
    except (SPLError, RuleError) as exc:
        raise exc.at(path) from None


@contextlib.contextmanager
def reading(detection: str) -> Iterator[None]:
    """Errors of a run over inputs as usage errors (exit 2) naming what is wrong: the detection's search
    for what the engine cannot run, the input that cannot be read."""
    from auditwatch.engine.pipeline import EngineError

    try:
        yield
    except BrokenPipeError:
        raise
    except EngineError as exc:
        raise exc.at(detection, "spec.search") from None
    except OSError as exc:
        raise UsageError(f"{exc.filename or 'input'}: cannot read: {exc.strerror or exc}") from None


def write_manifests(objects: list[dict[str, Any]], origin: str, command: str, output: str | None) -> None:
    """Imported AuditDetections as YAML: to stdout as documents, or one ``<name>.yaml`` each in ``output``."""
    from pathlib import Path

    from auditwatch.rules.escu import render

    out_dir = Path(output) if output else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    for obj in objects:
        text = render(obj, origin, command)
        if out_dir is None:
            sys.stdout.write("---\n" + text)
        else:
            target = out_dir / f"{obj['metadata']['name']}.yaml"
            target.write_text(text)
            print(f"wrote {target}", file=sys.stderr)


def write_generated(directory: Path, files: dict[str, str], check: bool, command: str) -> int:
    """Write generated ``files`` (path under ``directory`` -> text). With ``check``, write nothing and
    name each file that differs from what would be written: exit status 1."""
    if check:
        stale = [n for n, text in files.items() if not (directory / n).exists() or (directory / n).read_text() != text]
        for name in stale:
            print(f"auditwatch: {directory / name} differs; run `auditwatch {command}`", file=sys.stderr)
        return 1 if stale else 0
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path}")
    return 0
