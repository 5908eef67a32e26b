#!/usr/bin/env python3
"""The queues a user would pick instead of agh, measured in the same run on
the same machine, each consuming pre-queued work as agh's agents do, every
one on SQLite with ``synchronous=FULL`` in WAL mode:

- huey's ``SqliteStorage`` (``enqueue`` then ``dequeue``: huey has no ack,
  its dequeue deletes; the cycle the issue measured), in process;
- persist-queue's ``SQLiteAckQueue`` (``get`` + ``ack``), in process;
- litequeue's ``LiteQueue`` (``pop`` + ``done``), in process (its own
  default is ``synchronous=NORMAL``; set to FULL here);
- a naive asyncio daemon: one Unix socket, one claim and one complete
  per request, each its own transaction (no group commit), with client
  processes as agh's;
- an asyncio NDJSON echo server with client processes: the ceiling of the
  IPC itself (requests/s, not cycles).

What each does not guarantee, printed beside it: huey's dequeue deletes
the message (at-most-once: a consumer that dies loses it), and none of the
in-process queues has a lease, fencing or an event log; the naive daemon
has no lease expiry, no sessions and no fencing beyond the token compare.

    pip install -e '.[bench]'
    python bench/peers.py --cycles 3000 --clients 16 --seconds 5

Not a test: numbers depend on the machine. Record them in docs/PERFORMANCE.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from raw_sqlite import CLAIM, COMPLETE, open_queue  # noqa: E402

PAYLOAD = {"title": "bench", "input": {"n": 1}}


def timed(fn: Any, cycles: int) -> float:
    started = time.perf_counter()
    for _ in range(cycles):
        fn()
    return cycles / (time.perf_counter() - started)


def huey_rate(workdir: str, cycles: int) -> float:
    from huey.storage import SqliteStorage

    storage = SqliteStorage("bench", os.path.join(workdir, "huey.db"), fsync=True)
    data = json.dumps(PAYLOAD).encode()

    def cycle() -> None:
        storage.enqueue(data)
        assert storage.dequeue() is not None

    return timed(cycle, cycles)


def persist_queue_rate(workdir: str, cycles: int) -> float:
    from persistqueue import SQLiteAckQueue

    queue = SQLiteAckQueue(os.path.join(workdir, "pq"), auto_commit=True)
    for conn in (queue._getter, queue._putter):
        conn.execute("PRAGMA synchronous=FULL")
    for _ in range(cycles):
        queue.put(PAYLOAD)

    def cycle() -> None:
        queue.ack(queue.get())

    return timed(cycle, cycles)


def litequeue_rate(workdir: str, cycles: int) -> float:
    from litequeue import LiteQueue

    queue = LiteQueue(os.path.join(workdir, "lq.db"))
    queue.conn.execute("PRAGMA synchronous=FULL")
    for _ in range(cycles):
        queue.put(json.dumps(PAYLOAD))

    def cycle() -> None:
        message = queue.pop()
        assert message is not None
        queue.done(message.message_id)

    return timed(cycle, cycles)


# -- a naive daemon, and an echo server, with client processes ---------------------


async def serve_naive(path: str, db: str, cycles: int) -> None:
    conn = open_queue(db, cycles)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            request = json.loads(line)
            conn.execute("BEGIN IMMEDIATE")
            if request["op"] == "claim":
                token = secrets.token_hex(16)
                row = conn.execute(CLAIM, (token,)).fetchone()
                reply: dict[str, Any] = {"id": row[0], "token": token} if row else {"id": None}
            else:
                done = conn.execute(COMPLETE, (request["id"], request["token"])).rowcount
                reply = {"ok": done == 1}
            conn.execute("COMMIT")
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()

    server = await asyncio.start_unix_server(client, path)
    async with server:
        await server.serve_forever()


async def serve_echo(path: str) -> None:
    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(line)
            await writer.drain()

    server = await asyncio.start_unix_server(client, path)
    async with server:
        await server.serve_forever()


def client_main(kind: str, path: str, start_at: float, seconds: float) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    lines = sock.makefile("rb")

    def call(request: dict[str, Any]) -> Any:
        sock.sendall(json.dumps(request).encode() + b"\n")
        return json.loads(lines.readline())

    while time.time() < start_at:
        time.sleep(0.001)
    stop_at = time.perf_counter() + seconds
    count = 0
    while time.perf_counter() < stop_at:
        if kind == "echo":
            call({"jsonrpc": "2.0", "id": count, "method": "echo", "params": {}})
        else:
            held = call({"op": "claim"})
            if held["id"] is None:
                break
            call({"op": "complete", "id": held["id"], "token": held["token"]})
        count += 1
    print(count)


def with_clients(kind: str, serve: list[str], sock: str, clients: int, seconds: float) -> float:
    server = subprocess.Popen([sys.executable, __file__, "--serve", *serve])
    try:
        for _ in range(400):
            if os.path.exists(sock):
                break
            time.sleep(0.025)
        start_at = time.time() + 1.0 + clients * 0.04
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, "--client", kind, sock, str(start_at), str(seconds)],
                stdout=subprocess.PIPE,
            )
            for _ in range(clients)
        ]
        return sum(int(p.communicate(timeout=seconds + 60)[0]) for p in procs) / seconds
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--cycles", type=int, default=3000, help="per in-process queue")
    ap.add_argument("--clients", type=int, default=16, help="client processes of the daemons")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--json", metavar="FILE", help="also write the figures here (bench/plot.py)")
    ap.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--client", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        kind, path, *rest = args.serve
        if kind == "naive":
            asyncio.run(serve_naive(path, rest[0], int(rest[1])))
        else:
            asyncio.run(serve_echo(path))
        return
    if args.client:
        kind, path, start_at, seconds = args.client
        client_main(kind, path, float(start_at), float(seconds))
        return
    workdir = tempfile.mkdtemp(prefix="aghpeer")
    try:
        rows = [
            (
                "huey SqliteStorage, enqueue + dequeue",
                huey_rate(workdir, args.cycles),
                "at-most-once; no lease",
            ),
            (
                "persist-queue SQLiteAckQueue",
                persist_queue_rate(workdir, args.cycles),
                "no lease, no fencing",
            ),
            ("litequeue", litequeue_rate(workdir, args.cycles), "no lease, no fencing"),
        ]
        sock = os.path.join(workdir, "naive.sock")
        db = os.path.join(workdir, "naive.db")
        queued = str(int(6000 * args.seconds))
        naive = with_clients("naive", ["naive", sock, db, queued], sock, args.clients, args.seconds)
        rows.append(
            (
                f"naive asyncio daemon, {args.clients} processes",
                naive,
                "no lease expiry, no sessions",
            )
        )
        for name, rate, weaker in rows:
            print(f"{name:>40}: {rate:8.0f} cycles/s   ({weaker})")
        echo_sock = os.path.join(workdir, "echo.sock")
        echo = with_clients("echo", ["echo", echo_sock], echo_sock, args.clients, args.seconds)
        label = f"asyncio NDJSON echo, {args.clients} processes"
        print(f"{label:>40}: {echo:8.0f} requests/s   (the IPC ceiling: no work, no durability)")
        if args.json:
            figures = {
                "peers": [{"name": n, "cycles_s": r, "weaker": w} for n, r, w in rows],
                "echo_requests_s": echo,
            }
            with open(args.json, "w") as f:
                json.dump(figures, f, indent=1)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
