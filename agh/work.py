"""Leased work for Python agents: ``Client.claim()`` claims a run, keeps its
lease alive in the background, and finishes it however the block ends.

    with Client(agent_name="coder-1") as client:
        with client.claim(channel="default", wait_ms=30_000) as work:
            if work is None:
                ...  # nothing was claimable within wait_ms
            else:
                work.log("starting")
                work.result = {"ok": True}  # completed with this result

How the ``with`` block ends decides the run:

- normally: ``agent.complete`` with ``work.result``;
- with an exception: ``agent.fail`` with the exception's text (the task's
  ``max_attempts`` decide whether it is retried), then the exception goes on;
- with KeyboardInterrupt (Ctrl-C) or SystemExit: ``agent.release``, so another
  agent can take the run at once instead of waiting for the lease to run out.

If the lease is lost meanwhile (expired, canceled, taken over), ``work.lost``
is set and the finish raises ``LeaseLost``: stop, the work belongs to
someone else now. Owns: the heartbeat thread and the finish rules. Must not:
know the wire format (the client does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agh.errors import AghError, DaemonUnreachable, LeaseLost

if TYPE_CHECKING:
    from collections.abc import Iterator

    from agh import protocol as p
    from agh.client import Client

# Heartbeat this often within the lease: two beats may be missed before it ends.
BEATS_PER_LEASE = 3
# Fastest heartbeat, and the retry delay after a failed one (daemon restarting).
MIN_BEAT_INTERVAL_S = 0.2


C = TypeVar("C")


class Held(Generic[C]):
    """What a held claim carries, for the sync ``Work`` and the async
    ``agh.aclient.AsyncWork`` alike: the client it was claimed on, the
    claim, the caller's result and why the lease was lost, if it was."""

    def __init__(self, client: C, claim: p.Claim) -> None:
        self.client = client
        self.claim = claim
        self.task = claim.task
        self.run = claim.run
        self.input = claim.run.input
        self.claim_token = claim.claim_token
        # Set by the caller; sent with agent.complete on a normal exit.
        self.result: Any = None
        # Why the lease was lost (LeaseLost from a heartbeat), if it was.
        self.lost: AghError | None = None


class Work(Held["Client"]):
    """A claimed run while the ``with client.claim()`` block holds it."""

    def log(self, message: str, level: str = "info", **fields: Any) -> None:
        """Append a line to the run's log (``agent.log``)."""
        self.client.agent_log(
            self.run.id, self.claim_token, [{"level": level, "message": message, **fields}]
        )

    def ask(self, question: str) -> p.Message:
        """Ask the task's people a question (the task shows "awaiting input";
        the answer arrives in ``messages()``)."""
        return self.client.agent_send(self.run.id, self.claim_token, question, "question").message

    def messages(self, after: int = 0) -> list[p.Message]:
        """Input sent to this run with ``tasks.send`` (``agh send``)."""
        return self.client.agent_messages(self.run.id, self.claim_token, after=after).messages


def beat_interval(lease_until: str | None) -> float:
    """Seconds until the next heartbeat of a lease ending at ``lease_until``:
    a third of what is left, so two beats may fail before it ends; the
    shortest interval when the end is unknown (the last beat failed)."""
    if lease_until is None:
        return MIN_BEAT_INTERVAL_S
    until = dt.datetime.fromisoformat(lease_until.replace("Z", "+00:00"))
    left = (until - dt.datetime.now(dt.UTC)).total_seconds()
    return max(MIN_BEAT_INTERVAL_S, left / BEATS_PER_LEASE)


class _Heartbeat(threading.Thread):
    """Extends the lease from its own connection (a Client is not
    thread-safe) until stopped or the lease is lost."""

    def __init__(self, work: Work, lease_ms: int | None) -> None:
        super().__init__(name=f"agh-heartbeat-{work.run.id}", daemon=True)
        self.work = work
        self.lease_ms = lease_ms
        self.stopped = threading.Event()
        self._until = work.claim.lease.lease_until

    def run(self) -> None:
        work = self.work
        source = work.client
        beat: Client | None = None
        try:
            while not self.stopped.wait(beat_interval(self._until)):
                try:
                    if beat is None:
                        # A second client of the claimer's class: this module
                        # sits below agh.client and does not import it.
                        beat = type(source)(source.socket_path, timeout=source.timeout)
                    lease = beat.heartbeat(work.run.id, work.claim_token, self.lease_ms).lease
                    self._until = lease.lease_until
                except LeaseLost as exc:
                    work.lost = exc
                    return
                except (DaemonUnreachable, OSError):
                    # The daemon may be restarting: reconnect and try again
                    # while the lease lasts.
                    if beat is not None:
                        beat.close()
                        beat = None
                    self._until = None
                except AghError as exc:  # forbidden, not found: nothing to keep alive
                    work.lost = exc
                    return
        finally:
            if beat is not None:
                beat.close()


@contextlib.contextmanager
def claim(
    client: Client,
    *,
    channel: str | None = None,
    workspace: str | None = None,
    lease_ms: int | None = None,
    wait_ms: int | None = None,
    **filters: Any,
) -> Iterator[Work | None]:
    """Claim the next run for ``client``'s session and hold it for the
    ``with`` block (see the module docstring); yield None when nothing was
    claimable within ``wait_ms``.

    Raises what ``agent.claim_next`` raises (e.g. ``Conflict`` when the
    session already holds its limit of claims), ``LeaseLost`` from the finish
    when the lease was lost during the block.
    """
    got = client.claim_next(
        network_channel=channel,
        workspace=workspace,
        lease_ms=lease_ms,
        wait_ms=wait_ms or 0,
        **filters,
    ).claim
    if got is None:
        yield None
        return
    work = Work(client, got)
    beat = _Heartbeat(work, lease_ms)
    beat.start()
    try:
        yield work
    except (KeyboardInterrupt, SystemExit):
        _stop(beat)
        with contextlib.suppress(AghError):
            client.release(work.run.id, work.claim_token, "interrupted")
        raise
    except BaseException as exc:
        _stop(beat)
        _raise_if_lost(work)
        client.fail(work.run.id, work.claim_token, f"{type(exc).__name__}: {exc}")
        raise
    _stop(beat)
    _raise_if_lost(work)
    client.complete(work.run.id, work.claim_token, work.result)


def _stop(beat: _Heartbeat) -> None:
    beat.stopped.set()
    beat.join()


def _raise_if_lost(work: Work) -> None:
    if work.lost is not None:
        raise work.lost
