"""Evaluation in a worker process: one shared reader's chunks evaluated for each detection reading it.

The operator's event loop writes findings, follows watches and renews leases; evaluating the whole
pack there held the loop and the GIL, and the writes fell behind (bench/operator_bench.py). So a shared
reader (runtime/readers.py) hands each chunk to its own worker process (a child Python, calls and
answers pickled over its stdin and stdout), which keeps an ``Evaluator``
per subscriber (made from the ``Recipe`` sent with its first chunk) and returns each subscriber's matched
records and counters for the chunk. Windows, findings and positions stay in the operator: the worker
only turns bytes into records, so what it returns is a pure function of the chunk and the plan, and a
worker that dies loses nothing (the readers restart from their checkpoints).
"""

from __future__ import annotations

import asyncio
import os
import pickle
import signal
import sys
from asyncio.subprocess import PIPE
from dataclasses import dataclass, field

from auditwatch.audit.decode import Record
from auditwatch.engine.evaluate import Counters, Decoded, Evaluator
from auditwatch.engine.pipeline import EngineError
from auditwatch.engine.prefilter import Prefilter
from auditwatch.ir.plan import Plan


@dataclass(frozen=True)
class Recipe:
    """How to make a subscriber's evaluator (what the worker is sent instead of the evaluator)."""

    plan: Plan
    extra_fields: frozenset[str] = frozenset()
    geoip_db: str | None = None

    def evaluator(self) -> Evaluator:
        return Evaluator(self.plan, extra_fields=self.extra_fields, geoip_db=self.geoip_db)


@dataclass(frozen=True)
class Evaluated:
    """One subscriber's chunk, evaluated: (line start, line end, record) for each match, and the counters
    of the chunk alone (malformed samples numbered from the chunk's first line). ``error``: what the
    evaluation raised instead; it fails this subscriber only."""

    records: list[tuple[int, int, Record]] = field(default_factory=list)
    counters: Counters = field(default_factory=Counters)
    error: str = ""


_evaluators: dict[int, Evaluator] = {}  # in the worker: by subscriber


def evaluate(
    chunk: bytes, origin: str, union: Prefilter | None, members: dict[int, Recipe | None]
) -> dict[int, Evaluated]:
    """In the worker: ``chunk`` (whole lines) for each member; a member's recipe comes with its first
    chunk (None after), and a member no longer named is forgotten."""
    for gone in _evaluators.keys() - members.keys():
        del _evaluators[gone]
    decoded = Decoded(chunk, union)  # each line decoded once for all members
    out: dict[int, Evaluated] = {}
    for key, recipe in members.items():
        try:
            if recipe is not None:
                _evaluators[key] = recipe.evaluator()
            evaluator = _evaluators[key]
            evaluator.counters = Counters()
            out[key] = Evaluated(list(evaluator.records(chunk, origin, decoded)), evaluator.counters)
        except Exception as exc:  # reported to the one detection it concerns
            _evaluators.pop(key, None)
            out[key] = Evaluated(error=f"evaluating {origin or 'a chunk'}: {type(exc).__name__}: {exc}")
    return out


def serve() -> None:
    """The worker process: calls from stdin, answers on stdout, until stdin ends (the operator is gone)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the operator's to handle; it closes stdin
    calls, answers = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not into the answers
    while len(header := calls.read(4)) == 4:
        size = int.from_bytes(header, "big")
        body = calls.read(size)
        if len(body) < size:
            return  # the operator ended while sending: its input ends here
        call = pickle.loads(body)
        answer = pickle.dumps(evaluate(*call), pickle.HIGHEST_PROTOCOL)
        answers.write(len(answer).to_bytes(4, "big") + answer)
        answers.flush()


class Worker:
    """The operator's side of one worker process (a child reading calls on stdin: when the operator dies,
    however it dies, the child reads the end of its input and exits). One call at a time."""

    def __init__(self) -> None:
        self._process: asyncio.subprocess.Process | None = None
        self._known: set[int] = set()

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", f"from {__name__} import serve; serve()", stdin=PIPE, stdout=PIPE
        )

    async def evaluate(
        self, chunk: bytes | memoryview, origin: str, union: Prefilter | None, members: dict[int, Recipe]
    ) -> dict[int, Evaluated]:
        """``chunk`` evaluated for each member (by key) in the worker."""
        process = self._process
        assert process is not None and process.stdin is not None and process.stdout is not None
        named = {key: None if key in self._known else recipe for key, recipe in members.items()}
        self._known = set(members)
        call = pickle.dumps((bytes(chunk), origin, union, named), pickle.HIGHEST_PROTOCOL)
        try:
            process.stdin.write(len(call).to_bytes(4, "big") + call)
            await process.stdin.drain()
            size = int.from_bytes(await process.stdout.readexactly(4), "big")
            answer: dict[int, Evaluated] = pickle.loads(await process.stdout.readexactly(size))
        except (ConnectionError, asyncio.IncompleteReadError):
            code = await process.wait()
            how = f"killed by signal {-code}" if code < 0 else f"exited with code {code}"
            raise EngineError(f"the evaluation worker (pid {process.pid}) {how}") from None
        return answer

    async def close(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
