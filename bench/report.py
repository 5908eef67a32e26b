#!/usr/bin/env python3
"""The performance report in one command: runs ``bench/claim_complete.py``
(agh against the bare SQLite queue, agents as OS processes) and
``bench/peers.py`` one after the other, draws the plot, and prints the
tables of docs/PERFORMANCE.md's report as Markdown, with the machine they
ran on.

    pip install -e '.[bench]'
    python bench/report.py --plot docs/throughput.png > /tmp/report.md

Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}"
    )


def run(script: str, *args: str) -> None:
    """One benchmark; its own progress lines go to stderr, the report to stdout."""
    subprocess.run(
        [sys.executable, os.path.join(HERE, script), *args], check=True, stdout=sys.stderr
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plot", default="throughput.png", help="where to draw the plot")
    ap.add_argument("--seconds", default="5")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        agh_json, peers_json = (os.path.join(workdir, f"{n}.json") for n in ("agh", "peers"))
        # One after the other, never side by side: each has the machine to itself.
        run("claim_complete.py", "--seconds", args.seconds, "--json", agh_json)
        run("peers.py", "--seconds", args.seconds, "--json", peers_json)
        run("plot.py", agh_json, peers_json, "--out", args.plot)
        with open(agh_json) as f:
            agh = json.load(f)
        with open(peers_json) as f:
            peers = json.load(f)
    raw = agh["raw_one_commit_per_op"]
    print(f"{machine()}, synchronous=FULL.\n")
    print("| what | cycles/s | cycle p50 | cycle p99 | × bare queue |")
    print("|---|---:|---:|---:|---:|")
    print(f"| bare SQLite queue, one commit per operation | {raw:,.0f} | | | 1.00 |")
    ten = agh["raw_ten_per_commit"]
    print(f"| bare SQLite queue, ten cycles per commit | {ten:,.0f} | | | {ten / raw:.2f} |")
    for row in sorted(agh["agh"], key=lambda r: (r["agents"], r["how"])):
        print(
            f"| agh, {row['agents']} agent(s), {row['how'].removeprefix('processes, ')}"
            f" | {row['cycles_s']:,.0f}"
            f" | {row['p50_ms']:.2f} ms | {row['p99_ms']:.2f} ms | {row['cycles_s'] / raw:.2f} |"
        )
    print("\n| peer | cycles/s | weaker in |")
    print("|---|---:|---|")
    for peer in peers["peers"]:
        print(f"| {peer['name']} | {peer['cycles_s']:,.0f} | {peer['weaker']} |")
    print(f"| asyncio NDJSON echo | {peers['echo_requests_s']:,.0f} requests/s | no work at all |")


if __name__ == "__main__":
    main()
