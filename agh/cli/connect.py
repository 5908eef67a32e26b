"""Reaching aghd from a command: the socket the user chose, starting the
daemon when none runs (as gpg-agent is), and naming the client's session.

Autostart: when nothing listens on the socket, the CLI starts ``aghd`` in
the background (its own session, log in ``<state dir>/aghd.log``), waits
until it answers and says so on stderr. ``AGH_AUTOSTART=0`` turns it off
(scripts that must not spawn a daemon, tests). Only "not running" starts a
daemon: a daemon that does not answer, a socket that is not ours or a
permission problem is reported as it is, since a second daemon would not
help. Owns: the connection policy. Must not: format output.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click

from agh.errors import DaemonUnreachable

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agh.client import Client

# How long a started daemon may take to answer (migrations, integrity check
# of a large database) before the CLI gives up on it.
_START_TIMEOUT_S = 15.0
# After our aghd exited: how long another one may take to answer.
_RACE_GRACE_S = 2.0


def socket_path(ctx: click.Context) -> str:
    from agh.settings import client_socket_path

    return ctx.find_root().params.get("socket_path") or client_socket_path()


def autostart_enabled() -> bool:
    return os.environ.get("AGH_AUTOSTART", "1").strip().lower() not in ("0", "no", "false", "off")


@contextmanager
def connect(ctx: click.Context, *, autostart: bool = True, **hello: Any) -> Iterator[Client]:
    """A client on the selected socket, announced as the CLI unless
    ``hello`` names an agent (``agent_name=``, ``session_id=``).

    Raises DaemonUnreachable when no daemon answers and none could be
    started; ``AghGroup`` turns it (and every other ``AghError``) into
    the documented exit code."""
    from agh.client import Client  # light import: only for commands that connect

    path = socket_path(ctx)
    if not hello:
        hello = {"origin_kind": "cli"}
    try:
        client = Client(path, **hello)
    except DaemonUnreachable as exc:
        if not (autostart and exc.details.get("cause") == "not_running" and autostart_enabled()):
            raise
        start_daemon(path)
        client = Client(path, **hello)
    with client:
        yield client


def daemon_log_path() -> str:
    from agh.paths import state_dir

    return os.path.join(state_dir(), "aghd.log")


def start_daemon(path: str) -> int:
    """Start ``aghd --socket PATH`` detached and wait until it answers;
    return its pid. Raises DaemonUnreachable naming the next step."""
    import subprocess  # only here: every other command stays without it

    from agh.client import Client

    log_path = daemon_log_path()
    os.makedirs(os.path.dirname(log_path), mode=0o700, exist_ok=True)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    log_start = os.fstat(fd).st_size  # what this start writes comes after
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "aghd", "--socket", path],
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,  # not killed by the terminal's Ctrl-C or hangup
            close_fds=True,
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + _START_TIMEOUT_S
    while True:
        try:
            with Client(path, timeout=5.0) as probe:
                pid = probe.server_info().pid
            break
        except DaemonUnreachable:
            status = proc.poll()
            if status is not None:
                # Another agh may have started one at the same moment: ours
                # then exits (the database is locked) while theirs comes up,
                # so wait a little longer for an answer before giving up.
                deadline = min(deadline, time.monotonic() + _RACE_GRACE_S)
            if time.monotonic() > deadline:
                why = last_log_line(log_path, log_start)
                raise DaemonUnreachable(
                    start_failed_message(path, log_path, status, why), {"cause": "start_failed"}
                ) from None
            time.sleep(0.02)
    if pid == proc.pid:
        click.echo(
            f"agh: started aghd (pid {pid}) on {path}; log: {log_path}; "
            "stop it with `agh daemon stop`",
            err=True,
        )
    else:  # another agh's start won the race; ours gave way
        click.echo(f"agh: aghd (pid {pid}) is running on {path}", err=True)
    return pid


def last_log_line(log_path: str, start: int) -> str | None:
    """The last line the started daemon wrote (its reason, when it exits)."""
    try:
        with open(log_path, "rb") as f:
            f.seek(start)
            lines = [line for line in f.read().decode(errors="replace").splitlines() if line]
    except OSError:
        return None
    return lines[-1] if lines else None


def start_failed_message(path: str, log_path: str, status: int | None, why: str | None) -> str:
    how = "did not answer in time" if status is None else f"exited with status {status}"
    if why:
        how += f" ({why})"
    return (
        f"aghd is not running on {path}, and starting it failed: it {how}. "
        f"Its log is {log_path}; run `aghd --socket {path}` in a terminal to see why "
        "(set AGH_AUTOSTART=0 to never start it from agh)."
    )
