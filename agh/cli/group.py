"""The click groups of ``agh``: commands loaded only when run, typo
suggestions that never name a state-changing command, agh errors turned
into exit codes, and global options accepted after the command.

Loading: the root group knows each command by a ``Entry`` (module,
attribute, one-line summary) and imports the module only to run the
command or print its own help, so ``agh --help`` imports click alone; a
test checks each summary against its command's help.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import click

from agh.cli.exits import EXIT_INTERRUPTED, EXIT_OK, report_error

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence


@dataclass(frozen=True)
class Entry:
    """One top-level command: where it lives and what ``agh --help`` says."""

    target: str  # "module:attribute" under agh.cli
    summary: str
    read_only: bool = False  # may a typo suggestion name it
    aliases: tuple[str, ...] = ()
    hidden: bool = False
    section: str = "Commands"
    # It runs another command given as its arguments (agh worker -- CMD):
    # the words after its first argument are that command's, not agh's.
    runs_command: bool = False


@dataclass
class Registry:
    entries: dict[str, Entry]
    sections: Sequence[str] = ("Commands",)
    by_alias: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.by_alias = {a: name for name, e in self.entries.items() for a in e.aliases}

    def canonical(self, name: str) -> str | None:
        if name in self.entries:
            return name
        return self.by_alias.get(name)


def suggest(name: str, safe: Sequence[str]) -> str:
    """``No such command 'x'.`` plus close read-only names, if any."""
    import difflib  # only on a typo

    message = f"No such command {name!r}."
    close = difflib.get_close_matches(name, safe, n=3, cutoff=0.6)
    if close:
        message += " Did you mean " + " or ".join(repr(c) for c in close) + "?"
    return message + " See --help for the commands."


class SafeGroup(click.Group):
    """A subgroup whose typo suggestions name only its read-only commands
    (``read_only=``); ``agh agent compelte`` must not suggest ``complete``."""

    def __init__(self, *args: Any, read_only: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_only = tuple(read_only)

    def safe_names(self, ctx: click.Context) -> list[str]:
        return [n for n in self.list_commands(ctx) if n in self.read_only]

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0]
        # While completing, click wants no error: an unknown word simply
        # completes to nothing.
        if (
            self.get_command(ctx, name) is None
            and not name.startswith("-")
            and not ctx.resilient_parsing
        ):
            ctx.fail(suggest(name, self.safe_names(ctx)))
        return super().resolve_command(ctx, args)


class LazyGroup(SafeGroup):
    """The root group: commands from a ``Registry``, imported on use."""

    def __init__(
        self, *args: Any, registry: Registry, global_options: Mapping[str, bool], **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.registry = registry
        # Options of this group a user may also write after the command:
        # name -> whether it takes a value.
        self.global_options = dict(global_options)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [name for name, e in self.registry.entries.items() if not e.hidden]

    def safe_names(self, ctx: click.Context) -> list[str]:
        return [
            n
            for name, e in self.registry.entries.items()
            if e.read_only
            for n in (name, *e.aliases)
        ]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        name = self.registry.canonical(cmd_name)
        if name is None:
            return None
        module, _, attr = self.registry.entries[name].target.partition(":")
        command = getattr(importlib.import_module(f"agh.cli.{module}"), attr)
        assert isinstance(command, click.Command)
        return command

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, self.hoist_global_options(ctx, args))

    def hoist_global_options(self, ctx: click.Context, args: list[str]) -> list[str]:
        """``agh ls --socket S`` → ``agh --socket S ls``: global options
        anywhere before a ``--`` move to the front; for a command that runs
        another (``agh worker sh -c …``), only those before that command's
        first argument: from there on the words are the other command's."""
        front: list[str] = []
        i = 0
        while i < len(args) and args[i].startswith("-") and args[i] != "--":
            step = 2 if self.global_options.get(args[i]) else 1  # the root's own
            front.extend(args[i : i + step])
            i += step
        if i >= len(args):
            return front
        rest = [args[i]]  # the command
        name = self.registry.canonical(args[i])
        value_options: set[str] | None = None
        if name is not None and self.registry.entries[name].runs_command:
            command = self.get_command(ctx, name)
            assert command is not None
            value_options = {
                opt
                for param in command.params
                if isinstance(param, click.Option) and not param.is_flag
                for opt in param.opts
            }
        i += 1
        while i < len(args):
            arg = args[i]
            option, has_value = arg.split("=", 1)[0], "=" in arg
            if arg == "--" or (value_options is not None and not arg.startswith("-")):
                rest.extend(args[i:])
                break
            if option in self.global_options:
                width = 2 if self.global_options[option] and not has_value else 1
                front.extend(args[i : i + width])
            else:
                # An option's value is not the other command's first word.
                width = 2 if value_options and option in value_options and not has_value else 1
                rest.extend(args[i : i + width])
            i += width
        return front + rest

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the registry's summaries: no imports."""
        for section in self.registry.sections:
            rows = []
            for name, e in self.registry.entries.items():
                if e.hidden or e.section != section:
                    continue
                label = name + (f" ({', '.join(e.aliases)})" if e.aliases else "")
                rows.append((label, e.summary))
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from agh.errors import AghError

        try:
            return super().invoke(ctx)
        except AghError as exc:
            raise click.exceptions.Exit(report_error(exc)) from None
        except KeyboardInterrupt:
            # Ctrl-C while a command waits: 130 as shells report it, quietly
            # (not click's "Aborted!" and 1). Views that quit on Ctrl-C (board,
            # dashboard --watch) catch it themselves and exit 0.
            raise click.exceptions.Exit(EXIT_INTERRUPTED) from None
        except BrokenPipeError:
            # `agh ls | head`: the reader left; not an error worth a traceback.
            # Point stdout at /dev/null so the interpreter's final flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_OK) from None
