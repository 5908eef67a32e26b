"""Where the socket, the database and the daemon's log live (PROTOCOL §1).
Shared by the CLI and the daemon, so both pick the same paths.

The socket lives in ``$XDG_RUNTIME_DIR/agh/``. Without ``XDG_RUNTIME_DIR``
(a cron job, ``su``, some containers) it falls back to ``<tmp>/agh-<uid>/``,
as tmux does: a directory private to the user, which aghd creates with mode
0700 and refuses to use when another user owns it or can enter it
(``aghd.files.private_socket_dir``); the client checks the peer's uid
anyway. platformdirs' own fallback warns on every call and shares one
directory between users, hence ours.
"""

from __future__ import annotations

import os
import tempfile


def runtime_dir() -> str:
    """The user's directory for the socket."""
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return os.path.join(xdg, "agh")
    return os.path.join(tempfile.gettempdir(), f"agh-{os.getuid()}")


def default_socket_path() -> str:
    """``$AGH_SOCKET``, else ``<runtime dir>/agh.sock``."""
    env = os.environ.get("AGH_SOCKET")
    if env:
        return env
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
    return os.path.join(state_dir(), "agh.db")
