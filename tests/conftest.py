"""Shared fixtures: a real daemon (in a thread of this process, or as a
subprocess), real sockets in short temp dirs, real SQLite files.

Only fixtures live here; the helpers they use are in ``tests/helpers/``, and
tests import those from there, never from this file (pytest imports it under
its own module name, so importing it again would make second copies).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.cli import invoke
from tests.helpers.daemons import ThreadDaemon, make_config, stop_process
from tests.helpers.store import StoreFile
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from click.testing import Result

    from agh.client import Client

# Subprocesses a test starts inherit it too: one that finds no daemon must
# see exit 69, not start one (see CLEAN_ENV in tests/helpers/cli.py).
os.environ["AGH_AUTOSTART"] = "0"
# Nor may the developer's own ~/.config/agh/config.yaml reach a daemon or
# command under test: the user config dir is an empty one of our own.
os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="agh-config-")
# A daemon a test runs as another uid must find no file there, not be refused one.
os.chmod(os.environ["XDG_CONFIG_HOME"], 0o755)
os.environ.pop("AGH_CONFIG", None)


@pytest.fixture
def short_dir() -> Iterator[str]:
    """A temp dir short enough for a Unix socket path (108-byte limit)."""
    path = tempfile.mkdtemp(prefix="agh", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


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


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    """Daemon subprocesses a test starts (text or bytes): killed if still
    running, pipes closed."""
    started: list[subprocess.Popen[Any]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            stop_process(proc, signal.SIGKILL)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def raw(daemon: ThreadDaemon) -> Iterator[RawConn]:
    conn = RawConn(daemon.socket)
    yield conn
    conn.close()


@pytest.fixture
def agh(daemon: ThreadDaemon) -> Any:
    """Run ``agh --socket <daemon> ARGS...`` in-process; returns click's Result."""

    def run(
        *args: str, env: dict[str, str | None] | None = None, input: str | None = None
    ) -> Result:
        return invoke("--socket", daemon.socket, *args, env=env, input=input)

    return run


@pytest.fixture
def store(tmp_path: Any) -> Iterator[StoreFile]:
    """The store on a real SQLite file, without a daemon (tests/helpers/store.py)."""
    s = StoreFile(str(tmp_path / "agh.db"))
    yield s
    s.close()
