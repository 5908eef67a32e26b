"""``agh board``: the column rules and the layout as pure functions; the
snapshot a pipe gets; and the live view in a real pseudo-terminal against a
real daemon (what it shows, a task that arrives, q, Ctrl-C, a resize, a
daemon restart), plus, when tmux is installed, that the shell's screen is
back after it."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import termios
import time
from typing import TYPE_CHECKING, Any, get_args

import pytest

from agh import protocol as p
from agh.cli.board import (
    BLOCKED,
    COLUMNS,
    COMPLETED,
    FAILED,
    INPUT,
    QUEUED,
    RUNNING,
    Card,
    arrange,
    char_width,
    column_of,
    fit,
    render,
)
from agh.cli.names import run_agent
from agh.tui import ERASE_BELOW, HOME, LEAVE
from tests.helpers.cli import clean_environ

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NOW = dt.datetime(2026, 1, 2, 12, 0, tzinfo=dt.UTC)


def ts(seconds_ago: float) -> str:
    return (NOW - dt.timedelta(seconds=seconds_ago)).isoformat().replace("+00:00", "Z")


def card(
    ident: str = "T-1", column: str = QUEUED, *, title: str = "A task", ago: float = 60, **kw: Any
) -> Card:
    fields: dict[str, Any] = {
        "task_id": "task_" + ident,
        "identifier": ident,
        "title": title,
        "column": column,
        "status": "ready",
        "priority": "medium",
        "since": ts(ago),
        **kw,
    }
    if column in (FAILED, COMPLETED):
        fields.setdefault("closed_at", ts(ago))
    return Card(**fields)


# -- the model and layout (pure) -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "approval", "reason", "column"),
    [
        ("draft", "not_required", None, None),
        ("pending", "not_required", None, QUEUED),
        ("ready", "not_required", None, QUEUED),
        ("in_progress", "not_required", None, RUNNING),
        ("blocked", "not_required", "waiting on T-1", BLOCKED),
        ("blocked", "pending", "awaiting approval", INPUT),
        ("blocked", "pending", "awaiting approval; waiting on T-1", INPUT),
        ("in_progress", "not_required", "awaiting input: which branch?", INPUT),
        ("ready", "not_required", "awaiting input: which branch?", INPUT),
        ("failed", "not_required", None, FAILED),
        ("canceled", "rejected", None, FAILED),
        ("completed", "approved", None, COMPLETED),
    ],
)
def test_column_of(status: str, approval: str, reason: str | None, column: str | None) -> None:
    assert column_of(status, approval, reason) == column


def test_every_task_status_has_a_column_rule() -> None:
    shown = {s: column_of(s) for s in get_args(p.TaskStatus)}
    assert shown == {
        "draft": None,
        "pending": QUEUED,
        "blocked": BLOCKED,
        "ready": QUEUED,
        "in_progress": RUNNING,
        "completed": COMPLETED,
        "failed": FAILED,
        "canceled": FAILED,
    }


def test_agent_label_prefers_the_session_name() -> None:
    run = p.Run(
        attempt=1,
        id="run_1",
        status="running",
        task_id="task_1",
        session_id="ses_0123456789abcdef",
        claimed_by=p.Actor("agent_session", "ses_0123456789abcdef"),
    )
    assert run_agent(run, {"ses_0123456789abcdef": "coder-1"}) == "coder-1"
    # A session with no name at all: a short id, not the whole of it.
    assert run_agent(run, {"ses_0123456789abcdef": None}) == "ses_01234567"
    human = p.Run(
        attempt=1,
        id="run_2",
        status="claimed",
        task_id="task_2",
        claimed_by=p.Actor("human", "ana"),
    )
    assert run_agent(human, {}) == "human:ana"
    assert run_agent(None, {}) is None


def test_arrange_orders_windows_and_limits() -> None:
    cards = [
        card("T-1", QUEUED, ago=10),
        card("T-2", QUEUED, ago=500),
        card("T-3", QUEUED, ago=5, priority="urgent"),
        card("T-4", COMPLETED, ago=30),
        card("T-5", COMPLETED, ago=20),
        card("T-6", COMPLETED, ago=7200),  # closed before the window
        card("T-7", FAILED, ago=100),
    ]
    columns = {c.name: c for c in arrange(cards, now=NOW, keep_closed_s=3600, limit=2)}
    assert list(columns) == list(COLUMNS)
    # Open: priority first, then the longest waiting; the limit cuts, total counts all.
    assert [c.identifier for c in columns[QUEUED].cards] == ["T-3", "T-2"]
    assert columns[QUEUED].total == 3
    # Closed: newest first, and only those within the window.
    assert [c.identifier for c in columns[COMPLETED].cards] == ["T-5", "T-4"]
    assert columns[COMPLETED].total == 2
    none = arrange(cards, now=NOW, keep_closed_s=0)
    assert [c.total for c in none if c.name in (FAILED, COMPLETED)] == [0, 0]


def test_fit_counts_terminal_cells_and_drops_control_characters() -> None:
    assert fit("abc", 5) == "abc  "
    assert fit("a very  long\ntitle", 8) == "a very …"
    wide = fit("日本語のタイトル", 7)  # two cells a character
    assert wide == "日本語…" and sum(char_width(c) for c in wide) == 7
    assert fit("日本", 6) == "日本  "
    # A title cannot clear the screen or move the cursor.
    assert fit("evil \x1b[2J title", 20) == "evil ?[2J title     "


def plain(lines: list[str]) -> list[str]:
    return [ANSI.sub("", line) for line in lines]


@pytest.mark.parametrize("width", [66, 80, 133, 200])
def test_render_fits_the_width_and_height(width: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    long = "A very long title that can never fit in one column of the board " * 3
    cards = [
        card(f"T-{i}", col, title=long, agent="coder-1", note="a note " * 20)
        for i, col in enumerate(COLUMNS * 3)
    ]
    columns = arrange(cards, now=NOW, keep_closed_s=3600)
    lines = plain(render(columns, width, 12, now=NOW, status="12:00:00  q quits"))
    assert len(lines) == 12
    assert all(len(line) == width for line in lines), [len(x) for x in lines]
    assert lines[1].count("│") == 5 and "┼" in lines[2]
    assert "…" in "".join(lines)  # titles were cut, with an ellipsis
    # Under the cards that fit, the column says how many do not.
    assert "".join(lines).count("+2 more") == 6


def test_render_stacks_columns_on_a_narrow_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    cards = [card("T-1", RUNNING, title="x" * 80, agent="coder-1")]
    lines = plain(render(arrange(cards, now=NOW, keep_closed_s=60), 40, 30, now=NOW))
    assert all(len(line) == 40 for line in lines)
    assert "│" not in "".join(lines)
    assert lines[1].startswith("QUEUED 0") and lines[2].startswith("RUNNING 1")
    assert lines[3].startswith(" T-1 1m @coder-1 xxx") and lines[3].endswith("…")


# -- a board with one task in each column -------------------------------------------


@pytest.fixture
def seeded(daemon: ThreadDaemon) -> Iterator[dict[str, str]]:
    """One task per column (two queued: ready and not started); agents
    stay connected while the test runs. Returns column → title."""
    agents: list[Client] = []

    def claimed(title: str, agent: str) -> tuple[Client, p.Claim]:
        with daemon.client() as c:
            c.tasks_create(title, start=True, network_channel=agent)
        a = daemon.client(agent_name=agent)
        agents.append(a)
        claim = a.claim_next(network_channel=agent).claim
        assert claim is not None
        return a, claim

    with daemon.client() as c:
        first = c.tasks_create("Queued work", start=True).task
        c.tasks_create("Never started")
        c.tasks_create("Needs a yes", approval_policy="manual", start=True)
        c.tasks_create("Waits for queued", depends_on=[first.id], start=True)
        c.tasks_create("A draft", draft=True)
    claimed("Being built", "coder-1")
    a, claim = claimed("Has a question", "asker")
    a.agent_send(claim.run.id, claim.claim_token, "which branch?", kind="question")
    a, claim = claimed("Broke down", "breaker")
    a.fail(claim.run.id, claim.claim_token, "out of disk", retry=False)
    a, claim = claimed("All done", "finisher")
    a.complete(claim.run.id, claim.claim_token)
    yield {
        "Queued work": QUEUED,
        "Never started": QUEUED,
        "Being built": RUNNING,
        "Needs a yes": INPUT,
        "Has a question": INPUT,
        "Waits for queued": BLOCKED,
        "Broke down": FAILED,
        "All done": COMPLETED,
    }
    for a in agents:
        a.close()


def test_snapshot_in_a_pipe(agh: Any, seeded: dict[str, str]) -> None:
    result = agh("board")  # CliRunner: stdout is not a terminal
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["COLUMN", "ID", "TITLE", "AGE", "AGENT", "NOTE"]
    for title, column in seeded.items():
        (line,) = [x for x in lines if title in x]
        assert line.startswith(column + " "), line
    assert "A draft" not in result.output
    assert "ses_" not in result.output
    built = next(x for x in lines if "Being built" in x)
    assert "coder-1" in built
    assert "finisher" in next(x for x in lines if "All done" in x)
    assert "which branch?" in next(x for x in lines if "Has a question" in x)


def test_snapshot_json_and_limit(agh: Any, seeded: dict[str, str]) -> None:
    result = agh("board", "--json", "--limit", "1")
    assert result.exit_code == 0, result.output
    columns = {c["name"]: c for c in json.loads(result.output)["columns"]}
    assert list(columns) == list(COLUMNS)
    assert columns[QUEUED]["total"] == 2 and len(columns[QUEUED]["cards"]) == 1
    assert columns[RUNNING]["cards"][0]["agent"] == "coder-1"
    assert columns[FAILED]["cards"][0]["note"] == "out of disk"
    # --completed-for 0: no closed cards at all.
    result = agh("board", "--once", "--completed-for", "0")
    assert "All done" not in result.output and "Broke down" not in result.output


# -- the live view in a pseudo-terminal -----------------------------------------------

# The child takes the pty as its controlling terminal (so Ctrl-C and a
# resize signal it, as in a real terminal), then becomes the board.
LAUNCH = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0);"
    " os.execv(sys.executable, [sys.executable, '-m', 'agh.cli', *sys.argv[1:]])"
)


def set_size(fd: int, cols: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


class Pty:
    """``agh ARGS`` on a new pseudo-terminal; its output collected as it comes."""

    def __init__(self, args: list[str], cols: int = 100, rows: int = 30) -> None:
        self.master, self.slave = os.openpty()
        set_size(self.slave, cols, rows)
        self.saved = termios.tcgetattr(self.slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", LAUNCH, *args],
            stdin=self.slave,
            stdout=self.slave,
            stderr=self.slave,
            start_new_session=True,
            env=clean_environ(TERM="xterm-256color"),
        )
        self.data = b""

    @property
    def text(self) -> str:
        return self.data.decode(errors="replace")

    def pump(self, wait: float) -> None:
        ready, _, _ = select.select([self.master], [], [], wait)
        if ready:
            with contextlib.suppress(OSError):  # EIO: nothing left on the other side
                self.data += os.read(self.master, 65536)

    def read_until(self, check: Callable[[str], bool], timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while not check(self.text):
            if time.monotonic() > deadline:
                raise AssertionError(f"not seen in {timeout}s; last screen:\n" + self.screen())
            self.pump(0.05)
        return self.text

    def screen(self, text: str | None = None) -> str:
        """The latest complete frame (home … erase below), without escapes."""
        text = self.text if text is None else text
        end = text.rfind(ERASE_BELOW)
        frame = text[:end].rsplit(HOME, 1)[-1] if end >= 0 else ""
        lines = ANSI.sub("", frame).replace("\r", "").split("\n")
        return "\n".join(line.rstrip() for line in lines)

    def frame_has(self, needle: str) -> Callable[[str], bool]:
        return lambda text: needle in self.screen(text)

    def send(self, data: bytes) -> None:
        os.write(self.master, data)

    def wait(self, timeout: float = 10.0) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                raise AssertionError("the board did not exit; screen:\n" + self.screen())
            self.pump(0.05)
        self.pump(0)
        return self.proc.returncode

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def board_pty() -> Iterator[Callable[..., Pty]]:
    started: list[Pty] = []

    def start(socket: str, *args: str, cols: int = 100, rows: int = 30) -> Pty:
        board = Pty(["--socket", socket, "board", *args], cols=cols, rows=rows)
        started.append(board)
        return board

    yield start
    for board in started:
        board.close()


def columns_of(screen: str) -> dict[str, str]:
    """Column title → the text of its cells, from a side-by-side frame."""
    lines = screen.split("\n")
    heads = lines[1].split("│")
    cells: dict[str, list[str]] = {h.strip().rsplit(" ", 1)[0].lower(): [] for h in heads}
    for line in lines[3:]:
        for name, cell in zip(cells, line.split("│"), strict=False):
            cells[name].append(cell.strip())
    return {name: "\n".join(found) for name, found in cells.items()}


def test_live_board_shows_each_task_in_its_column(
    daemon: ThreadDaemon, seeded: dict[str, str], board_pty: Callable[..., Pty]
) -> None:
    board = board_pty(daemon.socket, cols=180, rows=40)
    text = board.read_until(board.frame_has("All done"))
    assert text.startswith("\x1b[?1049h")  # the alternate screen
    screen = board.screen()
    found = columns_of(screen)
    assert list(found) == list(COLUMNS)
    for title, column in seeded.items():
        assert title in found[column], (title, column, screen)
    assert "@coder-1" in found[RUNNING] and "@finisher" in found[COMPLETED]
    assert "needs approval" in found[INPUT] and "asks: which branch?" in found[INPUT]
    assert "ses_" not in screen and "A draft" not in screen
    board.send(b"q")
    assert board.wait() == 0


def test_a_new_task_appears_without_a_key(
    daemon: ThreadDaemon, board_pty: Callable[..., Pty]
) -> None:
    board = board_pty(daemon.socket)
    board.read_until(board.frame_has("0 tasks"))
    with daemon.client() as c:
        c.tasks_create("Arrived later", start=True)
    # Only an event makes the board read a task again (the once-a-second
    # tick just redraws), so this shows that the stream is followed.
    board.read_until(board.frame_has("Arrived later"), timeout=5)
    assert "QUEUED 1" in board.screen()
    board.send(b"q")
    assert board.wait() == 0


@pytest.mark.parametrize("key", [b"q", b"\x03"], ids=["q", "ctrl-c"])
def test_quit_exits_0_and_restores_the_terminal(
    daemon: ThreadDaemon, board_pty: Callable[..., Pty], key: bytes
) -> None:
    board = board_pty(daemon.socket)
    board.read_until(board.frame_has("QUEUED 0"))
    assert termios.tcgetattr(board.slave) != board.saved  # cbreak, no echo
    board.send(key)
    assert board.wait() == 0
    # Cursor shown and the alternate screen left, last; the tty mode is back.
    assert board.text.endswith(LEAVE), repr(board.text[-60:])
    assert termios.tcgetattr(board.slave) == board.saved


def test_resize_redraws_at_the_new_size(
    daemon: ThreadDaemon, board_pty: Callable[..., Pty]
) -> None:
    def rule_width(text: str) -> int | None:
        rules = [x for x in board.screen(text).split("\n") if "┼" in x]
        return len(rules[0]) if rules else None

    board = board_pty(daemon.socket, cols=100, rows=20)
    board.read_until(lambda text: rule_width(text) == 100)
    # The kernel signals the terminal's process group (SIGWINCH), as a
    # terminal emulator's resize does.
    set_size(board.master, 140, 20)
    board.read_until(lambda text: rule_width(text) == 140, timeout=5)
    set_size(board.master, 50, 20)
    board.read_until(board.frame_has("RUNNING 0\nREQUIRES INPUT 0"), timeout=5)
    assert "┼" not in board.screen()
    board.send(b"q")
    assert board.wait() == 0


def test_reconnects_when_the_daemon_restarts(
    make_daemon: Callable[..., ThreadDaemon], board_pty: Callable[..., Pty]
) -> None:
    first = make_daemon()
    board = board_pty(first.socket)
    board.read_until(board.frame_has("QUEUED 0"))
    first.stop()
    board.read_until(board.frame_has("reconnecting…"))
    second = make_daemon()  # the same socket and database
    with second.client() as c:
        c.tasks_create("Restarted", start=True)
    board.read_until(board.frame_has("Restarted"))
    assert "reconnecting" not in board.screen()
    board.send(b"q")
    assert board.wait() == 0


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt install tmux)")
def test_tmux_shows_the_shell_again(daemon: ThreadDaemon, short_dir: str) -> None:
    server = os.path.join(short_dir, "tmux")
    env = clean_environ(PS1="$ ", TERM="xterm-256color")
    env.pop("TMUX", None)

    def tmux(*args: str) -> str:
        out = subprocess.run(
            ["tmux", "-S", server, "-f", "/dev/null", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return out.stdout

    def pane_until(check: Callable[[str], bool]) -> str:
        deadline = time.monotonic() + 10
        while True:
            pane = tmux("capture-pane", "-p", "-t", "board")
            if check(pane):
                return pane
            assert time.monotonic() < deadline, pane
            time.sleep(0.05)

    command = f"{sys.executable} -m agh.cli --socket {daemon.socket} board; echo board-exit=$?"
    tmux("new-session", "-d", "-s", "board", "-x", "90", "-y", "20", "sh")
    try:
        tmux("send-keys", "-t", "board", "echo before-the-board", "Enter")
        pane_until(lambda pane: "before-the-board\n" in pane)
        tmux("send-keys", "-t", "board", command, "Enter")
        pane = pane_until(lambda pane: "QUEUED 0" in pane)
        assert "before-the-board" not in pane  # the alternate screen
        tmux("send-keys", "-t", "board", "q")
        # The typed command line contains "board-exit=$?" too, and tmux
        # wraps it where the path length says, so wait for the digits.
        pane = pane_until(lambda pane: re.search(r"^board-exit=\d+$", pane, re.M) is not None)
        assert re.search(r"^board-exit=0$", pane, re.M), pane
        assert "before-the-board" in pane and "QUEUED" not in pane
    finally:
        subprocess.run(
            ["tmux", "-S", server, "kill-server"], env=env, capture_output=True, timeout=10
        )


def test_sigterm_restores_the_terminal(daemon: ThreadDaemon, board_pty: Callable[..., Pty]) -> None:
    board = board_pty(daemon.socket)
    board.read_until(board.frame_has("QUEUED 0"))
    board.proc.send_signal(signal.SIGTERM)
    assert board.wait() == 128 + signal.SIGTERM
    assert board.text.endswith(LEAVE)
    assert termios.tcgetattr(board.slave) == board.saved


def test_no_daemon_exits_69_before_taking_the_terminal(
    short_dir: str, board_pty: Callable[..., Pty]
) -> None:
    board = board_pty(os.path.join(short_dir, "none.sock"))
    assert board.wait() == 69
    assert "aghd is not running" in board.text
    assert "\x1b[?1049h" not in board.text
    assert termios.tcgetattr(board.slave) == board.saved
