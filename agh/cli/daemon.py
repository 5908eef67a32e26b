"""``agh daemon …``, ``agh ping`` and ``agh sessions``: the hub itself.

``agh daemon start`` is the explicit form of the autostart every command
does (``agh.cli.connect``); ``stop`` asks the running daemon to shut down
(SIGTERM to the pid it reports, so it checkpoints and closes cleanly) and
waits until the socket is gone. Neither autostarts: ``status`` and
``ping`` must be able to say "not running". ``install-unit`` writes the
systemd user units (``agh.cli.units``) and never contacts aghd. Owns:
parsing and printing for ``server.info`` and ``sessions.list``. Must not:
touch the database.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING, Any

import click

from agh.cli.connect import connect, daemon_log_path, socket_path, start_daemon
from agh.cli.exits import EXIT_CONFLICT, EXIT_FORBIDDEN, EXIT_UNAVAILABLE, fail
from agh.cli.group import SafeGroup
from agh.cli.options import json_option
from agh.cli.output import age, emit_json, format_fields, format_table, status_text

if TYPE_CHECKING:
    from agh import protocol as p

# How long `agh daemon stop` waits for aghd to exit before saying so.
_STOP_TIMEOUT_S = 30.0


def info_fields(info: p.ServerInfoResult) -> list[tuple[str, Any]]:
    return [
        ("version", f"aghd {info.version} (protocol {info.protocol})"),
        ("pid", info.pid),
        ("socket", info.socket),
        ("database", info.database),
        ("started", f"{info.started_at} (up {age(info.started_at).removesuffix(' ago')})"),
        ("synchronous", info.synchronous),
    ]


@click.command("ping")
@json_option
@click.pass_context
def ping(ctx: click.Context, as_json: bool) -> None:
    """Check that aghd answers; show its version.

    Also prints its pid, socket and database paths. Never starts aghd:
    exits 69 when it is not running.

    \b
    Example:
      agh ping
      agh --socket /tmp/agh-test/agh.sock ping --json
    """
    with connect(ctx, autostart=False) as client:
        info = client.server_info()
    if as_json:
        emit_json(info)
        return
    click.echo(format_fields(info_fields(info)))


@click.group("daemon", cls=SafeGroup, read_only=("status",))
def daemon() -> None:
    """Start, stop or inspect aghd.

    Any agh command starts aghd when it is not running (unless
    AGH_AUTOSTART=0); under systemd, use `systemctl --user start aghd`
    instead (`agh daemon install-unit` writes the units). The daemon
    started by agh logs to the file `agh daemon status` names.

    \b
    Example:
      agh daemon status
      agh daemon stop
    """


@daemon.command("start")
@click.pass_context
def start(ctx: click.Context) -> None:
    """Start aghd in the background if it is not running.

    Waits until it answers. Exits 0 when it already runs.

    \b
    Example:
      agh daemon start
      AGH_DB=/tmp/scratch.db agh --socket /tmp/scratch/agh.sock daemon start
    """
    from agh.errors import DaemonUnreachable

    path = socket_path(ctx)
    try:
        with connect(ctx, autostart=False) as client:
            pid = client.server_info().pid
        click.echo(f"agh: aghd is already running (pid {pid}) on {path}", err=True)
    except DaemonUnreachable as exc:
        if exc.details.get("cause") != "not_running":
            raise
        start_daemon(path)


@daemon.command("stop")
@click.pass_context
def stop(ctx: click.Context) -> None:
    """Stop the running aghd and wait until it has exited.

    Claimed runs keep their leases: agents that heartbeat after aghd is
    back keep their work. Exits 0 when aghd was not running.

    \b
    Example:
      agh daemon stop
    """
    from agh.errors import DaemonUnreachable

    path = socket_path(ctx)
    try:
        with connect(ctx, autostart=False) as client:
            pid = client.server_info().pid
    except DaemonUnreachable as exc:
        if exc.details.get("cause") != "not_running":
            raise
        click.echo(f"agh: aghd is not running on {path}", err=True)
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    except PermissionError:
        fail(
            f"aghd (pid {pid}) on {path} is not yours to stop; ask its owner, "
            "or `systemctl stop` it as them",
            EXIT_FORBIDDEN,
        )
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while pid_alive(pid):
        if time.monotonic() > deadline:
            fail(
                f"aghd (pid {pid}) did not exit within {_STOP_TIMEOUT_S:g} s; "
                f"see its log, or `kill -9 {pid}` as a last resort",
            )
        time.sleep(0.05)
    click.echo(f"agh: stopped aghd (pid {pid})", err=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (started by this very process in a test) counts as gone.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


@daemon.command("status")
@json_option
@click.pass_context
def status(ctx: click.Context, as_json: bool) -> None:
    """Show whether aghd runs: pid, uptime, version, paths and counts.

    Exits 69 (and says so) when it is not running; never starts it.

    \b
    Example:
      agh daemon status
      agh daemon status --json | jq .totals
    """
    from agh.errors import DaemonUnreachable

    try:
        with connect(ctx, autostart=False) as client:
            info = client.server_info()
            board = client.observe_dashboard().dashboard
            sessions = client.sessions_list(state="connected").sessions
    except DaemonUnreachable as exc:
        if as_json:
            emit_json({"running": False, "socket": socket_path(ctx), "error": exc.message})
        click.echo(f"agh: {exc.message}", err=True)
        raise click.exceptions.Exit(EXIT_UNAVAILABLE) from None
    if as_json:
        emit_json(
            {
                "running": True,
                "server": info,
                "connected_sessions": len(sessions),
                "totals": board.totals,
                "health": board.health,
            }
        )
        return
    t = board.totals
    click.echo(
        format_fields(
            [
                ("status", f"running, health {status_text(board.health.status)}"),
                *info_fields(info),
                ("log", daemon_log_path() + " (when started by agh)"),
                (
                    "tasks",
                    f"{t.tasks_total} ({t.ready_tasks} ready, "
                    f"{t.in_progress_tasks} in progress, {t.blocked_tasks} blocked, "
                    f"{t.failed_tasks} failed, {t.completed_tasks} completed)",
                ),
                ("runs", f"{t.runs_total} ({t.queued_runs} queued, {t.active_runs} active)"),
                ("sessions", f"{len(sessions)} connected"),
            ]
        )
    )


def user_unit_dir() -> str:
    """Where the systemd user manager reads your units:
    ``$XDG_CONFIG_HOME/systemd/user`` (``~/.config/systemd/user``)."""
    config = os.environ.get("XDG_CONFIG_HOME")
    if not (config and os.path.isabs(config)):
        config = os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(config, "systemd", "user")


# What install-unit tells you to run next; `agh daemon install-unit --json`
# lists them too.
UNIT_COMMANDS = (
    "systemctl --user daemon-reload",
    "systemctl --user enable --now aghd.socket",
    "systemctl --user enable --now aghd.service",
    "journalctl --user -u aghd -f",
)


@daemon.command("install-unit")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False),
    help="Write the units here. [default: $XDG_CONFIG_HOME/systemd/user, "
    "i.e. ~/.config/systemd/user]",
)
@click.option("--force", is_flag=True, help="Overwrite unit files that differ.")
@json_option
def install_unit(directory: str | None, force: bool, as_json: bool) -> None:
    """Write aghd.service and aghd.socket for systemd --user.

    ExecStart= names the aghd of this installation. Prints the files and
    the systemctl commands to run next. A unit file that exists and
    differs is left alone (exit 4) unless --force; an identical one is
    left as it is. Never starts or contacts aghd.

    \b
    Example:
      agh daemon install-unit
      agh daemon install-unit --dir /tmp/units --json
    """
    from agh.cli.units import exec_start_line, render

    target = os.path.abspath(directory or user_unit_dir())
    try:
        exec_start = exec_start_line()
    except ValueError as exc:
        fail(str(exc))
    plan: list[tuple[str, str, str]] = []  # (path, text, what happens)
    for name, text in render(exec_start).items():
        path = os.path.join(target, name)
        try:
            with open(path, encoding="utf-8") as f:
                old: str | None = f.read()
        except FileNotFoundError:
            old = None
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot read {path}: {exc}")
        plan.append(
            (path, text, "written" if old is None else "unchanged" if old == text else "replaced")
        )
    differing = [path for path, _, action in plan if action == "replaced"]
    if differing and not force:
        fail(
            f"{' and '.join(differing)} already "
            + ("exists and differs" if len(differing) == 1 else "exist and differ")
            + " from the units for this installation; nothing was written. Keep your "
            "edits in a drop-in (`systemctl --user edit aghd`), or overwrite with "
            "`agh daemon install-unit --force`",
            EXIT_CONFLICT,
        )
    try:
        os.makedirs(target, exist_ok=True)
        for path, text, action in plan:
            if action != "unchanged":
                _write_atomically(path, text)
    except OSError as exc:
        fail(f"cannot write the units to {target}: {exc.strerror or exc}; choose another --dir")
    if as_json:
        emit_json(
            {
                "directory": target,
                "exec_start": exec_start,
                "files": [{"path": path, "status": action} for path, _, action in plan],
                "commands": list(UNIT_COMMANDS),
            }
        )
        return
    for path, _, action in plan:
        click.echo(f"{action}: {path}")
    _warn_if_the_socket_differs()
    reload, socket_on, service_on, journal = UNIT_COMMANDS
    click.echo(
        f"ExecStart={exec_start}\n"
        "\n"
        "Next (if agh started an aghd, `agh daemon stop` it first):\n"
        f"  {reload}\n"
        f"  {socket_on}     # start aghd on the first connection\n"
        f"  {service_on}    # or: start it at login\n"
        f"  {journal}                  # follow its log"
    )


def _warn_if_the_socket_differs() -> None:
    """aghd.socket listens where agh looks by default; a client told to
    look elsewhere ($AGH_SOCKET, socket_path in config.yaml) would miss it
    and start a second aghd, which the database lock then refuses."""
    from agh.paths import builtin_socket_path
    from agh.settings import client_socket_path

    wanted, unit = client_socket_path(), builtin_socket_path()
    if os.path.abspath(wanted) != os.path.abspath(unit):
        click.echo(
            f"agh: warning: aghd.socket listens on {unit}, but agh looks for aghd at "
            f"{wanted} ($AGH_SOCKET or socket_path in config.yaml); set ListenStream= "
            "to it in a drop-in (`systemctl --user edit aghd.socket`), or drop the override",
            err=True,
        )


def _write_atomically(path: str, text: str) -> None:
    """Write ``path`` (mode 0644, as unit files are) through a temporary
    file and a rename: systemd never reads half a unit."""
    temporary = f"{path}.tmp{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(temporary, 0o644)  # whatever the umask
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


@click.command("sessions")
@click.option(
    "--state",
    type=click.Choice(["connected", "disconnected"]),
    help="Only sessions in this state.",
)
@click.option(
    "--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="At most N."
)
@click.option("-q", "--quiet", is_flag=True, help="Print only session ids.")
@json_option
@click.pass_context
def sessions(ctx: click.Context, state: str | None, limit: int, quiet: bool, as_json: bool) -> None:
    """List agent sessions: who is connected, doing what.

    A session is an agent's identity across connections (session.hello):
    its name, state, channel and when it was last active.

    \b
    Example:
      agh sessions
      agh sessions --state connected --json
    """
    fields: dict[str, Any] = {"limit": limit}
    if state is not None:
        fields["state"] = state
    with connect(ctx) as client:
        result = client.sessions_list(**fields)
    if as_json:
        emit_json(result)
        return
    if quiet:
        for s in result.sessions:
            click.echo(s.session_id)
        return
    if not result.sessions:
        click.echo("no sessions", err=True)
        return
    rows = [
        (
            s.agent_name or s.name or "-",
            status_text(s.state),
            s.channel or "-",
            age(s.updated_at),
            s.session_id,
        )
        for s in result.sessions
    ]
    click.echo(format_table(("AGENT", "STATE", "CHANNEL", "ACTIVE", "SESSION"), rows))
