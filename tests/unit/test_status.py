"""The detection's status writer: unchanged statuses are not written again; its place in the budget."""

import logging
import time

import pytest

from auditwatch.api.models import AuditDetectionStatus, CounterStatus
from auditwatch.runtime.status import StatusWriter

pytestmark = pytest.mark.asyncio


class FakeKube:
    def __init__(self):
        self.writes: list[tuple[dict, float]] = []

    async def patch_detection_status(self, namespace, name, status, since=None):
        self.writes.append((status, since))


async def test_a_status_waits_in_the_budget_since_it_was_last_written():
    kube = FakeKube()
    created = time.monotonic()
    writer = StatusWriter(kube, "sec", "seed", AuditDetectionStatus(), logging.getLogger("test"))
    await writer.write(AuditDetectionStatus(counters=CounterStatus(lines=1)))
    first_done = time.monotonic()
    await writer.write(AuditDetectionStatus(counters=CounterStatus(lines=1)))  # unchanged: not written
    await writer.write(AuditDetectionStatus(counters=CounterStatus(lines=2)))
    [(_, since_first), (second, since_second)] = kube.writes
    assert second["counters"]["lines"] == 2
    assert created <= since_first <= since_second <= first_done  # not "now": a backlog would starve it
