#!/usr/bin/env python3
"""Benchmark: claim→complete cycles/s and latency through a real aghd.

Starts ``aghd`` as a subprocess (synchronous=FULL unless told otherwise) on
a fresh database for each figure and queues enough tasks. Then, for each agent count (1, 4,
16 and 64 by default), runs the agents each **as its own OS process** (as
real agents are: ``bench/agent_proc.py``, a plain stdlib-``json`` client on
its own connection and session), first with two calls per cycle
(``agent.claim_next`` then ``agent.complete``), then with one
(``agent.complete`` with ``next``, PROTOCOL §6). In the same run it measures
the denominator, a bare SQLite queue in process (``bench/raw_sqlite.py``:
one commit per operation, and ten cycles per commit), and prints every
figure with its ratio to the one-commit-per-operation loop.

    python bench/claim_complete.py                        # 1, 4, 16, 64 agents, 5 s each
    python bench/claim_complete.py --agents 16 --seconds 10
    python bench/claim_complete.py --in-process --agents 16  # asyncio tasks of one process

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))
    return values[k]


# -- the daemon path ------------------------------------------------------------


class Conn:
    """A minimal pipelining-free JSON-RPC connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.next_id = reader, writer, 0

    @classmethod
    async def open(cls, path: str) -> Conn:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 22)
        return cls(reader, writer)

    async def call(self, method: str, params: dict) -> dict:
        self.next_id += 1
        self.writer.write(
            json.dumps(
                {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
            ).encode()
            + b"\n"
        )
        line = await self.reader.readline()
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def batch(self, calls: list[tuple[str, dict]]) -> list[dict]:
        reqs = [
            {"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)
        ]
        self.writer.write(json.dumps(reqs).encode() + b"\n")
        replies = json.loads(await self.reader.readline())
        for r in replies:
            if "error" in r:
                raise RuntimeError(r["error"])
        return replies

    def close(self) -> None:
        self.writer.close()


async def fill(path: str, count: int, channel: str | None = None) -> None:
    conn = await Conn.open(path)
    extra = {} if channel is None else {"network_channel": channel}
    for start in range(0, count, 200):
        n = min(200, count - start)
        await conn.batch(
            [
                ("tasks.create", {"title": f"bench {start + i}", "start": True, **extra})
                for i in range(n)
            ]
        )
    conn.close()


async def agent(
    path: str, name: str, stop_at: float, latencies: list[float], counter: list[int]
) -> None:
    conn = await Conn.open(path)
    await conn.call("session.hello", {"agent_name": name})
    while time.perf_counter() < stop_at:
        t0 = time.perf_counter()
        claim = (await conn.call("agent.claim_next", {}))["claim"]
        if claim is None:
            break
        await conn.call(
            "agent.complete", {"run_id": claim["run"]["id"], "claim_token": claim["claim_token"]}
        )
        latencies.append((time.perf_counter() - t0) * 1000)
        counter[0] += 1
    conn.close()


async def run_agents(path: str, agents: int, seconds: float) -> tuple[float, list[float]]:
    """``agents`` asyncio tasks of this process: cycles/s and cycle latencies (ms)."""
    latencies: list[float] = []
    counter = [0]
    t0 = time.perf_counter()
    stop_at = t0 + seconds
    await asyncio.gather(
        *(agent(path, f"bench-{i}", stop_at, latencies, counter) for i in range(agents))
    )
    elapsed = time.perf_counter() - t0
    return counter[0] / elapsed, latencies


def start_daemon(workdir: str, synchronous: str) -> tuple[subprocess.Popen[bytes], str]:
    sock = os.path.join(workdir, "agh.sock")
    db = os.path.join(workdir, "agh.db")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aghd",
            "--socket",
            sock,
            "--db",
            db,
            "--synchronous",
            synchronous,
            "--log-level",
            "WARNING",
        ],
        cwd=ROOT,
    )
    for _ in range(200):
        if os.path.exists(sock):
            return proc, sock
        time.sleep(0.05)
    proc.kill()
    raise SystemExit("aghd did not start")


# -- the raw in-process path ---------------------------------------------------------


