"""``agh config show`` and ``agh config check``: the daemon's settings,
where each came from, and whether a configuration file can be used.

Owns: presenting ``agh.settings`` (the file, its strict decoding, the
layers) and ``server.config``. Must not: start aghd (showing the
configuration of a daemon that is not running means showing the file).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from agh.cli.connect import connect
from agh.cli.options import json_option
from agh.cli.output import emit_json, format_table, paint
from agh.errors import DaemonUnreachable
from agh.settings import show_value

if TYPE_CHECKING:
    from agh import protocol as p


@click.group("config")
def config() -> None:
    """Show aghd's settings and where each came from; check a config file.

    aghd reads config.yaml in the user config dir (~/.config/agh/config.yaml;
    $AGH_CONFIG or aghd --config names another) and applies an edit live;
    flags and --set override it. aghd(1) lists every setting.

    \b
    Example:
      agh config show
      agh config check ~/.config/agh/config.yaml
    """


def _offline() -> p.ServerConfigResult:
    """What aghd would start with, from the file and the environment (as
    aghd with no flags would read them)."""
    from agh.settings import Layers, Override, decode, default_config_path

    overrides = {
        name: Override(decode(name, os.path.abspath(os.environ[var]), f"${var}: "), f"env {var}")
        for name, var in (("socket_path", "AGH_SOCKET"), ("db_path", "AGH_DB"))
        if os.environ.get(var)
    }
    layers = Layers(
        default_config_path(), explicit=bool(os.environ.get("AGH_CONFIG")), overrides=overrides
    )
    return layers.wire()


@config.command("show")
@json_option
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Show every setting: its value, and where it came from.

    From the running aghd when there is one (the values it uses now,
    including flags and live edits); else what aghd would start with,
    from the configuration file and the defaults. A setting marked
    "restart" applies only when aghd starts; a changed value waiting for
    that start is shown after it. Never starts aghd.

    \b
    Example:
      agh config show
      agh config show --json | jq '.settings[] | select(.source != "default")'
    """
    running = True
    try:
        with connect(ctx, autostart=False) as client:
            result = client.server_config()
    except DaemonUnreachable as exc:
        if exc.details.get("cause") != "not_running":
            raise  # it runs but does not answer: its file's values could be stale
        running = False
        result = _offline()
    if as_json:
        import msgspec

        emit_json({"running": running, **msgspec.to_builtins(result)})
        return
    file = result.file or "none"
    if result.file and not result.file_exists:
        file += " (does not exist: every setting not given by a flag is its default)"
    who = "the running aghd" if running else "aghd is not running; it would start with these"
    click.echo(f"{who}\nconfiguration file: {file}\n", err=not running)
    rows = []
    for s in result.settings:
        value = show_value(s.value)
        if s.pending is not None:
            value += f" (file: {show_value(s.pending)} at the next start)"
        source = s.source if s.source != "default" else paint("default", "bright_black")
        rows.append([s.name, value, "restart" if s.restart else "live", source])
    click.echo(format_table(["SETTING", "VALUE", "APPLIES", "SOURCE"], rows, flex=1))


@config.command("check")
@click.argument("file", required=False, type=click.Path(dir_okay=False))
@json_option
def check(file: str | None, as_json: bool) -> None:
    """Check a configuration file, as aghd would read it.

    Exit 0 when aghd would accept it, printing the settings it sets; else
    exit 1 naming the file, the line and the key at fault (an unknown key,
    with the nearest name; a wrong type; a value out of bounds). FILE
    defaults to the file aghd reads. Reads only the file: aghd need not run.

    \b
    Example:
      agh config check
      agh config check ./new-config.yaml && cp ./new-config.yaml ~/.config/agh/config.yaml
    """
    from agh.settings import default_config_path, read_file

    path = os.path.abspath(os.path.expanduser(file or default_config_path()))
    # The default file may be absent (aghd then uses the defaults); one named is expected.
    settings = read_file(path, missing_ok=file is None and not os.environ.get("AGH_CONFIG"))
    if as_json:
        emit_json({"file": path, "exists": settings.exists, "settings": settings.values})
        return
    if not settings.exists:
        click.echo(f"{path}: does not exist; aghd uses every default")
        return
    click.echo(f"{path}: ok, sets {len(settings.values)} setting(s)")
    for name, value in settings.values.items():
        click.echo(f"  {settings.where(name).rsplit(':', 1)[1]:>4}  {name}: {show_value(value)}")
