"""The ``aghd`` command: parse options, layer them over the configuration
file (aghd/config.py), configure logging, run the daemon."""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import click

from agh import __version__
from agh.settings import SETTINGS

# The defaults are Config's, shown in --help: one place for each value.
DEFAULTS = {name: setting.default() for name, setting in SETTINGS.items()}

EXIT_ALREADY_RUNNING = 3

# Option (click parameter name) -> the setting it sets.
FLAG_SETTINGS = {
    "socket_path": "socket_path",
    "db_path": "db_path",
    "synchronous": "synchronous",
    "lease_ms": "default_lease_ms",
    "max_attempts": "default_max_attempts",
    "backoff_base_ms": "retry_backoff_base_ms",
    "backoff_cap_ms": "retry_backoff_cap_ms",
    "max_claims_per_session": "max_claims_per_session",
    "allowed_uids": "allowed_uids",
    "integrity_check": "integrity_check",
    "log_level": "log_level",
    "log_format": "log_format",
}


def _default(name: str) -> str:
    value = DEFAULTS[name]
    return str(value).lower() if isinstance(value, bool) else str(value)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="aghd")
@click.option(
    "--config",
    "config_file",
    envvar="AGH_CONFIG",
    metavar="PATH",
    help="Configuration file [$AGH_CONFIG; default ~/.config/agh/config.yaml, "
    "used when it exists]. Watched: edits apply live.",
)
@click.option(
    "--socket", "socket_path", envvar="AGH_SOCKET", help="Unix socket path [$AGH_SOCKET]."
)
@click.option("--db", "db_path", envvar="AGH_DB", help="SQLite database path [$AGH_DB].")
@click.option(
    "--synchronous",
    type=click.Choice(["FULL", "EXTRA", "NORMAL", "OFF"], case_sensitive=False),
    show_default=_default("synchronous"),
    help="SQLite synchronous mode; anything below FULL can lose acknowledged writes on power loss.",
)
@click.option(
    "--lease-ms",
    type=click.IntRange(1000, 86_400_000),
    show_default=_default("default_lease_ms"),
    help="Default lease length of a claim.",
)
@click.option(
    "--max-attempts",
    type=click.IntRange(1, 1000),
    show_default=_default("default_max_attempts"),
    help="Default max_attempts of a new task.",
)
@click.option(
    "--backoff-base-ms",
    type=click.IntRange(0),
    show_default=_default("retry_backoff_base_ms"),
    help="First retry delay after agent.fail; doubles per attempt.",
)
@click.option(
    "--backoff-cap-ms",
    type=click.IntRange(0),
    show_default=_default("retry_backoff_cap_ms"),
    help="Longest retry delay.",
)
@click.option(
    "--max-claims-per-session",
    type=click.IntRange(0),
    show_default=_default("max_claims_per_session"),
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
    help="Set any setting of the configuration file (repeatable), e.g. "
    "--set stuck_after_ms=60000; `agh config show` lists them.",
)
@click.option(
    "--integrity-check/--no-integrity-check",
    default=None,
    show_default=_default("integrity_check"),
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
    show_default=_default("log_level"),
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
)
@click.option(
    "--log-format",
    show_default=_default("log_format"),
    type=click.Choice(["auto", "text", "journal", "json"], case_sensitive=False),
    help="auto: journal (priority prefixes, no timestamps) when stderr is the "
    "systemd journal, else text.",
)
@click.pass_context
def main(
    ctx: click.Context,
    /,
    config_file: str | None,
    settings: tuple[str, ...],
    check: bool,
    **flags: Any,
) -> None:
    """Run the agh daemon in the foreground until SIGTERM.

    Settings come from flags and --set, then $AGH_SOCKET / $AGH_DB, then
    the configuration file, then the defaults.

    \b
    Example:
      aghd                                  # default socket and database
      aghd --socket /tmp/a.sock --db ./agh.db
    """
    from agh.errors import ConfigError
    from aghd.config import Config, Layers

    overrides = _overrides(ctx, flags, settings)
    try:
        layers = Layers(config_file, explicit=config_file is not None, overrides=overrides)
    except ConfigError as exc:
        if not check:
            click.echo(f"aghd: {exc.message}", err=True)
            sys.exit(1)
        # A typo in the configuration must not keep anyone from checking
        # the database (say, the one --db names).
        click.echo(f"aghd: {exc.message}; checking without the file", err=True)
        layers = Layers(config=Config(**{name: o.value for name, o in overrides.items()}))
    config = layers.config
    if check:
        sys.exit(_check(config.db_path))

    import anyio

    from aghd import logs
    from aghd.app import serve
    from aghd.files import AlreadyRunning, StartupError

    logs.configure(config.log_level, config.log_format)
    options = {"use_uvloop": True} if config.use_uvloop and _has_uvloop() else {}
    try:
        anyio.run(
            functools.partial(serve, config, layers=layers),
            backend="asyncio",
            backend_options=options,
        )
    except StartupError as exc:
        click.echo(f"aghd: {exc.message}", err=True)
        sys.exit(EXIT_ALREADY_RUNNING if isinstance(exc, AlreadyRunning) else 1)


def _overrides(ctx: click.Context, flags: dict[str, Any], items: tuple[str, ...]) -> dict[str, Any]:
    """The settings the command line (or a flag's environment variable)
    sets, each with its source; checked exactly as the file's values are."""
    from click.core import ParameterSource

    from agh.errors import ConfigError
    from agh.settings import decode
    from aghd.config import Override

    out: dict[str, Override] = {}
    for param in ctx.command.params:
        name = param.name
        if name not in FLAG_SETTINGS:
            continue
        source = ctx.get_parameter_source(name)
        value = flags[name]
        if source is ParameterSource.ENVIRONMENT:
            where = f"env {param.envvar}"
        elif source is ParameterSource.COMMANDLINE and value not in (None, ()):
            where = "flag " + max(param.opts, key=len)
        else:
            continue
        setting = FLAG_SETTINGS[name]
        if setting in ("socket_path", "db_path"):
            # From the shell aghd was started in: relative to its directory.
            value = os.path.abspath(os.path.expanduser(value))
        try:
            out[setting] = Override(decode(setting, value), where)
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param=param) from None
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip().replace("-", "_")
        try:
            if not sep:
                raise ConfigError(f"{item!r}: expected NAME=VALUE")
            out[name] = Override(_decode_set(name, text), f"flag --set {name}")
        except ConfigError as exc:
            raise click.BadParameter(exc.message, param_hint="--set") from None
    return out


def _decode_set(name: str, text: str) -> Any:
    """``--set NAME=VALUE``: VALUE read as YAML (``30000``, ``FULL``,
    ``[1001, 1002]``), then checked as the file's would be."""
    import yaml

    from agh.errors import ConfigError
    from agh.settings import SETTINGS, decode, unknown_setting

    if name not in SETTINGS:
        raise ConfigError(unknown_setting(name))
    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raw = text
    return decode(name, raw, f"{name}: ")


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
