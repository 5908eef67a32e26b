#!/usr/bin/env python3
"""One benchmark agent as its own OS process, as real agents are: a plain
standard-library client (``socket`` and ``json``, nothing of agh) on its
own connection and session, doing claim→complete cycles until told to
stop. Started by ``bench/claim_complete.py``; prints one JSON line:
``{"cycles": N, "latencies_ms": [...], "claims_ms": [...]}``.

    python bench/agent_proc.py SOCKET NAME MODE START_AT SECONDS

MODE ``two``: ``agent.claim_next`` then ``agent.complete`` (two calls per
cycle). MODE ``one``: ``agent.complete`` with ``next`` (PROTOCOL §6: one
call per cycle; ``agent.claim_next`` only when a finish found nothing).
START_AT is a ``time.time()`` at which every agent begins, so all of them
are connected and said hello before the clock starts.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from jsonrpc import Conn  # bench/, beside this script


def main() -> None:
    path, name, mode, start_at, seconds = sys.argv[1:6]
    # An optional channel: claim only the runs queued on it.
    wanted = {"network_channel": sys.argv[6]} if len(sys.argv) > 6 else {}
    conn = Conn(path)
    conn.call("session.hello", {"agent_name": name})
    begin = float(start_at)
    while time.time() < begin:
        time.sleep(0.001)
    stop_at = time.perf_counter() + float(seconds)
    cycles = 0
    latencies: list[float] = []
    claims: list[float] = []
    held: Any = None
    while True:
        t0 = time.perf_counter()
        if t0 >= stop_at:
            break
        if held is None:
            held = conn.call("agent.claim_next", wanted)["claim"]
            claims.append((time.perf_counter() - t0) * 1000)
            if held is None:
                break  # the queue ran dry: the harness queued too little
        finish: dict[str, Any] = {"run_id": held["run"]["id"], "claim_token": held["claim_token"]}
        if mode == "one":
            finish["next"] = wanted
        done = conn.call("agent.complete", finish)
        held = done.get("next")
        latencies.append((time.perf_counter() - t0) * 1000)
        cycles += 1
    if held is not None:  # give back what the last finish claimed
        conn.call(
            "agent.release", {"run_id": held["run"]["id"], "claim_token": held["claim_token"]}
        )
    print(json.dumps({"cycles": cycles, "latencies_ms": latencies, "claims_ms": claims}))


if __name__ == "__main__":
    main()
