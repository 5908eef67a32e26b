#!/usr/bin/env python3
"""Crash harness: SIGKILL a loaded ``aghd`` N times and prove nothing
acknowledged was lost, no run was ever held twice, and the event log and a
live stream stayed gap-free (PROTOCOL.md §6, §7, §8).

Owns: the load (16 agent threads over real sockets), the log of every
acknowledged reply, the kill/restart loop, and every check made from that log
against the database (opened read-only between a kill and the restart) and
through the socket (after the restart). ``tests/test_crash_harness.py`` runs
the same ``run()`` with a few kills; there is no second copy of the checks.
Must not: write to the database, or talk to any daemon it did not start.

    python bench/crash.py                      # 100 kills, 16 agents
    python bench/crash.py --kills 10 --seed 7 --json

Agents are threads of this process, each with its own ``Client``, session
and socket: they spend their time blocked in ``recv`` (the GIL is released
there), one process gives every log entry the same clock (overlapping leases
are compared across agents), and the harness can park every agent between a
kill and the restart without any IPC. The daemon is the separate process
that gets killed.

What "acknowledged" and "legitimately moved on" mean, per operation (a
reply is an acknowledgement only if it carried a result; our op mix never
deletes a task, never restarts a closed task and never uses an operator
override, which is what makes these rules tight):

- ``tasks.create``: the task exists with that title, and if the reply
  carried a run, that run exists for the task. Any later status is fine.
  With an ``idempotency_key``, exactly one task carries the key.
- ``workflows.compose``: the workflow exists with that root, its three steps
  exist, and with ``start`` a ``workflow.started`` event exists.
- ``tasks.send``: the message exists (task, text, direction, the run the
  reply named).
- ``tasks.cancel``: the task is ``canceled`` for good, none of its runs is
  open, and a ``task.canceled`` event exists.
- ``agent.claim_next``: the claim row exists (run, attempt, session,
  claimed_at as replied). It may have ended since, but only for a reason the
  agent's own acknowledged finish names; if the agent's finish was not
  acknowledged, that reason or ``expired``/``canceled``; if the agent sent
  no finish at all, only ``expired`` or ``canceled``. A claim whose finish was
  acknowledged is never open.
- ``agent.heartbeat``: while that claim is still the live one, the run is
  ``running`` with a lease at least as long as the acknowledged one.
- ``agent.complete``: the run and its task are ``completed`` with our result
  (terminal: nothing reopens them).
- ``agent.fail`` replied ``failed``: the run and task are ``failed`` with our
  error (terminal). Replied ``queued`` (retry with attempts left): the claim
  ended ``failed``, a ``run.retry_scheduled`` event names our attempt, and
  the run may have moved on — but its next claim is attempt + 1 and not
  before the backoff's ``available_at``. A retried fail whose reply was lost
  only promises the claim ended ``failed``.
- ``agent.release``: the claim ended ``released``, a ``run.released`` event
  exists, and the run's next claim (if any) is the same attempt.
- A lease that ran out (the agent let it lapse): the claim ends ``expired``
  and a heartbeat sent after ``lease_until`` is refused.

Event sequences: ``events.seq`` is ``INTEGER PRIMARY KEY AUTOINCREMENT``,
events are never deleted, and AUTOINCREMENT's counter lives in the same
transaction as the row, so a job rolled back (savepoint or crash) gives its
number back unseen. Gaps therefore never exist: the table must hold exactly
``1..max(seq)``, and a subscriber started at 0 that resumes after every
restart from its last sequence must have received exactly ``1..last``.
"""

from __future__ import annotations

import argparse
import calendar
import datetime
import itertools
import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from agh import errors  # noqa: E402
from agh.client import Client  # noqa: E402
from aghd.tokens import hash_token  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

ACTIVE = ("claimed", "starting", "running")
OPEN = ("queued", *ACTIVE)
CLOSED = {"completed", "failed", "canceled"}
# The claim end_reason each agent finish writes.
FINISH_REASON = {"complete": "completed", "fail": "failed", "release": "released"}

WORKFLOW_YAML = """\
name: crash-{name}
steps:
  - id: a
    action: tool_execution
    tool: t
  - id: b
    action: tool_execution
    tool: t
    depends_on: [a]
  - id: c
    action: tool_execution
    tool: t
    depends_on: [a]
"""
WORKFLOW_STEPS = 3


@dataclass
class Options:
    kills: int = 100
    seed: int = 0
    agents: int = 16
    # Seconds the daemon serves load before each SIGKILL (uniform).
    min_uptime: float = 0.3
    max_uptime: float = 1.5
    # Share of kills aimed at start-up (0-150 ms after spawn: migrations,
    # lease recovery, bind), before any client connects.
    startup_kill_fraction: float = 0.1
    # Mean pause between one agent's calls (uniform 0..2x), in ms.
    think_ms: float = 15.0
    # Socket checks after a restart: the last incarnation's newest acks
    # plus this many older ones at random (all of them at the end).
    socket_sample: int = 60
    workdir: str | None = None
    keep: bool = False
    verbose: bool = False


def ts_ms(text: str | None) -> int | None:
    """RFC 3339 ``…T…:…:….123Z`` from the wire → integer ms (the store's unit)."""
    if text is None:
        return None
    dt = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ")
    return calendar.timegm(dt.timetuple()) * 1000 + dt.microsecond // 1000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


# -- the log of acknowledged replies --------------------------------------------


@dataclass
class Ack:
    """One reply the daemon sent to a request: what was asked, what it said, when."""

    agent: int
    incarnation: int
    op: str
    t_send: float
    t_ack: float
    # "ok" (a result: an acknowledged write) or the error kind of the reply.
    outcome: str
    # Sent again after a reconnect because the first reply was lost.
    retried: bool
    req: dict[str, Any]
    res: dict[str, Any]


@dataclass
class ClaimRecord:
    """What the agents' acknowledged replies say about one claim."""

    agent: int
    incarnation: int
    run_id: str
    task_id: str
    token_hash: str
    session_id: str
    attempt: int
    max_attempts: int
    claimed_at: int
    lease_until: int  # the longest acknowledged (claim or heartbeat reply)
    lease_ms: int
    # floor(ms) when the first complete/fail/release for it was sent, acked or not.
    finish_sent: int | None = None
    finish_op: str | None = None
    finish_acked: bool = False
    finish_retried: bool = False
    # The reply status of an acknowledged, first-try finish.
    finish_status: str | None = None
    finish_error: str | None = None
    finish_result: Any = None
    fail_retry: bool | None = None
    lapsed: bool = False
    heartbeats_acked: int = 0
    # A heartbeat whose reply was lost may have extended the lease unseen.
    unacked_heartbeat: bool = False


@dataclass
class Violation:
    kind: str
    detail: str
    at_kill: int


class ConnLost(Exception):
    """The connection broke: the request in flight has no known outcome."""


