"""Real daemons for tests: ``aghd``'s ``serve()`` in a thread of the test
process (fast), or ``python -m aghd`` as a subprocess (crash and signal tests),
plus the waits that go with them.

Owns starting, waiting for and stopping daemons; fixtures that clean them up
live in ``tests/conftest.py``. Nothing here mocks the store or the socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

from agh.client import Client
from aghd.config import Config

if TYPE_CHECKING:
    from aghd.app import Daemon


class ThreadDaemon:
    """aghd's ``serve()`` on its own event loop in a background thread, so
    synchronous test code can talk to it with the real client over the socket."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._daemon: Daemon | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="aghd-test", daemon=True)

    @property
    def daemon(self) -> Daemon:
        """The running daemon's parts (its stream hub, say), once started."""
        assert self._daemon is not None, "start() the daemon first"
        return self._daemon

    @property
    def socket(self) -> str:
        return self.config.socket_path

    def _main(self) -> None:
        import anyio

        from aghd.app import serve

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                self._loop = asyncio.get_running_loop()
                self._daemon = await tg.start(
                    lambda task_status: serve(
                        self.config, handle_signals=False, task_status=task_status
                    )
                )
                self._ready.set()

        try:
            anyio.run(run, backend="asyncio", backend_options={"use_uvloop": True})
        except BaseException as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()

    def start(self) -> ThreadDaemon:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self._daemon is not None, "daemon did not start"
        return self

    def call_in_loop(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._thread.is_alive() and self._daemon is not None:
            self.call_in_loop(self._daemon.request_stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "daemon did not stop"

    def client(self, **kwargs: Any) -> Client:
        return Client(self.socket, **kwargs)


def make_config(directory: str, **overrides: Any) -> Config:
    """A daemon config with its socket and database in ``directory`` and short
    retry backoffs, so tests that retry do not wait; ``overrides`` set fields."""
    config = Config(
        socket_path=os.path.join(directory, "agh.sock"),
        db_path=os.path.join(directory, "agh.db"),
        retry_backoff_base_ms=50,
        retry_backoff_cap_ms=200,
        shutdown_grace_s=5,
    )
    for key, value in overrides.items():
        setattr(config, key, value)
    return config


# -- subprocess daemons (crash and signal tests) ---------------------------------


def spawn_daemon(
    socket_path: str,
    db_path: str,
    *args: str,
    wait: bool = True,
    umask: int | None = None,
    level: str = "WARNING",
    log: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m aghd`` (under ``umask`` if given; its stderr to the
    file ``log``, so a chatty DEBUG daemon never blocks on a full pipe, else
    to a pipe; in environment ``env`` if given, else this process's) and by
    default wait until it accepts connections."""
    err: Any = subprocess.PIPE if log is None else open(log, "wb")  # noqa: SIM115

    def preexec() -> None:
        if umask is not None:
            os.umask(umask)

    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aghd",
                "--socket",
                socket_path,
                "--db",
                db_path,
                "--log-level",
                level,
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=err,
            preexec_fn=preexec,
            env=env,
        )
    finally:
        if log is not None:
            err.close()
    if wait:
        wait_for_socket(socket_path, proc)
    return proc


def wait_for_socket(
    path: str, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20
) -> None:
    """Wait until something accepts connections on ``path``.

    Raises RuntimeError (with its stderr) if ``proc`` exits first, and
    TimeoutError if nothing listens within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(
                f"aghd exited early: {proc.stderr.read().decode() if proc.stderr else ''}"
            )
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(path)
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"no daemon on {path}")


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20
) -> int:
    """Send ``sig`` unless ``proc`` already exited; return its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


def wait_run_status(c: Client, run_id: str, status: str, timeout: float = 4.0) -> Any:
    """Poll ``runs.get`` until the run has ``status`` (or time runs out); return it."""
    deadline = time.monotonic() + timeout
    while True:
        run = c.runs_get(run_id).run.run
        if run.status == status or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


def chained_claims(db_path: str) -> int:
    """How many claims a finish made (one round trip per cycle: the finished
    claim names the next), read from the daemon's file, read-only."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        row = db.execute("SELECT count(*) FROM claims WHERE next_claim_id IS NOT NULL").fetchone()
        return int(row[0])
    finally:
        db.close()
