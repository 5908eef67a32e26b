"""Numbered schema migrations, applied in order, each in one transaction.

``PRAGMA user_version`` records the last applied migration. A migration is
never edited once released: add a new one. Times are integer milliseconds
since the Unix epoch (UTC); the wire layer formats them as RFC 3339.
"""

from __future__ import annotations

import sqlite3

# Migration 1: the core model (issue 2). Tables for the task graph and
# observability extend it in later migrations.
_M1 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT;
INSERT INTO meta (key, value) VALUES ('task_number', 0);

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    key         TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    path        TEXT UNIQUE,
    next_number INTEGER NOT NULL DEFAULT 1,
    created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE sessions (
    session_id   TEXT PRIMARY KEY,
    agent_name   TEXT,
    channel      TEXT,
    name         TEXT,
    state        TEXT NOT NULL,
    workspace_id TEXT REFERENCES workspaces(id),
    origin_kind  TEXT,
    origin_ref   TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    identifier       TEXT NOT NULL UNIQUE,
    title            TEXT NOT NULL,
    description      TEXT,
    scope            TEXT NOT NULL,
    workspace_id     TEXT REFERENCES workspaces(id),
    owner_kind       TEXT,
    owner_ref        TEXT,
    created_by_kind  TEXT,
    created_by_ref   TEXT,
    origin_kind      TEXT,
    origin_ref       TEXT,
    priority         TEXT NOT NULL,
    network_channel  TEXT,
    max_attempts     INTEGER NOT NULL,
    metadata         TEXT,
    draft            INTEGER NOT NULL DEFAULT 0,
    status           TEXT NOT NULL,
    approval_policy  TEXT NOT NULL DEFAULT 'none',
    approval_state   TEXT NOT NULL DEFAULT 'not_required',
    blocking_reason  TEXT,
    parent_task_id   TEXT REFERENCES tasks(id),
    -- A run asked for while the task could not run yet (draft, approval,
    -- dependencies): enqueued the moment the task becomes runnable.
    run_requested    INTEGER NOT NULL DEFAULT 0,
    requested_input  TEXT,
    requested_key    TEXT,
    -- tasks.create with an idempotency_key: a repeat returns this task.
    idempotency_key  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    closed_at        INTEGER,
    last_activity_at INTEGER NOT NULL
) STRICT;
CREATE INDEX tasks_status ON tasks (status, id);
CREATE INDEX tasks_parent ON tasks (parent_task_id, id);
CREATE INDEX tasks_workspace ON tasks (workspace_id, id);
CREATE UNIQUE INDEX tasks_idempotency ON tasks (idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE runs (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    status           TEXT NOT NULL,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    priority_rank    INTEGER NOT NULL,
    network_channel  TEXT,
    queued_at        INTEGER NOT NULL,
    available_at     INTEGER NOT NULL,
    claimed_at       INTEGER,
    started_at       INTEGER,
    ended_at         INTEGER,
    heartbeat_at     INTEGER,
    lease_until      INTEGER,
    claim_token_hash TEXT,
    claimed_by_kind  TEXT,
    claimed_by_ref   TEXT,
    session_id       TEXT,
    idempotency_key  TEXT,
    input            TEXT,
    result           TEXT,
    error            TEXT,
    metadata         TEXT,
    origin_kind      TEXT,
    origin_ref       TEXT,
    created_at       INTEGER NOT NULL
) STRICT;
-- The claim query walks this index in order: it is declared in the
-- direction of the ORDER BY so SQLite never builds a temporary B-tree.
-- Partial-index predicates are plain comparisons on purpose: a `status IN
-- (...)` predicate costs ~50 us per row update (an ephemeral table per
-- evaluation), which halved claim throughput.
CREATE INDEX runs_claim ON runs (priority_rank DESC, queued_at, id)
    WHERE status = 'queued';
CREATE INDEX runs_claim_channel ON runs (network_channel, priority_rank DESC, queued_at, id)
    WHERE status = 'queued' AND network_channel IS NOT NULL;
-- Invariant (PROTOCOL §6): no task has two open runs. A run is open
-- (queued, claimed, starting, running) exactly while ended_at IS NULL.
CREATE UNIQUE INDEX runs_one_open_per_task ON runs (task_id)
    WHERE ended_at IS NULL;
-- lease_until is set exactly while a run is claimed, starting or running.
CREATE INDEX runs_lease ON runs (lease_until)
    WHERE lease_until IS NOT NULL;
-- Runs waiting out a retry backoff (fresh runs have available_at = queued_at
-- and stay out of this index, so claiming them never touches it).
CREATE INDEX runs_delayed ON runs (available_at)
    WHERE status = 'queued' AND available_at > queued_at;
CREATE INDEX runs_task ON runs (task_id, id);
CREATE UNIQUE INDEX runs_task_idempotency ON runs (task_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- One row per claim of a run: how a stale token (an earlier claim of the
-- same run: lease_lost) is told apart from a wrong one (forbidden).
CREATE TABLE claims (
    id              INTEGER PRIMARY KEY,
    run_id          TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    attempt         INTEGER NOT NULL,
    -- Not UNIQUE: tokens are 256-bit random, and lookups go by run_id.
    token_hash      TEXT NOT NULL,
    claimed_by_kind TEXT,
    claimed_by_ref  TEXT,
    session_id      TEXT,
    claimed_at      INTEGER NOT NULL,
    ended_at        INTEGER,
    end_reason      TEXT
) STRICT;
CREATE INDEX claims_run ON claims (run_id, id);
CREATE INDEX claims_session_active ON claims (session_id) WHERE ended_at IS NULL;

-- Every state change writes one row here in its own transaction; seq is the
-- global, strictly increasing stream sequence. The wire id (evt_…) is derived
-- from seq, so no second unique index is paid on every write.
CREATE TABLE events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    event_type  TEXT NOT NULL,
    task_id     TEXT,
    run_id      TEXT,
    actor_kind  TEXT,
    actor_ref   TEXT,
    origin_kind TEXT,
    origin_ref  TEXT,
    payload     TEXT,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX events_task ON events (task_id, seq);

-- Requests that must not be applied twice (claims by key); enqueue keys
-- live on the run itself (runs_task_idempotency).
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    claim_id   INTEGER REFERENCES claims(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;
"""

# Migration 2: the task graph (issue 3) — dependencies, approvals, skipped
# workflow steps, and workflows composed from YAML.
_M2 = """
-- kind: 'task' (has runs), 'workflow' (a workflow's root) or 'group' (an
-- inline branch). The last two never have runs: their status is derived
-- from their children's.
ALTER TABLE tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'task';
ALTER TABLE tasks ADD COLUMN workflow_id TEXT;
ALTER TABLE tasks ADD COLUMN step_id TEXT;
-- The step's definition as JSON (action, tool, inputs, conditions): its
-- runs' input is built from it and its conditions are evaluated from it.
ALTER TABLE tasks ADD COLUMN step_spec TEXT;
-- Why a closed task closed: 'condition not met', 'rejected: …', a cancel reason.
ALTER TABLE tasks ADD COLUMN closed_reason TEXT;
-- A skipped workflow step (canceled because a condition was false or a
-- dependency was skipped): its dependents are skipped too, not blocked.
ALTER TABLE tasks ADD COLUMN skipped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN approved_by_kind TEXT;
ALTER TABLE tasks ADD COLUMN approved_by_ref TEXT;
ALTER TABLE tasks ADD COLUMN approved_at INTEGER;
CREATE INDEX tasks_workflow ON tasks (workflow_id, step_id) WHERE workflow_id IS NOT NULL;

-- task_id waits for depends_on_task_id (kind 'blocks'). The primary key
-- serves "what does this task wait for", the index "who waits for this task"
-- (read on every completion, so it must be an index lookup).
CREATE TABLE task_dependencies (
    task_id            TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    depends_on_task_id TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    kind               TEXT NOT NULL DEFAULT 'blocks',
    created_at         INTEGER NOT NULL,
    PRIMARY KEY (task_id, depends_on_task_id)
) STRICT, WITHOUT ROWID;
CREATE INDEX task_dependencies_dependents ON task_dependencies (depends_on_task_id, task_id);

-- A workflow composed from YAML: its source and variables, and the root task
-- whose children are its steps. Deleting the root deletes the workflow.
CREATE TABLE workflows (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    description  TEXT,
    source       TEXT NOT NULL,
    vars         TEXT,
    root_task_id TEXT NOT NULL UNIQUE REFERENCES tasks(id) ON DELETE CASCADE,
    version      INTEGER NOT NULL DEFAULT 1,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
) STRICT;
"""

# Migration 3: observability and coordination (issue 4) — run logs, messages
# on a run's coordination channel, and per-actor inbox triage.
_M3 = """
-- Lines an agent logged for a run (agent.log). Retention is bounded by
-- configuration: the oldest lines of a run are deleted past the limit.
CREATE TABLE run_logs (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    task_id    TEXT NOT NULL,
    level      TEXT NOT NULL,
    message    TEXT NOT NULL,
    step       INTEGER,
    metadata   TEXT,
    created_at INTEGER NOT NULL
) STRICT;
CREATE INDEX run_logs_run ON run_logs (run_id, id);

-- Messages on a run's coordination channel. Input from people (tasks.send)
-- names the task; run_id is set once a run receives it (NULL: waiting for
-- the task's next run). Agents post status and question messages.
CREATE TABLE run_messages (
    id          INTEGER PRIMARY KEY,
    task_id     TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    run_id      TEXT REFERENCES runs(id) ON DELETE CASCADE,
    direction   TEXT NOT NULL,  -- 'to_agent' | 'from_agent'
    kind        TEXT NOT NULL,  -- 'input' | 'status' | 'question'
    message     TEXT NOT NULL,
    actor_kind  TEXT,
    actor_ref   TEXT,
    created_at  INTEGER NOT NULL
) STRICT;
CREATE INDEX run_messages_task ON run_messages (task_id, id);
CREATE INDEX run_messages_run ON run_messages (run_id, id) WHERE run_id IS NOT NULL;

-- A question from the agent holding the task's run waits for an answer
-- (tasks.send): the inbox shows it and blocking_reason says so.
ALTER TABLE tasks ADD COLUMN awaiting_input INTEGER NOT NULL DEFAULT 0;

-- Inbox triage per actor and task: read / dismissed / archived, and the
-- activity the actor last saw (newer activity makes the item unread again).
CREATE TABLE task_triage (
    task_id               TEXT NOT NULL REFERENCES tasks(id) ON DELETE CASCADE,
    actor_kind            TEXT NOT NULL,
    actor_ref             TEXT NOT NULL DEFAULT '',
    read                  INTEGER NOT NULL DEFAULT 0,
    dismissed             INTEGER NOT NULL DEFAULT 0,
    archived              INTEGER NOT NULL DEFAULT 0,
    last_seen_activity_at INTEGER,
    updated_at            INTEGER NOT NULL,
    PRIMARY KEY (actor_kind, actor_ref, task_id)
) STRICT, WITHOUT ROWID;
"""

# Migration 4: indexes for observe.dashboard and observe.inbox (issue 4).
# What a claim→complete cycle pays (docs/PERFORMANCE.md): tasks_workspace_status
# moves on each status change of a task in a workspace (global tasks pay
# nothing), runs_closed_task gets one entry when the run ends. The others
# change only on failures, cancels, approvals, questions and forced stops.
# No index here leads with runs.status over all runs: one that did was
# picked by the planner for the claim query and halved claim throughput.
_M4 = """
-- Task counts per status within a workspace, and its ready and in-progress
-- tasks (which lead to its queued and active runs).
CREATE INDEX tasks_workspace_status ON tasks (workspace_id, status)
    WHERE workspace_id IS NOT NULL;
-- Ended runs per task and status (filtered counts: one probe per task).
-- ended_at is a column so the index covers its own predicate.
CREATE INDEX runs_closed_task ON runs (task_id, status, ended_at) WHERE ended_at IS NOT NULL;
-- Failed and canceled runs (unfiltered counts; completed ones are all runs
-- minus the open, failed and canceled ones).
CREATE INDEX runs_unsuccessful ON runs (task_id, status)
    WHERE status = 'failed' OR status = 'canceled';
-- Forced stops: claims ended by lease expiry or by an operator.
CREATE INDEX claims_forced ON claims (run_id, end_reason)
    WHERE end_reason = 'expired' OR end_reason = 'failed_by_operator';
-- Tasks awaiting approval (blocked card, approvals lane) and awaiting an
-- answer to an agent's question (blocked lane).
CREATE INDEX tasks_awaiting_approval ON tasks (status, workspace_id)
    WHERE approval_state = 'pending';
CREATE INDEX tasks_awaiting_input ON tasks (workspace_id) WHERE awaiting_input = 1;
"""

# Each task's tallies of its ended runs, counted from the runs and claims
# (migration 5; also bench/dashboard.py after its bulk inserts).
RUN_TALLIES = """UPDATE tasks SET
    runs_completed = (SELECT count(*) FROM runs r WHERE r.task_id = tasks.id
                      AND r.status = 'completed'),
    runs_failed = (SELECT count(*) FROM runs r WHERE r.task_id = tasks.id
                   AND r.status = 'failed'),
    runs_canceled = (SELECT count(*) FROM runs r WHERE r.task_id = tasks.id
                     AND r.status = 'canceled'),
    runs_forced = (SELECT count(*) FROM runs r WHERE r.task_id = tasks.id
                   AND r.status = 'failed'
                   AND (SELECT c.end_reason FROM claims c WHERE c.run_id = r.id
                        ORDER BY c.id DESC LIMIT 1) IN ('expired', 'failed_by_operator'))
    WHERE EXISTS (SELECT 1 FROM runs r WHERE r.task_id = tasks.id AND r.ended_at IS NOT NULL)"""

# Migration 5: every dashboard filter answered from one covering index.
# Each task keeps tallies of its ended runs (the run-ending UPDATE of the
# task already rewrites its row), so run totals for any filter are sums over
# matching index entries instead of one probe into runs per task. The facets
# index replaces tasks_workspace_status: it leads with (status, workspace_id)
# so a workspace's counts stay range counts. In-progress tasks are left out
# (the dashboard reaches them through their active runs), so a claim only
# deletes an entry and a completion only inserts one: global tasks pay
# that too (docs/PERFORMANCE.md). tasks.update may change any facet; cold.
_M5 = f"""
ALTER TABLE tasks ADD COLUMN runs_completed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN runs_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE tasks ADD COLUMN runs_canceled INTEGER NOT NULL DEFAULT 0;
-- Failed runs whose last claim ended by lease expiry or by an operator.
ALTER TABLE tasks ADD COLUMN runs_forced INTEGER NOT NULL DEFAULT 0;
{RUN_TALLIES};
-- A run's coordination channel names its task's workspace and workflow;
-- neither ever changes for a task, so each run carries them and every
-- reply shows the same channel without reading the task.
ALTER TABLE runs ADD COLUMN workspace_id TEXT;
ALTER TABLE runs ADD COLUMN workflow_id TEXT;
UPDATE runs SET
    workspace_id = (SELECT t.workspace_id FROM tasks t WHERE t.id = runs.task_id),
    workflow_id = (SELECT t.workflow_id FROM tasks t WHERE t.id = runs.task_id);
DROP INDEX tasks_workspace_status;
-- Ended runs per task are the tasks' tallies now: one index entry fewer per
-- completed run.
DROP INDEX runs_closed_task;
CREATE INDEX tasks_facets ON tasks (status, workspace_id, network_channel, owner_kind,
    owner_ref, origin_kind, scope, approval_state, runs_completed, runs_failed, runs_canceled,
    runs_forced, id) WHERE status != 'in_progress';
"""

# Migration 6: tokens an idempotent claim retry replaced. The retry hands out
# a fresh token for the same claim; the one it replaces must keep meaning
# "your lease is gone" (lease_lost), not "that is nobody's token" (forbidden).
_M6 = """
CREATE TABLE replaced_tokens (
    claim_id    INTEGER NOT NULL REFERENCES claims(id) ON DELETE CASCADE,
    token_hash  TEXT NOT NULL,
    replaced_at INTEGER NOT NULL
) STRICT;
CREATE INDEX replaced_tokens_claim ON replaced_tokens (claim_id);
"""

# Migration 7: one round trip per cycle (PROTOCOL §6). A finish that also
# claimed the next run records that claim on the finished one, so a retried
# finish (its reply was lost) hands the same next claim out again, under a
# fresh token, instead of claiming a second run.
_M7 = """
ALTER TABLE claims ADD COLUMN next_claim_id INTEGER;
"""


# Migration 8: tasks_facets keyed by (status, workspace_id, id) first. Led by
# every facet, a completion inserted its entry at a random place of the
# completed range: on a hub of 1M tasks a third of the pages each commit
# wrote were that index's. With the id third, a task changing status lands
# at the recent end of its status and workspace, where the last commits
# already wrote; the facets after it are still in every entry, so a
# filter's counts are still read from the index alone.
#
# And the unfiltered dashboard's counts of what only grows: tasks in every
# status but ready and in progress (those are counted from their small
# ranges of tasks_status), ended runs by status, and forced stops (the sum
# of the tasks' runs_forced). Counting those ranges read every index entry
# (130 ms at 1M tasks). Triggers keep them, so no write path can forget one;
# a claim (ready -> in_progress, queued -> claimed) fires none, a completion
# one per table, and the two indexes those counts were read from go. Plain
# comparisons in every WHEN: an IN list builds an
# ephemeral table per evaluation (see runs_claim).
_M8 = """
CREATE TABLE status_counts (
    tally  TEXT NOT NULL,     -- 'task', 'run' or 'forced' (status '')
    status TEXT NOT NULL,
    n      INTEGER NOT NULL,
    PRIMARY KEY (tally, status)
) STRICT, WITHOUT ROWID;
CREATE TRIGGER tasks_count_insert AFTER INSERT ON tasks
    WHEN new.status != 'ready' AND new.status != 'in_progress'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('task', new.status, 1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_delete AFTER DELETE ON tasks
    WHEN old.status != 'ready' AND old.status != 'in_progress'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('task', old.status, -1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_leave AFTER UPDATE OF status ON tasks
    WHEN old.status != new.status AND old.status != 'ready' AND old.status != 'in_progress'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('task', old.status, -1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_enter AFTER UPDATE OF status ON tasks
    WHEN old.status != new.status AND new.status != 'ready' AND new.status != 'in_progress'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('task', new.status, 1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER runs_count_insert AFTER INSERT ON runs
    WHEN new.status != 'queued'
        AND new.status != 'claimed' AND new.status != 'starting' AND new.status != 'running'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('run', new.status, 1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER runs_count_delete AFTER DELETE ON runs
    WHEN old.status != 'queued'
        AND old.status != 'claimed' AND old.status != 'starting' AND old.status != 'running'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('run', old.status, -1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER runs_count_leave AFTER UPDATE OF status ON runs
    WHEN old.status != new.status AND old.status != 'queued'
        AND old.status != 'claimed' AND old.status != 'starting' AND old.status != 'running'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('run', old.status, -1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER runs_count_enter AFTER UPDATE OF status ON runs
    WHEN old.status != new.status AND new.status != 'queued'
        AND new.status != 'claimed' AND new.status != 'starting' AND new.status != 'running'
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('run', new.status, 1)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_forced AFTER UPDATE OF runs_forced ON tasks
    WHEN old.runs_forced != new.runs_forced
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES
        ('forced', '', new.runs_forced - old.runs_forced)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_forced_delete AFTER DELETE ON tasks
    WHEN old.runs_forced != 0
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('forced', '', -old.runs_forced)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
CREATE TRIGGER tasks_count_forced_insert AFTER INSERT ON tasks
    WHEN new.runs_forced != 0
    BEGIN INSERT INTO status_counts (tally, status, n) VALUES ('forced', '', new.runs_forced)
        ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n; END;
INSERT INTO status_counts (tally, status, n)
    SELECT 'task', status, count(*) FROM tasks INDEXED BY tasks_status
    WHERE status != 'ready' AND status != 'in_progress' GROUP BY status;
INSERT INTO status_counts (tally, status, n)
    SELECT 'run', status, count(*) FROM runs
    WHERE status = 'completed' OR status = 'failed' OR status = 'canceled' GROUP BY status;
INSERT INTO status_counts (tally, status, n)
    SELECT 'forced', '', coalesce(sum(runs_forced), 0) FROM tasks;
-- What the dashboard counted before these counts: nothing reads them now.
DROP INDEX runs_unsuccessful;
DROP INDEX claims_forced;
DROP INDEX tasks_facets;
CREATE INDEX tasks_facets ON tasks (status, workspace_id, id, network_channel, owner_kind,
    owner_ref, origin_kind, scope, approval_state, runs_completed, runs_failed, runs_canceled,
    runs_forced) WHERE status != 'in_progress';
"""

# Migration 9: the inbox without reading its lanes (observe.inbox at 1M tasks
# read every task: about a second). Two things make an actor's lane counts
# sums of a few numbers:
#
# - tasks_inbox indexes the tasks of the shared lanes under their lane
#   (observe.inbox's lane rule), and tasks_inbox_open the pending and ready
#   tasks that are my_work for their owner, under it, newest activity
#   first: a lane's size is a range count and its newest items a walk that
#   stops at the limit (in-progress tasks, a few, come from tasks_status);
# - inbox_triaged keeps, per actor and lane, how many of the lane's tasks the
#   actor's triage hides (archived, or dismissed with nothing new) and how
#   many it shows as read. Triggers on task_triage and on the task columns
#   the lane and the unread state read keep it; the task trigger first probes
#   task_triage_task, so a task nobody triaged (the claim path) pays one
#   index probe. A deleted task's triage goes with it (BEFORE DELETE: the
#   cascade's own trigger no longer finds the task).
#
# A lane's count is its size minus the hidden, its unread count the count
# minus the read. The rule is observe.inbox's _LANE, written out in full
# (a migration is frozen text); tests/test_inbox_counts.py holds both to
# the scan's answer.
_M9 = """
CREATE TABLE inbox_triaged (
    actor_kind TEXT NOT NULL,
    actor_ref  TEXT NOT NULL,
    lane       TEXT NOT NULL,
    out_n      INTEGER NOT NULL,  -- triaged tasks of the lane it does not show
    seen_n     INTEGER NOT NULL,  -- shown and read up to their activity
    PRIMARY KEY (actor_kind, actor_ref, lane)
) STRICT, WITHOUT ROWID;
CREATE INDEX task_triage_task ON task_triage (task_id);
-- What each triage row adds to inbox_triaged, as its task stands now: to the
-- task's lane for the actor (hidden or read), and to 'archived' when archived.
CREATE VIEW inbox_contributions AS SELECT * FROM (
        SELECT tr.actor_kind AS actor_kind, tr.actor_ref AS actor_ref, tr.task_id AS task_id,
            CASE CASE WHEN t.draft = 1 THEN NULL WHEN t.approval_state = 'pending' THEN
                'approvals' WHEN t.status = 'failed' THEN 'failed_runs' WHEN t.status =
                'blocked' THEN 'blocked' WHEN t.status != 'pending' AND t.status != 'ready' AND
                t.status != 'in_progress' THEN NULL WHEN t.awaiting_input = 1 THEN 'blocked'
                ELSE 'open' END WHEN 'open' THEN CASE WHEN t.owner_kind = tr.actor_kind AND
                t.owner_ref IS nullif(tr.actor_ref, '') THEN 'my_work' END ELSE CASE WHEN
                t.draft = 1 THEN NULL WHEN t.approval_state = 'pending' THEN 'approvals' WHEN
                t.status = 'failed' THEN 'failed_runs' WHEN t.status = 'blocked' THEN 'blocked'
                WHEN t.status != 'pending' AND t.status != 'ready' AND t.status != 'in_progress'
                THEN NULL WHEN t.awaiting_input = 1 THEN 'blocked' ELSE 'open' END END AS lane,
            NOT coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND t.last_activity_at <=
                tr.last_seen_activity_at), 0) AS out_n,
            coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND t.last_activity_at <=
                tr.last_seen_activity_at), 0) AND NOT (t.last_activity_at >
                coalesce(tr.last_seen_activity_at, -1)) AS seen_n
        FROM task_triage tr JOIN tasks t ON t.id = tr.task_id WHERE 1
        UNION ALL
        SELECT tr.actor_kind, tr.actor_ref, tr.task_id, 'archived', 1, NOT (t.last_activity_at >
            coalesce(tr.last_seen_activity_at, -1))
        FROM task_triage tr JOIN tasks t ON t.id = tr.task_id WHERE 1 AND tr.archived = 1
) WHERE lane IS NOT NULL;
-- A triage row's change: its contribution before (BEFORE) and after.
CREATE TRIGGER triage_inbox_insert AFTER INSERT ON task_triage BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, 1 * out_n, 1 * seen_n
    FROM inbox_contributions WHERE actor_kind = new.actor_kind AND actor_ref = new.actor_ref AND
        task_id = new.task_id
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
CREATE TRIGGER triage_inbox_unsee BEFORE UPDATE ON task_triage BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, -1 * out_n, -1 * seen_n
    FROM inbox_contributions WHERE actor_kind = old.actor_kind AND actor_ref = old.actor_ref AND
        task_id = old.task_id
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
CREATE TRIGGER triage_inbox_see AFTER UPDATE ON task_triage BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, 1 * out_n, 1 * seen_n
    FROM inbox_contributions WHERE actor_kind = new.actor_kind AND actor_ref = new.actor_ref AND
        task_id = new.task_id
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
CREATE TRIGGER triage_inbox_delete BEFORE DELETE ON task_triage BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, -1 * out_n, -1 * seen_n
    FROM inbox_contributions WHERE actor_kind = old.actor_kind AND actor_ref = old.actor_ref AND
        task_id = old.task_id
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
-- A task's change: one AFTER trigger with the old and the new contribution
-- written out (a BEFORE twin would double what a claim pays for its guard).
-- A deleted task's (BEFORE: its cascade's triggers no longer find it).
CREATE TRIGGER tasks_inbox_update AFTER UPDATE OF draft, approval_state, status, awaiting_input,
    owner_kind, owner_ref, last_activity_at ON tasks
    WHEN (old.draft IS NOT new.draft OR old.approval_state IS NOT new.approval_state OR
        old.status IS NOT new.status OR old.awaiting_input IS NOT new.awaiting_input OR
        old.owner_kind IS NOT new.owner_kind OR old.owner_ref IS NOT new.owner_ref OR
        old.last_activity_at IS NOT new.last_activity_at)
    AND EXISTS (SELECT 1 FROM task_triage tr WHERE tr.task_id = new.id) BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, -1 * out_n, -1 * seen_n FROM (
        SELECT tr.actor_kind AS actor_kind, tr.actor_ref AS actor_ref, tr.task_id AS task_id,
            CASE CASE WHEN old.draft = 1 THEN NULL WHEN old.approval_state = 'pending' THEN
                'approvals' WHEN old.status = 'failed' THEN 'failed_runs' WHEN old.status =
                'blocked' THEN 'blocked' WHEN old.status != 'pending' AND old.status != 'ready'
                AND old.status != 'in_progress' THEN NULL WHEN old.awaiting_input = 1 THEN
                'blocked' ELSE 'open' END WHEN 'open' THEN CASE WHEN old.owner_kind =
                tr.actor_kind AND old.owner_ref IS nullif(tr.actor_ref, '') THEN 'my_work' END
                ELSE CASE WHEN old.draft = 1 THEN NULL WHEN old.approval_state = 'pending' THEN
                'approvals' WHEN old.status = 'failed' THEN 'failed_runs' WHEN old.status =
                'blocked' THEN 'blocked' WHEN old.status != 'pending' AND old.status != 'ready'
                AND old.status != 'in_progress' THEN NULL WHEN old.awaiting_input = 1 THEN
                'blocked' ELSE 'open' END END AS lane,
            NOT coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND old.last_activity_at <=
                tr.last_seen_activity_at), 0) AS out_n,
            coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND old.last_activity_at <=
                tr.last_seen_activity_at), 0) AND NOT (old.last_activity_at >
                coalesce(tr.last_seen_activity_at, -1)) AS seen_n
        FROM task_triage tr WHERE tr.task_id = new.id
        UNION ALL
        SELECT tr.actor_kind, tr.actor_ref, tr.task_id, 'archived', 1, NOT (old.last_activity_at
            > coalesce(tr.last_seen_activity_at, -1))
        FROM task_triage tr WHERE tr.task_id = new.id AND tr.archived = 1
    ) WHERE lane IS NOT NULL
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, 1 * out_n, 1 * seen_n FROM (
        SELECT tr.actor_kind AS actor_kind, tr.actor_ref AS actor_ref, tr.task_id AS task_id,
            CASE CASE WHEN new.draft = 1 THEN NULL WHEN new.approval_state = 'pending' THEN
                'approvals' WHEN new.status = 'failed' THEN 'failed_runs' WHEN new.status =
                'blocked' THEN 'blocked' WHEN new.status != 'pending' AND new.status != 'ready'
                AND new.status != 'in_progress' THEN NULL WHEN new.awaiting_input = 1 THEN
                'blocked' ELSE 'open' END WHEN 'open' THEN CASE WHEN new.owner_kind =
                tr.actor_kind AND new.owner_ref IS nullif(tr.actor_ref, '') THEN 'my_work' END
                ELSE CASE WHEN new.draft = 1 THEN NULL WHEN new.approval_state = 'pending' THEN
                'approvals' WHEN new.status = 'failed' THEN 'failed_runs' WHEN new.status =
                'blocked' THEN 'blocked' WHEN new.status != 'pending' AND new.status != 'ready'
                AND new.status != 'in_progress' THEN NULL WHEN new.awaiting_input = 1 THEN
                'blocked' ELSE 'open' END END AS lane,
            NOT coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND new.last_activity_at <=
                tr.last_seen_activity_at), 0) AS out_n,
            coalesce(tr.archived = 0 AND NOT (tr.dismissed = 1 AND new.last_activity_at <=
                tr.last_seen_activity_at), 0) AND NOT (new.last_activity_at >
                coalesce(tr.last_seen_activity_at, -1)) AS seen_n
        FROM task_triage tr WHERE tr.task_id = new.id
        UNION ALL
        SELECT tr.actor_kind, tr.actor_ref, tr.task_id, 'archived', 1, NOT (new.last_activity_at
            > coalesce(tr.last_seen_activity_at, -1))
        FROM task_triage tr WHERE tr.task_id = new.id AND tr.archived = 1
    ) WHERE lane IS NOT NULL
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
CREATE TRIGGER tasks_inbox_delete BEFORE DELETE ON tasks
    WHEN EXISTS (SELECT 1 FROM task_triage tr WHERE tr.task_id = old.id) BEGIN
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, -1 * out_n, -1 * seen_n
    FROM inbox_contributions WHERE task_id = old.id
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
END;
INSERT INTO inbox_triaged (actor_kind, actor_ref, lane, out_n, seen_n)
    SELECT actor_kind, actor_ref, lane, sum(out_n), sum(seen_n) FROM inbox_contributions
    WHERE 1 GROUP BY actor_kind, actor_ref, lane
    ON CONFLICT (actor_kind, actor_ref, lane) DO UPDATE
    SET out_n = out_n + excluded.out_n, seen_n = seen_n + excluded.seen_n;