class Gate:
    """Parks every worker while the daemon is down, so the database is
    checked with no acknowledgement still in flight."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.cond = threading.Condition()
        self.generation = 0
        self.parked = 0
        self.down = threading.Event()
        self.down.set()
        self.stop = threading.Event()
        # The final drain: agents quit, the subscriber goes on.
        self.stop_agents = threading.Event()

    def park(self, seen: int) -> int:
        """Wait for an incarnation newer than ``seen``; returns it (or ``seen`` on stop)."""
        with self.cond:
            self.parked += 1
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.generation > seen or self.stop.is_set())
            self.parked -= 1
            return self.generation

    def resume(self) -> None:
        with self.cond:
            self.down.clear()
            self.generation += 1
            self.cond.notify_all()

    def wait_parked(self, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.parked == self.workers, timeout)

    def shutdown(self) -> None:
        with self.cond:
            self.stop.set()
            self.down.set()
            self.cond.notify_all()


class Shared:
    """State the agents share: the log, the claims and the task pools."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.acks: list[Ack] = []
        self.claims: dict[str, ClaimRecord] = {}
        self.tasks: list[str] = []  # plain tasks (send / cancel targets)
        self.roots: list[str] = []  # workflow roots (cancel targets)
        self.unacked: Counter[str] = Counter()
        self.reconnects_while_up = 0
        self.violations: list[Violation] = []  # seen by agents at call time
        self.incarnation = 0

    def pick(self, rng: random.Random, pool: list[str], recent: int = 200) -> str | None:
        with self.lock:
            if not pool:
                return None
            return pool[rng.randrange(max(0, len(pool) - recent), len(pool))]


# -- load ------------------------------------------------------------------------


@dataclass
class Pending:
    """A request whose reply was lost, to send again after reconnecting."""

    op: str
    args: dict[str, Any]
    claim: ClaimRecord | None = None


