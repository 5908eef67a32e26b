#!/usr/bin/env python3
"""Run a benchmark in two checkouts, interleaved, and compare medians.

A change that must not cost anything ("behaviour unchanged") is measured
against the commit before it on the same machine in the same minutes: N
rounds, each running the benchmark in this checkout and then in the other
(a `git worktree` of the earlier commit), so a noisy neighbour hits both.
Every number of every output line is collected per line (the line with its
numbers blanked is its key) and the medians are printed side by side.

    git worktree add /tmp/base 0eabced
    python bench/rounds.py --other /tmp/base --rounds 6 -- claim_complete.py --agents 16
    python bench/rounds.py --other /tmp/base -- dashboard.py --tasks 20000 --events 200000

Not a test: numbers depend on the machine; record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def run(checkout: str, script: str, args: list[str]) -> list[str]:
    proc = subprocess.run(
        [sys.executable, os.path.join(checkout, "bench", script), *args],
        cwd=checkout,  # its own aghd and agh, not this checkout's
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"{script} in {checkout} failed:\n{proc.stderr}")
    return proc.stdout.splitlines()


def collect(lines: list[str], into: dict[str, list[list[float]]]) -> None:
    for line in lines:
        numbers = [float(n.replace(",", "")) for n in NUMBER.findall(line)]
        if numbers:
            into.setdefault(NUMBER.sub("#", line), []).append(numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--other", required=True, help="the checkout to compare against")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("bench", nargs=argparse.REMAINDER, help="-- SCRIPT ARGS...")
    args = parser.parse_args()
    bench = [a for a in args.bench if a != "--"]
    script, rest = bench[0], bench[1:]
    results: dict[str, dict[str, list[list[float]]]] = {"this": {}, "other": {}}
    for n in range(args.rounds):
        for name, checkout in (("this", ROOT), ("other", args.other)):
            collect(run(checkout, script, rest), results[name])
        print(f"round {n + 1} of {args.rounds} done", file=sys.stderr)
    print(f"{script} {' '.join(rest)}: medians of {args.rounds} interleaved rounds")
    print(f"this = {ROOT}, other = {args.other}")
    for key, runs in results["this"].items():
        other = results["other"].get(key, [])

        def medians(rows: list[list[float]]) -> str:
            if not rows:
                return "-"
            cols = zip(*rows, strict=False)
            return " / ".join(f"{statistics.median(c):g}" for c in cols)

        print(f"{key}\n    this:  {medians(runs)}\n    other: {medians(other)}")


if __name__ == "__main__":
    main()
