"""The store without the daemon: its functions called on a real SQLite file
(WAL, synchronous=FULL, migrated as aghd does), one committed transaction
per call, at a time the test sets.

For the rules that live in the store (the blocking rule, claim order,
fencing, retries, expiry): a test states them directly, without a socket
or a sleep, and a clock it moves makes lease expiry and backoff exact.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar

from aghd.store import claims, leases, sessions, tasks
from aghd.store.db import Caller, Tx, open_connection
from aghd.store.models import Backoff, Claimed, ClaimFilters, NewTask
from aghd.store.rows import get_run, task_by_id
from aghd.tokens import hash_token

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Callable

T = TypeVar("T")
P = ParamSpec("P")

HUMAN = Caller("human", "tester", "cli")
# The start of every test's clock: a fixed instant, so failures reproduce.
EPOCH_MS = 1_790_000_000_000


def agent(name: str) -> Caller:
    return Caller("agent_session", name, "uds", None, name)


def token(name: str) -> str:
    """The hash of a claim token named ``name`` (the store sees only hashes)."""
    return hash_token(f"tok-{name}")


class StoreFile:
    """One SQLite file and the connection aghd's committer would use."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.conn: sqlite3.Connection = open_connection(path, "FULL")
        self.now = EPOCH_MS

    def __call__(
        self, fn: Callable[Concatenate[Tx, P], T], /, *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """``fn(tx, ...)`` in its own BEGIN IMMEDIATE … COMMIT (rolled back
        if it raises, as the committer does for a failing job)."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            result = fn(Tx(self.conn, self.now), *args, **kwargs)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return result

    def advance(self, ms: int) -> None:
        self.now += ms

    def value(self, sql: str, *params: Any) -> Any:
        """One value read straight from the file."""
        row = self.conn.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def close(self) -> None:
        self.conn.close()


def new_task(title: str, **fields: Any) -> NewTask:
    """A task as ``tasks.create`` would make it for the human caller."""
    return NewTask(title=title, owner_kind="human", owner_ref="tester", origin_kind="cli", **fields)


def create(store: StoreFile, title: str, *, start: bool = True, **fields: Any) -> str:
    """``tasks.create`` (started by default); the task id."""
    started = store(
        tasks.create_and_start, HUMAN, new_task(title, **fields), start=start, input_value=None
    )
    return str(started.task["id"])


def run_of(store: StoreFile, task_id: str) -> str:
    """The id of the task's latest run."""
    return str(store.value("SELECT id FROM runs WHERE task_id = ? ORDER BY rowid DESC", task_id))


def task(store: StoreFile, task_id: str) -> sqlite3.Row:
    return store(task_by_id, task_id)


def run(store: StoreFile, run_id: str) -> sqlite3.Row:
    return store(get_run, run_id)


def claim(
    store: StoreFile,
    who: str = "a",
    *,
    lease_ms: int = 60_000,
    session_id: str | None = None,
    key: str | None = None,
    max_claims: int = 0,
    filters: ClaimFilters | None = None,
) -> Claimed | None:
    """``agent.claim_next`` by agent ``who`` with token ``token(who)``."""
    return store(
        claims.claim_next_run,
        agent(who),
        session_id=session_id,
        filters=filters or ClaimFilters(),
        lease_ms=lease_ms,
        token_hash=token(who),
        idempotency_key=key,
        max_claims_per_session=max_claims,
    )


def hello(store: StoreFile, session_id: str) -> None:
    """``session.hello`` of an SDK agent session named ``session_id``."""
    store(
        sessions.hello,
        session_id,
        agent_name=session_id,
        channel=None,
        name=None,
        workspace_id=None,
        origin_kind="uds",
        origin_ref=None,
    )


def finish(store: StoreFile, who: str, run_id: str, outcome: str, *, retry: bool = False) -> None:
    """Agent ``who`` completes, fails (with ``retry``, no backoff) or releases
    the run it claimed with ``token(who)``."""
    if outcome == "complete":
        store(leases.complete_run, agent(who), run_id, token(who), {"ok": True})
    elif outcome == "fail":
        store(
            leases.fail_run,
            agent(who),
            run_id,
            token(who),
            "boom",
            retry=retry,
            backoff=Backoff(0, 0),
        )
    else:
        assert outcome == "release", outcome
        store(leases.release_run, agent(who), run_id, token(who), None)
