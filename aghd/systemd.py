"""systemd integration without libsystemd: readiness notifications
(``sd_notify``) and socket activation (``sd_listen_fds``).

Owns: the ``$NOTIFY_SOCKET`` datagrams (``READY=1``, ``STATUS=``,
``RELOADING=1``, ``STOPPING=1``) and taking over the listening socket
systemd passes as descriptor 3. Must not: bind, unlink or lock anything
(app.py does, and never unlinks a socket it did not bind).

The protocol is small enough to speak with the socket module (see
sd_notify(3), sd_listen_fds(3)): a notification is one datagram of
``KEY=VALUE`` lines to the path (or, after ``@``, the abstract name) in
``$NOTIFY_SOCKET``; an activated process finds ``LISTEN_PID`` set to its own
pid and ``LISTEN_FDS`` descriptors from 3 on. Outside systemd both are unset
and every function here is a no-op, so the daemon calls them unconditionally.

A reload (SIGHUP, ``systemctl --user reload aghd``) is reported as
``reloading()`` before the new configuration is read and ``ready(...)``
once it applies, as systemd >= 253 expects of ``Type=notify-reload``.
"""

from __future__ import annotations

import logging
import os
import socket
import stat
import time

from aghd.files import StartupError

log = logging.getLogger("aghd.systemd")

# sd_listen_fds(3): passed descriptors start here (0-2 are stdio).
SD_LISTEN_FDS_START = 3
# A notification never blocks the event loop for longer than this (systemd
# reads its socket promptly; a stuck reader must not stall the daemon).
_SEND_TIMEOUT_S = 1.0


def notify(*lines: str) -> bool:
    """Send ``lines`` as one datagram to ``$NOTIFY_SOCKET``.

    Returns False when the variable is unset or the send failed (logged at
    debug: not being supervised is normal). Never raises.
    """
    target = os.environ.get("NOTIFY_SOCKET")
    if not target:
        return False
    if target.startswith("@"):
        address = "\0" + target[1:]  # the abstract namespace
    elif target.startswith("/"):
        address = target
    else:
        log.debug("NOTIFY_SOCKET=%r is neither a path nor @abstract: not notifying", target)
        return False
    # "replace": a path that is not UTF-8 (from argv, surrogate-escaped)
    # must not make a status line raise.
    message = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_SEND_TIMEOUT_S)
            sock.sendto(message, address)
    except OSError as exc:
        log.debug("could not notify %s: %s", target, exc)
        return False
    return True


def ready(status: str) -> bool:
    """Tell systemd aghd serves (start-up, or a reload finished)."""
    return notify("READY=1", f"STATUS={status}")


def status(text: str) -> bool:
    """Show ``text`` in ``systemctl --user status aghd``."""
    return notify(f"STATUS={text}")


def reloading() -> bool:
    """A reload begins; ``ready()`` ends it. ``MONOTONIC_USEC`` lets systemd
    (>= 253) match this message to the reload it asked for."""
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the configuration")


def stopping() -> bool:
    """The drain begins: systemd shows the unit as deactivating."""
    return notify("STOPPING=1")


def inherited_listener() -> socket.socket | None:
    """The listening socket systemd passed (``aghd.socket``), or None when
    aghd was not socket-activated.

    As ``sd_listen_fds(1)``: the variables count only when ``LISTEN_PID`` is
    this process (a parent's activation is not ours), and they are removed
    from the environment either way so that children do not inherit them;
    the descriptor is made close-on-exec.

    Raises StartupError when the passed descriptors are not the one
    listening Unix stream socket aghd can serve.
    """
    pid_text = os.environ.pop("LISTEN_PID", None)
    fds_text = os.environ.pop("LISTEN_FDS", None)
    os.environ.pop("LISTEN_FDNAMES", None)
    if pid_text is None or fds_text is None:
        return None
    try:
        pid = int(pid_text)
    except ValueError:
        log.warning("ignoring LISTEN_PID=%r: not a pid", pid_text)
        return None
    if pid != os.getpid():
        return None  # meant for another process (one that started us)
    try:
        count = int(fds_text)
    except ValueError:
        raise StartupError(
            f"LISTEN_FDS={fds_text!r} is not a number; start aghd from aghd.socket, "
            "or without LISTEN_PID/LISTEN_FDS to let it bind its own socket",
            {"listen_fds": fds_text},
        ) from None
    if count < 1:
        return None
    if count > 1:
        raise StartupError(
            f"systemd passed {count} sockets (LISTEN_FDS={count}); aghd serves exactly one: "
            "give aghd.socket a single ListenStream= line (`agh daemon install-unit "
            "--force` writes the shipped one)",
            {"listen_fds": count},
        )
    return _listening_unix_socket(SD_LISTEN_FDS_START)


def _listening_unix_socket(fd: int) -> socket.socket:
    """Descriptor ``fd`` as a socket object, if it is a listening AF_UNIX
    SOCK_STREAM socket; else StartupError saying what it is."""
    fix = (
        "aghd.socket must have ListenStream= with a path (as `agh daemon install-unit` "
        "writes it); or start aghd without LISTEN_PID/LISTEN_FDS to let it bind its own"
    )
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        raise StartupError(
            f"LISTEN_FDS=1 but descriptor {fd} is not open ({exc.strerror}); {fix}",
            {"fd": fd},
        ) from None
    if not stat.S_ISSOCK(mode):
        raise StartupError(f"LISTEN_FDS=1 but descriptor {fd} is not a socket; {fix}", {"fd": fd})
    sock = socket.socket(fileno=fd)
    try:
        listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) != 0
    except OSError:
        listening = False
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM or not listening:
        # socket.socket reports the family and type as enums when it knows them.
        what = (
            f"{getattr(sock.family, 'name', sock.family)} {getattr(sock.type, 'name', sock.type)}"
        )
        sock.detach()  # not ours to close: we refuse it and exit
        raise StartupError(
            f"LISTEN_FDS=1 but descriptor {fd} is not a listening Unix stream socket "
            f"(it is {what}{'' if listening else ', not listening'}); {fix}",
            {"fd": fd, "socket": what},
        )
    os.set_inheritable(fd, False)
    return sock
