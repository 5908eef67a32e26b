"""How long a configuration edit takes to apply: start aghd with a config
file, rewrite it N times (as an editor saves: a new file renamed over the
old), and time each edit until ``server.config`` shows the new value.
Also the same through SIGHUP.

    python bench/reload.py [--edits 20]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from agh.client import Client


def write(path: str, text: str) -> None:
    with open(path + ".tmp", "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(path + ".tmp", path)


def wait_value(sock: str, value: int, timeout: float = 30) -> float:
    start = time.perf_counter()
    with Client(sock) as c:
        while time.perf_counter() - start < timeout:
            got = {s.name: s.value for s in c.server_config().settings}["default_lease_ms"]
            if got == value:
                return time.perf_counter() - start
            time.sleep(0.005)
    raise TimeoutError(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--edits", type=int, default=20)
    args = parser.parse_args()
    d = tempfile.mkdtemp(prefix="aghb", dir="/tmp")
    sock, config = os.path.join(d, "agh.sock"), os.path.join(d, "config.yaml")
    write(config, "default_lease_ms: 60000\n")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aghd",
            "--socket",
            sock,
            "--db",
            os.path.join(d, "agh.db"),
            "--config",
            config,
            "--log-level",
            "WARNING",
        ],
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        watched, hup = [], []
        for i in range(args.edits):
            value = 61_000 + i
            write(config, f"default_lease_ms: {value}\n")
            watched.append(wait_value(sock, value))
            time.sleep(0.3)  # let the watcher settle between edits
        # A SIGHUP right after each edit: whichever of the signal and the
        # watcher comes first applies it.
        for i in range(args.edits):
            value = 91_000 + i
            write(config, f"default_lease_ms: {value}\n")
            proc.send_signal(signal.SIGHUP)
            hup.append(wait_value(sock, value))
            time.sleep(0.3)
        for name, xs in (("file watcher", watched), ("SIGHUP (or watcher)", hup)):
            xs_ms = sorted(x * 1000 for x in xs)
            print(
                f"{name:>20}: median {statistics.median(xs_ms):.0f} ms, "
                f"max {xs_ms[-1]:.0f} ms over {len(xs_ms)} edits"
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
