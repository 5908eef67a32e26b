"""``agh completion SHELL``: the bash, zsh and fish completion scripts, and
the one completion click cannot do alone: task ids, from the running aghd.

The scripts are click's (``click.shell_completion``, with the two fixes in
``FIXES``): at every Tab they run ``agh`` itself with
``_AGH_COMPLETE=<shell>_complete`` and the words typed so far, so
commands, options and choices come from the click tree of the installed
agh and a script only changes with click's template.
``contrib/completions/`` holds them exactly as printed here (a test
compares); regenerate them with

    python -m agh.cli.completion --write contrib/completions

which is the same as

    agh completion bash > contrib/completions/agh.bash
    agh completion zsh > contrib/completions/_agh
    agh completion fish > contrib/completions/agh.fish

Owns: the scripts and the task-id lookup behind ``complete_task_ids`` in
``agh.cli.options``. Must not: start aghd, or print anything while
completing (it would land in the middle of the user's command line).
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

    from agh import protocol as p

PROG = "agh"
COMPLETE_VAR = "_AGH_COMPLETE"  # what click derives from PROG; the scripts set it
# Shell -> the file name its completion directory expects.
FILES = {"bash": "agh.bash", "zsh": "_agh", "fish": "agh.fish"}

# Click's scripts with two fixes, each a line of click's text and what
# replaces it; applied only while click still has that line (a test says
# when it no longer does: check whether click fixed it, then drop the fix).
FIXES = {
    # Autoloaded from $fpath, the file is the body of _agh: the first Tab
    # runs it as an autoload and completes, the second runs it as a plain
    # function, which only registers _agh_completion and completes nothing.
    # Registering it on the first Tab makes every later one call it.
    "zsh": (
        "    # autoload from fpath, call function directly\n",
        "    # autoload from fpath: call function directly, and from now on\n"
        "    # (else the next Tab only runs this file again to compdef it)\n"
        "    compdef _agh_completion agh\n",
    ),
    # Split "type,value<TAB>help" at the first comma only: click's script
    # splits at every comma and drops what follows the second field, so a
    # summary or a task title is cut at its first comma.
    "fish": (
        '        set -l metadata (string split "," $completion);\n',
        '        set -l metadata (string split --max 1 "," $completion);\n',
    ),
}

# One tasks.list of the newest tasks: a Tab must answer at once, and the
# task people name is nearly always a recent one.
TASK_LIMIT = 50
TIMEOUT_S = 1.0


@click.command("completion")
@click.argument("shell", type=click.Choice(tuple(FILES)), metavar="SHELL")
def completion(shell: str) -> None:
    """Print the completion script for bash, zsh or fish.

    Commands, options, their values and, while aghd runs, task ids and
    identifiers complete on Tab (completing never starts aghd). The
    script asks agh itself what to offer, so it keeps up with upgrades:
    install it once, where your shell looks for completions, and start
    a new shell.

    \b
      bash  agh completion bash > ~/.local/share/bash-completion/completions/agh
            (loaded by the bash-completion package; without it, put
            `eval "$(agh completion bash)"` in ~/.bashrc)
      zsh   agh completion zsh > ~/.zfunc/_agh
            (a file named _agh in a directory on $fpath: in ~/.zshrc,
            `fpath=(~/.zfunc $fpath)` before `compinit`)
      fish  agh completion fish > ~/.config/fish/completions/agh.fish

    \b
    Example:
      agh completion bash > ~/.local/share/bash-completion/completions/agh
      agh completion fish > ~/.config/fish/completions/agh.fish
    """
    click.echo(script(shell), nl=False)


def script(shell: str) -> str:
    """The completion script for ``shell`` (a key of ``FILES``): click's,
    with ``FIXES``. Raises KeyError for another shell."""
    text = clicks_script(shell)
    if shell in FIXES:
        line, replacement = FIXES[shell]
        text = text.replace(line, replacement, 1)
    return text


def clicks_script(shell: str) -> str:
    """What click prints for ``_AGH_COMPLETE=<shell>_source agh``. Raises
    KeyError for a shell that is not a key of ``FILES``."""
    from click.shell_completion import ShellComplete, get_completion_class

    from agh.cli import main

    cls = get_completion_class(shell)
    if cls is None or shell not in FILES:
        raise KeyError(shell)
    # ShellComplete.source, not BashComplete's: that one first checks the
    # version of the bash on this machine, which is not the shell that
    # will load the script (and may be absent where it is generated).
    return ShellComplete.source(cls(main, {}, PROG, COMPLETE_VAR))


def write_scripts(directory: str) -> list[str]:
    """Write every script into ``directory`` under its ``FILES`` name;
    return the paths written. Raises OSError."""
    paths = []
    for shell, name in FILES.items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(script(shell))
        paths.append(path)
    return paths


def task_completions(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Tasks whose id (``task_…``) or identifier (``T-42``, any case) starts
    with ``incomplete``, titles as their help (zsh and fish show it); only
    identifiers when nothing is typed yet. Tasks already named earlier on
    the line are left out. Empty, silently, when aghd is not running or
    anything else goes wrong: a completion must never print or raise."""
    from click.shell_completion import CompletionItem

    try:
        tasks = recent_tasks(ctx)
    except Exception:
        return []
    given = {v.lower() for v in given_arguments(ctx)}
    typed = incomplete.lower()
    items: list[CompletionItem] = []
    for t in tasks:
        if t.id.lower() in given or t.identifier.lower() in given:
            continue
        if t.identifier.lower().startswith(typed):
            items.append(CompletionItem(t.identifier, help=t.title))
        if typed and t.id.startswith(incomplete):
            items.append(CompletionItem(t.id, help=t.title))
    return items


def recent_tasks(ctx: click.Context) -> list[p.TaskListItem]:
    """The newest tasks, drafts too (``agh publish`` takes them), in one
    request on the socket the command line names; never starts aghd.
    Raises AghError (DaemonUnreachable when it is not running)."""
    from agh.cli.connect import socket_path
    from agh.client import Client

    # No session.hello: the list is the only request.
    with Client(socket_path(ctx), timeout=TIMEOUT_S) as client:
        return client.tasks_list(limit=TASK_LIMIT, include_drafts=True).tasks


def given_arguments(ctx: click.Context) -> list[str]:
    """The positional values already on the line (``agh cancel T-1 T-<Tab>``)."""
    values: list[str] = []
    for param in ctx.command.params:
        if not isinstance(param, click.Argument) or param.name is None:
            continue
        value = ctx.params.get(param.name)
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, (tuple, list)):
            values.extend(v for v in value if isinstance(v, str))
    return values


def main(argv: list[str] | None = None) -> int:
    """``python -m agh.cli.completion --write DIR``: write the scripts into DIR."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "--write":
        print("usage: python -m agh.cli.completion --write DIR", file=sys.stderr)
        return 2
    for path in write_scripts(args[1]):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
