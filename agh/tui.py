"""A full-screen terminal for live views (``agh board``): keys without
Enter, the alternate screen, resizes, suspend, and the terminal put back as
it was however the view ends.

Plain VT100/xterm escapes only (the alternate screen, cursor on/off, home,
erase to the end of the line and of the screen): tmux, screen, ssh and
every terminal emulator in use pass them through, so no curses or terminfo
database is needed. Standard library only (termios, tty, select, signal).

Owns: the tty's mode, the screen and the wake-up pipe. Must not: know what
is drawn, or talk to aghd.
"""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType

ENTER = "\x1b[?1049h\x1b[?25l"  # alternate screen on, cursor hidden
LEAVE = "\x1b[?25h\x1b[?1049l"  # cursor shown, back to the main screen
HOME = "\x1b[H"
ERASE_LINE = "\x1b[K"  # to the end of the line
ERASE_BELOW = "\x1b[J"  # to the end of the screen


def frame_text(lines: Sequence[str]) -> str:
    """One full redraw: from the top left, each line erased to its end,
    everything below the last erased. Lines must already fit the width
    (a longer one would wrap and scroll the screen)."""
    return HOME + "\r\n".join(line + ERASE_LINE for line in lines) + ERASE_BELOW


class Screen:
    """The terminal, taken over for a ``with`` block.

    On entry: keys arrive one at a time without echo (cbreak: Ctrl-C still
    sends SIGINT, so a stuck view can always be interrupted), the alternate
    screen is shown and the cursor hidden. On exit, normal or by any
    exception: cursor shown, main screen back, the tty's saved mode and the
    signal handlers restored. SIGTERM and SIGHUP become ``SystemExit`` so
    that exit runs too; Ctrl-Z (SIGTSTP) puts the terminal back before the
    process stops and takes it again on ``fg``.

    ``wait`` blocks until a key, a resize, a ``wake()`` from another thread
    or the timeout, whichever comes first."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout
        self.fd = self.stdin.fileno()
        self.out_fd = self.stdout.fileno()
        self.resized = True  # the first wait reports a size to draw at
        self._suspend = False
        self._saved: list[Any] | None = None
        self._handlers: dict[int, Any] = {}
        # Another thread may wake us as the block ends: the lock keeps it
        # from writing to a closed pipe (or to whatever reuses its number).
        self._wake_lock = threading.RLock()
        self._wake_open = True
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)

    # -- taking and giving back the terminal -------------------------------------

    def __enter__(self) -> Screen:
        self._handlers = {
            signal.SIGWINCH: signal.signal(signal.SIGWINCH, self._on_winch),
            signal.SIGTSTP: signal.signal(signal.SIGTSTP, self._on_tstp),
            signal.SIGTERM: signal.signal(signal.SIGTERM, _exit_on_signal),
            signal.SIGHUP: signal.signal(signal.SIGHUP, _exit_on_signal),
        }
        try:
            self._take()
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._give_back()
        finally:
            for sig, handler in self._handlers.items():
                signal.signal(sig, handler)
            self._handlers = {}
            with self._wake_lock:
                self._wake_open = False
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _take(self) -> None:
        self._saved = termios.tcgetattr(self.fd)
        tty.setcbreak(self.fd, termios.TCSANOW)  # also turns echo off
        self.write(ENTER)

    def _give_back(self) -> None:
        # Each step on its own: a terminal gone (ssh dropped, SIGHUP) fails
        # the writes, and the mode must still be restored where it can be.
        with contextlib.suppress(OSError):
            self.write(LEAVE)
        if self._saved is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self._saved)
            self._saved = None

    def suspend(self) -> None:
        """Ctrl-Z: give the terminal back, stop, and take it again on ``fg``."""
        self._give_back()
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)  # returns once continued
        signal.signal(signal.SIGTSTP, self._on_tstp)
        self._take()
        self.resized = True  # redraw everything: the screen was someone else's

    # -- signals ---------------------------------------------------------------------
    # Python runs these in the main thread between bytecodes; they only set a
    # flag and wake the select below, the main loop does the work.

    def _on_winch(self, signum: int, frame: FrameType | None) -> None:
        self.resized = True
        self.wake()

    def _on_tstp(self, signum: int, frame: FrameType | None) -> None:
        self._suspend = True
        self.wake()

    # -- input, output, size -----------------------------------------------------------

    def wake(self) -> None:
        """Make ``wait`` return now; safe from any thread and from signal handlers."""
        # A full pipe means a wake is already pending.
        with self._wake_lock, contextlib.suppress(BlockingIOError):
            if self._wake_open:
                os.write(self._wake_w, b"!")

    def wait(self, timeout: float | None) -> str:
        """The keys typed (``""`` if none) once a key, a wake-up or the
        timeout (seconds; ``None`` waits for ever) comes."""
        ready, _, _ = select.select([self.fd, self._wake_r], [], [], timeout)
        if self._wake_r in ready:
            with contextlib.suppress(BlockingIOError):
                while os.read(self._wake_r, 512):
                    pass
        if self._suspend:
            self._suspend = False
            self.suspend()
        keys = ""
        if self.fd in ready:
            data = os.read(self.fd, 1024)
            if not data:
                raise EOFError("the terminal closed")
            keys = data.decode(errors="replace")
        return keys

    def size(self) -> tuple[int, int]:
        """``(columns, rows)`` of the terminal now (not $COLUMNS / $LINES,
        which do not follow a resize)."""
        try:
            size = os.get_terminal_size(self.out_fd)
        except OSError:
            size = shutil.get_terminal_size()
        return max(size.columns, 1), max(size.lines, 1)

    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def draw(self, lines: Sequence[str]) -> None:
        self.write(frame_text(lines))


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