-- The shared lanes' sizes (tally 'lane'): a task enters or leaves them only
-- by a cold change (failing, blocking, an approval, a question), so the
-- plain guards below keep a claim and a completion out of these triggers.
CREATE TRIGGER tasks_lane_insert AFTER INSERT ON tasks WHEN (new.status = 'failed' OR new.status
    = 'blocked' OR new.approval_state = 'pending' OR new.awaiting_input = 1) BEGIN
INSERT INTO status_counts (tally, status, n)
    SELECT 'lane', lane, 1 FROM (SELECT CASE WHEN new.draft = 1 THEN NULL WHEN
        new.approval_state = 'pending' THEN 'approvals' WHEN new.status = 'failed' THEN
        'failed_runs' WHEN new.status = 'blocked' THEN 'blocked' WHEN new.status != 'pending'
        AND new.status != 'ready' AND new.status != 'in_progress' THEN NULL WHEN
        new.awaiting_input = 1 THEN 'blocked' ELSE 'open' END AS lane)
    WHERE lane IS NOT NULL AND lane != 'open'
    ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER tasks_lane_delete AFTER DELETE ON tasks WHEN (old.status = 'failed' OR old.status
    = 'blocked' OR old.approval_state = 'pending' OR old.awaiting_input = 1) BEGIN
