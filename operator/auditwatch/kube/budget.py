"""One budget for every API write the operator makes: a token bucket with priorities.

Writes ask for a token with a priority (``NEW``: a finding being created, so a new attacker shows at
once; ``UPDATE``: a count, a detection status, a deletion; ``EVENT``) and the time they have been
waiting since (a finding's first unwritten count). New findings go first; then the write that has
waited longest, an Event counting as having waited ``EVENT_DELAY`` seconds less than it has (so
Events yield to counts, but are not starved by a steady backlog of them). At most ``concurrency``
writes are under way at once.
A 429 (API Priority and Fairness, with Retry-After) or a 5xx pauses every write: for the time the
server asked, else for a backoff that doubles up to ``MAX_PAUSE``. Callers keep what they failed to
write and try again later, so a slower budget only makes counts appear later, never lost.

The default, 50 writes/s with bursts of 100 per replica, is chosen from what a finding write costs
the control plane (bench/write_cost_bench.py, the README's table): at full use about 40% of a core of
kube-apiserver and 5% of etcd on a 2-core machine, against 80% and 10% at 100 writes/s. Report writers
ship 20/30 (controller-runtime's default, Trivy operator) and 20/50 (Kyverno); a detection engine has
more reason to write fast, a new attacker's finding, and API Priority and Fairness still shields the
API server (its 429s pause every write here).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from enum import IntEnum

MAX_PAUSE = 30.0
EVENT_DELAY = 10.0


class Priority(IntEnum):
    NEW = 0
    UPDATE = 1
    EVENT = 2


class WriteBudget:
    def __init__(self, qps: float = 50.0, burst: int = 100, concurrency: int = 4) -> None:
        self.qps, self.burst = qps, burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.paused_until = 0.0
        self.backoff = 0.0
        self.writes: Counter[tuple[str, str]] = Counter()  # (kind, result) -> writes; result "ok" or a status
        self.throttled = 0  # 429 and 5xx answers
        self._queue: list[tuple[bool, float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._timer: asyncio.TimerHandle | None = None
        self.concurrency, self.under_way = concurrency, 0

    @property
    def waiting(self) -> int:
        """Writes waiting for a token."""
        return sum(not f.done() for *_, f in self._queue)

    @asynccontextmanager
    async def slot(self, kind: str, priority: Priority, since: float | None = None) -> AsyncIterator[None]:
        """Wait for a token and a free slot, then write; the outcome is counted in ``writes``.

        One queue hands out both, so a token is spent when its write is sent: writes held up by a slow
        API server do not pile up tokens and then go out together."""
        await self._token(priority, time.monotonic() if since is None else since)
        try:
            yield
        except Exception as exc:
            status = getattr(exc, "status", None)
            self.writes[(kind, str(status or type(exc).__name__))] += 1
            self._answered(status, getattr(exc, "headers", None))
            raise
        else:
            self.writes[(kind, "ok")] += 1
            self.backoff = 0.0
        finally:
            self.under_way -= 1
            self._hand_out()

    def _answered(self, status: int | None, headers: object) -> None:
        """A failed write: pause everyone on 429 (as long as Retry-After says) and on a 5xx (backing off)."""
        if status is None or (status != 429 and status < 500):
            return
        self.throttled += 1
        retry = _retry_after(headers)
        if retry is None:
            self.backoff = min(max(self.backoff * 2, 1.0), MAX_PAUSE)
            retry = self.backoff
        self.paused_until = max(self.paused_until, time.monotonic() + min(retry, MAX_PAUSE))

    async def _token(self, priority: Priority, since: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        rank = (priority != Priority.NEW, since + (EVENT_DELAY if priority == Priority.EVENT else 0.0))
        heapq.heappush(self._queue, (*rank, next(self._order), future))
        self._hand_out()
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():  # handed a token and a slot, then cancelled
                self.tokens, self.under_way = self.tokens + 1, self.under_way - 1
                self._hand_out()
            raise

    def _hand_out(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.qps)
        self.stamp = now
        queue = self._queue
        while queue and queue[0][3].done():  # cancelled while waiting
            heapq.heappop(queue)
        while queue and self.tokens >= 1 and now >= self.paused_until and self.under_way < self.concurrency:
            future = heapq.heappop(queue)[3]
            if not future.done():
                self.tokens, self.under_way = self.tokens - 1, self.under_way + 1
                future.set_result(None)
        if queue and self._timer is None and self.under_way < self.concurrency:  # else a write's end hands out
            delay = max(self.paused_until - now, (1 - self.tokens) / self.qps, 0.001)
            self._timer = asyncio.get_running_loop().call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        self._hand_out()


def _retry_after(headers: object) -> float | None:
    value = headers.get("Retry-After") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
