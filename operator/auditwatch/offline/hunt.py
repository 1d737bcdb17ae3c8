"""``auditwatch hunt``: one detection over archived audit logs on a SQL engine: DuckDB (embedded), Spark,
or Trino (over a table of the archive, where it is).

Inputs are files, directories (every ``*.log``, ``*.gz``, ``*.json``, ``*.jsonl`` below them), globs and
``s3://`` prefixes (offline/s3.py: fetched one object at a time, pruned by their hour path). JSON lines,
plain or gzip, are read by the engine itself; whatever else ``scan`` reads by content (JSON documents
and CloudWatch exports, oc adm node-logs output, a BOM, ``-``, ``cloudwatch://``) goes through scan's
own decoding first, into JSON lines in a temporary directory, which the engine reads. A time range is a
step of the plan (``ir.plan.within``). The rows are those the streaming engine gives for the same inputs
(tests/unit/test_hunt.py, tests/integration/test_spark*.py, test_trino.py, test_hunt_s3.py).
"""

from __future__ import annotations

import glob
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from auditwatch.audit.chunks import GZIP_MAGIC, open_log
from auditwatch.audit.envelopes import AUDIT, BOM, is_document, line_shape
from auditwatch.engine.pipeline import EngineError, OutputRow, geoip_problem
from auditwatch.ir.plan import Plan, within
from auditwatch.offline.inputs import HEAD, SERVICES, InputError, chunks
from auditwatch.offline.s3 import S3, objects

SUFFIXES = (".log", ".gz", ".json", ".jsonl")


@dataclass
class Inputs:
    """The files a hunt reads: those the engine reads as they are, and those decoded first."""

    native: list[str] = field(default_factory=list)
    decoded: list[str] = field(default_factory=list)  # JSON lines written from the inputs scan decodes
    names: dict[str, str] = field(default_factory=dict)  # a file read in place of an input -> the input's name


def expand(paths: Sequence[str]) -> list[str]:
    """Files named, found below directories, or matched by globs, each once, in the order given (``-``,
    ``cloudwatch://``, ``pubsub://``, ``azblob://``, ``eventhub://`` and ``s3://`` addresses as they are)."""
    found: dict[str, None] = {}
    for path in paths:
        if path == "-" or path.startswith((*SERVICES, S3)):
            found[path] = None
        elif os.path.isdir(path):
            for root, _, names in sorted(os.walk(path)):
                found.update((os.path.join(root, n), None) for n in sorted(names) if n.endswith(SUFFIXES))
        elif glob.has_magic(path):
            matched = sorted(glob.glob(path, recursive=True))
            if not matched:
                raise InputError(f"{path}: no file matches")
            found.update((m, None) for m in matched if os.path.isfile(m))
        elif os.path.isfile(path):
            found[path] = None
        else:
            raise InputError(f"{path}: no such file or directory")
    return list(found)


def prepare(
    paths: Sequence[str],
    workdir: str,
    notes: TextIO | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Inputs:
    """Sort the inputs into what the engine reads natively and what is decoded first (into ``workdir``);
    ``s3://`` objects are fetched into ``workdir`` first, those outside ``[since, until)`` never."""
    inputs = Inputs()
    for path in expand(paths):
        if path.startswith(S3):
            for fetched, url in objects(path, since, until, workdir, notes):
                if _gzip(fetched) and not fetched.endswith(".gz"):  # engines tell gzip by the name
                    os.rename(fetched, fetched + ".gz")
                    fetched += ".gz"
                inputs.names[fetched] = url
                if not _sort(fetched, inputs, workdir, notes):
                    os.remove(fetched)  # decoded: the fetched bytes are read
        else:
            _sort(path, inputs, workdir, notes)
    return inputs


def _sort(path: str, inputs: Inputs, workdir: str, notes: TextIO | None) -> bool:
    """Add ``path`` to the native inputs (True), or decode it into JSON lines among the decoded (False)."""
    if _native(path):
        inputs.native.append(path)
        return True
    target = os.path.join(workdir, f"{len(inputs.decoded):06d}.jsonl")
    with open(target, "wb") as out:
        for chunk in chunks(path, notes=notes):
            out.write(chunk)
            if chunk and chunk[-1:] != b"\n":
                out.write(b"\n")
    inputs.decoded.append(target)
    inputs.names[target] = inputs.names.pop(path, path)
    return False


def _native(path: str) -> bool:
    """Whether the engine can read ``path`` as it is: audit JSON lines, no BOM, gzip when (and only when)
    named ``.gz``, as engines tell compression by the name."""
    if path == "-" or path.startswith(SERVICES) or _gzip(path) != path.endswith(".gz"):
        return False
    with open_log(path) as stream:
        head = stream.read(HEAD)
    return not head.startswith(BOM) and not is_document(head) and line_shape(head) in (AUDIT, "")


def _gzip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


@dataclass(frozen=True)
class Engine:
    """Which SQL engine runs a hunt, with its limits."""

    name: str = "duckdb"  # or spark, trino
    memory_limit: str = "4GB"  # DuckDB's; it spills past it
    threads: int | None = None  # DuckDB's; None: one per core
    spark_master: str = "local[*]"
    trino_url: str = ""  # Trino's: the server, the table of lines, the column naming their file
    table: str = "audit_lines"
    source_column: str = "$path"

    def start(self, workdir: str) -> Any:
        if self.name == "spark":
            from auditwatch.engine.spark_engine import Spark

            return Spark(self.spark_master, {"spark.local.dir": os.path.join(workdir, "spark")})
        from auditwatch.engine.duckdb_engine import DuckDB

        return DuckDB(self.memory_limit, self.threads, os.path.join(workdir, "spill"), scratch=workdir)


@dataclass
class HuntResult:
    rows: int
    files: int
    seconds: float


def hunt(
    plan: Plan,
    paths: Sequence[str],
    emit: Callable[[OutputRow], object],
    geoip_db: str | None = None,
    engine: Engine = Engine(),
    since: float | None = None,
    until: float | None = None,
    notes: TextIO | None = sys.stderr,
) -> HuntResult:
    """Run ``plan`` over the events of ``paths`` in ``[since, until)`` (epoch seconds; None: open) on
    ``engine`` and pass each row to ``emit``."""
    if problem := geoip_problem(plan, geoip_db):  # before an engine starts (Spark's JVM takes seconds)
        raise EngineError(problem)
    plan = within(plan, since, until)
    started = time.perf_counter()
    if engine.name == "trino":  # the archive is a table already: Trino reads it where it is
        from auditwatch.engine.trino import Trino

        rows = 0
        for row in Trino(engine.trino_url).rows(plan, engine.table, geoip_db, engine.source_column):
            emit(row)
            rows += 1
        return HuntResult(rows, 0, time.perf_counter() - started)
    with tempfile.TemporaryDirectory(prefix="auditwatch-hunt-") as workdir:
        inputs = prepare(paths, workdir, notes, since, until)
        files = [*inputs.native, *inputs.decoded]
        rows = 0
        for row in engine.start(workdir).rows(plan, files, geoip_db, inputs.names) if files else ():
            emit(row)
            rows += 1
    return HuntResult(rows, len(files), time.perf_counter() - started)