def raw_rates(cycles: int, synchronous: str) -> tuple[float, float]:
    """The bare SQLite queue: one commit per operation, and ten cycles per commit."""
    from raw_sqlite import cycles_per_second  # bench/, beside this script

    return cycles_per_second(cycles, 1, synchronous), cycles_per_second(cycles, 10, synchronous)


# -- agents as processes ----------------------------------------------------------


def run_processes(
    path: str, agents: int, seconds: float, mode: str, channel: str | None = None
) -> tuple[float, list[float]]:
    """``agents`` processes of bench/agent_proc.py for ``seconds`` (claiming
    from ``channel`` only, when given): cycles/s and every cycle's latency (ms)."""
    script = os.path.join(ROOT, "bench", "agent_proc.py")
    # Time to start the interpreters and say hello before the clock starts.
    start_at = time.time() + 1.0 + agents * 0.04
    procs = [
        subprocess.Popen(
            [sys.executable, script, path, f"bench-{i}", mode, str(start_at), str(seconds)]
            + ([] if channel is None else [channel]),
            stdout=subprocess.PIPE,
        )
        for i in range(agents)
    ]
    cycles = 0
    latencies: list[float] = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0:
            raise SystemExit(f"an agent failed (exit {proc.returncode})")
        report = json.loads(out)
        cycles += report["cycles"]
        latencies += report["latencies_ms"]
    return cycles / seconds, latencies


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 4, 16, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--synchronous", default="FULL")
    ap.add_argument("--raw-cycles", type=int, default=3000)
    ap.add_argument(
        "--in-process", action="store_true", help="agents as asyncio tasks of this process"
    )
    ap.add_argument(
        "--calls",
        nargs="+",
        choices=["two", "one"],
        default=["two", "one"],
        help="two: claim_next then complete; one: complete with next [default: both]",
    )
    ap.add_argument("--expect", type=float, default=4000, help="cycles/s to queue work for")
    ap.add_argument("--json", metavar="FILE", help="also write the figures here (bench/plot.py)")
    args = ap.parse_args()
    figures: dict[str, Any] = {"agh": []}

    try:
        import uvloop

        loop_runner = uvloop.run
    except ImportError:
        loop_runner = asyncio.run

    workdir = tempfile.mkdtemp(prefix="aghb")
    try:
        raw, raw10 = raw_rates(args.raw_cycles, args.synchronous)
        figures.update(raw_one_commit_per_op=raw, raw_ten_per_commit=raw10)
        sync = args.synchronous
        print(f"raw SQLite queue ({sync}), one commit per operation: {raw:8.0f} cycles/s")
        print(
            f"raw SQLite queue ({sync}), ten cycles per commit:    {raw10:8.0f} cycles/s"
            f"   ratio to raw {raw10 / raw:5.2f}x"
        )
        for n in args.agents:
            for calls in ["two"] if args.in_process else args.calls:
                # A fresh daemon and database for each figure: the queued
                # work of one must not make the next one's database bigger.
                run_dir = tempfile.mkdtemp(dir=workdir)
                proc, sock = start_daemon(run_dir, sync)
                try:
                    # Enough queued work that the agents never run dry.
                    loop_runner(fill(sock, int(args.expect * args.seconds * 1.5) + 64))
                    if args.in_process:
                        rate, lat = loop_runner(run_agents(sock, n, args.seconds))
                        how = "asyncio tasks, two calls"
                    else:
                        rate, lat = run_processes(sock, n, args.seconds, calls)
                        how = "processes, " + ("two calls" if calls == "two" else "one call")
                finally:
                    proc.terminate()
                    proc.wait(timeout=30)
                p50, p99 = percentile(lat, 50), percentile(lat, 99)
                figures["agh"].append(
                    {"agents": n, "how": how, "cycles_s": rate, "p50_ms": p50, "p99_ms": p99}
                )
                print(
                    f"aghd {n:2d} agent(s), {how:>24}: {rate:8.0f} cycles/s"
                    f"   cycle p50 {p50:6.2f} ms"
                    f"   p99 {p99:6.2f} ms   ratio to raw {rate / raw:5.2f}x",
                    flush=True,
                )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
