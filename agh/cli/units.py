"""The systemd user units for aghd, as ``agh daemon install-unit`` writes
them: ``aghd.service`` (``Type=notify``) and ``aghd.socket`` (socket
activation on ``%t/agh/agh.sock``, the default socket of agh.paths).

Owns: the unit text, ``ExecStart=`` for this installation, quoting it for
systemd. Must not: import anything heavy, start or talk to aghd.

``contrib/systemd/`` holds them exactly as rendered for
``ExecStart=%h/.local/bin/aghd`` (a test fails when they are stale).
Regenerate them with:

    python -m agh.cli.units --write contrib/systemd
"""

from __future__ import annotations

import os
import re
import sys
import sysconfig

SERVICE = "aghd.service"
SOCKET = "aghd.socket"
# What contrib/systemd/ is rendered with: where `pip install --user` and
# pipx put aghd (%h is the home directory).
CONTRIB_EXEC_START = "%h/.local/bin/aghd"
_EXEC_START = "@EXEC_START@"

SERVICE_TEMPLATE = """\
# aghd.service: the agh task hub daemon as a systemd --user service.
# Install: `agh daemon install-unit` (writes this file and aghd.socket with
# ExecStart= for your installation), or see contrib/README.md.
# systemd has no end-of-line comments (a trailing "# ..." would become part
# of the value), so every directive is explained on the line(s) above it.

# The [Unit] section describes the service and how often it may restart.
[Unit]
# Shown by `systemctl --user status aghd` and in the journal.
Description=agh task hub daemon (aghd)
# Where to look when something is unclear: the man pages installed with agh.
Documentation=man:aghd(1) man:agh(1)
# Give up after 5 failed starts within 60 s instead of restarting forever
# (for example when the database is corrupt or the binary is missing).
StartLimitIntervalSec=60
# The number of starts allowed within StartLimitIntervalSec.
StartLimitBurst=5

# The [Service] section says how to run, reload and stop the daemon.
[Service]
# aghd tells systemd over $NOTIFY_SOCKET when it serves (READY=1), what it
# is doing (STATUS=, shown by `systemctl --user status aghd`), when it
# reloads (RELOADING=1) and when it drains (STOPPING=1). Until READY=1,
# `systemctl --user start aghd` waits, and units ordered after it too.
Type=notify
# Only aghd itself may send those messages, not the agents it talks to.
NotifyAccess=main
# The aghd of this installation (%h is the home directory); `agh daemon
# install-unit` writes the right path here. The user manager's PATH usually
# lacks ~/.local/bin, so the path is absolute.
ExecStart=@EXEC_START@
# `systemctl --user reload aghd`: SIGHUP makes aghd re-read its
# configuration file without dropping connections or claims.
ExecReload=/bin/kill -HUP $MAINPID
# The socket and database default to $XDG_RUNTIME_DIR/agh/agh.sock and
# ~/.local/state/agh/agh.db; the user manager sets XDG_RUNTIME_DIR, so no
# Environment= line is needed. Add e.g. Environment=AGH_DB=... to move the
# database. Started by aghd.socket, aghd serves the socket systemd bound.
# Restart after a crash or a non-zero exit, but not after a clean stop.
Restart=on-failure
# Exit status 3 means another aghd already holds the socket or database
# lock: restarting cannot help, so do not loop on it.
RestartPreventExitStatus=3
# Wait a little between restarts so a fast crash loop does not spin the CPU.
RestartSec=2s
# SIGTERM starts aghd's graceful drain: stop accepting, finish in-flight
# requests, commit, remove the socket it bound (never aghd.socket's), exit 0.
KillSignal=SIGTERM
# The drain takes at most ~10 s; after 30 s systemd sends SIGKILL, which is
# still safe (every acknowledged write is already committed durably).
TimeoutStopSec=30
# Tag journal lines so `journalctl --user -t aghd` finds them too.
SyslogIdentifier=aghd
# Files aghd creates (database, WAL, lock files) are private to the user;
# the socket itself is created 0600 in a 0700 directory regardless.
UMask=0077
# aghd never needs to gain privileges (no setuid helpers, no capabilities).
NoNewPrivileges=yes
# Keep the real /tmp: the socket lives in $XDG_RUNTIME_DIR, and a private
# /tmp needs user namespaces that many user managers cannot create.
PrivateTmp=no
# Forbid personality(2) changes; aghd is a plain Python process.
LockPersonality=yes
# aghd needs no realtime scheduling.
RestrictRealtime=yes
# aghd never creates setuid/setgid files.
RestrictSUIDSGID=yes
# Only native system calls (blocks 32-bit syscall tricks on 64-bit hosts).
SystemCallArchitectures=native
# Deliberately absent: ProtectHome= (it would hide the database in ~/.local)
# and MemoryDenyWriteExecute= (libffi callbacks may need W+X pages).

# The [Install] section says what `systemctl --user enable aghd.service`
# hooks into. Enable this to start aghd at login; enable aghd.socket
# instead to start it on the first connection. No Also=aghd.socket: the
# two are alternatives, and either works alone.
[Install]
# Start with the user's service manager (at login, or at boot with lingering).
WantedBy=default.target
"""

