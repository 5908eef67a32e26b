"""Shell completions: the committed scripts are what ``agh completion``
prints, and real bash, zsh and fish complete commands, subcommands,
options and task ids through them, against a real daemon.

Every shell runs the real ``agh`` (``python -m agh.cli`` behind an ``agh``
on PATH, as the scripts call it) over click's completion protocol; zsh,
whose completion functions only run inside its line editor, is driven on a
pseudo-terminal. A test whose shell is missing skips, saying so.
"""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agh.cli.completion import FILES, FIXES, clicks_script, script
from tests.helpers.cli import clean_environ, invoke

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

CONTRIB = Path(__file__).resolve().parent.parent / "contrib" / "completions"
REGENERATE = "python -m agh.cli.completion --write contrib/completions"


@pytest.fixture
def bin_dir(short_dir: str) -> str:
    """A directory with an ``agh`` that runs this checkout's CLI, for PATH."""
    path = os.path.join(short_dir, "bin")
    os.mkdir(path)
    script = os.path.join(path, "agh")
    with open(script, "w", encoding="utf-8") as f:
        f.write(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} -m agh.cli "$@"\n')
    os.chmod(script, 0o755)
    return path


def shell_env(bin_dir: str, socket_path: str, **extra: str) -> dict[str, str]:
    return clean_environ(
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        AGH_SOCKET=socket_path,
        **extra,
    )


