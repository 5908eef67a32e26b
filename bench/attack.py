#!/usr/bin/env python3
"""Benchmark: a well-behaved client's latency while hostile clients attack aghd.

Starts ``aghd`` from this checkout as a subprocess (a fresh one per attack, so
each attack's peak memory and survival are its own), creates 100 tasks, then
measures a good client doing ``tasks.get`` in a loop — first at rest, then
during each attack in turn:

- ``idle``: 1,000 connections opened at once and left idle;
- ``slowloris``: 50 clients sending requests one byte every 50 ms;
- ``pipeline``: 40 clients each sending 2,000 ``tasks.list {limit: 100}``
  (~70 KB replies) and never reading;
- ``garbage``: 8 clients sending random bytes as fast as they can (and
  reading what comes back, so they are not also never-readers).

For each attack it reports the daemon's peak RSS (VmHWM from
/proc/PID/status) and RSS sampled over time, the good client's p50/p99 and
errors during the attack, connects that failed, and whether the daemon
survived (answers ``server.info`` afterwards and is still running).

    python bench/attack.py                      # every attack, 10 s each
    python bench/attack.py --seconds 5 --attacks idle,pipeline --json

Load goes only to the socket of the daemon this script starts, in a temp
dir, bounded in time and count. Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ATTACKS = ("idle", "slowloris", "pipeline", "garbage")
# Stop an attack early once the daemon is this big: the verdict is clear and
# the machine stays usable.
RSS_CEILING_MB = 4096


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values)
    return values[min(len(values) - 1, max(0, round(q / 100 * (len(values) - 1))))]


def line(method: str, params: dict[str, Any], rid: Any = 1) -> bytes:
    msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def proc_status_mb(pid: int, key: str) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for row in f:
                if row.startswith(key + ":"):
                    return int(row.split()[1]) / 1024
    except OSError:
        return None
    return None


# -- the daemon -----------------------------------------------------------------------


class Daemon:
    """aghd from this checkout on a fresh database in a short temp dir."""

    def __init__(self, extra: list[str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="aghatk", dir="/tmp")
        self.socket = os.path.join(self.dir, "agh.sock")
        env = {**os.environ, "PYTHONPATH": ROOT}
        self.stderr = open(os.path.join(self.dir, "stderr"), "w+b")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "aghd", "--socket", self.socket,
             "--db", os.path.join(self.dir, "agh.db"), "--log-level", "WARNING", *extra],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.stderr,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"aghd exited at start: {self.stderr_tail()}")
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.socket)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stderr_tail(self, n: int = 1500) -> str:
        self.stderr.flush()
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")[-n:]

    def call(self, method: str, params: dict[str, Any], timeout: float = 5) -> Any:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(timeout)
            s.connect(self.socket)
            s.sendall(line(method, params))
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    raise EOFError("closed without a reply")
                buf += chunk
        reply = json.loads(buf)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def alive(self) -> bool:
        try:
            return self.proc.poll() is None and self.call("server.info", {})["protocol"] == 1
        except (OSError, EOFError, RuntimeError, ValueError):
            return False

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- the good client and the sampler -----------------------------------------------------


class GoodClient(threading.Thread):
    """tasks.get in a loop on one connection (reconnecting when dropped);
    records each latency and every error it sees."""

    def __init__(self, path: str, task_id: str) -> None:
        super().__init__(daemon=True)
        self.path, self.task_id = path, task_id
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.stop_at = float("inf")
        self._sock: socket.socket | None = None

    def _request(self, rid: int) -> None:
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX)
            self._sock.settimeout(5)
            self._sock.connect(self.path)
        self._sock.sendall(line("tasks.get", {"id": self.task_id}, rid))
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = self._sock.recv(1 << 20)
            if not chunk:
                raise EOFError("connection closed by daemon")
            buf += chunk
        reply = json.loads(buf)
        if reply.get("id") != rid or "error" in reply:
            raise RuntimeError(f"bad reply: {str(reply)[:200]}")

    def run(self) -> None:
        rid = 0
        while time.monotonic() < self.stop_at:
            rid += 1
            started = time.monotonic()
            try:
                self._request(rid)
                self.latencies.append(time.monotonic() - started)
            except (OSError, EOFError, RuntimeError, ValueError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}"[:200])
                if self._sock is not None:
                    self._sock.close()
                self._sock = None
                time.sleep(0.05)
            time.sleep(0.005)  # a steady client, not a flood of its own
        if self._sock is not None:
            self._sock.close()


def sample_rss(pid: int, stop: threading.Event, out: list[tuple[float, float]]) -> None:
    t0 = time.monotonic()
    while not stop.is_set():
        rss = proc_status_mb(pid, "VmRSS")
        if rss is None:
            return
        out.append((round(time.monotonic() - t0, 2), round(rss, 1)))
        stop.wait(0.25)


# -- attacks: each runs until ``stop`` is set, returns counts for the report ------------------


def attack_idle(path: str, stop: threading.Event) -> dict[str, Any]:
    socks: list[socket.socket] = []
    failed: list[str] = []
    lock = threading.Lock()

    def opener(n: int) -> None:
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)  # as agh's client does; a full backlog is then EAGAIN
            try:
                s.connect(path)
            except OSError as exc:
                s.close()
                with lock:
                    failed.append(type(exc).__name__)
                continue
            with lock:
                socks.append(s)

    threads = [threading.Thread(target=opener, args=(125,)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    opened = len(socks)
    stop.wait()
    closed_by_daemon = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                closed_by_daemon += 1
        except BlockingIOError:
            pass
        except OSError:
            closed_by_daemon += 1
        s.close()
    return {
        "connections_opened": opened,
        "connect_failures": len(failed),
        "connect_failure_kinds": sorted(set(failed)),
        "closed_by_daemon": closed_by_daemon,
    }


def attack_slowloris(path: str, stop: threading.Event, clients: int = 50) -> dict[str, Any]:
    payload = line("server.info", {}, "loris")
    answered = [0] * clients
    dropped = [0] * clients

    def loris(i: int) -> None:
        while not stop.is_set():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(10)
                    s.connect(path)
                    while not stop.is_set():
                        for b in range(len(payload)):
                            s.sendall(payload[b : b + 1])
                            if stop.wait(0.05):
                                return
                        if s.recv(65536):
                            answered[i] += 1
                        else:
                            raise EOFError
            except (OSError, EOFError):
                dropped[i] += 1
                stop.wait(0.2)

    threads = [threading.Thread(target=loris, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)
    return {"clients": clients, "requests_answered": sum(answered), "dropped": sum(dropped)}


def attack_pipeline(
    path: str, stop: threading.Event, clients: int = 40, requests: int = 2000
) -> dict[str, Any]:
    payload = line("tasks.list", {"limit": 100}) * requests
    sent = [0] * clients
    socks: list[socket.socket] = []

    def hog(i: int) -> None:
        s = socket.socket(socket.AF_UNIX)
        socks.append(s)
        try:
            s.connect(path)
            s.settimeout(0.5)
            view = memoryview(payload)
            while view and not stop.is_set():
                try:
                    n = s.send(view[: 1 << 16])
                except TimeoutError:
                    continue  # the daemon stopped reading us: backpressure
                sent[i] += n
                view = view[n:]
        except OSError:
            pass

    threads = [threading.Thread(target=hog, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(2)
    for s in socks:
        s.close()
    return {
        "clients": clients,
        "requests_each": requests,
        "bytes_sent": sum(sent),
        "bytes_offered": len(payload) * clients,
    }


def attack_garbage(path: str, stop: threading.Event, clients: int = 8) -> dict[str, Any]:
    counts = {"lines_sent": 0, "replies": 0, "reconnects": 0}
    lock = threading.Lock()

    def garbler(seed: int) -> None:
        rnd = random.Random(seed)
        while not stop.is_set():
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.settimeout(5)
                    s.connect(path)
                    reader = threading.Thread(target=drain, args=(s,), daemon=True)
                    reader.start()
                    while not stop.is_set():
                        blob = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(1, 512)))
                        blob = blob.replace(b"\n", b"") + b"\n"
                        s.sendall(blob)
                        with lock:
                            counts["lines_sent"] += 1
            except OSError:
                with lock:
                    counts["reconnects"] += 1
                stop.wait(0.05)

    def drain(s: socket.socket) -> None:
        try:
            while not stop.is_set():
                chunk = s.recv(1 << 16)
                if not chunk:
                    return
                with lock:
                    counts["replies"] += chunk.count(b"\n")
        except OSError:
            return

    threads = [threading.Thread(target=garbler, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop.wait()
    for t in threads:
        t.join(5)
    return {"clients": clients, **counts}


ATTACK_FNS: dict[str, Callable[[str, threading.Event], dict[str, Any]]] = {
    "idle": attack_idle,
    "slowloris": attack_slowloris,
    "pipeline": attack_pipeline,
    "garbage": attack_garbage,
}


# -- one phase ---------------------------------------------------------------------------


@dataclass
class Result:
    attack: str
    seconds: float
    rest_p50_ms: float | None = None
    rest_p99_ms: float | None = None
    rest_requests: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    requests: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    rss_start_mb: float | None = None
    peak_rss_mb: float | None = None  # VmHWM
    rss_over_time: list[tuple[float, float]] = field(default_factory=list)
    stopped_early: bool = False
    survived: bool = False
    attack_stats: dict[str, Any] = field(default_factory=dict)
    daemon_stderr_tail: str = ""


def ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1000, 2)


def good_for(path: str, task_id: str, seconds: float) -> GoodClient:
    good = GoodClient(path, task_id)
    good.stop_at = time.monotonic() + seconds
    good.start()
    good.join(seconds + 10)
    return good


def run_attack(name: str, seconds: float, rest: float, extra: list[str]) -> Result:
    daemon = Daemon(extra)
    res = Result(name, seconds)
    try:
        task_id = ""
        for i in range(100):
            made = daemon.call("tasks.create", {"title": f"attack-{i}", "description": "d" * 200})
            task_id = task_id or made["task"]["id"]
        at_rest = good_for(daemon.socket, task_id, rest)
        res.rest_p50_ms = ms(percentile(at_rest.latencies, 50))
        res.rest_p99_ms = ms(percentile(at_rest.latencies, 99))
        res.rest_requests = len(at_rest.latencies)
        res.rss_start_mb = proc_status_mb(daemon.proc.pid, "VmRSS")

        stop, sampled = threading.Event(), threading.Event()
        stats: dict[str, Any] = {}
        attacker = threading.Thread(
            target=lambda: stats.update(ATTACK_FNS[name](daemon.socket, stop)), daemon=True
        )
        sampler = threading.Thread(
            target=sample_rss, args=(daemon.proc.pid, sampled, res.rss_over_time), daemon=True
        )
        sampler.start()
        attacker.start()
        time.sleep(0.5)  # let the attack take hold before measuring
        good = GoodClient(daemon.socket, task_id)
        good.stop_at = time.monotonic() + seconds
        good.start()
        while good.is_alive():
            good.join(0.25)
            rss = proc_status_mb(daemon.proc.pid, "VmRSS")
            if rss is None or rss > RSS_CEILING_MB:
                res.stopped_early = True
                good.stop_at = 0
        stop.set()
        attacker.join(30)
        res.peak_rss_mb = proc_status_mb(daemon.proc.pid, "VmHWM")
        sampled.set()
        sampler.join(2)
        res.attack_stats = stats
        res.p50_ms = ms(percentile(good.latencies, 50))
        res.p99_ms = ms(percentile(good.latencies, 99))
        res.max_ms = ms(max(good.latencies, default=None))  # type: ignore[type-var]
        res.requests = len(good.latencies)
        res.errors = len(good.errors)
        res.error_samples = sorted(set(good.errors))[:5]
        # Survived: still running and a fresh client is answered (it may need
        # a moment to catch up on work the attackers queued).
        deadline = time.monotonic() + 15
        res.survived = daemon.alive()
        while not res.survived and daemon.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
            res.survived = daemon.alive()
        if not res.survived or res.errors:
            res.daemon_stderr_tail = daemon.stderr_tail()
    finally:
        daemon.stop()
    return res


def print_table(results: list[Result]) -> None:
    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    head = (
        f"{'attack':<10} {'rest p50/p99 ms':>16} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'reqs':>6} {'errors':>6} {'rss0 MB':>8} {'peak MB':>8} {'survived':>8}"
    )
    print(head)
    print("-" * len(head))
    for r in results:
        rest = f"{f(r.rest_p50_ms)}/{f(r.rest_p99_ms)}"
        print(
            f"{r.attack:<10} {rest:>16} {f(r.p50_ms):>8} {f(r.p99_ms):>8} {f(r.max_ms):>8} "
            f"{r.requests:>6} {r.errors:>6} {f(r.rss_start_mb):>8} {f(r.peak_rss_mb):>8} "
            f"{'yes' if r.survived else 'NO':>8}"
        )
    for r in results:
        trace = " ".join(
            f"{t:.0f}s:{m:.0f}" for t, m in r.rss_over_time[:: max(1, len(r.rss_over_time) // 10)]
        )
        print(f"\n{r.attack}: {json.dumps(r.attack_stats)}")
        print(f"  RSS MB over time: {trace}")
        if r.stopped_early:
            print(f"  stopped early: RSS passed {RSS_CEILING_MB} MB or the daemon died")
        for e in r.error_samples:
            print(f"  good-client error: {e}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="each attack's length (default 10)")
    ap.add_argument("--rest", type=float, default=3, help="at-rest measurement (default 3)")
    ap.add_argument("--attacks", default=",".join(ATTACKS), help=f"comma list of {ATTACKS}")
    ap.add_argument("--json", action="store_true", help="one JSON document on stdout")
    ap.add_argument(
        "--daemon-arg", action="append", default=[], help="extra aghd argument (repeatable)"
    )
    args = ap.parse_args()
    names = [a for a in args.attacks.split(",") if a]
    unknown = set(names) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attacks: {sorted(unknown)}")
    import resource

    # 1,000 idle connections plus the rest need descriptors on our side.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 4096 and (hard == resource.RLIM_INFINITY or hard >= 4096):
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, hard))
    results = []
    for name in names:
        if not args.json:
            print(f"# {name} ({args.seconds:g} s) ...", file=sys.stderr, flush=True)
        results.append(run_attack(name, args.seconds, args.rest, args.daemon_arg))
    if args.json:
        print(json.dumps({"root": ROOT, "results": [asdict(r) for r in results]}, indent=2))
    else:
        print_table(results)
    return 0 if all(r.survived for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
