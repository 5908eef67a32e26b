#!/usr/bin/env python3
"""Benchmark: is aghd flat with size? The same figures on a small and a
large database (by default 1,000 and 1,000,000 tasks with their runs,
claims, sessions and events, built by ``bench/dashboard.py``'s builder):

- start-up: from spawning ``aghd`` to its first answer (``server.info``),
  after a clean stop and on a file it has never checked (the integrity
  check reads every page);
- claim→complete throughput, 16 agent processes, one call per cycle;
- a ``tasks.list`` page (unfiltered, and by status), ``observe.dashboard``
  and ``observe.inbox``, p50 and p95;
- aghd's resident memory after all of it.

    python bench/scale.py                            # 1k and 1M tasks
    python bench/scale.py --large 200000 --keep /tmp/scale   # keeps the built files

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from claim_complete import fill, run_processes  # noqa: E402
from dashboard import build, percentile, time_calls  # noqa: E402
from jsonrpc import Conn  # noqa: E402

ROOT = os.path.dirname(HERE)
BENCH_CHANNEL = "scale-bench"


def start(workdir: str, db: str) -> tuple[subprocess.Popen[bytes], str, float]:
    """aghd on ``db``; the seconds until it answered its first request."""
    sock = os.path.join(workdir, "agh.sock")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "aghd", "--socket", sock, "--db", db, "--log-level", "WARNING"],
        cwd=ROOT,
    )
    while True:
        try:
            conn = Conn(sock)
            conn.call("server.info", {})
            conn.close()
            return proc, sock, time.perf_counter() - t0
        except (OSError, FileNotFoundError, ConnectionRefusedError):
            if proc.poll() is not None or time.perf_counter() - t0 > 60:
                raise SystemExit("aghd did not start") from None
            time.sleep(0.005)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def measure(workdir: str, db: str, calls: int, seconds: float) -> dict[str, Any]:
    # A new file: the first start runs the integrity check; the second,
    # after a clean stop, is the everyday start.
    proc, sock, checked = start(workdir, db)
    proc.terminate()
    proc.wait(timeout=60)
    proc, sock, startup = start(workdir, db)
    try:
        out: dict[str, Any] = {"startup_s": startup, "checked_startup_s": checked}
        conn = Conn(sock)
        totals = conn.call("observe.dashboard", {})["dashboard"]["totals"]
        out["tasks"], out["runs"] = totals["tasks_total"], totals["runs_total"]
        cases: list[tuple[str, str, dict[str, Any]]] = [
            ("tasks.list page", "tasks.list", {"limit": 50}),
            ("tasks.list page, status", "tasks.list", {"limit": 50, "status": "completed"}),
            ("observe.dashboard", "observe.dashboard", {}),
            ("observe.inbox", "observe.inbox", {"owner_kind": "human", "owner_ref": "alice"}),
        ]
        for label, method, params in cases:
            times = time_calls(conn, method, params, calls)
            out[label] = (percentile(times, 50), percentile(times, 95))
        conn.close()
        # The same fresh work on both databases, on a channel of its own: a
        # small one has too few queued runs for a measurement, and the large
        # one's backlog (runs queued over two hours at every priority) would
        # otherwise come first and make this a different workload.
        asyncio.run(fill(sock, int(4000 * seconds * 1.5), BENCH_CHANNEL))
        rate, lat = run_processes(sock, 16, seconds, "one", BENCH_CHANNEL)
        out["cycles/s"] = rate
        out["cycle p99"] = percentile(lat, 99)
        out["rss_mb"] = rss_mb(proc.pid)
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--large", type=int, default=1_000_000)
    ap.add_argument("--events-per-task", type=float, default=2.0)
    ap.add_argument("--calls", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--keep", metavar="DIR", help="build (or reuse) the databases in DIR")
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="aghs")
    keep = args.keep or workdir
    os.makedirs(keep, exist_ok=True)
    try:
        results = {}
        for size in (args.small, args.large):
            db = os.path.join(keep, f"scale-{size}.db")
            if not os.path.exists(db):
                t0 = time.perf_counter()
                build(db, size, int(size * args.events_per_task))
                print(f"built {size:,} tasks in {time.perf_counter() - t0:.0f} s", flush=True)
            # A copy per run: the throughput test completes queued runs.
            run_db = os.path.join(workdir, "run.db")
            shutil.copyfile(db, run_db)
            results[size] = measure(workdir, run_db, args.calls, args.seconds)
            for suffix in ("", "-wal", "-shm"):
                if os.path.exists(run_db + suffix):
                    os.unlink(run_db + suffix)
        small, large = results[args.small], results[args.large]
        print(f"{'':28} {small['tasks']:>12,} tasks {large['tasks']:>12,} tasks   target")
        for key, label in (("startup_s", "start-up"), ("checked_startup_s", "start-up, checked")):
            print(f"{label:28} {small[key]:>14.2f} s {large[key]:>14.2f} s   ≤ 1 s")
        ratio = large["cycles/s"] / small["cycles/s"]
        print(
            f"{'16 agents, one call':28} {small['cycles/s']:>10,.0f} cyc/s"
            f" {large['cycles/s']:>10,.0f} cyc/s   within 10% ({ratio:.2f}x)"
        )
        targets = {
            "tasks.list page": 20,
            "tasks.list page, status": 20,
            "observe.dashboard": 50,
            "observe.inbox": 50,
        }
        for label, target in targets.items():
            (s50, s95), (l50, l95) = small[label], large[label]
            print(
                f"{label:28} {s50:>7.1f}/{s95:<6.1f}ms {l50:>7.1f}/{l95:<6.1f}ms"
                f"   ≤ {target} ms (p50/p95)"
            )
        memory = f"{small['rss_mb']:>13.0f} MB {large['rss_mb']:>13.0f} MB"
        print(f"{'aghd resident memory':28} {memory}   ≤ 150 MB")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
