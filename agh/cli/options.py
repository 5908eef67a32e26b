"""Options, parameter types and prompts shared by the ``agh`` commands.

The enumerations come from ``agh.protocol.enums``, which imports no
msgspec, so ``agh --help`` stays cheap; the commands import them from here.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from agh.cli.exits import fail

# Re-exported for the commands (one import line for options and values).
from agh.protocol.enums import ACTIVE_RUN_STATUSES as ACTIVE_RUN_STATUSES
from agh.protocol.enums import CLOSED_STATUSES as CLOSED_STATUSES
from agh.protocol.enums import INBOX_LANES as INBOX_LANES
from agh.protocol.enums import LOG_LEVELS as LOG_LEVELS
from agh.protocol.enums import PRIORITIES as PRIORITIES
from agh.protocol.enums import TASK_STATUSES as TASK_STATUSES

if TYPE_CHECKING:
    from click.shell_completion import CompletionItem

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class JsonParam(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2
    """A JSON document given on the command line; invalid JSON is a usage error."""

    name = "json"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        import msgspec  # not needed to build --help

        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError as exc:
            self.fail(f"not valid JSON ({exc}): {value!r}", param, ctx)


JSON = JsonParam()


def complete_task_ids(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """``shell_complete=`` of every argument or option that names a task:
    the running aghd's tasks matching what is typed (agh.cli.completion);
    nothing, silently, when it is not running."""
    from agh.cli.completion import task_completions  # only on Tab

    return task_completions(ctx, param, incomplete)


def seconds_to_ms(seconds: float | None) -> int | None:
    """Seconds from an option to the protocol's integer milliseconds."""
    return None if seconds is None else round(seconds * 1000)


def workspace_ref(value: str | None) -> str | None:
    """A workspace filter: a path-like value (``.``, ``../x``, ``a/b``, ``~``)
    becomes absolute, as the daemon needs; an id, key or name passes as is."""
    if value is None:
        return None
    if value.startswith((".", "~")) or "/" in value:
        return os.path.abspath(os.path.expanduser(value))
    return value


def json_option(fn: F) -> F:
    """``--json`` and ``-o/--output table|json``: both set ``as_json``."""

    @functools.wraps(fn)
    def command(*args: Any, output: str | None = None, **kwargs: Any) -> Any:
        if output == "json":
            kwargs["as_json"] = True
        return fn(*args, **kwargs)

    wrapped = click.option(
        "-o",
        "--output",
        type=click.Choice(["table", "json"]),
        help="Output format; json is the same as --json. [default: table]",
    )(command)
    return click.option(
        "--json",
        "as_json",
        is_flag=True,
        help="Print the result as one JSON document instead of text.",
    )(wrapped)  # type: ignore[return-value]


def token_option(fn: F) -> F:
    return click.option(
        "--token",
        "token",
        required=True,
        envvar="AGH_CLAIM_TOKEN",
        show_envvar=True,
        metavar="TOKEN",
        help="The claim token printed by `agh agent claim`.",
    )(fn)


def task_options(fn: F) -> F:
    """--priority, --channel and --approval, shared by the commands that
    create tasks."""
    fn = click.option(
        "--approval",
        type=click.Choice(["none", "manual"]),
        help="manual: its run waits until someone runs `agh approve ID`. [default: none]",
    )(fn)
    fn = click.option("--channel", metavar="NAME", help="Network channel agents can claim by.")(fn)
    return click.option(
        "--priority", type=click.Choice(PRIORITIES), help="Priority. [default: medium]"
    )(fn)


def run_options(fn: F) -> F:
    """--max-attempts and --input, shared by the commands that create tasks."""
    fn = click.option(
        "--input", "input_", type=JSON, metavar="JSON", help="JSON input handed to the run."
    )(fn)
    return click.option(
        "--max-attempts",
        type=click.IntRange(1, 1000),
        metavar="N",
        help="How many claims the run may take before the task fails. "
        "[default: aghd --max-attempts, normally 1]",
    )(fn)


def stdin_is_tty() -> bool:
    stdin = sys.stdin
    return stdin is not None and stdin.isatty()


def require_confirmation(ctx: click.Context, yes: bool, what: str) -> bool:
    """Whether the caller must be asked. Without --yes and without a terminal
    to ask on, refuse (a usage error): a script must say --yes explicitly."""
    if yes:
        return False
    if not stdin_is_tty():
        raise click.UsageError(
            f"refusing to {what} without confirmation: stdin is not a terminal; "
            "pass --yes (-y) to go ahead",
            ctx,
        )
    return True


def confirm_or_stop(question: str, refused: str) -> None:
    """Ask on stderr (stdout is for data); a no (or end of input) exits 1."""
    if not click.confirm(question, default=False, err=True):
        fail(refused)


yes_option = click.option(
    "-y", "--yes", is_flag=True, help="Do not ask for confirmation (required without a terminal)."
)


def group_json(ctx: click.Context, as_json: bool) -> bool:
    """``agh dep --json add`` and ``agh dep add --json`` mean the same."""
    return as_json or bool(ctx.parent is not None and ctx.parent.params.get("as_json"))
