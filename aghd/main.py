"""The ``aghd`` command: parse options, configure logging, run the daemon."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import MISSING

import click

from agh import __version__
from aghd.config import Config

# The defaults are Config's, shown in --help: one place for each value.
DEFAULTS = {
    name: f.default for name, f in Config.__dataclass_fields__.items() if f.default is not MISSING
}

EXIT_ALREADY_RUNNING = 3


# Config fields settable with --set NAME=VALUE (numbers; see aghd/config.py).
TUNABLE = (
    "stream_keepalive_s",
    "stream_max_backlog_bytes",
    "log_retention_lines",
    "stuck_after_ms",
    "backlog_threshold_ms",
    "stale_after_ms",
    "latency_window_ms",
    "shutdown_grace_s",
    "read_connections",
    "busy_timeout_ms",
    "max_connections",
    "idle_timeout_s",
    "write_stall_timeout_s",
)


def _parse_settings(items: tuple[str, ...]) -> dict[str, float | int]:
    """``NAME=VALUE`` pairs for TUNABLE fields; anything else is a usage error."""
    out: dict[str, float | int] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        if not sep or name not in TUNABLE:
            raise click.BadParameter(
                f"{item!r}: expected NAME=VALUE with NAME one of {', '.join(TUNABLE)}",
                param_hint="--set",
            )
        try:
            value = float(text) if name.endswith("_s") else int(text)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: {text!r} is not a number", param_hint="--set"
            ) from None
        if value <= 0:
            raise click.BadParameter(f"{item!r}: must be positive", param_hint="--set")
        out[name] = value
    return out


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="aghd")
@click.option(
    "--socket", "socket_path", envvar="AGH_SOCKET", help="Unix socket path [$AGH_SOCKET]."
)
@click.option("--db", "db_path", envvar="AGH_DB", help="SQLite database path [$AGH_DB].")
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "EXTRA", "NORMAL", "OFF"], case_sensitive=False),
    default=DEFAULTS["synchronous"],
    show_default=True,
    help="SQLite synchronous mode; anything below FULL can lose acknowledged writes on power loss.",
)
@click.option(
    "--lease-ms",
    type=click.IntRange(1000, 86_400_000),
    default=DEFAULTS["default_lease_ms"],
    show_default=True,
    help="Default lease length of a claim.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    default=DEFAULTS["default_max_attempts"],
    show_default=True,
    help="Default max_attempts of a new task.",
)
@click.option(
    "--backoff-base-ms",
    type=click.IntRange(0),
    default=DEFAULTS["retry_backoff_base_ms"],
    show_default=True,
    help="First retry delay after agent.fail; doubles per attempt.",
)
@click.option(
    "--backoff-cap-ms",
    type=click.IntRange(0),
    default=DEFAULTS["retry_backoff_cap_ms"],
    show_default=True,
    help="Longest retry delay.",
)
@click.option(
    "--max-claims-per-session",
    type=click.IntRange(0),
    default=DEFAULTS["max_claims_per_session"],
    show_default=True,
    help="Active claims one session may hold (0: unlimited).",
)
@click.option(
    "--allow-uid",
    "allowed_uids",
    type=int,
    multiple=True,
    help="Another uid allowed to connect (repeatable).",
)
@click.option(
    "--set",
    "settings",
    metavar="NAME=VALUE",
    multiple=True,
    help="Set a tuning value (repeatable): " + ", ".join(TUNABLE) + ".",
)
@click.option(
    "--integrity-check/--no-integrity-check",
    default=DEFAULTS["integrity_check"],
    show_default=True,
    help="Check the database file's structure before serving it (refuse a damaged one); "
    "--no-integrity-check only to read what is left of a damaged database.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Check the database (integrity and schema version) and exit: 0 when it is sound, "
    "1 when it is damaged or unreadable. Read-only: safe while a daemon serves it.",
)
@click.option(
    "--log-level",
    default="INFO",
    show_default=True,
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
def main(
    socket_path: str | None,
    db_path: str | None,
    synchronous: str,
    lease_ms: int,
    max_attempts: int,
    backoff_base_ms: int,
    backoff_cap_ms: int,
    max_claims_per_session: int,
    allowed_uids: tuple[int, ...],
    settings: tuple[str, ...],
    integrity_check: bool,
    check: bool,
    log_level: str,
) -> None:
    """Run the agh daemon in the foreground until SIGTERM.

    \b
    Example:
      aghd                                  # default socket and database
      aghd --socket /tmp/a.sock --db ./agh.db
    """
    from agh.paths import default_db_path, default_socket_path

    if check:
        sys.exit(_check(db_path or default_db_path()))

    import anyio

    from aghd.app import serve
    from aghd.files import AlreadyRunning, StartupError

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Paths passed explicitly: the defaults (agh.paths) are computed only
    # when no flag or variable names the path.
    config = Config(
        socket_path=socket_path or default_socket_path(),
        db_path=db_path or default_db_path(),
        synchronous=synchronous.upper(),
        default_lease_ms=lease_ms,
        default_max_attempts=max_attempts,
        retry_backoff_base_ms=backoff_base_ms,
        retry_backoff_cap_ms=backoff_cap_ms,
        max_claims_per_session=max_claims_per_session,
        allowed_uids=allowed_uids,
        integrity_check=integrity_check,
    )
    for name, value in _parse_settings(settings).items():
        setattr(config, name, value)
    options = {"use_uvloop": True} if config.use_uvloop and _has_uvloop() else {}
    try:
        anyio.run(serve, config, backend="asyncio", backend_options=options)
    except StartupError as exc:
        click.echo(f"aghd: {exc.message}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING if isinstance(exc, AlreadyRunning) else 1)


def _check(path: str) -> int:
    """``aghd --check``: report on the database at ``path``; the exit status."""
    from aghd.store.db import check_file, recovery_steps
    from aghd.store.schema import LATEST

    if not os.path.isfile(path):
        click.echo(f"aghd: no database at {path} (pass its path with --db or $AGH_DB)", err=True)
        return 1
    version, problems = check_file(path)
    if problems:
        click.echo(f"aghd: {path} is damaged or not a database:", err=True)
        for problem in problems:
            click.echo(f"  {problem}", err=True)
        click.echo(recovery_steps(path), err=True)
        return 1
    assert version is not None
    if version > LATEST:
        click.echo(
            f"aghd: {path} has schema version {version}, newer than this aghd ({LATEST}):"
            " upgrade agh before serving it",
            err=True,
        )
        return 1
    pending = ""
    if version < LATEST:
        pending = f"; migrations {version + 1}-{LATEST} run at the next start"
    click.echo(f"{path}: ok, schema version {version}{pending}")
    return 0


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