INSERT INTO status_counts (tally, status, n)
    SELECT 'lane', lane, -1 FROM (SELECT CASE WHEN old.draft = 1 THEN NULL WHEN
        old.approval_state = 'pending' THEN 'approvals' WHEN old.status = 'failed' THEN
        'failed_runs' WHEN old.status = 'blocked' THEN 'blocked' WHEN old.status != 'pending'
        AND old.status != 'ready' AND old.status != 'in_progress' THEN NULL WHEN
        old.awaiting_input = 1 THEN 'blocked' ELSE 'open' END AS lane)
    WHERE lane IS NOT NULL AND lane != 'open'
    ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n;
END;
CREATE TRIGGER tasks_lane_update AFTER UPDATE OF draft, approval_state, status, awaiting_input
    ON tasks WHEN (old.status = 'failed' OR old.status = 'blocked' OR old.approval_state =
        'pending' OR old.awaiting_input = 1) OR (new.status = 'failed' OR new.status = 'blocked'
        OR new.approval_state = 'pending' OR new.awaiting_input = 1) BEGIN
INSERT INTO status_counts (tally, status, n)
    SELECT 'lane', lane, -1 FROM (SELECT CASE WHEN old.draft = 1 THEN NULL WHEN
        old.approval_state = 'pending' THEN 'approvals' WHEN old.status = 'failed' THEN
        'failed_runs' WHEN old.status = 'blocked' THEN 'blocked' WHEN old.status != 'pending'
        AND old.status != 'ready' AND old.status != 'in_progress' THEN NULL WHEN
        old.awaiting_input = 1 THEN 'blocked' ELSE 'open' END AS lane)
    WHERE lane IS NOT NULL AND lane != 'open'
    ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n;
