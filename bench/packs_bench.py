"""Benchmark: what each shipped pack costs the streaming engine (one reader, as the operator runs a
detection) over a generated audit log (bench/generate.py: controllers, kubelets, users, 2% anonymous).

For each pack (the seed, ESCU, Sigma, Falco): the detections' evaluation time over the log, one by one
(the fastest of --repeat passes, lines already in memory: the engine's work, not the disk's), as lines per
second per detection and in all, and the share of lines each prefilter let through to be parsed. Prints
figures, never asserts them.

    python bench/packs_bench.py --events 300000 [--pack falco]      # make bench-packs
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from auditwatch.engine.evaluate import Evaluator
from auditwatch.rules.language import rule_plan

ROOT = Path(__file__).resolve().parents[1]
PACKS = {
    "seed": [ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"],
    **{
        pack: sorted(p for p in (ROOT / "manifests/detections" / pack).glob("*.yaml") if p.name != "kustomization.yaml")
        for pack in ("escu", "sigma", "falco")
    },
}


def evaluate(path: Path, data: bytes, repeat: int) -> tuple[float, int, int, int]:
    """(seconds, lines, lines parsed, rows) of one detection over ``data``."""
    plan = rule_plan(yaml.safe_load(path.read_text())["spec"]).plan
    best, parsed, rows = float("inf"), 0, 0
    geoip = os.environ.get("AUDITWATCH_GEOIP_DB")
    for _ in range(repeat):
        ev = Evaluator(plan, geoip_db=geoip)
        start = time.perf_counter()
        rows = sum(1 for _ in ev.records(data, origin="bench"))
        best = min(best, time.perf_counter() - start)
        parsed = ev.counters.lines - ev.counters.skipped
    return best, ev.counters.lines, parsed, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--pack", action="append", choices=list(PACKS), help="only these packs (default: all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "audit.log"
        subprocess.run([sys.executable, str(ROOT / "bench/generate.py"), "--events", str(args.events),
                        "-o", str(log)], check=True)  # fmt: skip
        data = log.read_bytes()
    print(f"{args.events:,} events, {len(data) / 1e6:.0f} MB; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores; fastest of {args.repeat}")  # fmt: skip
    print("| pack | detections | lines/s per detection (median, slowest) | whole pack, one core | lines parsed "
          "(median) | rows |")  # fmt: skip
    print("|---|---|---|---|---|---|")
    for pack, paths in PACKS.items():
        if args.pack and pack not in args.pack:
            continue
        results = []
        for path in paths:
            if "cloudwatch" in path.read_text() and pack == "escu":
                continue  # the EKS ones read CloudWatch's export: same engine, other input
            if "iplocation" in path.read_text() and not os.environ.get("AUDITWATCH_GEOIP_DB"):
                continue
            results.append(evaluate(path, data, args.repeat))
        rates = sorted(lines / seconds for seconds, lines, _, _ in results)
        shares = sorted(parsed / lines for _, lines, parsed, _ in results)
        total = sum(seconds for seconds, *_ in results)
        rows = sum(r for *_, r in results)
        print(f"| {pack} | {len(results)} | {rates[len(rates) // 2] / 1e6:.2f}M, {rates[0] / 1e6:.2f}M | "
              f"{args.events / total / 1e3:.0f}k lines/s | {shares[len(shares) // 2]:.1%} | {rows:,} |")  # fmt: skip


if __name__ == "__main__":
    main()
