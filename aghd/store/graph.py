"""The blocking rule: what keeps a task from running now.

Owns: ``blocking`` (a task may get a queued run only while nothing blocks
it: not a draft, approved or needing no approval, every dependency
completed), the evaluation of a workflow step's conditions on earlier
steps' results, and the search for the cycle a new dependency would close.
Must not: write anything, or act on its answers (``progress`` queues,
blocks and skips; ``tasks`` refuses a cycle): reads only, below both.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING, Any

from aghd.store.db import Tx, from_json
from aghd.store.models import Blocking
from aghd.store.rows import dependencies

if TYPE_CHECKING:
    import sqlite3

_NAMES_SHOWN = 5


def _names(identifiers: list[str]) -> str:
    shown = ", ".join(identifiers[:_NAMES_SHOWN])
    more = len(identifiers) - _NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def blocking(tx: Tx, task: sqlite3.Row) -> Blocking:
    """What keeps ``task`` from running now, from its approval and dependencies."""
    reasons: list[str] = []
    if task["approval_state"] == "pending":
        reasons.append("awaiting approval")
    deps = dependencies(tx, task["id"])
    skipped = [d["dep_identifier"] for d in deps if d["dep_skipped"]]
    if skipped:
        return Blocking(f"dependency {_names(skipped)} was skipped", skip=True)
    for status in ("failed", "canceled"):
        bad = [d["dep_identifier"] for d in deps if d["dep_status"] == status]
        if bad:
            noun = "dependency" if len(bad) == 1 else "dependencies"
            reasons.append(
                f"{noun} {_names(bad)} {status}; retry it (tasks.runs.enqueue) "
                "or remove the dependency"
            )
    waiting = [
        d["dep_identifier"]
        for d in deps
        if d["dep_status"] not in ("completed", "failed", "canceled")
    ]
    if waiting:
        reasons.append(f"waiting on {_names(waiting)}")
    return Blocking("; ".join(reasons) or None)


# -- conditions (workflow steps) ------------------------------------------------


def _lookup(value: Any, path: list[str]) -> tuple[bool, Any]:
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif (
            isinstance(value, list)
            and part.lstrip("-").isdigit()
            and -len(value) <= int(part) < len(value)
        ):
            value = value[int(part)]
        else:
            return False, None
    return True, value


def conditions_hold(tx: Tx, task: sqlite3.Row) -> bool:
    """Evaluate a workflow step's conditions against the ``result`` of the
    referenced steps' latest completed runs (``steps.test.output.passed``)."""
    spec = from_json(task["step_spec"]) or {}
    for cond in spec.get("conditions", []):
        result = tx.one(
            "SELECT r.result FROM tasks t JOIN runs r ON r.task_id = t.id"
            " WHERE t.workflow_id = ? AND t.step_id = ? AND r.status = 'completed'"
            " ORDER BY r.id DESC LIMIT 1",
            (task["workflow_id"], cond["step"]),
        )
        found, value = _lookup(from_json(result[0]) if result else None, cond["path"])
        if cond["op"] == "exists":
            ok = found == bool(cond["value"])
        elif cond["op"] == "equals":
            ok = found and value == cond["value"]
        else:
            ok = not found or value != cond["value"]
        if not ok:
            return False
    return True


# -- cycles -------------------------------------------------------------------


def cycle_path(tx: Tx, start: str, goal: str) -> list[str] | None:
    """Task ids from ``start`` to ``goal`` following depends-on edges, or None."""
    came_from: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path = [node]
            while (prev := came_from[path[-1]]) is not None:
                path.append(prev)
            return list(reversed(path))
        for row in tx.all(
            "SELECT depends_on_task_id FROM task_dependencies WHERE task_id = ?", (node,)
        ):
            nxt = row[0]
            if nxt not in came_from:
                came_from[nxt] = node
                queue.append(nxt)
    return None