INSERT INTO status_counts (tally, status, n)
    SELECT 'lane', lane, 1 FROM (SELECT CASE WHEN new.draft = 1 THEN NULL WHEN
        new.approval_state = 'pending' THEN 'approvals' WHEN new.status = 'failed' THEN
        'failed_runs' WHEN new.status = 'blocked' THEN 'blocked' WHEN new.status != 'pending'
        AND new.status != 'ready' AND new.status != 'in_progress' THEN NULL WHEN
        new.awaiting_input = 1 THEN 'blocked' ELSE 'open' END AS lane)
    WHERE lane IS NOT NULL AND lane != 'open'
    ON CONFLICT (tally, status) DO UPDATE SET n = n + excluded.n;
END;
INSERT INTO status_counts (tally, status, n)
    SELECT 'lane', lane, count(*) FROM (SELECT CASE WHEN draft = 1 THEN NULL WHEN approval_state
        = 'pending' THEN 'approvals' WHEN status = 'failed' THEN 'failed_runs' WHEN status =
        'blocked' THEN 'blocked' WHEN status != 'pending' AND status != 'ready' AND status !=
        'in_progress' THEN NULL WHEN awaiting_input = 1 THEN 'blocked' ELSE 'open' END AS lane
        FROM tasks WHERE (status = 'failed' OR status = 'blocked' OR approval_state = 'pending'
        OR awaiting_input = 1))
    WHERE lane IS NOT NULL AND lane != 'open' GROUP BY lane;
