"""The layers the import contract (pyproject.toml) states, seen from a running interpreter."""

import subprocess
import sys


def loaded_after(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('auditwatch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_the_streaming_executor_and_its_prefilter_load_no_rule_language():
    loaded = loaded_after("auditwatch.engine.evaluate, auditwatch.engine.stream")
    assert "auditwatch.engine.prefilter" in loaded and "auditwatch.ir.planner" in loaded
    assert not {m for m in loaded if m.startswith(("auditwatch.spl", "auditwatch.rules"))}


def test_a_plan_built_by_hand_runs_without_any_front_end():
    """What a second front end (Sigma, Falco) would do: build a Plan, hand it to the executor."""
    code = """
import sys
from auditwatch.engine.evaluate import Evaluator
from auditwatch.engine.pipeline import Table
from auditwatch.ir.plan import Agg, Aggregate, Compare, Filter, Plan
plan = Plan((Filter(Compare("verb", "=", "get")),), Aggregate((Agg("count", None, "count"),), ("user.username",)))
ev = Evaluator(plan)
table = Table(ev.pipeline)
events = [("GET", "a"), ("list", "a"), ("get", "b")]
lines = b"".join(b'{"verb":"%s","user":{"username":"%s"}}\\n' % (v.encode(), u.encode()) for v, u in events)
for _, _, r in ev.records(lines):
    table.add(r)
print(table.rows(), ev.prefilter.literals, any(m.startswith("auditwatch.spl") for m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[{'user.username': 'a', 'count': 1}, {'user.username': 'b', 'count': 1}] ('get',) False"
