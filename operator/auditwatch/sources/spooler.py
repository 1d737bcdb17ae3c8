"""A service's messages fetched into a spool while detections read it: the shared half of the Pub/Sub and
Event Hubs sources.

A ``Spooler`` per upstream (a subscription, an event hub and consumer group), however many detections
read it, loops: fetch a batch, drop what was spooled before (``Recent``), append the rest to its spool
(fsynced), then acknowledge the batch upstream (an ack, an offset commit). Every detection reading it
tails the spool (``SpoolFeed``, a ``FileTail``), so what was acknowledged is counted exactly once across
restarts, as a file's lines are. The subclass says how to fetch and acknowledge (``_fetch_once``), what
it needs to know again at start from what it spooled last (``_remember``), and what a failure means.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from auditwatch.sources import Chunk
from auditwatch.sources.file import FilePosition, FileTail
from auditwatch.sources.spool import Recent, Spool, newest_lines

MAX_LINE = 64 << 20  # a spool line (one batch, or one message of up to Pub/Sub's 10 MB) is under it
log = logging.getLogger(__name__)


class SpoolError(Exception):
    """The spool cannot be written (a full or read-only volume): nothing of the batch was acknowledged."""


class SpoolFeed(FileTail):
    """One detection's reading of an upstream: a tail of its spool; not ready while fetching fails."""

    def __init__(self, spooler: Spooler, start: FilePosition | None, poll_seconds: float) -> None:
        super().__init__(str(spooler.spool.file), MAX_LINE, start, poll_seconds, origin=spooler.origin)
        self.spooler = spooler

    @property  # type: ignore[override]
    def ready(self) -> bool:
        return self._ready and self.spooler.ready

    @ready.setter
    def ready(self, value: bool) -> None:
        self._ready = value

    @property  # type: ignore[override]
    def error(self) -> str:
        return self.spooler.error or self._error

    @error.setter
    def error(self, value: str) -> None:
        self._error = value

    def details(self) -> dict[str, Any]:
        return {**super().details(), **self.spooler.details()}

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            async for chunk in super().chunks():
                yield chunk
        finally:
            self.spooler.unsubscribe()


class Spooler:
    """Fetches one upstream into its spool while a detection reads it (module docstring)."""

    name = ""  # what the log calls the kind of upstream

    def __init__(self, origin: str, spool_dir: Path) -> None:
        self.origin = origin  # Splunk's ``source`` of the events
        self.spool = Spool(spool_dir)
        self.readers = 0
        self.ready, self.error = False, ""
        self._recent = Recent()
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, start: FilePosition | None, poll_seconds: float) -> SpoolFeed:
        """A detection's tail of the spool from ``start`` (a saved position) or the spool's start; the
        first one starts the fetching."""
        self.readers += 1
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return SpoolFeed(self, start, poll_seconds)

    def unsubscribe(self) -> None:
        """The last reader gone, fetching stops: messages wait upstream."""
        self.readers -= 1
        if self.readers <= 0 and self._task is not None:
            self._task.cancel()
            self._task = None

    def details(self) -> dict[str, Any]:
        """The status fields of the fetching (the source kind's status sub-object)."""
        return {}

    async def _run(self) -> None:
        for line in newest_lines(self.spool.file.parent):
            try:
                self._remember(orjson.loads(line))
            except (orjson.JSONDecodeError, AttributeError, TypeError, ValueError):
                continue
        failures = 0
        try:
            while True:
                try:
                    await self._fetch_once()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a failed call or spool write: nothing was acknowledged, it comes again
                    self.ready, self.error = False, self._explain(exc)
                    failures += 1
                    log.warning("%s %s: %s", self.name, self.origin, self.error)
                    await self._reset()
                    await asyncio.sleep(min(60.0, 0.5 * 2**failures))
                    continue
                self.ready, self.error, failures = True, "", 0
        finally:
            await self._reset()

    async def _spool(self, lines: list[bytes], keys: list[str]) -> None:
        """Append ``lines`` durably; if that fails, forget ``keys`` (their events come again as new)."""
        if not lines:
            return
        try:
            await asyncio.to_thread(self.spool.append, b"".join(lines))
        except OSError as exc:
            self._recent.forget(keys)
            raise SpoolError(f"the spool {self.spool.file} cannot be written: {exc}") from exc
        except BaseException:
            self._recent.forget(keys)
            raise

    def _remember(self, line: dict[str, Any]) -> None:
        """Learn again from a line spooled before the start (the newest two files): its events' keys."""
        raise NotImplementedError

    async def _fetch_once(self) -> None:
        """Fetch a batch, spool what is new of it, acknowledge it upstream."""
        raise NotImplementedError

    async def _reset(self) -> None:
        """After a failure and at the end: close what a fresh start must open again."""

    def _explain(self, exc: Exception) -> str:
        """What a failure means, and what to do about it."""
        if isinstance(exc, SpoolError):
            return str(exc)
        return f"{self.origin}: {type(exc).__name__}: {exc}"
