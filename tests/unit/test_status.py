"""The detection's status writer: unchanged statuses are not written again; its place in the budget."""

import asyncio
import logging
import time

import pytest

from auditwatch.api.models import AuditDetectionStatus, CounterStatus
from auditwatch.kube.client import UNREACHABLE, ApiException
from auditwatch.runtime.detection import _idle
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


@pytest.mark.asyncio
async def test_a_chore_that_met_an_api_error_runs_again_and_any_other_error_ends_the_generation(caplog):
    async def fails(exc):
        raise exc

    chores = {
        "status": asyncio.create_task(fails(ApiException(status=UNREACHABLE, reason="API server unreachable"))),
        "retire": asyncio.create_task(fails(KeyError("bug"))),
    }
    await asyncio.gather(*chores.values(), return_exceptions=True)
    logger = logging.getLogger("test")
    assert _idle(chores, "status", logger) and "status: 0 API server unreachable" in caplog.text
    with pytest.raises(KeyError):
        _idle(chores, "retire", logger)
    assert _idle(chores, "expire", logger)  # never started