-- Plain comparisons in both predicates: a claim or a completion updates an
-- open task, and evaluating the lane expression there (as an index key or
-- a predicate) cost the store ~10% per cycle.
CREATE INDEX tasks_inbox ON tasks (CASE WHEN draft = 1 THEN NULL WHEN approval_state = 'pending'
    THEN 'approvals' WHEN status = 'failed' THEN 'failed_runs' WHEN status = 'blocked' THEN
    'blocked' WHEN status != 'pending' AND status != 'ready' AND status != 'in_progress' THEN NULL
    WHEN awaiting_input = 1 THEN 'blocked' ELSE 'open' END, last_activity_at, id)
    WHERE status = 'failed' OR status = 'blocked' OR approval_state = 'pending'
    OR awaiting_input = 1;
-- In-progress tasks are left out: a claim only deletes an entry, and an
-- agent's activity (each event touches its task) moves none.
CREATE INDEX tasks_inbox_open ON tasks (owner_kind, owner_ref, last_activity_at, id)
    WHERE (status = 'pending' OR status = 'ready') AND draft != 1
    AND approval_state != 'pending' AND awaiting_input != 1;
"""

MIGRATIONS: list[str] = [_M1, _M2, _M3, _M4, _M5, _M6, _M7, _M8, _M9]
LATEST = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, target: int = LATEST) -> int:
    """Apply pending migrations up to ``target``; return the resulting version.

    Raises ``RuntimeError`` when the database is newer than this program, so
    an old daemon never writes to a schema it does not understand.
    """
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    if current > LATEST:
        raise RuntimeError(
            f"database schema version {current} is newer than this aghd supports ({LATEST}); "
            "upgrade agh before opening this database"
        )
    for version in range(current + 1, target + 1):
        script = MIGRATIONS[version - 1]
        # executescript commits first, so wrap the whole migration ourselves:
        # either every statement and the version bump land, or none.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _split(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(max(current, target))


def _split(script: str) -> list[str]:
    """Split a migration into statements (sqlite3.complete_statement aware)."""
    statements: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if not buf and (not line.strip() or line.lstrip().startswith("--")):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    if buf.strip():
        statements.append(buf.strip())
    return statements
