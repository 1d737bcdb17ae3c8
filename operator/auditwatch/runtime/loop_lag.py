"""How late the event loop runs what is due: the time evaluation (on the loop) holds up writes and watches.

A task asks to wake every ``INTERVAL`` seconds; how much later than asked it wakes is the lag any
coroutine would have met then (a finding write due, a watch event to take in). Kept as a histogram
for the metrics (``auditwatch_event_loop_lag_seconds``), and the largest since the operator started.
"""

from __future__ import annotations

import asyncio
import bisect
import time

INTERVAL = 0.05
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LoopLag:
    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)  # per bucket (not cumulative), the last one past every bound
        self.total = 0.0
        self.largest = 0.0

    def observe(self, lag: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, lag)] += 1
        self.total += lag
        self.largest = max(self.largest, lag)

    @property
    def observations(self) -> int:
        return sum(self.counts)

    async def run(self) -> None:
        while True:
            asked = time.monotonic()
            await asyncio.sleep(INTERVAL)
            self.observe(max(0.0, time.monotonic() - asked - INTERVAL))