SOCKET_TEMPLATE = """\
# aghd.socket: socket activation for aghd.service. systemd listens on agh's
# socket and starts aghd at the first connection, handing it the listening
# socket (LISTEN_FDS=1, descriptor 3); clients that connect meanwhile wait
# in the queue instead of failing. Install: `agh daemon install-unit`.
# systemd has no end-of-line comments, so every directive is explained on
# the line(s) above it.

# The [Unit] section describes the socket.
[Unit]
# Shown by `systemctl --user status aghd.socket`.
Description=agh task hub socket (starts aghd on demand)
# The man pages installed with agh.
Documentation=man:aghd(1) man:agh(1)

# The [Socket] section says where to listen; the service of the same name
# (aghd.service) is the one started.
[Socket]
# agh's default socket, $XDG_RUNTIME_DIR/agh/agh.sock (%t is the user's
# runtime directory), where the agh CLI and agents look without --socket.
ListenStream=%t/agh/agh.sock
# Only you may connect (aghd also checks every peer's uid).
SocketMode=0600
# The agh directory is created private: aghd refuses a socket directory
# other users can enter.
DirectoryMode=0700
# One aghd serves every connection (no instance per connection).
Accept=no
# Keep the socket file when the unit stops: an aghd still running keeps
# serving it, and aghd removes only sockets it bound itself.
RemoveOnStop=no

# The [Install] section says what `systemctl --user enable aghd.socket`
# hooks into.
[Install]
# Listen from the start of the user's service manager on.
WantedBy=sockets.target
"""


def render(exec_start: str) -> dict[str, str]:
    """The unit files (name -> text) with ``ExecStart=exec_start``, which is
    already in systemd's syntax (``exec_start_line``, ``quote_executable``)."""
    return {
        SERVICE: SERVICE_TEMPLATE.replace(_EXEC_START, exec_start),
        SOCKET: SOCKET_TEMPLATE,
    }


# systemd refuses these in an executable's path ("Executable name contains
# special characters"), quoted or not.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f\"'\\]")


def quote_executable(path: str) -> str:
    """``path`` as the program of a systemd command line: ``%`` doubled
    (specifiers are expanded there; ``$`` is not), in double quotes when it
    has white space.

    Raises ValueError for a path systemd cannot run (quotes, backslashes,
    control characters)."""
    if _UNSAFE.search(path):
        raise ValueError(
            f"systemd cannot run {path!r}: an ExecStart= program may not contain quotes, "
            "backslashes or control characters; install agh in a path without them"
        )
    escaped = path.replace("%", "%%")
    return f'"{escaped}"' if re.search(r"\s", path) else escaped


def exec_start_line() -> str:
    """``ExecStart=`` for the agh running now: the ``aghd`` script beside
    this interpreter's scripts, else ``<python> -m aghd``; absolute paths.

    Raises ValueError when systemd cannot name that path (quote_executable)."""
    script = os.path.join(sysconfig.get_path("scripts"), "aghd")
    if os.path.isfile(script) and os.access(script, os.X_OK):
        return quote_executable(os.path.abspath(script))
    return quote_executable(os.path.abspath(sys.executable)) + " -m aghd"


def _write_contrib(directory: str) -> None:
    for name, text in render(CONTRIB_EXEC_START).items():
        with open(os.path.join(directory, name), "w", encoding="utf-8") as f:
            f.write(text)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "--write":
        sys.exit("usage: python -m agh.cli.units --write DIRECTORY")
    _write_contrib(sys.argv[2])