def protocol_complete(
    env: dict[str, str], shell: str, words: str, cword: int | str
) -> subprocess.CompletedProcess[str]:
    """One completion request as the scripts make it: the words typed so far
    in COMP_WORDS, the word being completed in COMP_CWORD."""
    return subprocess.run(
        [sys.executable, "-m", "agh.cli"],
        env={
            **env,
            "_AGH_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(cword),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def two_tasks(client: Client) -> list[Any]:
    client.tasks_create(title="write the release notes")
    # A colon is zsh's separator, a comma the one of fish's lines.
    client.tasks_create(title="tag: the release, then announce it")
    return sorted(client.tasks_list().tasks, key=lambda t: t.identifier)


# -- the scripts ----------------------------------------------------------------------


@pytest.mark.parametrize("shell", sorted(FILES))
def test_committed_script_is_what_agh_completion_prints(shell: str) -> None:
    result = invoke("completion", shell)
    assert result.exit_code == 0, result.output
    committed = (CONTRIB / FILES[shell]).read_text(encoding="utf-8")
    assert committed == result.stdout, (
        f"contrib/completions/{FILES[shell]} is stale; regenerate it with `{REGENERATE}`"
    )


@pytest.mark.parametrize("shell", sorted(FILES))
def test_the_scripts_are_clicks_with_only_the_fixes(shell: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "agh.cli"],
        env=clean_environ(_AGH_COMPLETE=f"{shell}_source"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert clicks_script(shell) == proc.stdout
    if shell not in FIXES:
        assert script(shell) == proc.stdout
        return
    line, replacement = FIXES[shell]
    assert line in proc.stdout, (
        f"click's {shell} script no longer has the line agh.cli.completion.FIXES "
        f"replaces: check whether click fixed it, then drop the fix ({line!r})"
    )
    assert script(shell) == proc.stdout.replace(line, replacement, 1)


def test_an_unknown_shell_is_a_usage_error() -> None:
    result = invoke("completion", "badshell")
    assert result.exit_code == 2
    assert "'badshell' is not one of 'bash', 'zsh', 'fish'" in result.stderr
    assert result.stdout == ""


def test_help_says_where_each_script_goes() -> None:
    text = invoke("completion", "--help").stdout
    assert "agh completion bash > ~/.local/share/bash-completion/completions/agh" in text
    assert "_agh" in text and "$fpath" in text
    assert "agh completion fish > ~/.config/fish/completions/agh.fish" in text
    assert "Example:" in text


def test_agh_help_does_not_load_the_completion_module() -> None:
    code = (
        "import sys\n"
        "from agh.cli import main\n"
        "try:\n"
        "    main(['--help'], prog_name='agh')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('agh.cli.completion' in sys.modules)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert "completion" in proc.stdout  # listed in `agh --help`...
    assert proc.stdout.splitlines()[-1] == "False"  # ...without importing it


# -- bash -----------------------------------------------------------------------------

needs_bash = pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")


def shell_lines(argv: list[str], env: dict[str, str]) -> list[str]:
    """The lines a shell printed; it must exit 0 and say nothing on stderr."""
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines()


def bash_complete(env: dict[str, str], *words: str) -> list[str]:
    """COMPREPLY of the committed script's function for ``words`` (the
    last one the word being completed), in a clean ``bash --norc``."""
    line = " ".join(shlex.quote(w) for w in words)
    code = (
        f"source {shlex.quote(str(CONTRIB / 'agh.bash'))}\n"
        f"COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}\n"
        "_agh_completion agh\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    return [
        line for line in shell_lines(["bash", "--norc", "--noprofile", "-c", code], env) if line
    ]


@needs_bash
def test_bash_completes_commands_subcommands_options_and_choices(
    bin_dir: str, short_dir: str
) -> None:
    env = shell_env(bin_dir, os.path.join(short_dir, "none.sock"))
    assert bash_complete(env, "agh", "ag") == ["agent"]
    assert bash_complete(env, "agh", "agent", "cl") == ["claim"]
    assert set(bash_complete(env, "agh", "daemon", "")) == {
        "start",
        "stop",
        "status",
        "install-unit",
    }
    assert set(bash_complete(env, "agh", "d")) == {"dep", "deny", "dashboard", "daemon"}
    assert {"--events", "--json", "--help"} <= set(bash_complete(env, "agh", "show", "--"))
    assert bash_complete(env, "agh", "list", "--qui") == ["--quiet"]  # an alias
    assert "in_progress" in bash_complete(env, "agh", "ls", "--status", "")
    assert bash_complete(env, "agh", "completion", "") == ["bash", "zsh", "fish"]
    # Hidden legacy names are not offered.
    assert bash_complete(env, "agh", "hea") == []


@needs_bash
def test_bash_completes_task_ids_from_the_daemon(
    bin_dir: str, daemon: ThreadDaemon, client: Client
) -> None:
    first, second = two_tasks(client)
    env = shell_env(bin_dir, daemon.socket)
    assert set(bash_complete(env, "agh", "show", "T-")) == {first.identifier, second.identifier}
    assert bash_complete(env, "agh", "cancel", first.identifier, "") == [second.identifier]
    assert bash_complete(env, "agh", "dep", "add", first.identifier, "t-") == [second.identifier]
    assert bash_complete(env, "agh", "tree", first.id[:-2]) == [first.id]


def test_a_line_with_an_unknown_command_completes_without_a_traceback(short_dir: str) -> None:
    env = shell_env(short_dir, os.path.join(short_dir, "none.sock"))
    for words in ("agh bogus ", "agh agent bogus "):
        proc = protocol_complete(env, "bash", words, len(words.split()))
        assert (proc.returncode, proc.stderr) == (0, ""), words


# -- zsh ------------------------------------------------------------------------------

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|[()][0-9A-Za-z]|[=>])|[\r\x07]")


class Zsh:
    """An interactive zsh on a pseudo-terminal, with compinit loaded and
    the committed ``_agh`` on its $fpath, as a user would install it."""

    def __init__(self, home: str, env: dict[str, str]) -> None:
        fpath = os.path.join(home, "zfunc")
        os.makedirs(fpath, exist_ok=True)
        shutil.copy(CONTRIB / "_agh", os.path.join(fpath, "_agh"))
        with open(os.path.join(home, ".zshrc"), "w", encoding="utf-8") as f:
            f.write(
                f"fpath=({shlex.quote(fpath)} $fpath)\n"
                "autoload -Uz compinit && compinit -u -D\n"
                "PS1='READY> '\n"
                "unsetopt beep\n"
            )
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, 200, 0, 0))
        self.proc = subprocess.Popen(
            ["zsh", "--no-globalrcs", "-i"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env={**env, "ZDOTDIR": home, "HOME": home, "TERM": "xterm"},
            start_new_session=True,
        )
        os.close(slave)
        self.read_until("READY> ")

    def read_until(self, pattern: str, timeout: float = 20) -> str:
        """What the terminal shows (escape sequences removed) once the regex
        ``pattern`` matches it; raises TimeoutError with what it showed."""
        seen = ""
        deadline = time.monotonic() + timeout
        while not re.search(pattern, ANSI.sub("", seen)):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.master], [], [], left)[0]:
                shown = ANSI.sub("", seen)
                raise TimeoutError(f"zsh never showed {pattern!r}; it showed {shown!r}")
            try:
                seen += os.read(self.master, 65536).decode(errors="replace")
            except OSError:  # the shell exited
                raise TimeoutError(f"zsh exited; it showed {ANSI.sub('', seen)!r}") from None
        return ANSI.sub("", seen)

    def complete(self, typed: str, wanted: str) -> str:
        """Type ``typed`` and Tab; the screen once ``wanted`` is on it."""
        os.write(self.master, typed.encode() + b"\t")
        screen = self.read_until(re.escape(wanted))
        # Ctrl-U empties the line (Ctrl-C would not: the terminal is not the
        # shell's controlling one). Then wait for the echo's output (not its
        # echoed command) and the prompt after it: typed ahead of the
        # prompt, the next Tab would be taken before the line editor runs.
        os.write(self.master, b"\x15echo synced-$((6*7))\r")
        self.read_until(r"synced-42[\s\S]*READY> ")
        return screen

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        os.close(self.master)


@pytest.fixture
def zsh(short_dir: str, bin_dir: str) -> Iterator[Any]:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    shells: list[Zsh] = []

    def start(socket_path: str) -> Zsh:
        home = os.path.join(short_dir, f"zsh{len(shells)}")
        os.mkdir(home)
        shells.append(Zsh(home, shell_env(bin_dir, socket_path)))
        return shells[-1]

    yield start
    for z in shells:
        z.close()


