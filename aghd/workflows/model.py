"""The workflow model: what a validated workflow definition is.

Owns the data classes ``Workflow``, ``Step`` and ``Condition`` that
``aghd.workflows.validate`` builds and the store turns into rows. Must not:
read YAML, check anything, or import the store; it imports no yaml, so
anything may depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Condition:
    """Run the step only if ``steps.<step>.output.<path>`` satisfies ``op``."""

    field: str  # as written (after variables)
    step: str  # full id of the step whose output is read
    path: tuple[str, ...]  # empty: the whole output
    op: str  # "equals" | "not_equals" | "exists"
    value: Any
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Step:
    id: str  # full id: "<branch id>.<inner id>" inside a branch
    title: str
    description: str | None
    action: str  # "agent" | "tool_execution" | "sub_task" | "branch"
    tool: str | None
    inputs: dict[str, Any]
    # Full ids of the non-branch steps this one waits for: dependencies on a
    # branch are expanded, and an inner step with no dependency inside its
    # branch also waits for what the branch waits for.
    depends_on: tuple[str, ...]
    # Its own condition, then those of its enclosing branches, innermost first.
    conditions: tuple[Condition, ...]
    parent: str | None
    priority: str | None
    network_channel: str | None
    approval: str  # "none" | "manual"
    max_attempts: int | None
    metadata: Any
    task_ref: str | None  # sub_task: the task it copies its definition from
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class Workflow:
    name: str
    description: str | None
    # Every step, branches and their inner steps included, in an order where
    # each step follows its dependencies and a branch precedes its steps.
    steps: tuple[Step, ...]
