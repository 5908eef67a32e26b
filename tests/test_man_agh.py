"""agh(1) against the click tree: every command documented once and nothing
that is gone, every option in its command's section and every exit code. That it
renders without a warning is tests/test_man_pages.py's, for every page.

The page's scheme, which these tests read: under ``.SH COMMANDS``, one
``.SS`` per command, named as it is typed and followed by its aliases
(``.SS "show, get, status"``, ``.SS "agent claim"``); a group has its own
section for its options, before its subcommands'. The hidden legacy
top-level names (``agh claim``...) are documented in one place, a list in
the ``agent`` section: ``.B agh claim`` then ``Same as`` and
``.BR "agh agent claim" .``
"""

from __future__ import annotations

import re
from pathlib import Path

import click

from agh.cli import REGISTRY, exits, main
from tests.helpers.man import man_sections, mentions, plain

PAGE = Path(__file__).resolve().parent.parent / "man" / "agh.1"
HELP_OPTIONS = {"-h", "--help"}


def page() -> str:
    return PAGE.read_text(encoding="utf-8")


def command_sections(text: str) -> list[tuple[tuple[str, ...], str]]:
    """The ``.SS`` of COMMANDS in page order: (names, body), the first name
    the command's path (``agent claim``), the others its aliases."""
    parts = re.split(r"^\.SS (.+)$", man_sections(text)["COMMANDS"], flags=re.M)
    return [
        (tuple(n.strip() for n in heading.strip('"').split(",")), body)
        for heading, body in zip(parts[1::2], parts[2::2], strict=True)
    ]


def command_tree() -> list[tuple[str, click.Command, tuple[str, ...]]]:
    """(path, command, aliases) of every visible command, in `agh --help`
    order, each group followed by its subcommands in definition order."""
    ctx = click.Context(main)
    tree: list[tuple[str, click.Command, tuple[str, ...]]] = []
    for name in main.list_commands(ctx):
        command = main.get_command(ctx, name)
        assert command is not None, name
        tree.append((name, command, REGISTRY.entries[name].aliases))
        if isinstance(command, click.Group):
            for sub_name, sub in command.commands.items():
                if not sub.hidden:
                    tree.append((f"{name} {sub_name}", sub, ()))
    return tree


def test_every_command_has_one_section_named_as_typed_with_its_aliases() -> None:
    documented = {names[0]: names[1:] for names, _ in command_sections(page())}
    expected = {path: aliases for path, _, aliases in command_tree()}
    missing = sorted(expected.keys() - documented.keys())
    gone = sorted(documented.keys() - expected.keys())
    assert not missing and not gone, f"undocumented: {missing}; documented but gone: {gone}"
    assert documented == expected  # aliases, in REGISTRY's order
    headings = [names[0] for names, _ in command_sections(page())]
    assert len(headings) == len(set(headings)), "a command has two sections"


def test_sections_follow_the_order_of_agh_help() -> None:
    headings = [names[0] for names, _ in command_sections(page())]
    assert headings == [path for path, _, _ in command_tree()]


def test_hidden_legacy_names_are_listed_once_in_the_agent_section() -> None:
    hidden = {name for name, entry in REGISTRY.entries.items() if entry.hidden}
    assert hidden, "REGISTRY has no hidden legacy names any more: drop this test and the list"
    sections = dict((names[0], body) for names, body in command_sections(page()))
    listed = dict(
        re.findall(r'^\.B agh (\S+)\nSame as\n\.BR "agh agent (\S+)" \.$', sections["agent"], re.M)
    )
    assert listed.keys() == hidden
    ctx = click.Context(main)
    agent = main.get_command(ctx, "agent")
    assert isinstance(agent, click.Group)
    for legacy, sub in listed.items():
        # The list says "same as": it must be the very same command.
        assert main.get_command(ctx, legacy) is agent.commands[sub], legacy
    elsewhere = [
        names[0]
        for names, body in command_sections(page())
        if names[0] != "agent" and re.search(r"^\.B agh (\S+)\nSame as$", body, re.M)
    ]
    assert not elsewhere, f"legacy names listed outside `agent`: {elsewhere}"


def options_of(command: click.Command) -> list[str]:
    return [
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in (*param.opts, *param.secondary_opts)
        if opt not in HELP_OPTIONS
    ]


def test_every_option_appears_in_its_commands_section() -> None:
    sections = {names[0]: plain(body) for names, body in command_sections(page())}
    missing = [
        f"{path}: {opt}"
        for path, command, _ in command_tree()
        for opt in options_of(command)
        if not mentions(sections.get(path, ""), opt)
    ]
    assert not missing, "options not in their command's section:\n" + "\n".join(missing)


def test_global_options_are_documented() -> None:
    body = plain(man_sections(page())["GLOBAL OPTIONS"])
    assert [opt for opt in options_of(main) if not mentions(body, opt)] == []
    assert mentions(body, "-h") and mentions(body, "--help")


def test_every_environment_variable_an_option_reads_is_documented() -> None:
    body = man_sections(page())["ENVIRONMENT"]
    documented = set(re.findall(r"^\.B ([A-Z_]+)$", body, re.M))
    read = {
        param.envvar
        for command in [main, *(c for _, c, _ in command_tree())]
        for param in command.params
        if isinstance(param.envvar, str)
    }
    assert read, "no option reads an environment variable: the walk is broken"
    read |= {"AGH_AUTOSTART", "AGH_DAEMON_UID", "NO_COLOR", "XDG_RUNTIME_DIR"}
    assert sorted(read - documented) == []


def test_exit_status_lists_every_code_of_agh_cli_exits() -> None:
    codes = {
        value
        for name, value in vars(exits).items()
        if name.startswith("EXIT_") and isinstance(value, int)
    }
    # `agh --help` prints EXIT_CODES_HELP: the same codes as the constants.
    assert {int(c) for c in re.findall(r"^  (\d+) ", exits.EXIT_CODES_HELP, re.M)} == codes
    body = man_sections(page())["EXIT STATUS"]
    documented = [int(c) for c in re.findall(r"^\.TP\n\.B (\d+)$", body, re.M)]
    assert sorted(documented) == sorted(codes)
