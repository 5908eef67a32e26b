"""The ``agh`` command line: one module per command group, mirroring
``aghd/handlers/`` (tasks, graph, workflows, streams, observe, agent, runs,
worker, board, daemon), over ``agh.client.Client``.

This module is only the command table: ``agh --help`` prints it without
importing any command module, and a command's module is imported when the
command runs or prints its help (``agh.cli.group``). It must stay light:
``agh --help`` may import click, never msgspec, aghd, anyio, watchfiles,
uvloop or yaml.
"""

from __future__ import annotations

import click

from agh import __version__
from agh.cli.exits import EXIT_CODES_HELP
from agh.cli.group import Entry, LazyGroup, Registry

E = Entry
TASKS, AGENTS, WATCH, HUB = "Tasks", "Agents and runs", "Watching", "The hub"

# Order is the order of `agh --help`. `read_only` commands are the only ones
# a typo may be corrected to; aliases are the seed CLIs' names (kt, coder).
REGISTRY = Registry(
    {
        "add": E(
            "tasks:add",
            "Create a task and queue its run (unless --draft).",
            aliases=("create",),
            section=TASKS,
        ),
        "ls": E(
            "tasks:ls", "List tasks as a table.", read_only=True, aliases=("list",), section=TASKS
        ),
        "show": E(
            "tasks:show",
            "Show a task (or a run) with its runs and recent events.",
            read_only=True,
            aliases=("get", "status"),
            section=TASKS,
        ),
        "publish": E(
            "tasks:publish", "Publish a draft: make it live and queue its run.", section=TASKS
        ),
        "start": E(
            "tasks:start",
            "Request a run of a task (for a workflow: run its whole DAG).",
            section=TASKS,
        ),
        "child": E(
            "graph:child",
            "Create a subtask of task ID and queue its run (like `agh add`).",
            section=TASKS,
        ),
        "dep": E("graph:dep", "Add or remove a dependency between two tasks.", section=TASKS),
        "approve": E(
            "graph:approve",
            "Approve a task waiting for manual approval; its run is queued.",
            section=TASKS,
        ),
        "deny": E(
            "graph:deny",
            "Reject a task waiting for manual approval.",
            aliases=("reject",),
            section=TASKS,
        ),
        "send": E("tasks:send", "Send input to the agent working on a task.", section=TASKS),
        "cancel": E(
            "tasks:cancel",
            "Cancel tasks and everything under them, active runs included.",
            section=TASKS,
        ),
        "rm": E(
            "tasks:rm",
            "Delete tasks and their subtrees, with their runs and events.",
            aliases=("delete",),
            section=TASKS,
        ),
        "wait": E(
            "tasks:wait",
            "Wait until tasks are closed; exit 0 if all completed.",
            read_only=True,
            section=TASKS,
        ),
        "compose": E(
            "workflows:compose",
            "Create a workflow (a DAG of steps) from a YAML file.",
            section=TASKS,
        ),
        "tree": E(
            "graph:tree",
            "Show a task and everything under it, one line per task.",
            read_only=True,
            section=WATCH,
        ),
        "timeline": E(
            "streams:timeline",
            "Print a task's events, oldest first, one line each.",
            read_only=True,
            section=WATCH,
        ),
        "watch": E(
            "streams:watch",
            "Print a task's events as they happen, until it is closed.",
            read_only=True,
            section=WATCH,
        ),
        "logs": E(
            "streams:logs",
            "Print the log lines an agent wrote for a run.",
            read_only=True,
            section=WATCH,
        ),
        "events": E(
            "streams:events",
            "Print the event log as JSON lines, one timeline item per line.",
            read_only=True,
            section=WATCH,
        ),
        "board": E(
            "board:board",
            "A live Kanban board of the tasks, in the terminal.",
            read_only=True,
            section=WATCH,
        ),
        "dashboard": E(
            "observe:dashboard",
            "Show the hub's health, active runs, queue and latencies.",
            read_only=True,
            section=WATCH,
        ),
        "inbox": E(
            "observe:inbox",
            "List what needs you, per lane; or triage one item.",
            read_only=True,
            section=WATCH,
        ),
        "agent": E(
            "agent:agent",
            "Work on runs as an agent: claim, heartbeat, log, finish.",
            section=AGENTS,
        ),
        "worker": E(
            "worker:worker",
            "Run a command for every claimed run: a leased worker in one line.",
            section=AGENTS,
            runs_command=True,
        ),
        "run": E(
            "runs:run",
            "Operator actions on one run: show, claim, start, finish, cancel.",
            section=AGENTS,
        ),
        "sessions": E(
            "daemon:sessions",
            "List agent sessions: who is connected, doing what.",
            read_only=True,
            section=HUB,
        ),
        "daemon": E("daemon:daemon", "Start, stop or inspect aghd.", section=HUB),
        "ping": E(
            "daemon:ping", "Check that aghd answers; show its version.", read_only=True, section=HUB
        ),
        "config": E(
            "config:config",
            "Show aghd's settings and where each came from; check a config file.",
            read_only=True,
            section=HUB,
        ),
        "backup": E(
            "backup:backup",
            "Write a consistent copy of aghd's database to FILE, while it serves.",
            section=HUB,
        ),
        "completion": E(
            "completion:completion",
            "Print the completion script for bash, zsh or fish.",
            read_only=True,
            section=HUB,
        ),
        # Before `agh agent` these were top-level; kept so scripts keep working.
        "claim": E("agent:claim", "Claim the best queued run, as an agent.", hidden=True),
        "heartbeat": E("agent:heartbeat", "Extend the lease on a claimed run.", hidden=True),
        "complete": E("agent:complete", "Mark a claimed run completed.", hidden=True),
        "fail": E("agent:fail_", "Mark a claimed run failed (or retry it).", hidden=True),
        "release": E("agent:release", "Give a claimed run back to the queue.", hidden=True),
    },
    sections=(TASKS, WATCH, AGENTS, HUB),
)

MAIN_HELP = f"""agh: talk to aghd, the per-user task hub for local AI agents.

Create and inspect tasks, and claim and finish their runs as an agent.
Every command that prints data takes --json or -o json (one JSON document
on stdout; JSON lines for streams). Data goes to stdout, diagnostics and
errors to stderr. Tasks are named by id (task_…), identifier (T-42) or a
unique id prefix. When aghd is not running, the first command starts it
(AGH_AUTOSTART=0 turns that off). --socket may come before or after the
command.

\b
{EXIT_CODES_HELP}

\b
Example:
  agh add "Write the release notes" --priority high
  agh ls
  agh worker --channel docs -- ./write-notes.sh
"""


@click.group(
    cls=LazyGroup,
    registry=REGISTRY,
    global_options={"--socket": True},
    help=MAIN_HELP,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.option(
    "--socket",
    "socket_path",
    envvar="AGH_SOCKET",
    show_envvar=True,
    metavar="PATH",
    help="aghd's Unix socket. [default: $XDG_RUNTIME_DIR/agh/agh.sock]",
)
@click.version_option(__version__, "--version", prog_name="agh", message="%(prog)s %(version)s")
def main(socket_path: str | None) -> None:
    pass


def run() -> None:
    """Entry point for ``python -m agh.cli``: same program name as the script."""
    main(prog_name="agh")
