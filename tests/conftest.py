"""Shared fixtures: a real daemon (in a thread of this process, or as a
subprocess), real sockets in short temp dirs, real SQLite files."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from agh.cli import main as agh_main
from agh.client import Client
from aghd.config import Config


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A temp dir short enough for a Unix socket path (108-byte limit)."""
    path = tempfile.mkdtemp(prefix="agh", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


class ThreadDaemon:
    """aghd's ``serve()`` on its own event loop in a background thread, so
    synchronous test code can talk to it with the real client over the socket."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.daemon: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="aghd-test", daemon=True)

    @property
    def socket(self) -> str:
        return self.config.socket_path

    def _main(self) -> None:
        import anyio

        from aghd.app import serve

        async def run() -> None:
            async with anyio.create_task_group() as tg:
                self._loop = asyncio.get_running_loop()
                self.daemon = await tg.start(
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
        assert self.daemon is not None, "daemon did not start"
        return self

    def call_in_loop(self, fn: Any, *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    def stop(self) -> None:
        if self._thread.is_alive() and self.daemon is not None:
            self.call_in_loop(self.daemon.request_stop)
        self._thread.join(30)
        assert not self._thread.is_alive(), "daemon did not stop"

    def client(self, **kwargs: Any) -> Client:
        return Client(self.socket, **kwargs)


def make_config(directory: str, **overrides: Any) -> Config:
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


@pytest.fixture
def make_daemon(short_dir: str) -> Iterator[Any]:
    """Factory: ``make_daemon(**config_overrides)`` starts a daemon in a thread."""
    started: list[ThreadDaemon] = []

    def factory(**overrides: Any) -> ThreadDaemon:
        d = ThreadDaemon(make_config(short_dir, **overrides)).start()
        started.append(d)
        return d

    yield factory
    for d in started:
        d.stop()


@pytest.fixture
def daemon(make_daemon: Any) -> ThreadDaemon:
    return make_daemon()  # type: ignore[no-any-return]


@pytest.fixture
def client(daemon: ThreadDaemon) -> Iterator[Client]:
    with daemon.client() as c:
        yield c


# -- subprocess daemons (crash and signal tests) ---------------------------------


def spawn_daemon(
    socket_path: str,
    db_path: str,
    *args: str,
    wait: bool = True,
    umask: int | None = None,
    level: str = "WARNING",
    log: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m aghd`` (under ``umask`` if given; its stderr to the
    file ``log``, so a chatty DEBUG daemon never blocks on a full pipe, else
    to a pipe) and by default wait until it accepts connections."""
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


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Daemon subprocesses a test starts: killed if still running, pipes closed."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def wait_run_status(c: Client, run_id: str, status: str, timeout: float = 4.0) -> Any:
    """Poll ``runs.get`` until the run has ``status`` (or time runs out); return it."""
    deadline = time.monotonic() + timeout
    while True:
        run = c.runs_get(run_id).run.run
        if run.status == status or time.monotonic() > deadline:
            return run
        time.sleep(0.02)


def stop_process(
    proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20
) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    return proc.wait(timeout)


# -- raw wire access (conformance tests) ---------------------------------------------


class RawConn:
    """Bytes in, parsed JSON lines out: for tests that must bypass the client."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def request(self, method: str, params: Any = None, id: Any = 1) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
        if params is not None:
            msg["params"] = params
        self.send(json.dumps(msg) + "\n")

    def recv(self) -> Any:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by daemon")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(daemon: ThreadDaemon) -> Iterator[RawConn]:
    conn = RawConn(daemon.socket)
    yield conn
    conn.close()


# -- the agh CLI in-process -------------------------------------------------------

# Variables a developer's shell may set that would change what the CLI does.
# AGH_AUTOSTART=0: a test that finds no daemon must see exit 69, not start one.
CLEAN_ENV: dict[str, str | None] = {
    "AGH_SOCKET": None,
    "AGH_CLAIM_TOKEN": None,
    "AGH_RUN_ID": None,
    "AGH_SESSION_ID": None,
    "AGH_AUTOSTART": "0",
}
# Subprocesses a test starts inherit it too.
os.environ["AGH_AUTOSTART"] = "0"


def clean_environ(**extra: str) -> dict[str, str]:
    """This process's environment with CLEAN_ENV applied, for a subprocess."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update({k: v for k, v in CLEAN_ENV.items() if v is not None})
    env.update(extra)
    return env


def invoke(
    *args: str, env: dict[str, str | None] | None = None, input: str | None = None
) -> Result:
    """Run ``agh ARGS...`` in-process; ``input`` feeds its stdin."""
    return CliRunner().invoke(
        agh_main, list(args), input=input, env={**CLEAN_ENV, **(env or {})}, prog_name="agh"
    )


@pytest.fixture
def agh(daemon: ThreadDaemon) -> Any:
    """Run ``agh --socket <daemon> ARGS...`` in-process; returns click's Result."""

    def run(
        *args: str, env: dict[str, str | None] | None = None, input: str | None = None
    ) -> Result:
        return invoke("--socket", daemon.socket, *args, env=env, input=input)

    return run
