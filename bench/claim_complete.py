#!/usr/bin/env python3
"""Benchmark: claim→complete cycles/s and claim latency through a real aghd.

Starts ``aghd`` as a subprocess (synchronous=FULL unless told otherwise) on a
fresh database, queues tasks, then runs 1, 4 and 16 agents — each its own
connection with its own session — doing ``agent.claim_next`` then
``agent.complete`` as fast as the daemon answers. In the same run it measures
the raw in-process rate: the same store functions and schema, no daemon,
one commit per operation under FULL. Prints both and their ratio.

    python bench/claim_complete.py                 # default: 1, 4, 16 agents, 5 s each
    python bench/claim_complete.py --seconds 10 --agents 16

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

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


async def fill(path: str, count: int) -> None:
    conn = await Conn.open(path)
    for start in range(0, count, 200):
        n = min(200, count - start)
        await conn.batch(
            [("tasks.create", {"title": f"bench {start + i}", "start": True}) for i in range(n)]
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
        latencies.append(time.perf_counter() - t0)
        if claim is None:
            break
        await conn.call(
            "agent.complete", {"run_id": claim["run"]["id"], "claim_token": claim["claim_token"]}
        )
        counter[0] += 1
    conn.close()


async def run_agents(path: str, agents: int, seconds: float) -> tuple[float, list[float]]:
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


def raw_rate(cycles: int, synchronous: str) -> float:
    """Same schema and store functions, one transaction (one fsync) per operation."""
    from store_cycle import cycles_per_second  # bench/, beside this script

    return cycles_per_second(cycles, None, synchronous)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--agents", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--synchronous", default="FULL")
    ap.add_argument("--raw-cycles", type=int, default=3000)
    args = ap.parse_args()

    try:
        import uvloop

        loop_runner = uvloop.run
    except ImportError:
        loop_runner = asyncio.run

    workdir = tempfile.mkdtemp(prefix="aghb")
    try:
        raw = raw_rate(args.raw_cycles, args.synchronous)
        print(f"raw in-process SQLite ({args.synchronous}, one commit per op): {raw:8.0f} cycles/s")
        proc, sock = start_daemon(workdir, args.synchronous)
        try:
            for n in args.agents:
                # enough queued work that the agents never run dry
                loop_runner(fill(sock, int(max(2000, 12000 * args.seconds * min(n, 4) / 4))))
                rate, lat = loop_runner(run_agents(sock, n, args.seconds))
                p50, p99 = percentile(lat, 50) * 1000, percentile(lat, 99) * 1000
                mean = statistics.fmean(lat) * 1000
                print(
                    f"aghd {n:2d} agent(s): {rate:8.0f} cycles/s   claim p50 {p50:6.2f} ms"
                    f"   p99 {p99:6.2f} ms   mean {mean:6.2f} ms   ratio to raw {rate / raw:5.2f}x"
                )
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
