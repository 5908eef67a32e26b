"""``workflows.compose``: params and result (the format is in agh-protocol(7))."""

from __future__ import annotations

from typing import Annotated, Any

from msgspec import Meta

from agh.protocol.base import NonEmpty, Params, Shape
from agh.protocol.shapes import Task, Workflow, WorkflowPlan


class WorkflowsComposeParams(Params, kw_only=True):
    yaml: Annotated[str, Meta(min_length=1, max_length=1_000_000)]
    vars: dict[str, Any] = {}
    dry_run: bool = False
    # A workflow (wf_… id, or its root task's id or identifier) to give this
    # file as its next version; steps that have run keep their tasks and runs.
    update: NonEmpty | None = None
    # The workspace (path, id or key) of a new workflow's tasks.
    workspace: str | None = None
    # agh: start the workflow right away (same as tasks.start on its root).
    start: bool = False


class ComposeResult(Shape, kw_only=True):
    """``workflows.compose``: the plan always; workflow and task (its root)
    unless ``dry_run``; run set never (steps get runs when it starts)."""

    plan: WorkflowPlan
    workflow: Workflow | None = None
    task: Task | None = None
    # With ``update`` (a dry run too): full ids of the steps that have run and
    # keep their tasks, status, runs, results, logs and events; of those among
    # them whose definition changed; and of the steps left out of the file,
    # which never ran and whose tasks are deleted.
    kept_steps: list[str] = []
    changed_steps: list[str] = []
    removed_steps: list[str] = []
