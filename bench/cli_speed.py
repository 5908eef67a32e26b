#!/usr/bin/env python3
"""Benchmark: how long the ``agh`` command takes, against a bare interpreter.

Times, as the median of N runs each (default 7), on this machine in this run:

- ``python -c pass`` (the floor: interpreter start-up),
- ``agh --help`` (the command table only),
- ``agh ls`` on 100 tasks against a real ``aghd`` subprocess,
- ``agh agent claim --wait 0`` finding nothing (a shell agent's idle poll),

and prints each with its ratio to the floor. The issue's targets: ``--help``
≤ 6×, ``ls`` on 100 tasks ≤ 8×. ``agh`` is the installed console script
when it is on PATH next to this interpreter (what users run), else
``python -m agh.cli``. Not a test: numbers depend on the machine; record
them in docs/PERFORMANCE.md.

    python bench/cli_speed.py
    python bench/cli_speed.py --runs 15
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

TARGETS = {"agh --help": 6.0, "agh ls (100 tasks)": 8.0}


def agh_command() -> list[str]:
    script = os.path.join(os.path.dirname(sys.executable), "agh")
    if os.path.exists(script) or shutil.which("agh"):
        return [script if os.path.exists(script) else "agh"]
    return [sys.executable, "-m", "agh.cli"]


def median_seconds(argv: list[str], runs: int, env: dict[str, str], ok: tuple[int, ...]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if proc.returncode not in ok:
            raise SystemExit(f"{argv} exited {proc.returncode}: {proc.stderr.decode()}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per command (median)")
    args = parser.parse_args()

    from agh.client import Client

    workdir = tempfile.mkdtemp(prefix="agh-cli-")
    sock = os.path.join(workdir, "agh.sock")
    env = {**os.environ, "AGH_SOCKET": sock, "AGH_AUTOSTART": "0"}
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aghd", "--socket", sock, "--db", os.path.join(workdir, "db")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(sock):
            if time.monotonic() > deadline or daemon.poll() is not None:
                raise SystemExit("aghd did not start")
            time.sleep(0.05)
        with Client(sock) as client:
            for n in range(100):
                client.tasks_create(f"benchmark task number {n}", priority="medium")
        agh = agh_command()
        floor = median_seconds([sys.executable, "-c", "pass"], args.runs, env, (0,))
        rows = [
            ("python -c pass", floor),
            ("agh --help", median_seconds([*agh, "--help"], args.runs, env, (0,))),
            ("agh ls (100 tasks)", median_seconds([*agh, "ls"], args.runs, env, (0,))),
            (
                "agh agent claim (no work)",
                median_seconds([*agh, "agent", "claim"], args.runs, env, (6,)),
            ),
        ]
    finally:
        daemon.terminate()
        daemon.wait(30)
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"agh = {' '.join(agh)}; median of {args.runs} runs")
    print(f"{'command':<28}{'ms':>8}{'ratio':>8}  target")
    for name, seconds in rows:
        ratio = seconds / floor
        target = TARGETS.get(name)
        verdict = "" if target is None else f"≤ {target:g}× {'ok' if ratio <= target else 'MISSED'}"
        print(f"{name:<28}{seconds * 1000:>8.1f}{ratio:>7.2f}×  {verdict}")


if __name__ == "__main__":
    main()
