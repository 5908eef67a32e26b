"""A validated workflow's execution plan: what ``workflows.compose``
returns (also for a dry run).

Owns grouping the steps into topological levels and the ``WorkflowPlan``
wire shape. Must not: read or check YAML (a ``Workflow`` is valid already).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from agh.protocol import PlanLevel, PlanStep, StepCondition, WorkflowPlan

if TYPE_CHECKING:
    from aghd.workflows.model import Workflow


def to_plan(wf: Workflow) -> WorkflowPlan:
    """The execution plan of a workflow returned by ``parse``.

    Non-branch steps are grouped into topological levels (0 = no
    dependencies); steps of one level may run in parallel. Raises nothing for
    a ``Workflow`` that came from ``parse``.
    """
    level_of: dict[str, int] = {}
    for step in wf.steps:  # topological order: dependencies come first
        if step.action != "branch":
            level_of[step.id] = 1 + max((level_of[d] for d in step.depends_on), default=-1)
    # File order within a level; a stable sort keeps ties (steps that came from
    # one variable share its position) in dependency order.
    by_position = sorted(wf.steps, key=lambda s: (s.line, s.column))
    levels: list[PlanLevel] = []
    for level in range(max(level_of.values(), default=-1) + 1):
        ids = [s.id for s in by_position if level_of.get(s.id) == level]
        levels.append(PlanLevel(level=level, steps=ids, parallel=len(ids) > 1))
    steps = [
        PlanStep(
            id=s.id,
            title=s.title,
            description=s.description,
            action=cast("Any", s.action),
            tool=s.tool,
            inputs=s.inputs,
            depends_on=list(s.depends_on),
            conditions=[
                StepCondition(field=c.field, op=cast("Any", c.op), value=c.value)
                for c in s.conditions
            ],
            parent=s.parent,
            level=level_of.get(s.id),
            priority=cast("Any", s.priority),
            network_channel=s.network_channel,
            approval=cast("Any", s.approval),
            max_attempts=s.max_attempts,
            metadata=s.metadata,
            task_ref=s.task_ref,
            line=s.line,
        )
        for s in wf.steps
    ]
    return WorkflowPlan(name=wf.name, description=wf.description, levels=levels, steps=steps)
