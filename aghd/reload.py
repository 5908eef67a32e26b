"""Live reload of the configuration file: on an edit (watchfiles) and on
SIGHUP, read it again, apply what changed (aghd/config.py), and say so in
the log and to systemd.

An edit that cannot be used leaves every setting as it was and logs why;
a changed setting that needs a restart is logged as such and waits.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
import watchfiles

from agh.errors import ConfigError
from agh.settings import show_value
from aghd import logs, systemd

if TYPE_CHECKING:
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
    serving = f"serving {layers.config.socket_path}"
    status = f"{serving}; configuration not reloaded (see the log)"
    try:
        try:
            result = layers.reload()
        except ConfigError as exc:
            log.error("%s: %s; the running configuration is unchanged", why, exc.message)
            status = f"{serving}; configuration not reloaded: {exc.message}"
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
                show_value(change.old),
                show_value(change.new),
            )
        for change in result.pending:
            log.warning(
                "config %s: %s %s -> %s needs a restart of aghd; still %s until then",
                layers.path,
                change.name,
                show_value(change.old),
                show_value(change.new),
                show_value(change.old),
            )
        if not result.applied and not result.pending:
            log.debug("%s: %s unchanged", why, layers.path)
        status = f"{serving}; configuration reloaded from {layers.path}"
        return True
    finally:
        # Whatever happened, aghd serves on: READY=1 ends the reload for systemd.
        systemd.ready(status)


async def watch(layers: Layers, stopping: anyio.Event) -> None:
    """Reload whenever the configuration file changes, until ``stopping``.

    Watches the file's directory (an editor replaces the file, and it may
    not exist yet) and, for a symlink, the directory of its target; when
    one of those is replaced (a dotfile manager relinks it) or the link
    points elsewhere, watches anew and reads the file as it is then.
    """
    if layers.path is None:
        return
    watched = _watched(layers.path, create=True)
    while watched is not None and not stopping.is_set():
        try:
            await _watch(layers, watched, stopping)
        except Exception:
            # The watcher's own failure (no inotify left, say) must not end
            # the daemon: it stops watching, and says so.
            log.exception("stopped watching %s for changes; SIGHUP still reloads", layers.path)
            return
        # Moved: wait for what replaces it (never recreate a directory a
        # tool removed on its way to putting another one there).
        while not stopping.is_set():
            await anyio.sleep(RECHECK_MS / 1000)
            watched = _watched(layers.path, create=False)
            if watched is not None:
                reload(layers, f"{layers.path} moved")
                break


# How often the watcher checks that what it watches is still there.
RECHECK_MS = 1000


async def _watch(layers: Layers, watched: Watched, stopping: anyio.Event) -> None:
    """Reload on each change until ``stopping`` or until ``watched`` is
    no longer what the path resolves to."""

    def is_config(_change: watchfiles.Change, changed: str) -> bool:
        return changed in watched.targets

    async for changes in watchfiles.awatch(
        *watched.dirs,
        watch_filter=is_config,
        debounce=DEBOUNCE_MS,
        step=50,
        stop_event=stopping,
        rust_timeout=RECHECK_MS,
        yield_on_timeout=True,
        recursive=False,
        ignore_permission_denied=True,
    ):
        if watched.stale():
            return
        if changes:
            reload(layers, f"{layers.path} changed")


@dataclass(frozen=True, slots=True)
class Watched:
    """The file's paths (itself, its symlink's target) and the directories
    watched for them, each with the identity it had then."""

    path: str
    targets: frozenset[str]
    dirs: dict[str, tuple[int, int]]

    def stale(self) -> bool:
        """Whether a directory was replaced or removed, or the link moved."""
        if os.path.realpath(self.path) not in self.targets:
            return True
        return any(_identity(d) != ident for d, ident in self.dirs.items())


def _identity(directory: str) -> tuple[int, int] | None:
    try:
        st = os.stat(directory)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _watched(path: str, *, create: bool) -> Watched | None:
    """What to watch for the file at ``path``, its directories created if
    missing and ``create``; None (logged if ``create``) when they cannot be."""
    path = os.path.abspath(path)
    targets = frozenset({path, os.path.realpath(path)})
    dirs: dict[str, tuple[int, int]] = {}
    for directory in {os.path.dirname(t) for t in targets}:
        try:
            if create:
                # The user config dir: private, as the socket's is.
                os.makedirs(directory, mode=0o700, exist_ok=True)
            st = os.stat(directory)
        except OSError as exc:
            if create:
                log.warning("cannot watch %s for changes (%s); SIGHUP still reloads", path, exc)
            return None
        dirs[directory] = (st.st_dev, st.st_ino)
    return Watched(path, targets, dirs)
