"""What every ``agh`` failure exits with, and how it is reported.

A shell script branches on the exit status, so each kind of failure a
script can act on has its own code (``agh --help`` and agh(1) list them):
retry later (unreachable, busy), give up on this run (conflict, lease
lost), or sleep because there is no work. Diagnostics go to stderr, one
``agh: <message>`` line and, when the daemon gave one, a ``hint:`` line.
"""

from __future__ import annotations

from typing import NoReturn

import click

from agh.errors import (
    AghError,
    Busy,
    Conflict,
    DaemonUnreachable,
    Forbidden,
    InvalidParams,
    LeaseLost,
    NotFound,
)

EXIT_OK = 0
# The operation failed: an error with no code of its own below; a task that
# `agh wait`/`agh watch` followed failed or was canceled; a declined prompt.
EXIT_FAILED = 1
EXIT_USAGE = 2  # click's own code for usage errors; also invalid params
EXIT_NOT_FOUND = 3
# The run is no longer this caller's, or the task's state forbids the
# change: conflict and lease_lost, the "stop working on it" answers.
EXIT_CONFLICT = 4
EXIT_FORBIDDEN = 5  # wrong claim token, or a uid aghd does not allow
EXIT_NO_WORK = 6  # `agh agent claim`: nothing claimable within --wait
EXIT_UNAVAILABLE = 69  # sysexits.h EX_UNAVAILABLE: aghd cannot be reached
EXIT_TEMPFAIL = 75  # sysexits.h EX_TEMPFAIL: aghd is busy; retry shortly
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

# The table `agh --help` prints; agh(1) and a test keep to the same codes.
EXIT_CODES_HELP = """\
Exit status:
  0   success
  1   the operation failed (aghd's message and hint are on stderr); a
      task that `agh wait` or `agh watch` followed failed or was
      canceled; a confirmation was declined
  2   usage error: unknown command or option, bad value, invalid JSON,
      a destructive command without --yes when stdin is not a terminal,
      or parameters aghd refused
  3   not found: no task or run by that id, identifier or prefix, or a
      prefix that names several (the candidates are listed)
  4   conflict or lease lost: the task's state does not allow it, or
      the claim is no longer yours (expired, canceled, taken over)
  5   forbidden: wrong claim token, or aghd does not allow your uid
  6   no work: `agh agent claim` found nothing claimable in time
  69  aghd cannot be reached and could not be started; the message
      says why and what to do
  75  aghd is busy (database locked, disk full); retry shortly
  130 interrupted (Ctrl-C)"""

_CODES: tuple[tuple[type[AghError], int], ...] = (
    (DaemonUnreachable, EXIT_UNAVAILABLE),
    (NotFound, EXIT_NOT_FOUND),
    (Conflict, EXIT_CONFLICT),
    (LeaseLost, EXIT_CONFLICT),
    (Forbidden, EXIT_FORBIDDEN),
    (InvalidParams, EXIT_USAGE),
    (Busy, EXIT_TEMPFAIL),
)


def exit_code(exc: AghError) -> int:
    """The documented exit status for an error from the client or daemon."""
    for cls, code in _CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_FAILED


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    """Report on stderr and exit with ``code`` (raises click's ``Exit``)."""
    click.echo(f"agh: {message}", err=True)
    raise click.exceptions.Exit(code)


def report_error(exc: AghError) -> int:
    """Print an error (and its hint) to stderr; return the exit code."""
    # DaemonUnreachable's message already names the socket, the cause and
    # the next step; daemon errors may carry a hint.
    click.echo(f"agh: {exc.message}", err=True)
    hint = exc.details.get("hint")
    # Some messages already end with their hint (workflow YAML errors do).
    if hint and str(hint) not in exc.message:
        click.echo(f"hint: {hint}", err=True)
    return exit_code(exc)
