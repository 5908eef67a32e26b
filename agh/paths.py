"""Where the socket and the database live (PROTOCOL §1). Shared by CLI and daemon."""

from __future__ import annotations

import os


def default_socket_path() -> str:
    """``$AGH_SOCKET``, else ``<user_runtime_dir>/agh/agh.sock``."""
    env = os.environ.get("AGH_SOCKET")
    if env:
        return env
    import platformdirs

    return os.path.join(platformdirs.user_runtime_dir("agh"), "agh.sock")


def default_db_path() -> str:
    """``$AGH_DB``, else ``<user_state_dir>/agh/agh.db``."""
    env = os.environ.get("AGH_DB")
    if env:
        return env
    import platformdirs

    return os.path.join(platformdirs.user_state_dir("agh"), "agh.db")
