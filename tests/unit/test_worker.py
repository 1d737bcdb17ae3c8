"""Evaluation in a worker process: each detection gets the records and counters an evaluator here gives."""

import asyncio
import os
import signal

import pytest

from auditwatch.engine.evaluate import Counters
from auditwatch.engine.pipeline import EngineError
from auditwatch.engine.stream import TIME_FIELD
from auditwatch.engine.worker import Recipe, Worker
from auditwatch.spl import plan_search
from corpus import SEARCHES, SHIPPED, detection_plan, generated_events, geoip_file, lines_of  # noqa: F401

pytestmark = pytest.mark.asyncio


def chunks(data: bytes, size: int) -> list[bytes]:
    """``data`` in chunks of whole lines of about ``size`` bytes, as the tails hand them out."""
    out, start = [], 0
    while start < len(data):
        end = data.find(b"\n", start + size)
        end = len(data) if end < 0 else end + 1
        out.append(data[start:end])
        start = end
    return out


def counted(c: Counters) -> tuple:
    return c.lines, c.skipped, c.events, c.malformed, c.matched, c.samples


@pytest.fixture
async def worker():
    w = Worker()
    await w.start()
    yield w
    await w.close()


async def test_every_shipped_rule_gets_the_same_records_and_counters_as_an_evaluator_here(worker, geoip):
    plans = [detection_plan(p) for p in SHIPPED] + [plan_search(s) for s in SEARCHES]
    recipes = dict(enumerate(Recipe(p, frozenset([TIME_FIELD]), geoip) for p in plans))
    here = {key: recipe.evaluator() for key, recipe in recipes.items()}
    totals = {key: Counters() for key in recipes}
    data = lines_of(generated_events(7, 3000), 7)
    parts = chunks(data, 64 * 1024)
    assert len(parts) >= 6
    late, leaver = set(list(recipes)[::3]), 1
    matched = 0
    for i, chunk in enumerate(parts):
        # A third of the rules join at the third chunk; one leaves at the fourth (and is forgotten).
        members = {k: r for k, r in recipes.items() if (i >= 2 or k not in late) and (i < 3 or k != leaver)}
        got = await worker.evaluate(memoryview(bytearray(chunk)), "audit.log", None, members)
        assert got.keys() == members.keys()
        for key, evaluated in got.items():
            assert not evaluated.error
            assert evaluated.records == list(here[key].records(chunk, "audit.log")), (SHIPPED + SEARCHES)[key]
            totals[key].add(evaluated.counters, line_offset=totals[key].lines)
            matched += len(evaluated.records)
    for key, evaluator in here.items():
        assert counted(totals[key]) == counted(evaluator.counters)
    assert matched > 1000 and any(t.samples for t in totals.values())  # rows and malformed lines compared


async def test_a_rule_that_cannot_be_evaluated_fails_alone(worker, tmp_path):
    seed, located = detection_plan(SHIPPED[0]), plan_search("verb=get | iplocation sourceIPs{} | stats count BY City")
    members = {1: Recipe(seed), 2: Recipe(located, geoip_db=str(tmp_path / "missing.mmdb"))}
    data = lines_of(generated_events(3, 200), 3)
    got = await worker.evaluate(data, "audit.log", None, members)
    assert got[1].records == list(Recipe(seed).evaluator().records(data, "audit.log")) and got[1].records
    assert "missing.mmdb" in got[2].error and not got[2].records


async def test_the_worker_ends_with_its_input_and_a_dead_worker_is_an_error(worker):
    process = worker._process
    assert process is not None
    process.stdin.close()  # as when the operator dies, however it dies: the kernel closes the pipe
    assert await asyncio.wait_for(process.wait(), 10) == 0
    with pytest.raises(EngineError, match="evaluation worker"):
        await worker.evaluate(b"{}\n", "audit.log", None, {1: Recipe(detection_plan(SHIPPED[0]))})


async def test_a_killed_worker_is_an_error_naming_its_signal():
    w = Worker()
    await w.start()
    assert w._process is not None
    os.kill(w._process.pid, signal.SIGKILL)
    with pytest.raises(EngineError, match="signal 9"):
        await w.evaluate(b"{}\n", "audit.log", None, {1: Recipe(detection_plan(SHIPPED[0]))})
    await w.close()
