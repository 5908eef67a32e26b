"""``agh backup FILE``: a consistent copy of aghd's database, taken while it
serves (``server.backup``).

Owns: resolving FILE against the caller's working directory (aghd's is not
the caller's, so the wire takes only absolute paths) and printing what was
written. Must not: touch the database itself; aghd makes the copy.
"""

from __future__ import annotations

import os

import click

from agh.cli.connect import connect
from agh.cli.options import json_option
from agh.cli.output import emit_json, format_fields

# Where the restore procedure is written out.
RESTORE_POINTER = "to restore it, see agh(1), section backup, or docs/OPERATIONS.md"


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{size:.1f} {unit} ({n} bytes)"
        size /= 1024
    raise AssertionError("unreachable")


@click.command("backup")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@json_option
@click.pass_context
def backup(ctx: click.Context, file: str, force: bool, as_json: bool) -> None:
    """Write a consistent copy of aghd's database to FILE, while it serves.

    The copy is one snapshot: every write acknowledged before it began,
    nothing committed later. Writers are not held up meanwhile. FILE is
    created with mode 0600 (the database holds claim token hashes) and
    appears whole or not at all; an existing FILE is refused (exit 4)
    unless --force. A relative FILE is taken from the current directory.
    Prints the file, its size and schema version; how to restore it is in
    agh(1), section backup.

    \b
    Example:
      agh backup ~/agh-backup.db
      agh backup --force "backups/agh-$(date +%F).db" --json
    """
    path = os.path.abspath(os.path.expanduser(file))
    with connect(ctx) as client:
        result = client.server_backup(path, force=force)
    if as_json:
        emit_json(result)
        return
    click.echo(
        format_fields(
            [
                ("backup", result.path),
                ("size", human_size(result.bytes)),
                ("schema version", result.schema_version),
                ("database", result.database),
                ("taken at", f"{result.taken_at} (copy took {result.duration_ms} ms)"),
            ]
        )
    )
    click.echo(f"agh: {RESTORE_POINTER}", err=True)
