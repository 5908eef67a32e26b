"""Task commands as a user meets them: naming a task by id, identifier or
prefix; text from stdin; several ids at once; ``agh wait``; tables sized to
the terminal, with relative ages and colour only where it belongs."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh.cli.output import age, format_table
from tests.helpers.cli import Agh, clean_environ, ok_json

if TYPE_CHECKING:
    from agh.client import Client

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def test_a_task_is_named_by_id_identifier_or_unique_prefix(agh: Agh, client: Client) -> None:
    tasks = []
    for n in range(3):
        tasks.append(client.tasks_create(f"t{n}").task)
        # Ids made within one millisecond differ only at their end (they
        # count up); a new millisecond draws a fresh random part.
        time.sleep(0.003)
    target = tasks[1]
    unique = shortest_unique_prefix(target.id, [t.id for t in tasks])
    for ref in (
        target.id,
        target.identifier,
        target.identifier.lower(),
        unique,
        unique.removeprefix("task_").upper(),
    ):
        shown = ok_json(agh("show", ref, "--json"))["task"]["task"]
        assert shown["id"] == target.id, ref
    # Made in the same few milliseconds, the three share a long prefix.
    common = os.path.commonprefix([t.id for t in tasks])  # noqa: RUF071 (strings, not paths)
    assert len(common) >= len("task_") + 4
    ambiguous = agh("show", common)
    assert ambiguous.exit_code == 3
    assert "names several tasks" in ambiguous.stderr
    for t in tasks:
        assert t.identifier in ambiguous.stderr and t.id in ambiguous.stderr
    assert "hint: give more characters" in ambiguous.stderr
    # Too short to be a prefix: looked up as it is, not found.
    assert agh("show", "task_01").exit_code == 3
    # Every command takes the prefix, not just show.
    assert agh("cancel", unique, "--yes").exit_code == 0
    assert client.tasks_get(target.id).task.task.status == "canceled"


def shortest_unique_prefix(task_id: str, ids: list[str]) -> str:
    """The shortest prefix (4 characters after ``task_`` at least) naming
    ``task_id`` alone among ``ids``."""
    others = [i for i in ids if i != task_id]
    for n in range(len("task_") + 4, len(task_id)):
        if not any(other.startswith(task_id[:n]) for other in others):
            return task_id[:n]
    raise AssertionError(f"no prefix of {task_id} is unique among {ids}")


def test_add_reads_the_title_from_stdin(agh: Agh, client: Client) -> None:
    made = agh("add", "-", "-q", input="Fix the login bug\n\nIt fails on Safari.\n")
    assert made.exit_code == 0, made.stderr
    task = client.tasks_get(made.stdout.strip()).task.task
    assert task.title == "Fix the login bug" and task.description == "It fails on Safari."
    kept = agh("add", "--stdin", "--description", "mine", "-q", input="Title only\nbody\n")
    assert client.tasks_get(kept.stdout.strip()).task.task.description == "mine"
    assert agh("add", "-", input="\n").exit_code == 2  # empty title
    assert agh("add").exit_code == 2
    assert agh("add", "x", "--stdin", input="y").exit_code == 2  # both


def test_send_reads_the_message_from_stdin_with_a_dash(agh: Agh, client: Client) -> None:
    task = client.tasks_create("listener").task
    sent = agh("send", task.identifier, "-", input="use postgres\n")
    assert sent.exit_code == 0, sent.stderr
    shown = ok_json(agh("timeline", task.identifier, "--json"))
    assert "use postgres" in str(shown)


def test_cancel_and_rm_take_several_ids(agh: Agh, client: Client) -> None:
    a, b, c = (client.tasks_create(f"n{n}", start=True).task for n in range(3))
    canceled = ok_json(agh("cancel", a.identifier, b.id, "--yes", "--json"))["tasks"]
    assert [t["id"] for t in canceled] == [a.id, b.id]
    assert {t["status"] for t in canceled} == {"canceled"}
    text = agh("rm", a.identifier, b.identifier, "-y")
    assert text.stdout.splitlines() == [f"deleted {a.identifier}", f"deleted {b.identifier}"]
    # An error stops the batch and says what was done before it.
    stopped = agh("rm", c.identifier, "T-999", "-y")
    assert stopped.exit_code == 3
    assert f"stopped at T-999; done before it: {c.identifier}" in stopped.stderr
    assert agh("cancel").exit_code == 2  # at least one id


def test_wait_exits_0_when_all_completed_and_1_when_one_failed(daemon: Any, client: Client) -> None:
    ok, bad = (client.tasks_create(n, start=True).task for n in ("ok", "bad"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agh.cli",
            "--socket",
            daemon.socket,
            "wait",
            ok.identifier,
            bad.identifier,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environ(),
    )
    try:
        time.sleep(0.5)
        assert proc.poll() is None  # still waiting: nothing is closed
        first = client.claim_next().claim
        second = client.claim_next().claim
        assert first and second
        client.complete(first.run.id, first.claim_token)
        time.sleep(0.3)
        assert proc.poll() is None  # one task is still open
        client.fail(second.run.id, second.claim_token, "broken", retry=False)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert sorted(out.split()) == sorted(
        [first.task.identifier, "completed", second.task.identifier, "failed"]
    )
    # All already completed: returns at once with 0.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agh.cli",
            "--socket",
            daemon.socket,
            "wait",
            "-q",
            first.task.identifier,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environ(),
    )
    assert done.returncode == 0 and done.stdout == ""


def test_wait_on_an_unknown_task_is_not_found(agh: Agh) -> None:
    assert agh("wait", "T-999").exit_code == 3


def on_a_tty(socket: str, *args: str, env: dict[str, str] | None = None, columns: int = 60) -> str:
    """``agh ARGS`` with stdout on a pseudo-terminal COLUMNS wide."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios

    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agh.cli", "--socket", socket, *args],
        stdout=slave,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        env=clean_environ(**(env or {})),
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(30)
    os.close(master)
    return b"".join(chunks).decode().replace("\r\n", "\n")


