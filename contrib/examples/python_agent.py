#!/usr/bin/env python3
"""A complete agh agent: claims runs and answers each with its input's
"text" upper-cased, until Ctrl-C.

    python contrib/examples/python_agent.py --name shouter
    agh add "shout" --input '{"text": "hello"}'    # result: {"text": "HELLO"}

``client.claims()`` does the bookkeeping: each block heartbeats in the
background while it runs, completes the run with ``work.result`` when it
ends, fails it when it raises, and releases it on Ctrl-C (or SIGTERM); each
finish claims the next run in the same call.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time

from agh import Client
from agh.errors import AghError, LeaseLost
from agh.work import Work


def shout(work: Work) -> None:
    text = work.input["text"]  # no "text": KeyError, and the run fails with it
    work.log(f"upper-casing {len(text)} characters")
    # A slow run on request: time to watch it, or to see Ctrl-C release it.
    time.sleep(float(work.input.get("sleep", 0)))
    work.result = {"text": text.upper()}


def main() -> int:
    parser = argparse.ArgumentParser(description="Upper-case the text of every run claimed.")
    parser.add_argument(
        "--socket", help="aghd's socket [default: $AGH_SOCKET, else $XDG_RUNTIME_DIR/agh/agh.sock]"
    )
    parser.add_argument("--channel", help="only runs of this network channel [default: any]")
    parser.add_argument("--name", default="shouter", help="agent name shown by `agh sessions`")
    args = parser.parse_args()
    # `kill` and `systemctl stop` send SIGTERM: exit as on Ctrl-C, releasing the run.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        with Client(args.socket, agent_name=args.name, channel=args.channel) as client:
            # Run after run: each finish claims the next in the same call, and
            # an empty queue is long-polled (one waiting request, not a busy loop).
            for block in client.claims(channel=args.channel, wait_ms=30_000):
                try:
                    with block as work:
                        shout(work)
                except LeaseLost as exc:  # canceled or taken over: not ours any more
                    print(f"{args.name}: {exc}", file=sys.stderr)
                except AghError:
                    raise  # the daemon refused or went away: nothing more to do here
                except Exception as exc:  # that run is failed with this error; go on
                    print(f"{args.name}: run failed: {exc!r}", file=sys.stderr)
    except KeyboardInterrupt:
        return 0  # claims() has already released the run it held, if any
    except AghError as exc:
        print(f"{args.name}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
