"""Benchmark: the seed ESCU rule via `auditwatch scan` against jq and `wc -l` on the same generated log.

Prints wall-clock seconds (the fastest of several runs of each command), events/s, the ratios, peak RSS of
each scan, and checks that the prefiltered rows equal the unfiltered rows and the row count agrees with jq.
Never asserts timings.

    python bench/seed_vs_jq.py --events 300000            # also runs 600000 to show memory stays flat
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
BASE = '`kube_audit` user.username="system:anonymous" user.groups{} IN ("system:unauthenticated")'
JQ = 'select(.user.username=="system:anonymous" and ((.user.groups//[])|index("system:unauthenticated")))'


def run(cmd: list[str], out_path: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run, stdout to ``out_path``."""
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL, env=env and {**os.environ, **env})
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return time.perf_counter() - started, usage.ru_maxrss


def best(cmd: list[str], repeat: int, out_path: Path, env: dict[str, str] | None = None) -> tuple[float, int]:
    """The fastest of ``repeat`` runs, with the largest peak RSS seen."""
    runs = [run(cmd, out_path, env) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5, help="runs of each scan; the fastest counts (5)")
    ap.add_argument("--jq-repeat", type=int, default=3, help="runs of jq; the fastest counts (3)")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    args = ap.parse_args()
    # Byte-compile the package first, as installing a wheel does: with PYTHONDONTWRITEBYTECODE set (it
    # is on these machines) an editable install would otherwise compile every module on every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "operator/auditwatch")], check=True)
    # The command as users run it: the console script beside this interpreter (`python -m` adds runpy).
    script = Path(sys.executable).with_name("auditwatch")
    scan = [str(script) if script.exists() else sys.executable, *([] if script.exists() else ["-m", "auditwatch"])]
    work = Path(args.workdir)
    # The seed rule's table grows with the anonymous requests (it groups by timestamp); this variant
    # groups them by verb, a bounded table, so its peak RSS shows what streaming alone costs.
    bounded = work / "auditwatch-bench-bounded.yaml"
    bounded.write_text(
        json.dumps(
            {
                "apiVersion": "auditwatch.io/v1alpha1",
                "kind": "AuditDetection",
                "metadata": {"name": "bounded"},
                "spec": {"search": f"{BASE} | stats count BY verb"},
            }
        )
    )
    scan += ["scan", "-d"]
    for n in (args.events, args.events * 2):
        log = work / f"auditwatch-bench-{n}.log"
        if not log.exists():
            subprocess.run(
                [sys.executable, str(ROOT / "bench/generate.py"), "--events", str(n), "-o", str(log)],
                check=True,
            )
        size = log.stat().st_size
        print(f"\n== {n:,} events, {size / 1e6:.0f} MB ({size / n:.0f} bytes/event), 2% anonymous")
        out = {k: work / f"auditwatch-bench-{k}.out" for k in ("wc", "jq", "fast", "slow")}
        wc, _ = best(["wc", "-l", str(log)], args.repeat, out["wc"])
        jq, _ = best(["jq", "-c", JQ, str(log)], args.jq_repeat, out["jq"])
        fast, rss = best([*scan, str(SEED), str(log)], args.repeat, out["fast"])
        _, bounded_rss = best([*scan, str(bounded), str(log)], 1, out["slow"])
        fast_out, slow_out = out["fast"], out["slow"]
        if n == args.events:
            slow, _ = best([*scan, str(SEED), "--no-prefilter", str(log)], 1, slow_out)
            same = fast_out.read_bytes() == slow_out.read_bytes()
            print(
                f"auditwatch scan --no-prefilter: {slow:6.2f} s  ({n / slow:,.0f} events/s); "
                f"rows identical to the prefiltered run: {same}"
            )
            # As installed without a C compiler: the candidate search in Python.
            python, _ = best([*scan, str(SEED), str(log)], 3, slow_out, env={"AUDITWATCH_NATIVE": "0"})
            same = fast_out.read_bytes() == slow_out.read_bytes()
            print(
                f"auditwatch scan, Python candidate search (AUDITWATCH_NATIVE=0): {python:6.2f} s  "
                f"({n / python:,.0f} events/s); rows identical to the native run: {same}"
            )
        rows = fast_out.read_bytes().count(b"\n")
        print(f"wc -l:           {wc:6.2f} s  ({n / wc:,.0f} lines/s)")
        jq_rows = out["jq"].read_bytes().count(b"\n")
        print(f"jq select:       {jq:6.2f} s  ({n / jq:,.0f} events/s), {jq_rows:,} events")
        print(
            f"auditwatch scan: {fast:6.2f} s  ({n / fast:,.0f} events/s), {rows:,} rows, peak RSS {rss / 1024:.0f} MiB"
        )
        print(f"ratio: {jq / fast:.1f}x faster than jq, {fast / wc:.1f}x the time of wc -l")
        print(f"peak RSS of the same search grouped BY verb (a bounded table): {bounded_rss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
