"""Where the socket, the database and the daemon's log live (PROTOCOL §1).
Shared by the CLI and the daemon, so both pick the same paths.

The socket lives in ``$XDG_RUNTIME_DIR/agh/``. Without ``XDG_RUNTIME_DIR``
(a cron job, ``su``, some containers) it is ``/run/user/<uid>/agh/`` when
that user runtime directory exists (private, ours), else ``<tmp>/agh-<uid>/``,
as tmux does: a directory private to the user, which aghd creates with mode
0700 and refuses to use when another user owns it or can enter it
(``aghd.files.private_socket_dir``); the client checks the peer's uid
anyway. platformdirs' own fallback warns on every call and shares one
directory between users, hence ours.
"""

from __future__ import annotations

import os
import stat


def runtime_dir() -> str:
    """The user's directory for the socket."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "agh")
    # What XDG_RUNTIME_DIR would have been (systemd-logind makes it): a
    # session without the variable (cron, su, ssh) must still find the
    # aghd that systemd runs at %t/agh/agh.sock, not start a second one.
    uid = os.getuid()
    logind = f"/run/user/{uid}"
    try:
        st = os.stat(logind)
    except OSError:
        st = None
    if st is not None and st.st_uid == uid and stat.S_IMODE(st.st_mode) == 0o700:
        return os.path.join(logind, "agh")
    import tempfile  # the last resort only: it (and shutil) cost every command a few ms

    return os.path.join(tempfile.gettempdir(), f"agh-{uid}")


def default_socket_path() -> str:
    """``$AGH_SOCKET``, else ``<runtime dir>/agh.sock`` (a client also reads
    the configuration file: ``agh.settings.client_socket_path``)."""
    env = os.environ.get("AGH_SOCKET")
    if env:
        return env
    return builtin_socket_path()


def builtin_socket_path() -> str:
    """``<runtime dir>/agh.sock``: the default of the ``socket_path`` setting."""
    return os.path.join(runtime_dir(), "agh.sock")


def state_dir() -> str:
    """``<user_state_dir>/agh`` (``~/.local/state/agh``): database and logs."""
    import platformdirs

    return platformdirs.user_state_dir("agh")


def default_db_path() -> str:
    """``$AGH_DB``, else ``<state dir>/agh.db``."""
    env = os.environ.get("AGH_DB")
    if env:
        return env
    return builtin_db_path()


def builtin_db_path() -> str:
    """``<state dir>/agh.db``: the default of the ``db_path`` setting."""
    return os.path.join(state_dir(), "agh.db")
