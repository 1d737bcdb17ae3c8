"""The write budget: priorities, then the longest wait; the rate; concurrency; pauses on 429 and 5xx."""

import asyncio
import time

import pytest

from auditwatch.kube.budget import EVENT_DELAY, Priority, WriteBudget
from auditwatch.kube.client import ApiException

pytestmark = pytest.mark.asyncio


async def granted(budget, queued):
    """The order in which writes queued behind one that holds the only token are let through."""
    order: list[str] = []

    async def write(name, priority, since):
        async with budget.slot("w", priority, since):
            order.append(name)

    first = asyncio.create_task(write("first", Priority.UPDATE, 0.0))  # takes the one token
    await asyncio.sleep(0)
    await asyncio.gather(first, *(asyncio.create_task(write(*q)) for q in queued))
    return order


async def test_new_findings_go_first_then_the_longest_waiting_update():
    budget = WriteBudget(qps=50, burst=1)
    queued = [("event", Priority.EVENT, 1.0), ("young", Priority.UPDATE, 9.0), ("old", Priority.UPDATE, 2.0),
              ("new", Priority.NEW, 10.0)]  # fmt: skip
    assert await granted(budget, queued) == ["first", "new", "old", "young", "event"]
    assert budget.writes[("w", "ok")] == 5


async def test_an_event_waits_behind_younger_counts_only_for_a_while():
    queued = [("update", Priority.UPDATE, 100.0), ("event long waiting", Priority.EVENT, 100.0 - EVENT_DELAY - 1),
              ("event", Priority.EVENT, 99.0)]  # fmt: skip
    assert await granted(WriteBudget(qps=50, burst=1), queued) == ["first", "event long waiting", "update", "event"]


async def test_the_rate_is_kept_after_the_burst():
    budget = WriteBudget(qps=100, burst=1)
    started = time.monotonic()

    async def write():
        async with budget.slot("w", Priority.UPDATE):
            pass

    await asyncio.gather(*(write() for _ in range(11)))
    assert time.monotonic() - started >= 0.1 - 0.005  # ten writes beyond the burst at 100/s (timer slack)


async def test_at_most_concurrency_writes_are_under_way():
    budget = WriteBudget(qps=1000, burst=100, concurrency=3)
    under_way, most = 0, 0

    async def write():
        nonlocal under_way, most
        async with budget.slot("w", Priority.UPDATE):
            under_way += 1
            most = max(most, under_way)
            await asyncio.sleep(0.01)
            under_way -= 1

    await asyncio.gather(*(write() for _ in range(12)))
    assert most == 3


async def test_a_429_pauses_every_write_for_its_retry_after():
    budget = WriteBudget(qps=1000, burst=100)
    with pytest.raises(ApiException):
        async with budget.slot("finding_status", Priority.UPDATE):
            exc = ApiException(status=429, reason="TooManyRequests")
            exc.headers = {"Retry-After": "0.2"}
            raise exc
    refused = time.monotonic()
    async with budget.slot("finding_status", Priority.NEW):
        waited = time.monotonic() - refused
    assert waited >= 0.2 - 0.005
    assert budget.throttled == 1 and budget.writes[("finding_status", "429")] == 1


async def test_5xx_answers_back_off_doubling_and_a_success_resets_it():
    budget = WriteBudget(qps=1000, burst=100)
    for expected in (1.0, 2.0, 4.0):
        with pytest.raises(ApiException):
            async with budget.slot("w", Priority.UPDATE):
                raise ApiException(status=503, reason="ServiceUnavailable")
        assert budget.backoff == expected
        budget.paused_until = 0.0  # not waiting it out in a unit test
    async with budget.slot("w", Priority.UPDATE):
        pass
    assert budget.backoff == 0.0 and budget.throttled == 3


async def test_a_writer_cancelled_while_waiting_takes_no_token():
    budget = WriteBudget(qps=10, burst=1)
    async with budget.slot("w", Priority.UPDATE):
        pass
    waiting = asyncio.create_task(budget.slot("w", Priority.UPDATE).__aenter__())
    await asyncio.sleep(0.01)
    assert budget.waiting == 1
    waiting.cancel()
    await asyncio.gather(waiting, return_exceptions=True)
    assert budget.waiting == 0
