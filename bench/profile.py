#!/usr/bin/env python3
"""Profile aghd under the claim→complete load of ``bench/claim_complete.py``
(agents as OS processes), with py-spy: where the daemon's time goes, per
thread, and who holds the GIL.

    pip install py-spy
    python bench/profile.py --agents 16 --calls one            # on-CPU, all threads
    python bench/profile.py --agents 16 --calls one --gil      # only samples holding the GIL
    python bench/profile.py --agents 16 --native --out /tmp/p  # C frames too; keeps the stacks

Prints the share of samples by thread and the functions with the most
samples, by own time and by time including callees. ``--out DIR`` keeps
py-spy's collapsed stacks (``stacks.txt``, for flamegraph tools).

Not a test: numbers depend on the machine. Record what it shows in
docs/PERFORMANCE.md ("Where the time goes").
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from claim_complete import ROOT, fill, start_daemon


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--agents", type=int, default=16)
    ap.add_argument("--calls", choices=["two", "one"], default="one")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--gil", action="store_true", help="only samples that hold the GIL")
    ap.add_argument("--native", action="store_true", help="C frames too")
    ap.add_argument("--idle", action="store_true", help="idle samples too (waits, fsync)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", help="keep py-spy's collapsed stacks in this directory")
    args = ap.parse_args()
    py_spy = shutil.which("py-spy") or os.path.join(os.path.dirname(sys.executable), "py-spy")
    workdir = tempfile.mkdtemp(prefix="aghp")
    out_dir = args.out or workdir
    os.makedirs(out_dir, exist_ok=True)
    stacks = os.path.join(out_dir, "stacks.txt")
    daemon, sock = start_daemon(workdir, "FULL")
    try:
        asyncio.run(fill(sock, int(6000 * args.seconds) + 2000))
        script = os.path.join(ROOT, "bench", "agent_proc.py")
        start_at = time.time() + 1.0 + args.agents * 0.04
        seconds = args.seconds + 1.5  # the agents outlast the recording
        agents = [
            subprocess.Popen(
                [sys.executable, script, sock, f"p-{i}", args.calls, str(start_at), str(seconds)],
                stdout=subprocess.PIPE,
            )
            for i in range(args.agents)
        ]
        time.sleep(max(0.0, start_at - time.time()) + 0.5)
        spy = [py_spy, "record", "--pid", str(daemon.pid), "--rate", str(args.rate)]
        spy += ["--duration", str(int(args.seconds)), "--format", "raw", "--output", stacks]
        spy.append("--threads")
        if not args.native:  # py-spy must pause the process to unwind C frames
            spy.append("--nonblocking")
        if args.gil:
            spy.append("--gil")
        if args.native:
            spy.append("--native")
        if args.idle:
            spy.append("--idle")
        spied = subprocess.run(spy, capture_output=True, text=True)
        if spied.returncode != 0:
            raise SystemExit(f"py-spy failed: {spied.stderr.strip() or spied.stdout.strip()}")
        cycles = 0
        for agent in agents:
            out, _ = agent.communicate(timeout=120)
            cycles += int(out.split(b'"cycles": ', 1)[1].split(b",", 1)[0])
        print(
            f"{args.agents} agents, {args.calls} call(s) per cycle: {cycles / seconds:.0f} cycles/s"
        )
        report(stacks, args.top)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)


def report(stacks: str, top: int) -> None:
    threads: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    with open(stacks) as f:
        for line in f:
            path, _, count_text = line.rstrip("\n").rpartition(" ")
            count = int(count_text)
            frames = path.split(";")
            samples += count
            threads[frames[0]] += count
            names = [frame.split(" (")[0] + " " + _where(frame) for frame in frames[1:]]
            if names:
                own[names[-1]] += count
            for name in set(names):
                total[name] += count
    print(f"{samples} samples")
    print("by thread:")
    for name, count in threads.most_common(8):
        print(f"  {100 * count / samples:5.1f}%  {name}")
    for title, counter in (("own time", own), ("with callees", total)):
        print(f"top functions, {title}:")
        for name, count in counter.most_common(top):
            print(f"  {100 * count / samples:5.1f}%  {name}")


def _where(frame: str) -> str:
    """``file.py:line`` shortened to the file name."""
    if " (" not in frame:
        return ""
    location = frame.split(" (", 1)[1].rstrip(")")
    file, _, _ = location.rpartition(":")
    return os.path.basename(file or location)


if __name__ == "__main__":
    main()
