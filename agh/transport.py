"""What every agh client does the same way when it reaches aghd, whatever
its I/O: which ``session.hello`` a new connection sends, the peer-uid check
before anything is sent, and the ``DaemonUnreachable`` each failure becomes
(with ``details["cause"]``, which the CLI reads to decide whether to start
aghd).

Both clients, ``agh.client`` (a blocking socket) and ``agh.aclient``
(anyio), use these, message texts included. Owns: those rules. Must not: do I/O (each client
connects its own way: a blocking socket, anyio) or import anyio.
"""

from __future__ import annotations

import os
import socket
import struct
from typing import Any

from agh import protocol as p
from agh.errors import DaemonUnreachable

_PEERCRED = struct.Struct("3i")
# connect() on a Unix socket fails with EAGAIN while the daemon's accept
# backlog is full (a burst of clients): retry for this long before giving up.
CONNECT_RETRY_S = 2.0


def expected_daemon_uid() -> int:
    """The uid aghd must run as: ``$AGH_DAEMON_UID`` (to reach another user's
    daemon that allows you with ``--allow-uid``), else your own."""
    env = os.environ.get("AGH_DAEMON_UID")
    return int(env) if env and env.strip().isdigit() else os.getuid()


def impostor_message(path: str, uid: int, expected: int) -> str:
    """The socket is served by another user: never talk to it."""
    return (
        f"the socket {path} is served by uid {uid}, not by uid {expected}: another user may "
        "be impersonating aghd, so nothing was sent. Check the socket path (--socket, "
        "AGH_SOCKET) and its directory; set AGH_DAEMON_UID only to reach another user's "
        "daemon on purpose."
    )


def unreachable_message(path: str, reason: str) -> str:
    """Nothing listens on the socket: aghd is not running."""
    return (
        f"aghd is not running ({reason} at {path}). "
        "Start it with `aghd` or `systemctl --user start aghd`."
    )


def no_answer_message(path: str, timeout: float | None) -> str:
    """aghd holds the socket but did not answer in time: busy or stuck."""
    within = "in time" if timeout is None else f"within {timeout:g} seconds"
    return (
        f"aghd did not answer {within} on {path}; it may be overloaded or stuck. "
        "Check it with `agh ping` or `journalctl --user -u aghd`, "
        "or restart it with `systemctl --user restart aghd`."
    )


def permission_message(path: str) -> str:
    """The socket exists but this user may not connect to it."""
    return (
        f"permission denied on the socket {path}: is it another user's daemon, "
        "or the wrong --socket / AGH_SOCKET?"
    )


# What a connect() to the socket may raise: each means "no usable aghd
# there", and connect_error says which (never a traceback for a bad path).
CONNECT_ERRORS = (OSError,)

# sun_path is 108 bytes on Linux, the last one the terminating NUL.
_MAX_SOCKET_PATH = 107


def long_poll_timeout(timeout: float | None, wait_ms: int) -> float | None:
    """How long to wait for the reply to a call the daemon may hold for
    ``wait_ms`` (a long-polling claim): the client's timeout plus that."""
    return None if timeout is None else timeout + wait_ms / 1000


def hello_fields(
    *,
    agent_name: str | None,
    session_id: str | None,
    channel: str | None,
    workspace: str | None,
    origin_kind: str | None,
) -> dict[str, Any] | None:
    """The ``session.hello`` fields a new client sends first, or None: a
    client given no agent name, session id or origin kind stays anonymous."""
    if not (agent_name or session_id or origin_kind):
        return None
    return {
        "agent_name": agent_name,
        "session_id": session_id,
        "channel": channel,
        "workspace": workspace,
        "origin": p.Origin(origin_kind or "agent_session"),  # type: ignore[arg-type]
    }


def connect_error(path: str, exc: OSError, timeout: float | None) -> DaemonUnreachable:
    """The error for a connect() to ``path`` that raised ``exc``."""
    if isinstance(exc, FileNotFoundError):
        return DaemonUnreachable(unreachable_message(path, "no socket"), {"cause": "not_running"})
    if isinstance(exc, ConnectionRefusedError):
        reason = exc.strerror or "connection refused"
        return DaemonUnreachable(unreachable_message(path, reason), {"cause": "not_running"})
    if isinstance(exc, PermissionError):
        return DaemonUnreachable(permission_message(path), {"cause": "permission"})
    if isinstance(exc, TimeoutError | BlockingIOError):
        # The daemon's accept backlog stayed full, or it never accepted in time.
        return no_answer(path, timeout)
    # Not a socket we can use at all (a path too long, not a socket, ...):
    # starting a daemon would not help either.
    size = len(os.fsencode(path))
    step = (
        f"the path is {size} bytes and the limit is {_MAX_SOCKET_PATH}: choose a shorter one"
        if size > _MAX_SOCKET_PATH
        else "check the path"
    )
    return DaemonUnreachable(
        f"cannot connect to the socket {path} ({exc.strerror or exc}); {step} "
        "(--socket or AGH_SOCKET)",
        {"cause": "bad_socket"},
    )


def check_daemon_uid(sock: socket.socket, path: str) -> None:
    """Raise DaemonUnreachable (cause ``impostor``) unless the process serving
    ``sock`` runs as the expected uid. Call it before sending anything: whoever
    could replace the socket file must not receive our claim tokens."""
    _pid, uid, _gid = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    )
    expected = expected_daemon_uid()
    if uid != expected:
        raise DaemonUnreachable(impostor_message(path, uid, expected), {"cause": "impostor"})


def no_answer(path: str, timeout: float | None) -> DaemonUnreachable:
    """aghd holds the socket but did not answer within ``timeout`` seconds."""
    return DaemonUnreachable(no_answer_message(path, timeout), {"cause": "no_answer"})


def connection_lost(path: str, reason: str) -> DaemonUnreachable:
    """The connection ended while a reply was due: the request may have run."""
    return DaemonUnreachable(unreachable_message(path, reason), {"cause": "connection_lost"})
