"""The audit webhook source: kube-apiserver's webhook backend POSTs ``EventList`` batches to us.

One HTTP server serves every detection with a ``webhook`` source; a batch POSTed to a path goes to
each detection subscribed to that path, as one chunk (one JSON line). There is nothing to read
again after a restart, so a webhook source's position is only its receive sequence, ``seq``: the
receiving time in nanoseconds (or one past the last batch), so it still only grows across restarts,
which is what the findings' checkpoints need (findings/aggregate.py).
When a subscriber's queue is full the server answers 503, and kube-apiserver's batch backend retries.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from auditwatch.sources import Chunk

MAX_BATCH_BYTES = 64 << 20


@dataclass(frozen=True)
class WebhookPosition:
    origin: str  # webhook:<path>, shown where a file source shows its file
    seq: int

    def status(self) -> dict[str, Any]:
        return {"file": self.origin, "seq": self.seq}


class WebhookFeed:
    """One detection's subscription to a webhook path; the same shape as FileTail for the runtime."""

    def __init__(self, path: str, server: WebhookServer) -> None:
        self.path = path
        self.origin = f"webhook:{path}"
        self.server = server
        self.queue: asyncio.Queue[Chunk] = asyncio.Queue(server.queue_batches)
        self.ready = server.listening
        self.error = "" if server.listening else "the webhook server is not listening"
        self.long_lines = 0
        self.lag_bytes = 0

    async def chunks(self) -> AsyncIterator[Chunk]:
        try:
            while True:
                chunk = await self.queue.get()
                self.lag_bytes -= len(chunk.data)
                yield chunk
        finally:
            self.server.unsubscribe(self)

    def checkpoint(self, seq: int) -> WebhookPosition:
        """Batches are not read again: the position only records how far the counts go."""
        return WebhookPosition(self.origin, seq)


class WebhookServer:
    """``POST <path>`` with an audit.k8s.io EventList body; 200 once every subscriber has it queued."""

    def __init__(self, host: str, port: int, queue_batches: int = 256) -> None:
        self.host, self.port = host, port
        self.queue_batches = queue_batches
        self.feeds: dict[str, list[WebhookFeed]] = defaultdict(list)
        self.listening = False
        self._runner: web.AppRunner | None = None
        self._seq = 0

    def subscribe(self, path: str) -> WebhookFeed:
        feed = WebhookFeed(path, self)
        self.feeds[path].append(feed)
        return feed

    def unsubscribe(self, feed: WebhookFeed) -> None:
        if feed in self.feeds.get(feed.path, []):
            self.feeds[feed.path].remove(feed)

    async def start(self) -> None:
        app = web.Application(client_max_size=MAX_BATCH_BYTES)
        app.router.add_post("/{path:.*}", self._receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        self.listening = True

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        self.listening = False

    async def _receive(self, request: web.Request) -> web.Response:
        feeds = self.feeds.get(request.path, [])
        if not feeds:
            return web.Response(status=404, text=f"no detection reads audit batches at {request.path}\n")
        body = await request.read()
        if any(f.queue.full() for f in feeds):
            return web.Response(status=503, text="busy: retry later\n")
        self._seq = max(self._seq + len(body) + 1, time.time_ns())
        chunk = Chunk(body.replace(b"\n", b" ") + b"\n", self._seq, feeds[0].origin)
        for feed in feeds:
            feed.queue.put_nowait(chunk)
            feed.lag_bytes += len(chunk.data)
        return web.Response(status=200)
