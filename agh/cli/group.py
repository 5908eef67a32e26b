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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from agh.cli.exits import EXIT_OK, report_error


@dataclass(frozen=True)
class Entry:
    """One top-level command: where it lives and what ``agh --help`` says."""

    target: str  # "module:attribute" under agh.cli
    summary: str
    read_only: bool = False  # may a typo suggestion name it
    aliases: tuple[str, ...] = ()
    hidden: bool = False
    section: str = "Commands"


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
        if self.get_command(ctx, name) is None and not name.startswith("-"):
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
        return super().parse_args(ctx, self.hoist_global_options(args))

    def hoist_global_options(self, args: list[str]) -> list[str]:
        """``agh ls --socket S`` → ``agh --socket S ls``: global options
        anywhere before a ``--`` move to the front."""
        front: list[str] = []
        rest: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                rest.extend(args[i:])
                break
            name = arg.split("=", 1)[0]
            if name in self.global_options and rest:
                takes_value = self.global_options[name]
                if takes_value and "=" not in arg and i + 1 < len(args):
                    front.extend(args[i : i + 2])
                    i += 2
                    continue
                front.append(arg)
            else:
                rest.append(arg)
            i += 1
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
        except BrokenPipeError:
            # `agh ls | head`: the reader left; not an error worth a traceback.
            # Point stdout at /dev/null so the interpreter's final flush is quiet.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise click.exceptions.Exit(EXIT_OK) from None