class Agent(threading.Thread):
    def __init__(self, n: int, socket_path: str, gate: Gate, shared: Shared, opts: Options):
        super().__init__(name=f"agent-{n}", daemon=True)
        self.n = n
        self.socket_path = socket_path
        self.gate = gate
        self.shared = shared
        self.think = opts.think_ms / 1000
        self.rng = random.Random(f"{opts.seed}/agent/{n}")
        self.session_id = f"ses_crash_agent{n:02d}"
        self.client: Client | None = None
        self.claim: ClaimRecord | None = None
        self.pending: Pending | None = None
        self.counter = 0
        self.error: BaseException | None = None

    # -- plumbing ------------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # surfaced by the harness as a violation
            self.error = exc
            with self.gate.cond:
                self.gate.parked += 1  # count as parked so the harness goes on
                self.gate.cond.notify_all()
        finally:
            self._drop()

    def _loop(self) -> None:
        gen = self.gate.park(0)
        while not self.gate.stop.is_set() and not self.gate.stop_agents.is_set():
            if self.gate.down.is_set():
                self._drop()
                gen = self.gate.park(gen)
                continue
            try:
                if self.client is None:
                    self.client = Client(
                        self.socket_path,
                        timeout=10,
                        agent_name=f"agent{self.n}",
                        session_id=self.session_id,
                    )
                if self.pending is not None:
                    pending, self.pending = self.pending, None
                    self._do(pending.op, pending.args, pending.claim, retried=True)
                else:
                    self._step()
            except (ConnLost, errors.DaemonUnreachable, errors.ProtocolError, OSError):
                self._drop()
                if not self.gate.down.is_set():
                    with self.shared.lock:
                        self.shared.reconnects_while_up += 1
                    self.gate.down.wait(0.05)
                continue
            self.gate.down.wait(self.rng.uniform(0, 2 * self.think))

    def _drop(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def _call(
        self, op: str, args: dict[str, Any], fn: Callable[[Client], Any], retried: bool
    ) -> tuple[Ack, Any]:
        """One request; logs the reply (result or error). Raises ConnLost
        when the reply never came (``_do`` keeps it to send again)."""
        assert self.client is not None
        t_send = time.time()
        try:
            result = fn(self.client)
        except (errors.DaemonUnreachable, errors.ProtocolError, OSError):
            with self.shared.lock:
                self.shared.unacked[op] += 1
            raise ConnLost from None
        except errors.AghError as exc:
            ack = Ack(
                self.n,
                self.shared.incarnation,
                op,
                t_send,
                time.time(),
                exc.kind,
                retried,
                _public(args),
                {"message": str(exc)[:300]},
            )
            self.shared.acks.append(ack)
            return ack, exc
        ack = Ack(
            self.n,
            self.shared.incarnation,
            op,
            t_send,
            time.time(),
            "ok",
            retried,
            _public(args),
            {},
        )
        self.shared.acks.append(ack)
        return ack, result

    # -- behaviour -----------------------------------------------------------

    def _step(self) -> None:
        r = self.rng.random()
        self.counter += 1
        k = self.counter
        args: dict[str, Any]
        if self.claim is not None:
            claim = self.claim
            if r < 0.28:
                self._do("heartbeat", {"run_id": claim.run_id, "token": self._token}, claim)
            elif r < 0.60:
                result = {"agent": self.n, "k": k}
                self._do(
                    "complete",
                    {"run_id": claim.run_id, "token": self._token, "result": result},
                    claim,
                )
            elif r < 0.80:
                args = {
                    "run_id": claim.run_id,
                    "token": self._token,
                    "error": f"e-{self.n}-{k}",
                    "retry": self.rng.random() < 0.7,
                }
                self._do("fail", args, claim)
            elif r < 0.92:
                self._do(
                    "release",
                    {"run_id": claim.run_id, "token": self._token, "reason": f"r-{self.n}-{k}"},
                    claim,
                )
            elif claim.lease_ms <= 1500:
                self._lapse(claim)
            else:
                self._do("heartbeat", {"run_id": claim.run_id, "token": self._token}, claim)
            return
        if r < 0.50:
            lease = 1000 if self.rng.random() < 0.3 else self.rng.randrange(3000, 8000)
            args = {
                "lease_ms": lease,
                "wait_ms": self.rng.choice((0, 0, 50, 150)),
                "idempotency_key": f"claim-{self.n}-{k}",
            }
            self._do("claim", args, None)
        elif r < 0.78:
            args = {
                "title": f"t-{self.n}-{k}",
                "start": self.rng.random() < 0.85,
                "max_attempts": self.rng.choice((1, 1, 2, 3)),
            }
            if self.rng.random() < 0.8:
                args["idempotency_key"] = f"create-{self.n}-{k}"
            self._do("create", args, None)
        elif r < 0.88:
            target = self.shared.pick(self.rng, self.shared.tasks)
            if target is not None:
                self._do("send", {"id": target, "message": f"m-{self.n}-{k}"}, None)
        elif r < 0.95:
            pool = self.shared.roots if self.rng.random() < 0.3 else self.shared.tasks
            target = self.shared.pick(self.rng, pool)
            if target is not None:
                self._do("cancel", {"id": target, "reason": f"c-{self.n}-{k}"}, None)
        else:
            args = {
                "yaml": WORKFLOW_YAML.format(name=f"{self.n}-{k}"),
                "start": self.rng.random() < 0.8,
            }
            self._do("compose", args, None)

    _token = ""  # the live claim's token (never logged: only its hash is)

    def _lapse(self, claim: ClaimRecord) -> None:
        """Let a short lease run out, then check the stale token is fenced."""
        claim.lapsed = True
        wait = (claim.lease_until + 300 - now_ms()) / 1000
        if self.gate.down.wait(max(0.0, wait)):
            raise ConnLost  # killed while waiting: the claim stays as it is
        self._do("heartbeat", {"run_id": claim.run_id, "token": self._token}, claim)

    def _do(
        self, op: str, args: dict[str, Any], claim: ClaimRecord | None, retried: bool = False
    ) -> None:
        if op in FINISH_REASON and claim is not None and claim.finish_sent is None:
            claim.finish_sent = now_ms() - 1  # floor, and never after the job's tx.now
            claim.finish_op = op
        try:
            self._dispatch(op, args, claim, retried)
        except ConnLost:
            # The reply was lost: a real agent asks again after reconnecting.
            # Only requests that are safe to repeat are.
            if op in ("create", "claim", "heartbeat", "complete", "fail", "release"):
                if op == "create" and "idempotency_key" not in args:
                    raise
                self.pending = Pending(op, args, claim)
            raise

    def _dispatch(
        self, op: str, args: dict[str, Any], claim: ClaimRecord | None, retried: bool
    ) -> None:
        shared = self.shared
        if op == "create":
            ack, res = self._call(op, args, lambda c: c.tasks_create(**args), retried)
            if ack.outcome == "ok":
                ack.res = {"task_id": res.task.id, "run_id": res.run.id if res.run else None}
                with shared.lock:
                    shared.tasks.append(res.task.id)
        elif op == "compose":
            ack, res = self._call(
                op, args, lambda c: c.workflows_compose(args["yaml"], start=args["start"]), retried
            )
            if ack.outcome == "ok":
                ack.res = {"workflow_id": res.workflow.id, "root_task_id": res.task.id}
                with shared.lock:
                    shared.roots.append(res.task.id)
        elif op == "send":
            ack, res = self._call(
                op, args, lambda c: c.tasks_send(args["id"], args["message"]), retried
            )
            if ack.outcome == "ok":
                m = res.message
                ack.res = {
                    "message_id": m.id,
                    "task_id": m.task_id,
                    "run_id": m.run_id,
                    "delivered": res.delivered,
                }
        elif op == "cancel":
            ack, res = self._call(
                op, args, lambda c: c.tasks_cancel(args["id"], args["reason"]), retried
            )
            if ack.outcome == "ok":
                ack.res = {"task_id": res.task.id, "status": res.task.status}
        elif op == "claim":
            ack = self._claim(args, retried)
        else:
            self._agent_call(op, args, claim, retried)
            return
        # Refusals our mix can earn: cancel of a closed task; a claim while
        # the session's lapsed claim awaits the reaper; a repeated claim
        # whose first, unacknowledged one has ended since.
        expected = {"cancel": ("conflict",), "claim": ("conflict", "lease_lost")}
        refused = ack.outcome != "ok"
        if (refused and ack.outcome not in expected.get(op, ())) or (
            ack.outcome == "lease_lost" and not retried
        ):
            self._unexpected(op, ack)

    def _claim(self, args: dict[str, Any], retried: bool) -> Ack:
        ack, res = self._call(
            "claim",
            args,
            lambda c: c.claim_next(
                lease_ms=args["lease_ms"],
                wait_ms=args["wait_ms"],
                idempotency_key=args["idempotency_key"],
            ),
            retried,
        )
        if ack.outcome != "ok" or res.claim is None:
            ack.res = {"claim": None} if ack.outcome == "ok" else ack.res
            return ack
        cl = res.claim
        token_hash = hash_token(cl.claim_token)
        record = ClaimRecord(
            agent=self.n,
            incarnation=self.shared.incarnation,
            run_id=cl.run.id,
            task_id=cl.run.task_id,
            token_hash=token_hash,
            session_id=cl.lease.session_id or "",
            attempt=cl.run.attempt,
            max_attempts=cl.run.max_attempts,
            claimed_at=ts_ms(cl.run.claimed_at) or 0,
            lease_until=ts_ms(cl.lease.lease_until) or 0,
            lease_ms=args["lease_ms"],
        )
        ack.res = {
            "run_id": record.run_id,
            "token_hash": token_hash,
            "attempt": record.attempt,
            "claimed_at": record.claimed_at,
            "lease_until": record.lease_until,
        }
        self.shared.claims[token_hash] = record
        self.claim = record
        self._token = cl.claim_token
        return ack

    def _agent_call(
        self, op: str, args: dict[str, Any], claim: ClaimRecord | None, retried: bool
    ) -> None:
        assert claim is not None
        run_id, token = args["run_id"], args["token"]
        t_send = now_ms()
        calls: dict[str, Callable[[Client], Any]] = {
            "heartbeat": lambda c: c.heartbeat(run_id, token),
            "complete": lambda c: c.complete(run_id, token, result=args["result"]),
            "fail": lambda c: c.fail(run_id, token, args["error"], retry=args["retry"]),
            "release": lambda c: c.release(run_id, token, reason=args["reason"]),
        }
        try:
            ack, res = self._call(op, args, calls[op], retried)
        except ConnLost:
            if op == "heartbeat":
                claim.unacked_heartbeat = True
            raise
        ack.req["token_hash"] = claim.token_hash
        if ack.outcome != "ok":
            # Fenced (the only refusal a live token can get): the claim is
            # over for the agent.
            self._forget(claim)
            if ack.outcome != "lease_lost":
                self._unexpected(op, ack)
            return
        lease = res.lease
        ack.res = {
            "status": lease.status,
            "lease_until": ts_ms(lease.lease_until),
            "attempt": lease.attempt,
        }
        if not retried and not claim.unacked_heartbeat and t_send > claim.lease_until:
            # Sent after the acknowledged lease ran out: must have been fenced.
            self.shared.violations.append(
                Violation(
                    "fencing",
                    f"{op} on {run_id} sent {t_send - claim.lease_until} ms "
                    "after its lease ran out was accepted",
                    -1,
                )
            )
        if op == "heartbeat":
            claim.heartbeats_acked += 1
            claim.lease_until = max(claim.lease_until, ts_ms(lease.lease_until) or 0)
            return
        claim.finish_acked = True
        claim.finish_retried = retried
        claim.finish_status = lease.status
        if op == "fail":
            claim.fail_retry = args["retry"]
            claim.finish_error = args["error"]
        if op == "complete":
            claim.finish_result = args["result"]
        self._forget(claim)

    def _forget(self, claim: ClaimRecord) -> None:
        if self.claim is claim:
            self.claim = None
            self._token = ""

    def _unexpected(self, op: str, ack: Ack) -> None:
        # Forbidden with our live token, internal errors, …: the daemon
        # misbehaved; reported, and fatal for the run's verdict.
        self.shared.violations.append(
            Violation("unexpected_error", f"{op} → {ack.outcome}: {ack.res.get('message')}", -1)
        )


def _public(args: dict[str, Any]) -> dict[str, Any]:
    """The request as logged: claim tokens are secrets (only hashes are kept),
    and the workflow YAML is the same template every time."""
    return {k: v for k, v in args.items() if k not in ("token", "yaml")}


class Subscriber(threading.Thread):
    """One ``events.subscribe`` from sequence 0, resumed after every restart
    from the last sequence it received."""

    def __init__(self, socket_path: str, gate: Gate, shared: Shared) -> None:
        super().__init__(name="subscriber", daemon=True)
        self.socket_path = socket_path
        self.gate = gate
        self.shared = shared
        self.last = 0
        # (sequence, event_type, task_id) in the order received.
        self.received: list[tuple[int, str, str | None]] = []
        # (incarnation, after_sequence asked, after_sequence replied)
        self.subscriptions: list[tuple[int, int, int]] = []
        self.overflows = 0
        self.errors: list[str] = []
        self.finish = threading.Event()  # stop once caught up (the final drain)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            with self.gate.cond:
                self.gate.parked += 1
                self.gate.cond.notify_all()

    def _loop(self) -> None:
        gen = self.gate.park(0)
        while not self.finish.is_set() and not self.gate.stop.is_set():
            if self.gate.down.is_set():
                gen = self.gate.park(gen)
                continue
            try:
                with Client(self.socket_path, timeout=10) as c:
                    reply = c.events_subscribe(after_sequence=self.last)
                    self.subscriptions.append(
                        (self.shared.incarnation, self.last, reply.after_sequence)
                    )
                    self._pump(c)
            except (errors.AghError, OSError):
                pass
            if not self.gate.down.is_set():
                self.gate.down.wait(0.05)

    def _pump(self, c: Client) -> None:
        while not self.finish.is_set():
            try:
                ev = c.next_event(timeout=0.5)
            except TimeoutError:
                continue
            if ev.type == "timeline" and ev.timeline is not None:
                task = ev.timeline.task
                self.received.append(
                    (ev.sequence, ev.timeline.event_type, task.id if task else None)
                )
                self.last = ev.sequence
            elif ev.type == "overflow":
                self.overflows += 1
                return  # resubscribe from self.last on a new connection
            elif ev.type == "error":
                self.errors.append(str(ev.error))
                return


# -- the daemon ------------------------------------------------------------------


class Daemon:
    def __init__(self, socket_path: str, db_path: str, log_path: str) -> None:
        self.socket_path = socket_path
        self.db_path = db_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.t_spawn = 0

    def spawn(self) -> None:
        self.t_spawn = now_ms()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aghd",
                    "--socket",
                    self.socket_path,
                    "--db",
                    self.db_path,
                    "--log-level",
                    "WARNING",
                    "--backoff-base-ms",
                    "50",
                    "--backoff-cap-ms",
                    "400",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                cwd=ROOT,
            )

    def wait_ready(self, timeout: float = 20) -> str | None:
        """None once it accepts connections, else why not."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code is not None:
                return f"aghd exited with {code} during start-up (log: {self.log_path})"
            with socket.socket(socket.AF_UNIX) as s:
                try:
                    s.connect(self.socket_path)
                    return None
                except OSError:
                    pass
            time.sleep(0.01)
        return f"aghd did not accept connections within {timeout:g} s"

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(20)

    def terminate(self) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9


# -- views of the state: the database (read-only) and the socket -----------------


class DbView:
    """Everything the checks read from the database file, loaded in one
    read-only snapshot while no daemon runs."""

    full = True

    def __init__(self, path: str, mirror: EventMirror) -> None:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            conn.execute("BEGIN")  # one snapshot for every read below
            self.integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
            self.fk_problems = conn.execute("PRAGMA foreign_key_check").fetchall()
            self.tasks = {
                r[0]: {
                    "status": r[1],
                    "title": r[2],
                    "kind": r[3],
                    "idempotency_key": r[4],
                    "workflow_id": r[5],
                    "parent_task_id": r[6],
                }
                for r in conn.execute(
                    "SELECT id, status, title, kind, idempotency_key, workflow_id, parent_task_id"
                    " FROM tasks"
                )
            }
            self.runs = {
                r[0]: {
                    "task_id": r[1],
                    "status": r[2],
                    "attempt": r[3],
                    "ended_at": r[4],
                    "lease_until": r[5],
                    "claim_token_hash": r[6],
                    "error": r[7],
                    "result": None if r[8] is None else json.loads(r[8]),
                    "max_attempts": r[9],
                }
                for r in conn.execute(
                    "SELECT id, task_id, status, attempt, ended_at, lease_until,"
                    " claim_token_hash, error, result, max_attempts FROM runs"
                )
            }
            self.claims_by_run: dict[str, list[dict[str, Any]]] = defaultdict(list)
            self.claims_by_hash: dict[str, dict[str, Any]] = {}
            for r in conn.execute(
                "SELECT id, run_id, attempt, token_hash, session_id, claimed_at, ended_at,"
                " end_reason FROM claims ORDER BY id"
            ):
                row = {
                    "id": r[0],
                    "run_id": r[1],
                    "attempt": r[2],
                    "token_hash": r[3],
                    "session_id": r[4],
                    "claimed_at": r[5],
                    "ended_at": r[6],
                    "end_reason": r[7],
                }
                self.claims_by_run[r[1]].append(row)
                self.claims_by_hash[r[3]] = row
            self.workflows = dict(conn.execute("SELECT id, root_task_id FROM workflows"))
            self.messages = {
                r[0]: {"task_id": r[1], "run_id": r[2], "direction": r[3], "message": r[4]}
                for r in conn.execute(
                    "SELECT id, task_id, run_id, direction, message FROM run_messages"
                )
            }
            self.event_count, self.event_min, self.event_max = conn.execute(
                "SELECT count(*), min(seq), coalesce(max(seq), 0) FROM events"
            ).fetchone()
            row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
            self.event_autoinc = 0 if row is None else row[0]
            self.mirror_mismatches = mirror.load(conn)
            conn.execute("COMMIT")
        finally:
            conn.close()
        self.mirror = mirror
        self.open_runs: dict[str, list[str]] = defaultdict(list)
        for rid, r in self.runs.items():
            if r["ended_at"] is None:
                self.open_runs[r["task_id"]].append(rid)
        self.tasks_by_key: dict[str, list[str]] = defaultdict(list)
        self.steps: Counter[str] = Counter()
        self.children: dict[str, list[str]] = defaultdict(list)
        for tid, t in self.tasks.items():
            if t["parent_task_id"] is not None:
                self.children[t["parent_task_id"]].append(tid)
            if t["idempotency_key"] is not None:
                self.tasks_by_key[t["idempotency_key"]].append(tid)
            if t["workflow_id"] is not None and t["kind"] == "task":
                self.steps[t["workflow_id"]] += 1

    def task(self, task_id: str) -> dict[str, Any] | None:
        return self.tasks.get(task_id)

    def subtree(self, task_id: str) -> list[str]:
        out, todo = [], [task_id]
        while todo:
            tid = todo.pop()
            if tid in self.tasks:
                out.append(tid)
                todo.extend(self.children.get(tid, ()))
        return out

    def run(self, run_id: str) -> dict[str, Any] | None:
        return self.runs.get(run_id)


class EventMirror:
    """The event log as read so far: events are append-only, so each check
    reads only the new rows, and re-reads a random sample of old ones to
    prove they did not change."""

    def __init__(self, seed: int) -> None:
        self.rows: dict[int, tuple[str, str | None, str | None]] = {}
        self.by_run: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
        self.by_task: set[tuple[str, str | None]] = set()
        self.high = 0
        self.rng = random.Random(f"{seed}/mirror")

    def load(self, conn: sqlite3.Connection) -> list[str]:
        problems = []
        if self.rows:
            sample = self.rng.sample(list(self.rows), min(200, len(self.rows)))
            marks = ",".join("?" * len(sample))
            for seq, etype, task_id, run_id in conn.execute(
                f"SELECT seq, event_type, task_id, run_id FROM events WHERE seq IN ({marks})",
                sample,
            ):
                if self.rows[seq] != (etype, task_id, run_id):
                    problems.append(f"event {seq} changed: {self.rows[seq]} → {etype}")
            found = conn.execute(
                f"SELECT count(*) FROM events WHERE seq IN ({marks})", sample
            ).fetchone()[0]
            if found != len(sample):
                problems.append(f"{len(sample) - found} event(s) seen earlier are gone")
        for seq, etype, task_id, run_id, payload in conn.execute(
            "SELECT seq, event_type, task_id, run_id, payload FROM events WHERE seq > ?"
            " ORDER BY seq",
            (self.high,),
        ):
            self.rows[seq] = (etype, task_id, run_id)
            kept = json.loads(payload) if etype == "run.retry_scheduled" and payload else None
            self.by_run[(etype, run_id)].append(kept)
            self.by_task.add((etype, task_id))
            self.high = seq
        return problems


class SocketView:
    """The same questions answered through the restarted daemon's socket
    (tasks and runs only: claims, events and messages are DB-only)."""

    full = False

    def __init__(self, client: Client, prefetch_tasks: bool = False) -> None:
        self.c = client
        self._tasks: dict[str, dict[str, Any] | None] = {}
        self._runs: dict[str, dict[str, Any] | None] = {}
        self.calls = 0
        if prefetch_tasks:
            cursor = None
            while True:
                page = client.tasks_list(limit=1000, cursor=cursor)
                self.calls += 1
                for t in page.tasks:
                    self._tasks[t.id] = {"status": t.status, "title": t.title, "kind": t.kind}
                cursor = page.next_cursor
                if cursor is None:
                    break
            self.complete = True
        else:
            self.complete = False

    def task(self, task_id: str) -> dict[str, Any] | None:
        if task_id not in self._tasks:
            if self.complete:
                return None
            self.calls += 1
            try:
                t = self.c.tasks_get(task_id).task.task
                self._tasks[task_id] = {"status": t.status, "title": t.title, "kind": t.kind}
            except errors.NotFound:
                self._tasks[task_id] = None
        return self._tasks[task_id]

    def run(self, run_id: str) -> dict[str, Any] | None:
        if run_id not in self._runs:
            self.calls += 1
            try:
                r = self.c.runs_get(run_id).run.run
                self._runs[run_id] = {
                    "task_id": r.task_id,
                    "status": r.status,
                    "attempt": r.attempt,
                    "error": r.error,
                    "result": r.result,
                }
            except errors.NotFound:
                self._runs[run_id] = None
        return self._runs[run_id]


View = DbView | SocketView


# -- the checks ------------------------------------------------------------------


class Checker:
    """Every rule of the module docstring, over a DbView or a SocketView."""

    def __init__(self, shared: Shared, subscriber: Subscriber, seed: int) -> None:
        self.shared = shared
        self.subscriber = subscriber
        self.mirror = EventMirror(seed)
        self.checked: Counter[str] = Counter()  # acknowledged writes checked, by kind
        self.claim_rows_checked = 0
        self.claims_checked = 0
        self.socket_checks = 0
        self.socket_calls = 0
        self.late_reaps: list[int] = []  # ms past lease_until, claims still open at a kill
        self.last_event_max = 0
        self.stream_checked = 0

    # -- per acknowledgement, shared by both views ------------------------------

    def check_ack(self, ack: Ack, v: View, out: list[str]) -> None:
        op, req, res = ack.op, ack.req, ack.res
        if op == "create":
            t = v.task(res["task_id"])
            if t is None:
                out.append(f"acknowledged create of {res['task_id']} is lost")
                return
            if t["title"] != req["title"]:
                out.append(f"task {res['task_id']} title {t['title']!r} != {req['title']!r}")
            if res["run_id"] is not None:
                r = v.run(res["run_id"])
                if r is None or r["task_id"] != res["task_id"]:
                    out.append(f"run {res['run_id']} of acknowledged create is lost")
            if isinstance(v, DbView) and "idempotency_key" in req:
                owners = v.tasks_by_key.get(req["idempotency_key"], [])
                if owners != [res["task_id"]]:
                    out.append(f"idempotency_key {req['idempotency_key']} names {owners}")
        elif op == "compose":
            t = v.task(res["root_task_id"])
            if t is None or t["kind"] != "workflow":
                out.append(f"acknowledged workflow root {res['root_task_id']} is lost")
            if isinstance(v, DbView):
                wf = res["workflow_id"]
                if v.workflows.get(wf) != res["root_task_id"]:
                    out.append(f"acknowledged workflow {wf} is lost")
                if v.steps[wf] != WORKFLOW_STEPS:
                    out.append(f"workflow {wf} has {v.steps[wf]} steps, not {WORKFLOW_STEPS}")
                if (
                    req["start"]
                    and ("workflow.started", res["root_task_id"]) not in v.mirror.by_task
                ):
                    out.append(f"acknowledged start of workflow {wf} has no workflow.started")
        elif op == "send":
            if isinstance(v, DbView):
                m = v.messages.get(res["message_id"])
                want = {
                    "task_id": res["task_id"],
                    "run_id": res["run_id"],
                    "direction": "to_agent",
                    "message": req["message"],
                }
                if m != want:
                    out.append(f"acknowledged message {res['message_id']}: {m} != {want}")
        elif op == "cancel":
            # The whole tree is closed for good; the task itself is canceled
            # if the reply said so (a workflow root that had already failed
            # stays failed while its open steps are canceled).
            task = v.task(res["task_id"])
            statuses = {"canceled"} if res["status"] == "canceled" else CLOSED
            if task is None or task["status"] not in statuses:
                out.append(
                    f"acknowledged cancel of {res['task_id']} (replied {res['status']}): status "
                    f"is {None if task is None else task['status']}"
                )
            if isinstance(v, DbView):
                tree = v.subtree(res["task_id"])
                still_open = [x for x in tree if v.tasks[x]["status"] not in CLOSED]
                open_runs = [r for x in tree for r in v.open_runs.get(x, ())]
                if still_open or open_runs:
                    out.append(
                        f"canceled tree of {res['task_id']}: open tasks {still_open}, "
                        f"open runs {open_runs}"
                    )
                if not any(("task.canceled", x) in v.mirror.by_task for x in tree):
                    out.append(f"acknowledged cancel of {res['task_id']} has no task.canceled")

    def check_claim(self, c: ClaimRecord, v: View, out: list[str]) -> None:
        """The claim, its heartbeats and its finish, as acknowledged."""
        r = v.run(c.run_id)
        if r is None or r["task_id"] != c.task_id:
            out.append(f"run {c.run_id} of an acknowledged claim is lost")
            return
        if c.finish_acked and not c.finish_retried:
            if c.finish_op == "complete":
                self._want(out, v, c, r, "completed", result=c.finish_result)
            elif c.finish_op == "fail" and c.finish_status == "failed":
                self._want(out, v, c, r, "failed", error=c.finish_error)
                if c.fail_retry and c.attempt < c.max_attempts:
                    out.append(
                        f"fail(retry) of {c.run_id} at attempt {c.attempt}/"
                        f"{c.max_attempts} ended the run"
                    )
            elif c.finish_op == "fail" and c.finish_status != "queued":
                out.append(f"fail of {c.run_id} replied {c.finish_status}")
            elif c.finish_op == "release" and c.finish_status != "queued":
                out.append(f"release of {c.run_id} replied {c.finish_status}")
        elif c.finish_acked and c.finish_op == "complete":
            self._want(out, v, c, r, "completed", result=c.finish_result)
        if not isinstance(v, DbView):
            return
        row = v.claims_by_hash.get(c.token_hash)
        self.claim_rows_checked += 1
        if row is None:
            out.append(f"acknowledged claim of {c.run_id} (attempt {c.attempt}) is lost")
            return
        got = (row["run_id"], row["attempt"], row["session_id"], row["claimed_at"])
        want = (c.run_id, c.attempt, c.session_id, c.claimed_at)
        if got != want:
            out.append(f"claim row {row['id']} is {got}, the reply said {want}")
        if ("run.claimed", c.run_id) not in v.mirror.by_run:
            out.append(f"acknowledged claim of {c.run_id} has no run.claimed event")
        reason = row["end_reason"]
        if row["ended_at"] is None:
            if c.finish_acked:
                out.append(f"claim of {c.run_id} still open after an acknowledged {c.finish_op}")
            elif r["claim_token_hash"] == c.token_hash and r["lease_until"] is not None:
                if r["status"] != "running" and c.heartbeats_acked > 0:
                    out.append(f"run {c.run_id} is {r['status']} after an acknowledged heartbeat")
                if r["lease_until"] < c.lease_until:
                    out.append(
                        f"run {c.run_id} lease {r['lease_until']} < acknowledged {c.lease_until}"
                    )
        else:
            if c.finish_acked:
                allowed = {FINISH_REASON[c.finish_op or ""]}
            elif c.finish_op is not None:
                allowed = {FINISH_REASON[c.finish_op], "expired", "canceled"}
            else:
                allowed = {"expired", "canceled"}
            if reason not in allowed:
                out.append(f"claim of {c.run_id} ended {reason!r}, allowed {sorted(allowed)}")
        claims = v.claims_by_run[c.run_id]
        later = [x for x in claims if x["id"] > row["id"]]
        nxt = later[0] if later else None
        if c.finish_acked and c.finish_op == "fail" and c.finish_status == "queued":
            payloads = v.mirror.by_run.get(("run.retry_scheduled", c.run_id), [])
            mine = [p for p in payloads if p and p.get("attempt") == c.attempt]
            if not mine:
                out.append(f"retry of {c.run_id} attempt {c.attempt} has no retry event")
            elif nxt is not None:
                due = ts_ms(mine[-1].get("available_at")) or 0
                if nxt["attempt"] != c.attempt + 1 or nxt["claimed_at"] < due:
                    out.append(
                        f"claim after retry of {c.run_id}: attempt {nxt['attempt']} at "
                        f"{nxt['claimed_at']}, want {c.attempt + 1} from {due}"
                    )
        if c.finish_acked and c.finish_op == "release":
            if ("run.released", c.run_id) not in v.mirror.by_run:
                out.append(f"acknowledged release of {c.run_id} has no event")
            if nxt is not None and nxt["attempt"] != c.attempt:
                out.append(
                    f"claim after release of {c.run_id} is attempt {nxt['attempt']}, "
                    f"not {c.attempt}"
                )

    def _want(
        self, out: list[str], v: View, c: ClaimRecord, r: dict[str, Any], status: str, **fields: Any
    ) -> None:
        if r["status"] != status:
            out.append(f"acknowledged {c.finish_op} of {c.run_id}: run is {r['status']}")
        for name, value in fields.items():
            if r[name] != value:
                out.append(f"acknowledged {c.finish_op} of {c.run_id}: {name} {r[name]!r}")
        t = v.task(c.task_id)
        if t is None or t["status"] != status:
            out.append(
                f"acknowledged {c.finish_op} of {c.run_id}: task is "
                f"{None if t is None else t['status']}"
            )

    # -- from the client log alone ------------------------------------------------

    def check_overlaps(self, out: list[str]) -> None:
        """No two acknowledged claims of one run with overlapping leases.

        A claim was surely live from its claimed_at until the earlier of its
        longest acknowledged lease_until and the moment its holder first sent
        a finish; a later claim of the run starting before that is a double
        claim (cancel ends a run for good, so it cannot hide one).
        """
        by_run: dict[str, list[ClaimRecord]] = defaultdict(list)
        for c in self.shared.claims.values():
            by_run[c.run_id].append(c)
        for run_id, claims in by_run.items():
            claims.sort(key=lambda c: c.claimed_at)
            live_until, holder = -1, None
            for c in claims:
                if c.claimed_at < live_until:
                    out.append(
                        f"run {run_id}: agent {c.agent} claimed at {c.claimed_at} while "
                        f"agent {holder}'s lease ran to {live_until}"
                    )
                end = c.lease_until if c.finish_sent is None else min(c.lease_until, c.finish_sent)
                if end > live_until:
                    live_until, holder = end, c.agent
        self.claims_checked = len(self.shared.claims)

    # -- the database as a whole -------------------------------------------------

    def check_db(self, v: DbView, kill: int, spawned_at: int | None, killed_at: int) -> list[str]:
        out: list[str] = []
        if v.integrity != ["ok"]:
            out.append(f"integrity_check: {v.integrity[:5]}")
        if v.fk_problems:
            out.append(f"foreign_key_check: {v.fk_problems[:5]}")
        out.extend(v.mirror_mismatches)
        # Events: exactly 1..max, never fewer than a check saw before.
        if v.event_count and (v.event_min != 1 or v.event_count != v.event_max):
            out.append(f"events: {v.event_count} rows over 1..{v.event_max} (min {v.event_min})")
        if v.event_max < self.last_event_max:
            out.append(f"events: max seq went back from {self.last_event_max} to {v.event_max}")
        if v.event_autoinc < v.event_max:
            out.append(f"sqlite_sequence {v.event_autoinc} < max(seq) {v.event_max}")
        self.last_event_max = v.event_max
        # Runs and claims: one holder at a time.
        open_per_task: Counter[str] = Counter()
        for rid, r in v.runs.items():
            is_open = r["ended_at"] is None
            if is_open != (r["status"] in OPEN):
                out.append(f"run {rid} is {r['status']} with ended_at {r['ended_at']}")
            if is_open:
                open_per_task[r["task_id"]] += 1
            open_claims = [x for x in v.claims_by_run.get(rid, []) if x["ended_at"] is None]
            if len(open_claims) > 1:
                out.append(f"run {rid} has {len(open_claims)} open claims")
            if r["status"] in ACTIVE:
                if len(open_claims) != 1 or open_claims[0]["token_hash"] != r["claim_token_hash"]:
                    out.append(f"active run {rid} is not held by exactly its open claim")
                if r["lease_until"] is None:
                    out.append(f"active run {rid} has no lease")
                elif spawned_at is not None and r["lease_until"] <= spawned_at:
                    out.append(
                        f"run {rid}: lease ran out at {r['lease_until']} before the "
                        f"restart at {spawned_at} and was not recovered"
                    )
                elif r["lease_until"] < killed_at:
                    self.late_reaps.append(killed_at - r["lease_until"])
            elif open_claims:
                out.append(f"run {rid} is {r['status']} but has an open claim")
            history = v.claims_by_run.get(rid, [])
            for a, b in itertools.pairwise(history):
                if a["ended_at"] is None or a["ended_at"] > b["claimed_at"]:
                    out.append(
                        f"run {rid}: claim {b['id']} at {b['claimed_at']} while claim "
                        f"{a['id']} was open (ended {a['ended_at']})"
                    )
        for task_id, n in open_per_task.items():
            if n > 1:
                out.append(f"task {task_id} has {n} open runs")
        # Every acknowledged write, and every acknowledged claim.
        for ack in self.shared.acks:
            if ack.outcome == "ok" and ack.op in ("create", "compose", "send", "cancel"):
                self.checked[ack.op] += 1
                self.check_ack(ack, v, out)
        for c in self.shared.claims.values():
            self._count_claim(c)
            self.check_claim(c, v, out)
        self.check_overlaps(out)
        self.check_stream(v, out)
        return out

    def _count_claim(self, c: ClaimRecord) -> None:
        self.checked["claim"] += 1
        self.checked["heartbeat"] += c.heartbeats_acked
        if c.finish_acked and c.finish_op is not None:
            self.checked[c.finish_op] += 1

    def check_stream(self, v: DbView, out: list[str]) -> None:
        """The subscriber's union is exactly 1..last, in order, matching the table."""
        sub = self.subscriber
        for _incarnation, asked, replied in sub.subscriptions:
            if asked != replied:
                out.append(f"events.subscribe after {asked} replied after_sequence {replied}")
        expected = 1
        for seq, etype, task_id in sub.received:
            if seq != expected:
                kind = "duplicate" if seq < expected else "gap"
                out.append(f"stream: {kind}: got {seq}, expected {expected}")
                expected = seq + 1 if seq > expected else expected
                continue
            expected += 1
            row = v.mirror.rows.get(seq)
            if row is None:
                out.append(f"stream delivered {seq}, which is not in the events table")
            elif row[0] != etype or (task_id is not None and row[1] != task_id):
                out.append(f"stream event {seq} is {etype}/{task_id}, table has {row[:2]}")
        self.stream_checked = len(sub.received)
        if sub.errors:
            out.append(f"stream error notifications: {sub.errors[:3]}")

    def check_socket(self, c: Client, acks: list[Ack], claims: list[ClaimRecord]) -> list[str]:
        out: list[str] = []
        v = SocketView(c, prefetch_tasks=len(acks) > 500)
        for ack in acks:
            if ack.outcome == "ok" and ack.op in ("create", "compose", "cancel"):
                self.check_ack(ack, v, out)
        for cl in claims:
            self.check_claim(cl, v, out)
        self.socket_checks += len(acks) + len(claims)
        self.socket_calls += v.calls
        return out