def test_colour_on_a_terminal_only_and_never_with_no_color(daemon: Any, client: Client) -> None:
    client.tasks_create("x" * 200, start=True)
    coloured = on_a_tty(daemon.socket, "ls", env={"NO_COLOR": ""})
    assert ANSI.search(coloured)
    plain = ANSI.sub("", coloured)
    # Cut to the terminal's 60 columns, the title ending in an ellipsis.
    assert all(len(line) <= 60 for line in plain.splitlines()), plain
    assert "…" in plain
    assert not ANSI.search(on_a_tty(daemon.socket, "ls", env={"NO_COLOR": "1"}))
    piped = subprocess.run(
        [sys.executable, "-m", "agh.cli", "--socket", daemon.socket, "ls"],
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_environ(),
    )
    assert not ANSI.search(piped.stdout) and "x" * 200 in piped.stdout


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s ago"),
        (125, "2m ago"),
        (3 * 3600 + 5, "3h ago"),
        (2 * 86400, "2d ago"),
        (-240, "in 4m"),
    ],
)
def test_relative_ages(seconds: int, text: str) -> None:
    import datetime as dt

    now = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
    stamp = (now - dt.timedelta(seconds=seconds)).isoformat().replace("+00:00", "Z")
    assert age(stamp, now) == text
    assert age(None) == "-"


def test_a_table_fits_the_width_it_is_given() -> None:
    rows = [("T-1", "ready", "a" * 80), ("T-22", "failed", "short")]
    table = format_table(("ID", "STATUS", "TITLE"), rows, flex=2, width=40)
    assert [len(line) for line in table.splitlines()] == [19, 40, 19]
    assert table.splitlines()[1].endswith("…")