def test_zsh_completes_commands_and_options(zsh: Any, short_dir: str) -> None:
    z = zsh(os.path.join(short_dir, "none.sock"))
    # One match: zsh completes the word in place ("ag" becomes "agent").
    assert "agh agent" in z.complete("agh ag", "agh agent")
    assert "agh agent claim" in z.complete("agh agent cl", "agh agent claim")
    # Several: listed with the commands' summaries.
    screen = z.complete("agh da", "Start, stop or inspect aghd")
    assert "dashboard" in screen and "daemon" in screen
    assert "--events" in z.complete("agh show --e", "--events")


def test_zsh_lists_task_ids_with_their_titles(
    zsh: Any, daemon: ThreadDaemon, client: Client
) -> None:
    first, second = two_tasks(client)
    z = zsh(daemon.socket)
    screen = z.complete("agh show T-", "tag: the release, then announce it")
    assert first.identifier in screen and second.identifier in screen
    assert "write the release notes" in screen


# -- fish -----------------------------------------------------------------------------


def fish_complete(env: dict[str, str], line: str) -> list[str]:
    """What fish offers for ``line`` (``value<TAB>description`` each), with
    only the committed script loaded: ``complete -C`` is fish's own Tab."""
    code = f"source {shlex.quote(str(CONTRIB / 'agh.fish'))}; complete -C {shlex.quote(line)}"
    return shell_lines(["fish", "--no-config", "-c", code], env)


needs_fish = pytest.mark.skipif(
    shutil.which("fish") is None, reason="fish is not installed (apt-get install fish)"
)


@needs_fish
def test_fish_completes_commands_with_summaries_and_options(bin_dir: str, short_dir: str) -> None:
    env = shell_env(bin_dir, os.path.join(short_dir, "none.sock"))
    assert fish_complete(env, "agh ag") == [
        "agent\tWork on runs as an agent: claim,..."  # click's short help
    ]
    assert [c.split("\t")[0] for c in fish_complete(env, "agh agent cl")] == ["claim"]
    assert "--events" in [c.split("\t")[0] for c in fish_complete(env, "agh show --")]


@needs_fish
def test_fish_completes_task_ids_with_their_titles(
    bin_dir: str, daemon: ThreadDaemon, client: Client
) -> None:
    first, second = two_tasks(client)
    offered = fish_complete(shell_env(bin_dir, daemon.socket), "agh show T-")
    assert sorted(offered) == sorted(
        [f"{first.identifier}\t{first.title}", f"{second.identifier}\t{second.title}"]
    )


# -- task ids over click's protocol ----------------------------------------------------


def test_ids_and_identifiers_complete_with_titles(
    daemon: ThreadDaemon, client: Client, short_dir: str
) -> None:
    first, second = two_tasks(client)
    draft = client.tasks_create(title="a draft", draft=True).task
    env = shell_env(short_dir, daemon.socket)

    # Nothing typed: identifiers (the short names), newest first, drafts too.
    proc = protocol_complete(env, "bash", "agh show ", 2)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.split() == [f"plain,{t.identifier}" for t in (draft, second, first)]

    # An id prefix: ids; zsh gets each title as its description.
    proc = protocol_complete(env, "zsh", f"agh publish {draft.id[:8]}", 2)
    lines = proc.stdout.splitlines()
    triples = [lines[i : i + 3] for i in range(0, len(lines), 3)]
    assert ["plain", draft.id, "a draft"] in triples
    assert ["plain", first.id, "write the release notes"] in triples

    # --socket on the line wins over $AGH_SOCKET, as for the command itself.
    wrong = shell_env(short_dir, os.path.join(short_dir, "none.sock"))
    proc = protocol_complete(wrong, "bash", f"agh show --socket {daemon.socket} t-", 4)
    assert f"plain,{first.identifier}" in proc.stdout.split()

    # Options that name a task complete too.
    proc = protocol_complete(env, "bash", f"agh events --task {first.identifier}", 3)
    assert proc.stdout.split() == [f"plain,{first.identifier}"]


def test_without_a_daemon_ids_complete_to_nothing_quietly(short_dir: str) -> None:
    path = os.path.join(short_dir, "agh.sock")
    # AGH_AUTOSTART=1: even where commands would start aghd, a Tab must not.
    env = shell_env(short_dir, path, AGH_AUTOSTART="1")
    for shell in ("bash", "zsh"):
        proc = protocol_complete(env, shell, "agh show T-", 2)
        assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "", "")
    assert not os.path.exists(path), "completion started aghd"


def test_a_daemon_that_does_not_answer_costs_about_a_second(short_dir: str) -> None:
    path = os.path.join(short_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)  # accepted by the kernel, never answered
        started = time.monotonic()
        proc = protocol_complete(shell_env(short_dir, path), "bash", "agh show ", 2)
        elapsed = time.monotonic() - started
    assert (proc.returncode, proc.stdout.strip(), proc.stderr) == (0, "", "")
    assert 0.9 < elapsed < 10, elapsed