# -- the run ---------------------------------------------------------------------


@dataclass
class Report:
    kills: int = 0
    startup_kills: int = 0
    restarts: int = 0
    seconds: float = 0.0
    uptime_s: float = 0.0
    replies: dict[str, int] = field(default_factory=dict)  # op:outcome → count
    acknowledged_writes: dict[str, int] = field(default_factory=dict)
    checks_by_kind: dict[str, int] = field(default_factory=dict)  # cumulative over kills
    unacked_by_op: dict[str, int] = field(default_factory=dict)
    retried_acks: int = 0
    claims: int = 0
    claim_rows_checked: int = 0
    runs_in_db: int = 0
    tasks_in_db: int = 0
    events_in_db: int = 0
    events_streamed: int = 0
    subscriptions: int = 0
    overflows: int = 0
    socket_checks: int = 0
    socket_calls: int = 0
    late_reaps: int = 0
    max_late_reap_ms: int = 0
    reconnects_while_up: int = 0
    clean_exit_code: int | None = None
    workdir: str = ""
    violations: list[dict[str, Any]] = field(default_factory=list)
    violation_count: int = 0

    def ok(self) -> bool:
        return self.violation_count == 0


class Harness:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.rng = random.Random(f"{opts.seed}/harness")
        self.workdir = opts.workdir or tempfile.mkdtemp(prefix="aghcrash", dir="/tmp")
        os.makedirs(self.workdir, exist_ok=True)
        self.socket_path = os.path.join(self.workdir, "s.sock")
        self.db_path = os.path.join(self.workdir, "agh.db")
        self.daemon = Daemon(self.socket_path, self.db_path, os.path.join(self.workdir, "aghd.log"))
        self.shared = Shared()
        self.gate = Gate(opts.agents + 1)
        self.agents = [
            Agent(n, self.socket_path, self.gate, self.shared, opts) for n in range(opts.agents)
        ]
        self.subscriber = Subscriber(self.socket_path, self.gate, self.shared)
        self.checker = Checker(self.shared, self.subscriber, opts.seed)
        self.violations: list[Violation] = []
        self.report = Report(workdir=self.workdir)
        self._socket_mark = 0  # acks before this index were socket-checked already
        self._claims_mark = 0

    def log(self, msg: str) -> None:
        if self.opts.verbose:
            print(msg, file=sys.stderr, flush=True)

    def violate(self, kind: str, detail: str, kill: int) -> None:
        self.violations.append(Violation(kind, detail, kill))

    def run(self) -> Report:
        started = time.monotonic()
        for t in [*self.agents, self.subscriber]:
            t.start()
        try:
            for k in range(1, self.opts.kills + 1):
                if not self._cycle(k):
                    break
            else:
                self._final()
        finally:
            self.gate.shutdown()
            for t in [*self.agents, self.subscriber]:
                t.join(15)
            if self.daemon.proc is not None and self.daemon.proc.poll() is None:
                self.daemon.kill()
        if self.report.uptime_s > 0 and not any(a.outcome == "ok" for a in self.shared.acks):
            # A harness that got no reply checked nothing: fail, not pass.
            self.violate("harness", "no request was acknowledged under load", self.report.kills)
        self._fill_report(time.monotonic() - started)
        return self.report

    def _cycle(self, k: int) -> bool:
        """Spawn, load, SIGKILL, check. False when the harness must stop."""
        opts = self.opts
        self.shared.incarnation = k
        self.daemon.spawn()
        startup_kill = self.rng.random() < opts.startup_kill_fraction
        ready_at: int | None = None
        if startup_kill:
            time.sleep(self.rng.uniform(0, 0.15))
            self.report.startup_kills += 1
        else:
            why = self.daemon.wait_ready()
            if why is not None:
                self.violate("restart", why, k)
                self.daemon.kill()
                return False
            self.report.restarts += 1
            ready_at = self.daemon.t_spawn
            if not self._socket_check(k, final=False):
                return False
            self.gate.resume()
            uptime = self.rng.uniform(opts.min_uptime, opts.max_uptime)
            time.sleep(uptime)
            self.report.uptime_s += uptime
        self.gate.down.set()
        killed_at = now_ms()
        self.daemon.kill()
        self.report.kills += 1
        if not startup_kill and not self.gate.wait_parked(20):
            self.violate("harness", "a worker did not stop after the kill", k)
            return False
        workers: list[Agent | Subscriber] = [*self.agents, self.subscriber]
        for w in workers:
            if w.error is not None:
                self.violate("harness", f"{w.name} crashed: {w.error!r}", k)
                return False
        problems = self._db_check(k, ready_at, killed_at)
        self.log(
            f"kill {k}: {'startup ' if startup_kill else ''}acks={len(self.shared.acks)} "
            f"events={self.checker.last_event_max} problems={len(problems)}"
        )
        return True

    def _db_check(self, k: int, spawned_at: int | None, killed_at: int) -> list[str]:
        view = DbView(self.db_path, self.checker.mirror)
        problems = self.checker.check_db(view, k, spawned_at, killed_at)
        # Violations the agents saw at call time (fencing, unexpected errors).
        seen, self.shared.violations[:] = list(self.shared.violations), []
        for v in seen:
            self.violations.append(Violation(v.kind, v.detail, k))
        for p in problems:
            self.violate("db", p, k)
        self.report.runs_in_db = len(view.runs)
        self.report.tasks_in_db = len(view.tasks)
        self.report.events_in_db = view.event_max
        return problems

    def _socket_check(self, k: int, final: bool) -> bool:
        """After a restart: the writes most at risk (the last incarnation's
        newest acks) plus a random sample of older ones, or all at the end."""
        acks = self.shared.acks
        claims = list(self.shared.claims.values())
        if final:
            # Tasks all (one tasks.list walk); runs a bounded sample (one call each).
            cap = self.opts.socket_sample * 30
            chosen = list(acks)
            chosen_claims = claims[-cap // 2 :] + self.rng.sample(
                claims[: -cap // 2], max(0, min(len(claims) - cap // 2, cap // 2))
            )
        else:
            recent = acks[self._socket_mark :][-self.opts.socket_sample :]
            older = acks[: self._socket_mark]
            chosen = recent + self.rng.sample(older, min(len(older), self.opts.socket_sample))
            fresh = claims[self._claims_mark :][-self.opts.socket_sample :]
            old = claims[: self._claims_mark]
            chosen_claims = fresh + self.rng.sample(old, min(len(old), self.opts.socket_sample))
        self._socket_mark, self._claims_mark = len(acks), len(claims)
        try:
            with Client(self.socket_path, timeout=20) as c:
                info = c.server_info()
                if info.pid != self.daemon.proc.pid:  # type: ignore[union-attr]
                    self.violate("restart", f"socket answered by pid {info.pid}", k)
                    return False
                for p in self.checker.check_socket(c, chosen, chosen_claims):
                    self.violate("socket", p, k)
        except errors.AghError as exc:
            self.violate("restart", f"restarted daemon failed the socket check: {exc}", k)
            return False
        return True

    def _final(self) -> None:
        """Restart once more: every acknowledged write through the socket, the
        subscriber caught up to the end of the log, then a clean SIGTERM."""
        k = self.opts.kills + 1
        self.shared.incarnation = k
        self.daemon.spawn()
        why = self.daemon.wait_ready()
        if why is not None:
            self.violate("restart", why, k)
            return
        self.report.restarts += 1
        if not self._socket_check(k, final=True):
            return
        self.gate.stop_agents.set()  # no new load: only the subscriber resumes work
        self.gate.resume()
        target = DbView(self.db_path, self.checker.mirror).event_max
        deadline = time.monotonic() + 30
        while self.subscriber.last < target and time.monotonic() < deadline:
            time.sleep(0.05)
        self.subscriber.finish.set()
        self.subscriber.join(10)
        if self.subscriber.last < target:
            self.violate("stream", f"subscriber stuck at {self.subscriber.last} < {target}", k)
        self.report.clean_exit_code = self.daemon.terminate()
        if self.report.clean_exit_code != 0:
            self.violate("restart", f"SIGTERM exit code {self.report.clean_exit_code}", k)
        self._db_check(k, self.daemon.t_spawn, now_ms())

    def _fill_report(self, seconds: float) -> None:
        r, ch, sh = self.report, self.checker, self.shared
        r.seconds = round(seconds, 2)
        r.uptime_s = round(r.uptime_s, 2)
        r.replies = dict(sorted(Counter(f"{a.op}:{a.outcome}" for a in sh.acks).items()))
        writes: Counter[str] = Counter(
            a.op for a in sh.acks if a.outcome == "ok" and a.op != "claim"
        )
        writes["claim"] = len(sh.claims)
        r.acknowledged_writes = dict(sorted(writes.items()))
        r.checks_by_kind = dict(sorted(ch.checked.items()))
        r.unacked_by_op = dict(sorted(sh.unacked.items()))
        r.retried_acks = sum(1 for a in sh.acks if a.retried)
        r.claims = ch.claims_checked
        r.claim_rows_checked = ch.claim_rows_checked
        r.events_streamed = ch.stream_checked
        r.subscriptions = len(self.subscriber.subscriptions)
        r.overflows = self.subscriber.overflows
        r.socket_checks = ch.socket_checks
        r.socket_calls = ch.socket_calls
        r.late_reaps = len(ch.late_reaps)
        r.max_late_reap_ms = max(ch.late_reaps, default=0)
        r.reconnects_while_up = sh.reconnects_while_up
        r.violation_count = len(self.violations)
        r.violations = [asdict(v) for v in self.violations[:50]]


def run(opts: Options) -> Report:
    """Run the harness; the workdir is removed unless kept or a check failed."""
    harness = Harness(opts)
    report = harness.run()
    if not opts.keep and opts.workdir is None and report.ok():
        shutil.rmtree(harness.workdir, ignore_errors=True)
    return report


def summary(r: Report) -> Iterator[str]:
    yield (
        f"kills survived: {r.kills} ({r.startup_kills} during start-up), restarts: "
        f"{r.restarts}, {r.seconds:.1f} s ({r.uptime_s:.1f} s under load)"
    )
    yield "acknowledged writes: " + ", ".join(f"{k} {v}" for k, v in r.acknowledged_writes.items())
    yield "checks by kind (summed over kills): " + ", ".join(
        f"{k} {v}" for k, v in r.checks_by_kind.items()
    )
    yield (
        f"claims: {r.claims} acknowledged (overlap-checked), {r.claim_rows_checked} claim-row "
        f"checks; db: {r.tasks_in_db} tasks, {r.runs_in_db} runs"
    )
    yield (
        f"events: {r.events_in_db} in the table (contiguous check each kill), "
        f"{r.events_streamed} streamed over {r.subscriptions} subscriptions, "
        f"{r.overflows} overflows"
    )
    yield (
        f"in flight at a kill: {sum(r.unacked_by_op.values())} {r.unacked_by_op}; "
        f"retried after reconnect and answered: {r.retried_acks}"
    )
    yield (
        f"socket checks: {r.socket_checks} ({r.socket_calls} calls); late reaps: "
        f"{r.late_reaps} (max {r.max_late_reap_ms} ms); clean SIGTERM exit: "
        f"{r.clean_exit_code}"
    )
    yield f"violations: {r.violation_count}"
    for v in r.violations[:20]:
        yield f"  [{v['kind']} @kill {v['at_kill']}] {v['detail']}"
    if not r.ok():
        yield f"database and daemon log kept in {r.workdir}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--seed", type=int, default=None, help="default: random (printed)")
    parser.add_argument("--agents", type=int, default=16)
    parser.add_argument("--min-uptime", type=float, default=0.3, help="seconds")
    parser.add_argument("--max-uptime", type=float, default=1.5, help="seconds")
    parser.add_argument("--startup-kill-fraction", type=float, default=0.1)
    parser.add_argument("--think-ms", type=float, default=15.0)
    parser.add_argument("--socket-sample", type=int, default=60)
    parser.add_argument("--workdir", help="keep the database and log here")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per kill")
    args = parser.parse_args(argv)
    if args.kills < 1 or args.agents < 1 or not 0 < args.min_uptime <= args.max_uptime:
        parser.error("need --kills ≥ 1, --agents ≥ 1 and 0 < --min-uptime ≤ --max-uptime")
    seed = args.seed if args.seed is not None else random.randrange(1 << 30)
    opts = Options(
        kills=args.kills,
        seed=seed,
        agents=args.agents,
        min_uptime=args.min_uptime,
        max_uptime=args.max_uptime,
        startup_kill_fraction=args.startup_kill_fraction,
        think_ms=args.think_ms,
        socket_sample=args.socket_sample,
        workdir=args.workdir,
        verbose=args.verbose,
    )
    report = run(opts)
    if args.json:
        print(json.dumps({"seed": seed, **asdict(report)}, indent=2))
    else:
        print(f"seed: {seed}")
        for line in summary(report):
            print(line)
    return 0 if report.ok() else 1


if __name__ == "__main__":
    sys.exit(main())
