"""Benchmark: `auditwatch hunt` on DuckDB and Spark against the streaming `auditwatch scan` and a hand-written
DuckDB query.

Two searches over generated logs (bench/generate.py, 2% anonymous): the seed rule (selective: the
prefilter skips 98% of lines) and a search that must parse every line (`stats count BY verb
objectRef.resource user.username`). Each command's wall time is the fastest of --repeat runs (Spark: one
run each with 1 and 2 cores, local[N]); the rows of hunt and scan are compared. Prints figures, never
asserts them.

    python bench/hunt_bench.py --events 300000 --events 3000000      # make bench-hunt
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "manifests/detections/kubernetes-aws-detect-suspicious-kubectl-calls.yaml"
FULL = "`kube_audit` | stats count BY verb objectRef.resource user.username"
# The anchors: what someone would write by hand in DuckDB for the same two searches.
HAND_SEED = """SELECT count(*) FROM read_ndjson_objects({files}) WHERE
  json_extract_string(json, '$.user.username') = 'system:anonymous'
  AND list_contains(json_extract_string(json, '$.user.groups[*]'), 'system:unauthenticated')"""
HAND_FULL = """SELECT json_extract_string(json, '$.verb') v, json_extract_string(json, '$.objectRef.resource') r,
  json_extract_string(json, '$.user.username') u, count(*) FROM read_ndjson_objects({files})
  WHERE v IS NOT NULL AND r IS NOT NULL AND u IS NOT NULL GROUP BY ALL"""


def timed(cmd: list[str], out: Path, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        with open(out, "wb") as f:
            subprocess.run(cmd, stdout=f, stderr=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - started)
    return best


def hand(sql: str, log: Path, repeat: int) -> float:
    code = f"import duckdb; duckdb.connect().execute({sql.format(files=repr(str(log)))!r}).fetchall()"
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], stderr=subprocess.DEVNULL, check=True)  # no progress bar
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, action="append", help="events in a log (repeatable; 300000 and 3000000)")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each command; the fastest counts (3)")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    args = ap.parse_args()
    work = Path(args.workdir)
    script = Path(sys.executable).with_name("auditwatch")
    full = work / "auditwatch-hunt-full.yaml"
    full.write_text(
        json.dumps(
            {
                "apiVersion": "auditwatch.io/v1alpha1",
                "kind": "AuditDetection",
                "metadata": {"name": "full"},
                "spec": {"search": FULL},
            }
        )
    )
    print(f"machine: {os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}")
    for n in args.events or [300_000, 3_000_000]:
        log = work / f"auditwatch-bench-{n}.log"
        if not log.exists():
            subprocess.run(
                [sys.executable, str(ROOT / "bench/generate.py"), "--events", str(n), "-o", str(log)], check=True
            )
        print(f"\n== {n:,} events, {log.stat().st_size / 1e6:,.0f} MB")
        for name, detection, anchor in (("seed (selective)", SEED, HAND_SEED), ("full parse", full, HAND_FULL)):
            scan_out, hunt_out = work / "scan.out", work / "hunt.out"
            t_scan = timed([str(script), "scan", "-d", str(detection), str(log)], scan_out, args.repeat)
            t_hunt = timed([str(script), "hunt", "-d", str(detection), str(log)], hunt_out, args.repeat)
            t_hand = hand(anchor, log, args.repeat)
            same = scan_out.read_bytes() == hunt_out.read_bytes()
            rows = len(scan_out.read_bytes().splitlines())
            spark = []
            for cores in (1, 2):  # whole commands: the JVM's start (about 8 s here) included
                spark_out = work / "spark.out"
                command = [str(script), "hunt", "--engine", "spark", "--spark-master", f"local[{cores}]", "-d"]
                took = timed([*command, str(detection), str(log)], spark_out, 1)
                spark.append(
                    f"spark local[{cores}] {took:6.2f} s (equal: {spark_out.read_bytes() == scan_out.read_bytes()})"
                )
            ratios = f"hunt/hand {t_hunt / t_hand:4.2f}x, scan/hunt {t_scan / t_hunt:4.2f}x"
            timings = f"scan {t_scan:6.2f} s, hunt (duckdb) {t_hunt:6.2f} s, hand-written duckdb {t_hand:6.2f} s"
            print(f"{name:17s} {timings}: {ratios}; {rows:,} rows, equal: {same}; {', '.join(spark)}")


if __name__ == "__main__":
    main()
