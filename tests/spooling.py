"""Helpers of the tests of the sources that fetch into a spool (Pub/Sub, Event Hubs) and of other sources
read on the event loop."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from auditwatch.sources.spooler import Spooler


def spooled(directory: Path) -> list[str]:
    """The auditIDs of the events in an upstream's spool, in spool order."""
    ids = []
    for path in sorted(directory.glob("audit*.log")):
        for line in path.read_bytes().splitlines():
            ids += [item["auditID"] for item in orjson.loads(line)["items"]]
    return ids


async def until(check: Callable[[], Any], timeout: float, what: Callable[[], str] | str) -> None:
    """Wait for ``check()`` to be true; past ``timeout`` seconds fail, saying ``what``."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what() if callable(what) else what
        await asyncio.sleep(0.1)


async def stopped(spooler: Spooler) -> None:
    """The last reader gone: the spooler's task is cancelled (as when the operator stops)."""
    task = spooler._task
    spooler.unsubscribe()
    if task is not None:
        await asyncio.gather(task, return_exceptions=True)
