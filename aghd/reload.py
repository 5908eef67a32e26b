"""Live reload of the configuration file: on an edit (watchfiles) and on
SIGHUP, read it again, apply what changed (aghd/config.py), and say so in
the log and to systemd.

An edit that cannot be used leaves every setting as it was and logs why;
a changed setting that needs a restart is logged as such and waits.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import watchfiles

from agh.errors import ConfigError
from aghd import logs, systemd

if TYPE_CHECKING:
    import anyio

    from aghd.config import Layers

log = logging.getLogger("aghd.config")

# An editor's save is often several events (write a temporary file, rename,
# chmod): wait this long for quiet, then read once.
DEBOUNCE_MS = 200


def reload(layers: Layers, why: str) -> bool:
    """Read the file again and apply it; whether it could be used."""
    if layers.path is None:
        log.info("%s: no configuration file to reload", why)
        return True
    systemd.reloading()
    try:
        try:
            result = layers.reload()
        except ConfigError as exc:
            log.error("%s: %s; the running configuration is unchanged", why, exc.message)
            systemd.status(f"configuration not reloaded: {exc.message}")
            return False
        except Exception:
            # A bug here must not end the daemon: reloads run in its task group.
            log.exception("%s: reload failed; the running configuration is unchanged", why)
            return False
        names = {c.name for c in result.applied}
        if names & {"log_level", "log_format"}:
            logs.configure(layers.config.log_level, layers.config.log_format)
        for change in result.applied:
            log.info(
                "config reloaded from %s: %s %s -> %s",
                layers.path,
                change.name,
                _show(change.old),
                _show(change.new),
            )
        for change in result.pending:
            log.warning(
                "config %s: %s %s -> %s needs a restart of aghd; still %s until then",
                layers.path,
                change.name,
                _show(change.old),
                _show(change.new),
                _show(change.old),
            )
        if not result.applied and not result.pending:
            log.debug("%s: %s unchanged", why, layers.path)
        systemd.status(
            f"serving {layers.config.socket_path}; configuration reloaded from {layers.path}"
        )
        return True
    finally:
        systemd.notify("READY=1")


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


async def watch(layers: Layers, stopping: anyio.Event) -> None:
    """Reload whenever the configuration file changes, until ``stopping``.

    Watches the file's directory (an editor replaces the file, and it may
    not exist yet) and, for a symlink, the directory of its target.
    """
    if layers.path is None:
        return
    watched = _watched(layers.path)
    if watched is None:
        return
    targets, dirs = watched
    try:
        await _watch(layers, targets, dirs, stopping)
    except Exception:
        # The watcher's own failure (the directory removed, no inotify
        # left) must not end the daemon: it stops watching, and says so.
        log.exception("stopped watching %s for changes; SIGHUP still reloads", layers.path)


async def _watch(layers: Layers, targets: set[str], dirs: set[str], stopping: anyio.Event) -> None:
    def is_config(_change: watchfiles.Change, changed: str) -> bool:
        return changed in targets

    async for _changes in watchfiles.awatch(
        *dirs,
        watch_filter=is_config,
        debounce=DEBOUNCE_MS,
        step=50,
        stop_event=stopping,
        recursive=False,
        ignore_permission_denied=True,
    ):
        reload(layers, f"{layers.path} changed")


def _watched(path: str) -> tuple[set[str], set[str]] | None:
    """The paths that are the file and the directories to watch for them,
    created if missing; None (logged) when they cannot be."""
    path = os.path.abspath(path)
    targets = {path, os.path.realpath(path)}
    dirs = {os.path.dirname(t) for t in targets}
    for directory in dirs:
        try:
            # The user config dir: private, as the socket's is.
            os.makedirs(directory, mode=0o700, exist_ok=True)
        except OSError as exc:
            log.warning("cannot watch %s for changes (%s); SIGHUP still reloads", path, exc)
            return None
    return targets, dirs
