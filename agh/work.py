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
someone else now.

``client.claims()`` is the loop: run after run, each finish claiming the
next in the same call (one round trip per cycle).

Owns: the heartbeat thread, the finish rules and the claim loop. Must not:
know the wire format (the client does).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from agh import protocol as p
from agh.errors import AghError, DaemonUnreachable, LeaseLost

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

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
    with _hold(client, got, lease_ms) as work:
        yield work


def claims(
    client: Client,
    *,
    channel: str | None = None,
    workspace: str | None = None,
    lease_ms: int | None = None,
    wait_ms: int = 30_000,
    **filters: Any,
) -> Generator[contextlib.AbstractContextManager[Work], None, None]:
    """Claim run after run, for a ``for`` loop; each item is a ``with`` block
    that holds its run as ``claim()``'s does:

        for block in client.claims(channel="default"):
            with block as work:
                work.result = do(work.input)

    The finish of one block claims the next run in the same call (PROTOCOL
    §6, one round trip per cycle), so a busy agent makes one request per
    run. When nothing is claimable the loop long-polls ``wait_ms`` at a time
    and asks again: it never yields None. A run claimed ahead but not worked
    on (the loop ended: ``break``, an exception, Ctrl-C) is released, as is
    an item whose block was never entered.
    """
    fields: dict[str, Any] = {
        "network_channel": channel,
        "workspace": workspace,
        "lease_ms": lease_ms,
        **filters,
    }
    # No wait in the chained claim: a finish answers at once, and an empty
    # queue is waited on by the loop's own claim_next.
    chained = p.NextClaimParams(**fields)
    ahead: list[p.Claim] = []
    try:
        while True:
            got = ahead.pop() if ahead else client.claim_next(wait_ms=wait_ms, **fields).claim
            if got is None:
                continue
            block = _Block(client, got, lease_ms, chained, ahead.append)
            yield block
            if not block.entered:
                _give_back(client, got, "the claim loop skipped it")
    finally:
        for got in ahead:
            _give_back(client, got, "the claim loop ended")


class _Block:
    """One item of ``claims()``: ``_hold`` entered at most once."""

    def __init__(
        self,
        client: Client,
        got: p.Claim,
        lease_ms: int | None,
        chained: p.NextClaimParams,
        handoff: Callable[[p.Claim], None],
    ) -> None:
        self.entered = False
        self._cm = _hold(client, got, lease_ms, chained, handoff)

    def __enter__(self) -> Work:
        if self.entered:
            raise RuntimeError("a claims() item is one with block; it was entered already")
        self.entered = True
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> bool | None:
        return self._cm.__exit__(*exc)


def _give_back(client: Client, got: p.Claim, reason: str) -> None:
    with contextlib.suppress(AghError, OSError):
        client.release(got.run.id, got.claim_token, reason)


@contextlib.contextmanager
def _hold(
    client: Client,
    got: p.Claim,
    lease_ms: int | None,
    chained: p.NextClaimParams | None = None,
    handoff: Callable[[p.Claim], None] | None = None,
) -> Iterator[Work]:
    """Hold ``got`` for the block: heartbeat, then finish by how it ended.
    With ``chained``, a complete or fail also claims the next run and hands
    it to ``handoff``."""
    work = Work(client, got)
    beat = _Heartbeat(work, lease_ms)
    beat.start()
    try:
        yield work
    except (KeyboardInterrupt, SystemExit):
        _stop(beat)
        _give_back(client, got, "interrupted")
        raise
    except BaseException as exc:
        _stop(beat)
        _raise_if_lost(work)
        error = f"{type(exc).__name__}: {exc}"
        pass_on_next(client.fail(work.run.id, work.claim_token, error, next=chained), handoff)
        raise
    _stop(beat)
    _raise_if_lost(work)
    pass_on_next(client.complete(work.run.id, work.claim_token, work.result, next=chained), handoff)


def pass_on_next(done: p.FinishResult, handoff: Callable[[p.Claim], None] | None) -> None:
    """Give the next claim a finish made (if it made one) to ``handoff``:
    ``claims()``'s, or ``AsyncClient.claims()``'s."""
    if handoff is not None and isinstance(done.next, p.Claim):
        handoff(done.next)


def _stop(beat: _Heartbeat) -> None:
    beat.stopped.set()
    beat.join()


def _raise_if_lost(work: Work) -> None:
    if work.lost is not None:
        raise work.lost
