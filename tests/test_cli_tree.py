"""The command tree as a whole: every command reachable, documented with an
example, summarised truthfully in ``agh --help``, aliases that work, typo
suggestions that never name a state-changing command, global options after
the command, and ``--help`` that imports only what it prints."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import click
import pytest

from agh.cli import REGISTRY, main
from agh.cli.group import SafeGroup
from tests.helpers.cli import clean_environ, invoke

if TYPE_CHECKING:
    from collections.abc import Iterator

# Commands that print no data (they act, follow a terminal, or run others).
NO_DATA = {
    ("worker",),
    ("board",),
    ("daemon",),
    ("daemon", "start"),
    ("daemon", "stop"),
    ("agent",),
    ("run",),
    ("dep",),
    ("watch",),
    ("events",),
    ("logs",),
    ("completion",),
    ("config",),
}


def walk() -> Iterator[tuple[tuple[str, ...], click.Command]]:
    ctx = click.Context(main)
    for name in REGISTRY.entries:
        command = main.get_command(ctx, name)
        assert command is not None, name
        yield (name,), command
        if isinstance(command, click.Group):
            for sub, subcommand in command.commands.items():
                yield (name, sub), subcommand


def test_every_command_has_help_with_an_example() -> None:
    top = invoke("--help")
    assert top.exit_code == 0 and "Example" in top.stdout
    for code in ("0", "1", "2", "3", "4", "5", "6", "69", "75", "130"):
        assert re.search(rf"^\s+{code}\s", top.stdout, re.M), code
    seen = 0
    for path, command in walk():
        result = invoke(*path, "--help")
        assert result.exit_code == 0, path
        assert command.help and command.help.strip(), path
        example = result.stdout.partition("Example:\n")[2].split("\n\n")[0]
        assert "agh " in example, path
        assert invoke(*path, "-h").stdout == result.stdout, path
        seen += 1
    assert seen > 45  # the whole tree was walked, subcommands included


def test_the_registry_summaries_are_the_commands_own() -> None:
    ctx = click.Context(main)
    for name, entry in REGISTRY.entries.items():
        command = main.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=200) == entry.summary, name


def test_every_data_command_takes_json_and_output() -> None:
    for path, command in walk():
        if path in NO_DATA or (path[0] in ("inbox",) and len(path) == 1):
            continue
        names = {param.name for param in command.params}
        assert {"as_json", "output"} <= names, path


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("create", "add"),
        ("list", "ls"),
        ("get", "show"),
        ("status", "show"),
        ("delete", "rm"),
        ("reject", "deny"),
    ],
)
def test_seed_cli_names_are_aliases(alias: str, canonical: str) -> None:
    result = invoke(alias, "--help")
    assert result.exit_code == 0
    assert (
        result.stdout.replace(f"agh {alias}", f"agh {canonical}", 1)
        == invoke(canonical, "--help").stdout
    )


def test_aliases_run_against_the_daemon(agh: Any) -> None:
    created = agh("create", "via alias", "-q")
    assert created.exit_code == 0 and created.stdout.startswith("task_")
    task_id = created.stdout.strip()
    assert agh("list", "-q").stdout.split() == [task_id]
    assert agh("get", task_id).exit_code == 0
    assert "via alias" in agh("status", task_id).stdout
    assert agh("delete", task_id, "--yes").exit_code == 0
    assert agh("list", "-q").stdout == ""


def suggestions(stderr: str) -> list[str]:
    found = re.search(r"Did you mean (.+)\?", stderr)
    return re.findall(r"'([^']+)'", found.group(1)) if found else []


def typos(name: str) -> set[str]:
    variants = {name[:-1], name + "x", name[1:], name[0] + name[2:]}
    if len(name) > 2:
        variants.add(name[1] + name[0] + name[2:])
    return {v for v in variants if len(v) > 1}


def test_typo_suggestions_never_name_a_command_that_changes_state() -> None:
    read_only = {n for n, e in REGISTRY.entries.items() if e.read_only}
    read_only |= {a for n in read_only for a in REGISTRY.entries[n].aliases}
    every = set(REGISTRY.entries) | set(REGISTRY.by_alias)
    suggested: set[str] = set()
    for name in every:
        for typo in typos(name) - every:
            result = invoke(typo)
            assert result.exit_code == 2, typo
            assert f"No such command {typo!r}" in result.stderr
            named = suggestions(result.stderr)
            assert set(named) <= read_only, (typo, named)
            suggested |= set(named)
    assert suggested  # read-only commands are still suggested
    # The examples: no `start` for `status`-like typos, no `release`.
    assert "start" not in suggestions(invoke("stat").stderr)
    assert "release" not in suggestions(invoke("relase").stderr)


def test_subgroup_typos_suggest_only_their_read_only_commands() -> None:
    ctx = click.Context(main)
    for name in ("agent", "run", "daemon", "inbox", "dep"):
        group = main.get_command(ctx, name)
        assert isinstance(group, SafeGroup), name
        for sub in group.commands:
            for typo in typos(sub) - set(group.commands):
                result = invoke(name, typo)
                assert result.exit_code == 2, (name, typo)
                assert set(suggestions(result.stderr)) <= set(group.read_only), (name, typo)
    assert suggestions(invoke("agent", "mesages").stderr) == ["messages"]
    assert suggestions(invoke("agent", "compelte").stderr) == []


def test_socket_may_come_after_the_command(agh: Any, daemon: Any) -> None:
    created = invoke("add", "late option", "-q", "--socket", daemon.socket)
    assert created.exit_code == 0, created.stderr
    listed = invoke("ls", f"--socket={daemon.socket}", "-q")
    assert listed.stdout.split() == [created.stdout.strip()]
    # After `--` it belongs to the command (here: an unexpected argument).
    assert invoke("ls", "--", "--socket", daemon.socket).exit_code == 2


HEAVY = ("aghd", "anyio", "watchfiles", "yaml", "uvloop")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["ls", "--help"],
        ["agent", "claim", "-h"],
        ["worker", "--help"],
        ["board", "--help"],
        ["run", "show", "--help"],
    ],
)
def test_help_imports_only_what_it_prints(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from agh.cli import main\n"
        "try:\n"
        f"    main({args!r}, prog_name='agh')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=clean_environ(),
    )
    assert proc.returncode == 0, proc.stderr
    modules = set(__import__("json").loads(proc.stdout.splitlines()[-1]))
    assert not {m for m in modules if m.split(".")[0] in HEAVY}
    commands = {m for m in modules if m.startswith("agh.cli.")} - {
        "agh.cli.group",
        "agh.cli.exits",
        "agh.cli.__main__",
    }
    if args == ["--help"]:
        # The top-level help comes from the registry alone.
        assert commands == set(), commands
        assert "msgspec" not in modules and "agh.client" not in modules
    else:
        module = REGISTRY.entries[args[0]].target.split(":")[0]
        assert f"agh.cli.{module}" in commands
        assert "agh.client" not in modules


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["ls", "--socket", "S", "-q"], ["--socket", "S", "ls", "-q"]),
        (["ls", "--socket=S"], ["--socket=S", "ls"]),
        (["--socket", "S", "ls"], ["--socket", "S", "ls"]),
        (["ls", "--", "--socket", "S"], ["ls", "--", "--socket", "S"]),
        # A command that runs another: agh's options end at its first word.
        (
            ["worker", "--name", "w", "--socket", "S", "sh", "-c", "x", "--socket", "T"],
            ["--socket", "S", "worker", "--name", "w", "sh", "-c", "x", "--socket", "T"],
        ),
        (
            ["worker", "--once", "cat", "--socket", "T"],
            ["worker", "--once", "cat", "--socket", "T"],
        ),
    ],
)
def test_global_options_are_hoisted_but_never_out_of_a_workers_command(
    args: list[str], expected: list[str]
) -> None:
    assert isinstance(main, click.Group)
    assert main.hoist_global_options(click.Context(main), args) == expected


def test_ctrl_c_while_a_command_waits_exits_130_quietly(daemon: Any) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agh.cli",
            "--socket",
            daemon.socket,
            "agent",
            "claim",
            "--wait",
            "30",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environ(),
    )
    import signal
    import time

    time.sleep(0.8)  # in its long poll
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=10)
    assert proc.returncode == 130
    assert "Aborted" not in err and "Traceback" not in err


def test_a_socket_path_too_long_is_a_clear_error_not_a_traceback(short_dir: str) -> None:
    path = os.path.join(short_dir, "d" * 120, "agh.sock")
    result = invoke("--socket", path, "ls", env={"AGH_AUTOSTART": "1"})
    assert result.exit_code == 69
    assert "bytes and the limit is 107: choose a shorter one" in result.stderr
    assert "started aghd" not in result.stderr  # no daemon is started for it
