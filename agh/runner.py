"""The engine of ``agh worker``: slots that claim runs and run a command for
each, keeping the lease, the log, the input and the finish for it.

One slot per ``--concurrency``: a thread with its own connection (its own
agent session, named ``--name``) that long-polls ``agent.claim_next`` while
it is free. While its command runs, the slot tends the run from that same
connection: log lines as they come, input sent with ``agh send`` appended
to ``$AGH_MESSAGES`` every second, a heartbeat at a third of the lease. The
helper threads of a run only move bytes (stdin in, stdout and stderr out,
the exit status): they never touch the connection, so a Client stays with
one thread, and a slow daemon never blocks the command (its lines wait in
a bounded buffer; past that they are counted and dropped).

aghd gone: every call that finds it unreachable (or shutting down) drops
the connection; claims are retried with a backoff doubling up to 5 s,
heartbeats every second while the lease lasts. The worker says once that it
waits for aghd and once that it is back. Each claim carries an idempotency
key kept until its answer arrives, so a claim whose reply was lost (aghd
died in between) is replayed after the reconnect instead of leaving a run
claimed by nobody; the slot reconnects as the same session for that.

Stopping (SIGTERM, SIGINT): the handler only records the signal and wakes
the main thread, which stops the slots: a slot waiting in a long poll gets
its connection half-closed, so aghd answers at once (with the run it may
just have claimed, which is then released: none is lost); a running
command's process group gets SIGTERM, then SIGKILL after the grace period,
and its run is released. A second signal kills at once.

Owns: the claim loop, the child processes and their process groups, the
lease, log and message traffic of a run, and the finish rules (result,
error text). Must not: parse options or import click (``agh.cli.worker``
does), or know the wire format (the client does).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import msgspec

from agh import protocol as p
from agh.client import Client
from agh.errors import (
    AghError,
    Busy,
    Conflict,
    DaemonUnreachable,
    Forbidden,
    InvalidParams,
    LeaseLost,
    NotFound,
)

# The heartbeat rule of the SDK (two beats may be missed before the lease ends).
from agh.work import BEATS_PER_LEASE, MIN_BEAT_INTERVAL_S

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from types import FrameType


T = TypeVar("T")

# How a run (or, with --once, the worker) ended.
Outcome = Literal["completed", "failed", "lost", "released", "no_work", "stopped"]

# Retry delays while aghd is unreachable: doubling from the first to the cap.
BACKOFF_FIRST_S = 0.1
BACKOFF_CAP_S = 5.0
# How often a running run's input is polled (agent.messages).
MESSAGES_POLL_S = 1.0
# The longest single long poll the protocol allows (wait_ms max 60 000).
MAX_POLL_S = 60.0
# A long line of output is logged in pieces of this many bytes (a log line
# may hold 64 KiB of text; JSON escaping may grow it, the request must stay
# under aghd's 1 MiB line limit).
CHUNK_BYTES = 16_384
# Lines waiting for agent.log: past this, lines are counted and dropped.
LOG_BUFFER_LINES = 2_000
# Lines written within this long of each other go in one agent.log request.
LOG_GATHER_S = 0.1
# One agent.log request: at most this many lines and bytes of text.
LOG_BATCH_LINES = 500
LOG_BATCH_BYTES = 128 * 1024
# The result line (last stdout line) is kept up to this size.
MAX_RESULT_BYTES = 512 * 1024
# The error text of a failed run: the last lines of stderr, cut to this.
ERROR_TAIL_LINES = 20
ERROR_MAX_CHARS = 2_000
# AGH_INPUT is left out above this (one variable may hold 128 KiB on
# Linux); the input is on stdin anyway.
MAX_ENV_INPUT = 64 * 1024
# Per request: a daemon that does not answer in this long is unreachable.
RPC_TIMEOUT_S = 30.0
# While stopping, how often idle slots are interrupted again.
STOP_NUDGE_S = 1.0
# After the last SIGKILL, how long output readers may take to see the end.
READER_JOIN_S = 1.0


@dataclass(frozen=True)
class WorkerOptions:
    """What ``agh worker`` was asked to do (see its help)."""

    socket_path: str
    command: Sequence[str]
    agent_name: str
    channel: str | None = None
    workspace: str | None = None
    concurrency: int = 1
    lease_s: float = 60.0
    wait_s: float = 30.0
    grace_s: float = 10.0
    once: bool = False
    quiet: bool = False


def _is_transient(exc: BaseException) -> bool:
    """Errors that mean "aghd is away for now": retry after reconnecting."""
    return isinstance(exc, DaemonUnreachable | Busy | OSError)


def _is_fatal_unreachable(exc: BaseException) -> bool:
    """A socket served by someone else, or not ours to use: waiting will not help."""
    return isinstance(exc, DaemonUnreachable) and exc.details.get("cause") in (
        "impostor",
        "permission",
    )


def _is_loss(exc: AghError) -> bool:
    """The run is no longer ours (lease lost, wrong token, run gone)."""
    return isinstance(exc, LeaseLost | Forbidden | NotFound)


class Worker:
    """Claims runs and runs ``options.command`` for each until stopped (or,
    with ``once``, for one run). ``say`` prints one diagnostic line."""

    def __init__(self, options: WorkerOptions, say: Callable[[str], None] | None = None) -> None:
        self.options = options
        self._say_line = say or _stderr_line
        self._say_lock = threading.Lock()
        self.stopping = threading.Event()
        self.killing = threading.Event()
        self._aghd_down = False
        self._aghd_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._outcome: Outcome | None = None
        self._signals = 0
        self._wakeup_fd: int | None = None
        self._slots: list[_Slot] = []
        # Counted before the slot wakes the main thread: a thread still
        # alive in its last lines must not make the main thread wait again.
        self._slots_done = 0
        self._done_lock = threading.Lock()

    # -- output ------------------------------------------------------------------

    def say(self, text: str) -> None:
        with self._say_lock:
            self._say_line(text)

    def echo(self, ident: str, line: str) -> None:
        """A line of a command's output, on the worker's stderr."""
        if not self.options.quiet:
            self.say(f"{ident} | {line}")

    def aghd_down(self, exc: AghError) -> None:
        with self._aghd_lock:
            if self._aghd_down:
                return
            self._aghd_down = True
        self.say(f"agh worker: waiting for aghd: {exc.message}")

    def aghd_up(self) -> None:
        with self._aghd_lock:
            if not self._aghd_down:
                return
            self._aghd_down = False
        self.say("agh worker: aghd is back")

    # -- lifecycle ------------------------------------------------------------------

    def run(self) -> Outcome:
        """Run the slots until they end; return how the worker ended (with
        ``once``: how its run ended, or ``no_work``).

        Raises what made a slot give up: DaemonUnreachable when aghd never
        answered within ``wait_s`` with ``once`` or the socket is not
        aghd's, the daemon's error for a claim it refused, AghError when the
        command could not be started.
        """
        o = self.options
        count = 1 if o.once else o.concurrency
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._wakeup_fd = write_fd
        restore = self._install_signal_handlers()
        where = f"channel {o.channel}" if o.channel else "any channel"
        if o.workspace:
            where += f", workspace {o.workspace}"
        self.say(
            f"agh worker: {o.agent_name} claiming runs ({where}, "
            f"{'one run' if o.once else f'concurrency {count}'}) on {o.socket_path}"
        )
        self._slots = [_Slot(self, i) for i in range(count)]
        try:
            for slot in self._slots:
                slot.start()
            while self._finished() < count:
                # Once stopping, the slots are interrupted again each second:
                # a poll sent just as it was interrupted went out again on a
                # new connection (the client reconnects on a broken pipe).
                timeout = STOP_NUDGE_S if self.stopping.is_set() else None
                if select.select([read_fd], [], [], timeout)[0]:
                    os.read(read_fd, 512)
                if self._signals >= 1 and not self.stopping.is_set():
                    self.say("agh worker: stopping: no more claims; ending the running commands")
                if self._signals >= 2 and not self.killing.is_set():
                    self.say("agh worker: stopping now: killing the running commands")
                    self.kill()
                elif self._signals or self.stopping.is_set():
                    self.stop()
            for slot in self._slots:
                slot.join()
        finally:
            restore()
            self._wakeup_fd = None
            os.close(read_fd)
            os.close(write_fd)
        if self._fatal is not None:
            raise self._fatal
        return self._outcome or "stopped"

    def stop(self) -> None:
        """Stop claiming, end the commands (after the grace period), release
        their runs. Safe from any thread, but not from a signal handler."""
        self.stopping.set()
        for slot in self._slots:
            slot.interrupt()

    def kill(self) -> None:
        """Like ``stop``, without the grace period."""
        self.killing.set()
        self.stop()

    def wake_main(self) -> None:
        fd = self._wakeup_fd
        if fd is not None:
            with contextlib.suppress(OSError):  # full pipe: it is awake anyway
                os.write(fd, b"!")

    def slot_done(self) -> None:
        with self._done_lock:
            self._slots_done += 1
        self.wake_main()

    def _finished(self) -> int:
        with self._done_lock:
            return self._slots_done

    def slot_failed(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self.stop()

    def slot_outcome(self, outcome: Outcome) -> None:
        self._outcome = outcome

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None  # embedded (tests): the caller calls stop()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only count and wake: locks and printing are unsafe here.
            self._signals += 1
            self.wake_main()

        previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}

        def restore() -> None:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore


def _stderr_line(text: str) -> None:
    stream = sys.stderr
    if stream is None:
        return
    with contextlib.suppress(OSError, ValueError):  # stderr closed: nothing to tell
        stream.write(text + "\n")
        stream.flush()


class _Slot(threading.Thread):
    """One claim at a time, over one connection and one agent session."""

    def __init__(self, worker: Worker, index: int) -> None:
        super().__init__(name=f"agh-worker-slot-{index}", daemon=True)
        self.worker = worker
        self.options = worker.options
        self.wake = threading.Event()
        self._client: Client | None = None
        self.session_id: str | None = None
        self._lock = threading.Lock()
        self._claiming: Client | None = None
        self._key: str | None = None
        # The run the last finish claimed for this slot (one round trip per
        # cycle), run next instead of asking again.
        self.ahead: p.Claim | None = None

    # -- connection -----------------------------------------------------------------

    def connection(self) -> Client:
        """The slot's client, connecting (as the slot's session) if needed.
        Raises DaemonUnreachable."""
        if self._client is None:
            self._client = Client(
                self.options.socket_path,
                timeout=RPC_TIMEOUT_S,
                agent_name=self.options.agent_name,
                session_id=self.session_id,
            )
            assert self._client.session is not None
            self.session_id = self._client.session.session_id
        return self._client

    def drop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def call(self, fn: Callable[[Client], T]) -> T:
        """``fn(client)``; a transient failure drops the connection (the next
        call reconnects) and says that aghd is away, then goes on."""
        try:
            result = fn(self.connection())
        except BaseException as exc:
            if _is_transient(exc):
                self.drop()
                if isinstance(exc, AghError):
                    self.worker.aghd_down(exc)
            raise
        self.worker.aghd_up()
        return result

    def interrupt(self) -> None:
        """End a pending long poll now, and wake a tended run."""
        with self._lock:
            if self._claiming is not None:
                self._claiming.shutdown_write()
        self.wake.set()

    # -- the claim loop -----------------------------------------------------------

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:
            self.worker.slot_failed(exc)
        finally:
            self.drop()
            self.worker.slot_done()

    def _loop(self) -> None:
        w, o = self.worker, self.options
        deadline = time.monotonic() + o.wait_s
        backoff = BACKOFF_FIRST_S
        while not w.stopping.is_set():
            if o.once:
                poll = min(max(0.0, deadline - time.monotonic()), MAX_POLL_S)
            else:
                poll = min(max(o.wait_s, 1.0), MAX_POLL_S)  # never a busy loop
            got, self.ahead = self.ahead, None
            try:
                if got is None:
                    got = self._claim(poll)
            except (AghError, OSError) as exc:
                if isinstance(exc, LeaseLost):
                    # The claim this key made has already ended: claim anew.
                    self._key = None
                    continue
                if isinstance(exc, Conflict):
                    # The session holds a run we have no token for: leave it
                    # to its lease and go on as a new session.
                    w.say(f"agh worker: {exc.message}; going on as a new session")
                    self.session_id, self._key = None, None
                    self.drop()
                    continue
                if not _is_transient(exc) or _is_fatal_unreachable(exc):
                    raise
                if o.once and time.monotonic() >= deadline:
                    if isinstance(exc, AghError):
                        raise
                    raise DaemonUnreachable(f"aghd on {o.socket_path}: {exc}") from exc
                w.stopping.wait(
                    min(backoff, max(0.05, deadline - time.monotonic())) if o.once else backoff
                )
                backoff = min(backoff * 2, BACKOFF_CAP_S)
                continue
            backoff = BACKOFF_FIRST_S
            if got is None:
                if o.once and time.monotonic() >= deadline:
                    w.slot_outcome("no_work")
                    return
                continue
            if w.stopping.is_set():
                # Claimed as the stop came: give it back untouched.
                self._give_back(got)
                return
            outcome = _Run(self, got).execute()
            if o.once:
                w.slot_outcome(outcome)
                return

    def _give_back(self, got: p.Claim) -> None:
        with contextlib.suppress(AghError, OSError):
            self.call(lambda c: c.release(got.run.id, got.claim_token, "worker stopped"))

    def chained(self) -> p.NextClaimParams | None:
        """What a finish should claim next for this slot: the same filters,
        no wait (an empty queue is waited on by ``_claim``); None when no
        next run is wanted (``--once``, stopping)."""
        o = self.options
        if o.once or self.worker.stopping.is_set():
            return None
        return p.NextClaimParams(
            network_channel=o.channel, workspace=o.workspace, lease_ms=round(o.lease_s * 1000)
        )

    def take_next(self, done: p.FinishResult) -> None:
        if isinstance(done.next, p.Claim):
            self.ahead = done.next

    def _claim(self, poll_s: float) -> p.Claim | None:
        o = self.options
        # Kept until an answer arrives: a retry after a lost reply replays it.
        if self._key is None:
            self._key = "agh-worker-" + secrets.token_hex(12)
        key = self._key

        def claim(client: Client) -> p.Claim | None:
            with self._lock:
                if self.worker.stopping.is_set():
                    return None
                self._claiming = client
            try:
                fields: dict[str, Any] = {
                    "wait_ms": round(poll_s * 1000),
                    "lease_ms": round(o.lease_s * 1000),
                    "idempotency_key": key,
                }
                if o.channel is not None:
                    fields["network_channel"] = o.channel
                if o.workspace is not None:
                    fields["workspace"] = o.workspace
                return client.claim_next(**fields).claim
            finally:
                with self._lock:
                    self._claiming = None

        got = self.call(claim)
        self._key = None
        return got


class _LogBuffer:
    """Lines waiting for ``agent.log``, bounded: when full, the oldest line
    waiting is dropped (the end of the output, where errors are, matters
    most) and counted; a "… N lines dropped" line then goes out where they
    were. The command never waits for the daemon."""

    def __init__(self, capacity: int = LOG_BUFFER_LINES) -> None:
        self.capacity = capacity
        self._lines: deque[dict[str, Any]] = deque()
        self._dropped = 0
        self._lock = threading.Lock()

    def add(self, entry: dict[str, Any]) -> bool:
        """Keep a line; True when it is the first one waiting, so the
        sender is woken once per batch, not once per line."""
        with self._lock:
            first = not self._lines and not self._dropped
            if len(self._lines) >= self.capacity:
                oldest = self._lines.popleft()
                # A gap line put back after a failed send counts what it stood for.
                self._dropped += oldest.get("metadata", {}).get("dropped", 1)
            self._lines.append(entry)
            return first

    def take(self) -> list[dict[str, Any]]:
        """The next batch to send (empty when nothing waits)."""
        with self._lock:
            batch: list[dict[str, Any]] = []
            if self._dropped:
                n, self._dropped = self._dropped, 0
                batch.append(
                    {
                        "level": "warn",
                        "message": f"… {n} line{'' if n == 1 else 's'} dropped "
                        "(aghd took them too slowly)",
                        "metadata": {"stream": "worker", "dropped": n},
                    }
                )
            size = 0
            while self._lines and len(batch) < LOG_BATCH_LINES:
                length = len(self._lines[0]["message"])
                if batch and size + length > LOG_BATCH_BYTES:
                    break
                batch.append(self._lines.popleft())
                size += length
            return batch

    def put_back(self, batch: list[dict[str, Any]]) -> None:
        """A batch that could not be sent goes first next time."""
        with self._lock:
            self._lines.extendleft(reversed(batch))
            while len(self._lines) > self.capacity:
                oldest = self._lines.popleft()
                self._dropped += oldest.get("metadata", {}).get("dropped", 1)

    def pending(self) -> bool:
        with self._lock:
            return bool(self._lines or self._dropped)

    def backlogged(self) -> bool:
        """More than one batch waits."""
        with self._lock:
            return len(self._lines) >= LOG_BATCH_LINES


class _Child:
    """The command: its own session and process group, pipes on all three
    standard streams. The exit is awaited without reaping (``WNOWAIT``), so
    the group can still be signalled safely after the leader exited: its
    pid cannot be reused until ``reap``."""

    def __init__(
        self, argv: Sequence[str], env: dict[str, str], stdin: bytes, wake: Callable[[], None]
    ) -> None:
        self.proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # a group to signal, apart from the worker's terminal
            close_fds=True,
        )
        self.exited = threading.Event()
        self._wake = wake
        self._lock = threading.Lock()
        self._reaped = False
        threading.Thread(target=self._feed, args=(stdin,), daemon=True).start()
        threading.Thread(target=self._await_exit, daemon=True).start()

    def _feed(self, data: bytes) -> None:
        pipe = self.proc.stdin
        assert pipe is not None
        # The command may never read stdin (or exit early): that is fine.
        with contextlib.suppress(OSError):
            pipe.write(data)
        with contextlib.suppress(OSError):
            pipe.close()

    def _await_exit(self) -> None:
        with contextlib.suppress(ChildProcessError):
            os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOWAIT)
        self.exited.set()
        self._wake()

    def signal_group(self, sig: int) -> None:
        with self._lock:
            if self._reaped:
                return
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def reap(self) -> int:
        with self._lock:
            self._reaped = True
            return self.proc.wait()


class _Run:
    """One claimed run: the command started for it, tended while it runs,
    and the run finished from how it ended."""

    def __init__(self, slot: _Slot, claim: p.Claim) -> None:
        self.slot = slot
        self.worker = slot.worker
        self.options = slot.options
        self.claim = claim
        self.messages_failing = False  # said once until a write works again
        self.run_id = claim.run.id
        self.token = claim.claim_token
        self.ident = claim.task.identifier
        self.logs = _LogBuffer()
        self.last_stdout: bytes | None = None
        self.stderr_tail: deque[str] = deque(maxlen=ERROR_TAIL_LINES)
        self.lost: AghError | None = None
        self.messages_after = 0
        # When the lease ends by our clock: the finish is retried until then.
        self.lease_deadline = time.monotonic() + self.options.lease_s

    @property
    def attempts(self) -> str:
        return f"attempt {self.claim.run.attempt} of {self.claim.run.max_attempts}"

    def execute(self) -> Outcome:
        w = self.worker
        w.say(f"{self.ident} {self.run_id} started ({self.attempts})")
        started = time.monotonic()
        workdir = tempfile.mkdtemp(prefix="agh-run-")  # mode 0700
        try:
            messages = os.path.join(workdir, "messages.jsonl")
            os.close(os.open(messages, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            try:
                child = _Child(
                    self.options.command,
                    self._env(messages),
                    msgspec.json.encode(self.claim.run.input) + b"\n",
                    self.slot.wake.set,
                )
            except OSError as exc:
                reason = "the worker could not start its command"
                self._settle(lambda c: c.release(self.run_id, self.token, reason))
                raise AghError(
                    f"could not start {self.options.command[0]!r}: {exc.strerror or exc}; "
                    "the run was released. Check the command and its permissions."
                ) from None
            try:
                self._tend(child, messages)
            except BaseException:
                # A bug while tending must not leave the command running
                # unsupervised (the run would stay claimed until its lease ends).
                child.signal_group(signal.SIGKILL)
                raise
            return self._finish(child.proc.returncode, time.monotonic() - started)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    def _env(self, messages: str) -> dict[str, str]:
        run = self.claim.run
        env = dict(os.environ)
        # Output reaches the log as it is written, not when a buffer fills.
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(
            {
                "AGH_TASK_ID": self.claim.task.id,
                "AGH_TASK_IDENTIFIER": self.ident,
                "AGH_RUN_ID": run.id,
                "AGH_CLAIM_TOKEN": self.token,
                "AGH_ATTEMPT": str(run.attempt),
                "AGH_SOCKET": os.path.abspath(self.options.socket_path),
                "AGH_MESSAGES": messages,
            }
        )
        if self.slot.session_id is not None:
            env["AGH_SESSION_ID"] = self.slot.session_id
        text = msgspec.json.encode(run.input).decode()
        if len(text) <= MAX_ENV_INPUT:
            env["AGH_INPUT"] = text
        else:
            env.pop("AGH_INPUT", None)
        return env

    # -- while it runs ------------------------------------------------------------

    def _read(self, pipe: Any, stream: str) -> None:
        """Move one output stream into the log buffer, the echo and the
        tails; never waits for the daemon."""
        level = "info" if stream == "stdout" else "error"
        pieces: list[bytes] = []
        size = 0
        for chunk in iter(lambda: pipe.readline(CHUNK_BYTES), b""):
            whole = chunk.endswith(b"\n")
            body = chunk[:-1] if whole else chunk
            if whole and body.endswith(b"\r"):
                body = body[:-1]
            text = body.decode("utf-8", "replace")
            self.worker.echo(self.ident, text)
            if stream == "stderr":
                self.stderr_tail.append(text)
            else:
                pieces.append(body)
                size += len(body)
                if whole:
                    self._keep_last(pieces, size)
                    pieces, size = [], 0
            entry = {"level": level, "message": text, "metadata": {"stream": stream}}
            if self.logs.add(entry):
                self.slot.wake.set()
        if pieces:
            self._keep_last(pieces, size)
        pipe.close()
        self.slot.wake.set()

    def _keep_last(self, pieces: list[bytes], size: int) -> None:
        line = b"".join(pieces) if size <= MAX_RESULT_BYTES else b""
        if line.strip() or size > MAX_RESULT_BYTES:
            # A too long line still is the last one: it just is no result.
            self.last_stdout = line or None

    def _tend(self, child: _Child, messages: str) -> None:
        """Heartbeat, log and poll input until the command has exited and
        its output is read; end it if the lease is lost or the worker stops."""
        w, o = self.worker, self.options
        readers = [
            threading.Thread(target=self._read, args=(child.proc.stdout, "stdout"), daemon=True),
            threading.Thread(target=self._read, args=(child.proc.stderr, "stderr"), daemon=True),
        ]
        for reader in readers:
            reader.start()
        interval = max(MIN_BEAT_INTERVAL_S, o.lease_s / BEATS_PER_LEASE)
        now = time.monotonic()
        next_beat = now  # at once: the run shows as running
        next_poll = now + MESSAGES_POLL_S
        next_log = now  # lines arriving until then go in one agent.log
        kill_at: float | None = None  # SIGKILL to the group then
        ended = False  # SIGTERM sent because of loss or stop
        drain_until: float | None = None  # after the exit: output readers' last chance
        while True:
            now = time.monotonic()
            due = [t for t in (kill_at, drain_until) if t is not None]
            if self.lost is None:
                due += [next_beat, next_poll]
                if self.logs.pending():
                    due.append(next_log)
            self.slot.wake.wait(max(0.0, min(due) - now) if due else MESSAGES_POLL_S)
            self.slot.wake.clear()
            now = time.monotonic()
            if self.lost is None and self.logs.pending() and now >= next_log:
                if not self._send_logs():
                    next_log = now + MESSAGES_POLL_S  # aghd away: try again in a while
                elif self.logs.backlogged():
                    next_log = now  # a backlog goes out batch after batch
                else:
                    next_log = now + LOG_GATHER_S  # a trickle is gathered
            if self.lost is None and not child.exited.is_set() and now >= next_poll:
                self._poll_messages(messages)
                next_poll = now + MESSAGES_POLL_S
            if self.lost is None and now >= next_beat:
                next_beat = now + (interval if self._heartbeat() else MESSAGES_POLL_S)
            if child.exited.is_set():
                if drain_until is None:
                    # Whatever the command left running ends with it.
                    child.signal_group(signal.SIGTERM)
                    drain_until = now + (0.0 if w.killing.is_set() else o.grace_s)
                if not any(r.is_alive() for r in readers):
                    break
                if w.killing.is_set() or now >= drain_until:
                    child.signal_group(signal.SIGKILL)
                    for reader in readers:
                        reader.join(READER_JOIN_S)
                    break
                continue
            if not ended and (self.lost is not None or w.stopping.is_set()):
                ended = True
                if self.lost is not None:
                    w.say(f"{self.ident} lease lost ({_loss_reason(self.lost)}): stopping it")
                child.signal_group(signal.SIGTERM)
                kill_at = now + o.grace_s
            if kill_at is not None and (w.killing.is_set() or now >= kill_at):
                child.signal_group(signal.SIGKILL)
                kill_at = None
        child.reap()

    def _tend_call(self, fn: Callable[[Client], T]) -> T | None:
        """A call while the command runs: None when it failed. aghd away:
        tried again later; the run lost: ``self.lost``; anything else (a
        bug, a refused log line) is said and skipped."""
        try:
            return self.slot.call(fn)
        except AghError as exc:
            if _is_loss(exc):
                self.lost = exc
            elif not _is_transient(exc):
                self.worker.say(f"{self.ident} agh worker: {exc.message}")
            return None
        except OSError:
            return None

    def _send_logs(self) -> bool:
        """Send one batch; False when aghd was away (the batch waits)."""
        batch = self.logs.take()
        if not batch:
            return True
        try:
            self._log_batch(batch)
        except AghError as exc:
            if _is_transient(exc):
                self.logs.put_back(batch)
                return False
            if _is_loss(exc):
                self.lost = exc
            else:
                self.worker.say(f"{self.ident} agh worker: log lines refused: {exc.message}")
        except OSError:
            self.logs.put_back(batch)
            return False
        return True

    def _heartbeat(self) -> bool:
        lease_ms = round(self.options.lease_s * 1000)
        sent = time.monotonic()
        if self._tend_call(lambda c: c.heartbeat(self.run_id, self.token, lease_ms)) is None:
            return False
        self.lease_deadline = sent + self.options.lease_s
        return True

    def _poll_messages(self, path: str) -> None:
        got = self._tend_call(
            lambda c: c.agent_messages(self.run_id, self.token, after=self.messages_after)
        )
        if got is None or not got.messages:
            return
        # Opened per batch, so a command may truncate or remove the file;
        # re-created private if it did.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            with os.fdopen(fd, "ab") as f:
                for message in got.messages:
                    f.write(msgspec.json.encode(message) + b"\n")
        except OSError as exc:
            # The disk is full, or the command removed the directory: say so
            # and try again on the next poll (the messages stay in aghd).
            if not self.messages_failing:
                self.worker.say(f"{self.ident} cannot write $AGH_MESSAGES ({exc.strerror or exc})")
            self.messages_failing = True
            return
        self.messages_failing = False
        self.messages_after = got.next_after

    # -- the finish ---------------------------------------------------------------

    def _finish(self, returncode: int, elapsed: float) -> Outcome:
        w = self.worker
        if self.lost is not None:
            w.say(f"{self.ident} lease lost ({_loss_reason(self.lost)}): not finished")
            return "lost"
        if w.stopping.is_set():
            if self._settle(lambda c: c.release(self.run_id, self.token, "worker stopped")):
                w.say(f"{self.ident} released: worker stopped")
                return "released"
            return self._unfinished()
        error = failure_text(returncode, list(self.stderr_tail))
        if returncode == 0:
            result = result_of(self.last_stdout)
            chained = self.slot.chained()
            try:
                done = self._settle(
                    lambda c: c.complete(self.run_id, self.token, result, next=chained)
                )
                if done is None:
                    return self._unfinished()
                self.slot.take_next(done)
                w.say(f"{self.ident} completed in {elapsed:.1f}s")
                return "completed"
            except InvalidParams as exc:  # say, a result too large for aghd
                error = f"exit status 0, but aghd refused the result: {exc.message}"
        chained = self.slot.chained()
        done = self._settle(lambda c: c.fail(self.run_id, self.token, error, next=chained))
        if done is None:
            return self._unfinished()
        self.slot.take_next(done)
        retry = "; retrying" if done.lease.status == "queued" else ""
        w.say(f"{self.ident} failed: {failure_headline(returncode)} ({self.attempts}{retry})")
        return "failed"

    def _unfinished(self) -> Outcome:
        if self.lost is not None:
            reason = _loss_reason(self.lost)
            self.worker.say(f"{self.ident} lease lost ({reason}): not finished")
        else:
            self.worker.say(
                f"{self.ident} not finished: aghd did not answer before the lease ended; "
                "aghd retries or fails the run when it expires"
            )
        return "lost"

    def _settle(self, finish: Callable[[Client], T]) -> T | None:
        """Send the remaining log lines, then ``finish``; retried while aghd
        is away, until the lease ends (once stopping: at most the grace
        period). None when it could not be done (``self.lost`` says if the
        run was lost). A repeated finish is safe: aghd answers a replay."""
        w, o = self.worker, self.options
        backoff = BACKOFF_FIRST_S
        give_up = self.lease_deadline
        if w.stopping.is_set():
            give_up = min(give_up, time.monotonic() + o.grace_s)
        while True:
            try:
                self._send_all_logs()
                return self.slot.call(finish)
            except AghError as exc:
                if _is_loss(exc):
                    self.lost = exc
                    return None
                if not _is_transient(exc):
                    raise
            except OSError:
                pass
            if time.monotonic() >= give_up or w.killing.is_set():
                return None
            w.killing.wait(min(backoff, max(0.0, give_up - time.monotonic())))
            backoff = min(backoff * 2, BACKOFF_CAP_S)

    def _log_batch(self, batch: list[dict[str, Any]]) -> None:
        self.slot.call(lambda c: c.agent_log(self.run_id, self.token, batch))

    def _send_all_logs(self) -> None:
        while batch := self.logs.take():
            try:
                self._log_batch(batch)
            except AghError as exc:
                if _is_transient(exc) or _is_loss(exc):
                    self.logs.put_back(batch)
                    raise
                self.worker.say(f"{self.ident} agh worker: log lines refused: {exc.message}")
            except OSError:
                self.logs.put_back(batch)
                raise


def _loss_reason(exc: AghError) -> str:
    return str(exc.details.get("reason") or exc.kind)


def result_of(last_line: bytes | None) -> Any:
    """The result of a run whose command exited 0: its last non-empty
    stdout line when that is JSON, else ``{"exit_code": 0}``."""
    if last_line:
        with contextlib.suppress(msgspec.DecodeError):
            return msgspec.json.decode(last_line.strip())
    return {"exit_code": 0}


def failure_headline(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = str(-returncode)
        return f"killed by signal {name}"
    return f"exit status {returncode}"


def failure_text(returncode: int, stderr_tail: list[str]) -> str:
    """The run's error: how the command ended, then the end of its stderr."""
    headline = failure_headline(returncode)
    tail = "\n".join(stderr_tail).strip()
    if not tail:
        return headline
    if len(tail) > ERROR_MAX_CHARS:
        tail = "…" + tail[-(ERROR_MAX_CHARS - 1) :]
    return f"{headline}: {tail}"
