#!/usr/bin/env python3
"""Plot cycles/s against agents: agh with two calls and with one call per
cycle, the bare SQLite queue, and the peers, from the JSON files that
``bench/claim_complete.py --json`` and ``bench/peers.py --json`` write in
the same run.

    python bench/claim_complete.py --json /tmp/agh.json
    python bench/peers.py --json /tmp/peers.json
    python bench/plot.py /tmp/agh.json /tmp/peers.json --out docs/throughput.png

Needs matplotlib (``pip install -e '.[bench]'``).
"""

from __future__ import annotations

import argparse
import json

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agh", help="claim_complete.py --json output")
    ap.add_argument("peers", help="peers.py --json output")
    ap.add_argument("--out", default="throughput.png")
    args = ap.parse_args()
    with open(args.agh) as f:
        agh = json.load(f)
    with open(args.peers) as f:
        peers = json.load(f)
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for how in sorted({row["how"] for row in agh["agh"]}):
        rows = sorted((r for r in agh["agh"] if r["how"] == how), key=lambda r: r["agents"])
        ax.plot(
            [r["agents"] for r in rows], [r["cycles_s"] for r in rows], "o-", label=f"agh, {how}"
        )
    agents = sorted({row["agents"] for row in agh["agh"]})
    flat = [("raw SQLite, one commit per operation", agh["raw_one_commit_per_op"], "k--")]
    flat += [(p["name"], p["cycles_s"], ":") for p in peers["peers"]]
    for label, rate, style in flat:
        ax.plot([agents[0], agents[-1]], [rate, rate], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(agents, [str(a) for a in agents])
    ax.set_xlabel("agents (each its own OS process; in-process queues: one loop)")
    ax.set_ylabel("claim→complete cycles/s (synchronous=FULL)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
