"""The event loop's lag: a coroutine that holds the loop shows as lag, in the histogram and its largest."""

import asyncio
import time

import pytest

from auditwatch.api.settings import Settings
from auditwatch.kube.budget import WriteBudget
from auditwatch.runtime.loop_lag import BUCKETS, LoopLag
from auditwatch.runtime.metrics import Metrics
from auditwatch.runtime.readers import Readers

pytestmark = pytest.mark.asyncio


async def test_a_coroutine_holding_the_loop_is_seen_as_lag():
    lag = LoopLag()
    probe = asyncio.create_task(lag.run())
    await asyncio.sleep(0.2)
    assert lag.observations >= 1
    time.sleep(0.4)  # evaluation that does not yield: the probe's timer waits for it
    await asyncio.sleep(0.2)
    probe.cancel()
    assert lag.largest >= 0.35
    assert sum(lag.counts[BUCKETS.index(0.25) + 1 :]) >= 1  # in the histogram too


async def test_the_lag_is_a_prometheus_histogram():
    metrics = Metrics(WriteBudget(), Readers(Settings()), None)
    for seconds in (0.001, 0.03, 3.0):
        metrics.loop_lag.observe(seconds)
    samples = {
        (s.name, s.labels.get("le")): s.value
        for family in metrics.registry.collect()
        if family.name.startswith("auditwatch_event_loop_lag")
        for s in family.samples
    }
    assert samples[("auditwatch_event_loop_lag_seconds_bucket", "0.005")] == 1
    assert samples[("auditwatch_event_loop_lag_seconds_bucket", "0.05")] == 2
    assert samples[("auditwatch_event_loop_lag_seconds_bucket", "+Inf")] == 3
    assert samples[("auditwatch_event_loop_lag_seconds_count", None)] == 3
    assert samples[("auditwatch_event_loop_lag_max_seconds", None)] == 3.0
