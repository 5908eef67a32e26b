"""Positioned values to a validated ``Workflow``: the checks.

Owns what a workflow definition may say: the keys and their types, step
ids, actions, dependencies (resolved, expanded through branches, no
cycles) and conditions, each problem reported at its line and column with
what to do about it. ``parse`` is the entry point: text in (through the
reader), ``Workflow`` out. Must stay pure: no SQL, no sockets, no daemon
state, so the compose handler can run it for a dry run and for a real
compose alike, and tests can run it without a daemon.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

from aghd.workflows.model import Condition, Step, Workflow
from aghd.workflows.reader import Node, did_you_mean, fail, kind, listing, plain, read

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

ACTIONS = ("agent", "tool_execution", "sub_task")
PRIORITIES = ("low", "medium", "high", "urgent")
APPROVALS = ("none", "manual")
CONDITION_OPS = ("equals", "not_equals", "exists")

_TOP_KEYS = ("name", "description", "steps")
_STEP_KEYS = (
    "id",
    "title",
    "name",
    "description",
    "action",
    "tool",
    "inputs",
    "depends_on",
    "condition",
    "priority",
    "network_channel",
    "approval",
    "max_attempts",
    "metadata",
    "task_definition_id",
    "task",
    "steps",
)
_CONDITION_KEYS = ("field", *CONDITION_OPS)

# No dots in an id, so "branch.inner" full ids are never ambiguous.
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_TITLE_MAX = 1000  # the wire's Title limit: a step becomes a task
_CHANNEL_MAX = 4096  # the wire's NonEmpty limit


def parse(text: str, variables: Mapping[str, Any]) -> Workflow:
    """Parse, validate and resolve a workflow definition.

    ``{{ var.NAME }}`` placeholders in string values are filled from
    ``variables``. Raises ``InvalidParams`` (details: field, line, column,
    hint) for YAML syntax errors, wrong types, missing or unknown keys,
    duplicate ids, unknown or self dependencies, cycles, unknown variables
    and bad conditions.
    """
    return _Builder().build(read(text, variables))


@dataclass(slots=True)
class _RawCondition:
    field: Node
    op: str
    value: Any
    line: int
    column: int


@dataclass(slots=True)
class _Draft:
    """A step as read, before dependencies are resolved."""

    id: str
    parent: str | None
    index: int  # position in the file (pre-order)
    node: Node
    title: str
    description: str | None
    action: str
    tool: str | None
    inputs: dict[str, Any]
    deps: list[Node]
    condition: _RawCondition | None
    priority: str | None
    network_channel: str | None
    approval: str
    max_attempts: int | None
    metadata: Any
    task_ref: str | None
    children: list[str]


def _check_keys(node: Node, allowed: tuple[str, ...], where: str) -> dict[str, Node]:
    items: dict[str, Node] = node.value
    assert node.keys is not None
    for key in items:
        if key not in allowed:
            line, column = node.keys[key]
            fail(
                line,
                column,
                f"unknown key '{key}' in {where}",
                f"allowed keys: {', '.join(allowed)}" + did_you_mean(key, allowed),
            )
    return items


def _optional(items: dict[str, Node], key: str) -> Node | None:
    """The node for ``key``; an explicit null counts as not written."""
    node = items.get(key)
    return None if node is None or node.value is None else node


def _string(
    node: Node, what: str, max_length: int | None = None, *, allow_empty: bool = False
) -> str:
    if not isinstance(node.value, str):
        fail(
            node.line,
            node.column,
            f"{what} must be a string, not {kind(plain(node))}",
            "write a string",
        )
    if not allow_empty and not node.value.strip():
        fail(node.line, node.column, f"{what} is empty", "write a non-empty string")
    if max_length is not None and len(node.value) > max_length:
        fail(node.line, node.column, f"{what} is longer than {max_length} characters", "shorten it")
    return node.value


def _choice(node: Node, what: str, choices: tuple[str, ...]) -> str:
    allowed = ", ".join(choices)
    if not isinstance(node.value, str):
        fail(
            node.line,
            node.column,
            f"{what} must be one of {allowed}, not {kind(plain(node))}",
            f"use one of {allowed}",
        )
    if node.value not in choices:
        fail(
            node.line,
            node.column,
            f"{what} '{node.value}' is not one of {allowed}",
            f"use one of {allowed}" + did_you_mean(node.value, choices),
        )
    return node.value


class _Builder:
    def __init__(self) -> None:
        self.drafts: dict[str, _Draft] = {}

    def build(self, root: Node) -> Workflow:
        if not isinstance(root.value, dict):
            fail(
                root.line,
                root.column,
                f"the workflow must be a mapping, not {kind(plain(root))}",
                "write a mapping with name, description and steps",
            )
        items = _check_keys(root, _TOP_KEYS, "the workflow")
        if "name" not in items:
            fail(root.line, root.column, "the workflow has no name", "add a name: key")
        name = _string(items["name"], "the workflow name", _TITLE_MAX)
        description_node = _optional(items, "description")
        description = (
            _string(description_node, "the workflow description", allow_empty=True)
            if description_node
            else None
        )
        if "steps" not in items:
            fail(root.line, root.column, "the workflow has no steps", "add a steps: list")
        self.read_steps(items["steps"], None, "the workflow")

        resolved = {d.id: self.resolve_deps(d) for d in self.drafts.values()}
        effective = self.effective(resolved)
        order = self.order(effective)
        conditions = self.conditions(effective)
        steps = tuple(self.step(self.drafts[i], effective[i], conditions[i]) for i in order)
        return Workflow(name=name, description=description, steps=steps)

    # -- reading steps --

    def read_steps(self, node: Node, parent: _Draft | None, where: str) -> None:
        if not isinstance(node.value, list) or not node.value:
            fail(
                node.line,
                node.column,
                f"steps of {where} must be a non-empty list, not {kind(plain(node))}",
                "list the steps, each starting with '- id: ...'",
            )
        siblings: dict[str, Node] = {}
        for item in node.value:
            draft = self.read_step(item, parent, siblings)
            if parent is not None:
                parent.children.append(draft.id)

    def read_step(self, node: Node, parent: _Draft | None, siblings: dict[str, Node]) -> _Draft:
        where = f"a step of branch '{parent.id}'" if parent else "a step"
        if not isinstance(node.value, dict):
            fail(
                node.line,
                node.column,
                f"{where} must be a mapping, not {kind(plain(node))}",
                "write the step as '- id: ...' with its keys indented under it",
            )
        written_id = node.value.get("id")
        if written_id is not None and isinstance(written_id.value, str):
            # Name the step in key errors, even before its id is checked.
            prefix = f"{parent.id}." if parent else ""
            where = f"step '{prefix}{written_id.value}'"
        items = _check_keys(node, _STEP_KEYS, where)
        keys = node.keys or {}
        if "id" not in items:
            fail(node.line, node.column, f"{where} has no id", "add an id: key")
        id_node = items["id"]
        short = _string(id_node, "step id")
        if not _ID.fullmatch(short):
            fail(
                id_node.line,
                id_node.column,
                f"step id '{short}' is not valid",
                "use letters, digits, '_' and '-', starting with a letter or digit",
            )
        if short in siblings:
            first = siblings[short]
            fail(
                id_node.line,
                id_node.column,
                f"duplicate step id '{short}' (first at line {first.line}, column {first.column})",
                "give each step a unique id",
            )
        siblings[short] = id_node
        full = f"{parent.id}.{short}" if parent else short
        label = f"step '{full}'"

        if "title" in items and "name" in items:
            line, column = keys["name"]
            fail(line, column, f"{label} has both title and name", "keep one of them")
        title_node = _optional(items, "title") or _optional(items, "name")
        title = _string(title_node, f"{label} title", _TITLE_MAX) if title_node else full
        description_node = _optional(items, "description")
        description = (
            _string(description_node, f"{label} description", allow_empty=True)
            if description_node
            else None
        )

        action_node = _optional(items, "action")
        has_steps = "steps" in items
        if action_node is None:
            action = "branch" if has_steps else "agent"
        else:
            action = _choice(action_node, f"{label} action", (*ACTIONS, "branch"))
        if action == "branch" and not has_steps:
            assert action_node is not None
            fail(
                action_node.line,
                action_node.column,
                f"{label} is a branch but has no steps",
                "add its steps: list, or use another action",
            )
        if action != "branch" and has_steps:
            line, column = keys["steps"]
            fail(
                line,
                column,
                f"{label} has inline steps but action '{action}'",
                "remove the action (a step with steps is a branch) or move the steps out",
            )

        def forbid(key: str, why: str) -> None:
            if _optional(items, key) is not None:
                line, column = keys[key]
                fail(line, column, f"{label} cannot have {key}: {why}", f"remove {key}")

        tool: str | None = None
        if action == "tool_execution":
            if _optional(items, "tool") is None:
                fail(
                    node.line,
                    node.column,
                    f"{label} (tool_execution) has no tool",
                    "add a tool: key",
                )
            tool = _string(items["tool"], f"{label} tool")
        else:
            forbid("tool", "only tool_execution steps run a tool")

        task_ref: str | None = None
        if "task_definition_id" in items and "task" in items:
            line, column = keys["task"]
            fail(line, column, f"{label} has both task_definition_id and task", "keep one of them")
        ref_key = "task_definition_id" if "task_definition_id" in items else "task"
        if action == "sub_task":
            if _optional(items, ref_key) is None:
                fail(
                    node.line,
                    node.column,
                    f"{label} (sub_task) names no task",
                    "add task_definition_id: <task id or identifier>",
                )
            task_ref = _string(items[ref_key], f"{label} {ref_key}")
        else:
            forbid(ref_key, "only sub_task steps reference another task")

        inputs: dict[str, Any] = {}
        if action == "branch":
            forbid("inputs", "a branch has no inputs of its own; put them on its steps")
        elif (inputs_node := _optional(items, "inputs")) is not None:
            if not isinstance(inputs_node.value, dict):
                fail(
                    inputs_node.line,
                    inputs_node.column,
                    f"{label} inputs must be a mapping, not {kind(plain(inputs_node))}",
                    "write inputs as key: value pairs",
                )
            inputs = plain(inputs_node)

        deps: list[Node] = []
        if (deps_node := _optional(items, "depends_on")) is not None:
            entries = deps_node.value if isinstance(deps_node.value, list) else [deps_node]
            for entry in entries:
                if not isinstance(entry.value, str):
                    fail(
                        entry.line,
                        entry.column,
                        f"{label} depends_on entries must be step ids, not {kind(plain(entry))}",
                        "write depends_on: [step-id, ...] and quote ids that look like numbers",
                    )
                deps.append(entry)

        condition_node = _optional(items, "condition")
        condition = self.read_condition(condition_node, label) if condition_node else None

        priority_node = _optional(items, "priority")
        priority = (
            _choice(priority_node, f"{label} priority", PRIORITIES) if priority_node else None
        )
        channel_node = _optional(items, "network_channel")
        channel = (
            _string(channel_node, f"{label} network_channel", _CHANNEL_MAX)
            if channel_node
            else None
        )
        approval_node = _optional(items, "approval")
        approval = (
            _choice(approval_node, f"{label} approval", APPROVALS) if approval_node else "none"
        )
        max_attempts: int | None = None
        if (attempts_node := _optional(items, "max_attempts")) is not None:
            value = attempts_node.value
            if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
                fail(
                    attempts_node.line,
                    attempts_node.column,
                    f"{label} max_attempts must be an integer from 1 to 1000, not {value!r}",
                    "write a whole number such as 3",
                )
            max_attempts = value
        metadata = plain(items["metadata"]) if "metadata" in items else None

        draft = _Draft(
            id=full,
            parent=parent.id if parent else None,
            index=len(self.drafts),
            node=node,
            title=title,
            description=description,
            action=action,
            tool=tool,
            inputs=inputs,
            deps=deps,
            condition=condition,
            priority=priority,
            network_channel=channel,
            approval=approval,
            max_attempts=max_attempts,
            metadata=metadata,
            task_ref=task_ref,
            children=[],
        )
        # Ids have no dots, so sibling uniqueness makes full ids unique too.
        self.drafts[full] = draft
        if action == "branch":
            self.read_steps(items["steps"], draft, f"branch '{full}'")
        return draft

    def read_condition(self, node: Node, label: str) -> _RawCondition:
        if not isinstance(node.value, dict):
            fail(
                node.line,
                node.column,
                f"{label} condition must be a mapping, not {kind(plain(node))}",
                "write condition: {field: steps.<id>.output.<path>, equals: <value>}",
            )
        items = _check_keys(node, _CONDITION_KEYS, f"{label} condition")
        if "field" not in items:
            fail(
                node.line,
                node.column,
                f"{label} condition has no field",
                "add field: steps.<step id>.output.<path>",
            )
        _string(items["field"], f"{label} condition field")
        ops = [op for op in CONDITION_OPS if op in items]
        if not ops:
            fail(
                node.line,
                node.column,
                f"{label} condition has no test",
                "add one of equals, not_equals, exists",
            )
        if len(ops) > 1:
            assert node.keys is not None
            line, column = node.keys[ops[1]]
            fail(line, column, f"{label} condition has both {ops[0]} and {ops[1]}", "keep one test")
        op = ops[0]
        value_node = items[op]
        value = plain(value_node)
        if op == "exists" and not isinstance(value, bool):
            fail(
                value_node.line,
                value_node.column,
                f"{label} condition exists must be true or false, not {kind(value)}",
                "write exists: true (or false)",
            )
        return _RawCondition(items["field"], op, value, node.line, node.column)

    # -- resolving dependencies --

    def lookup(self, ref: str, scope: str | None) -> str | None:
        """Resolve a step reference written inside branch ``scope``.

        Like lexical scoping: the branch's own steps first, then those of each
        enclosing branch, then the top level (where dotted full ids also work).
        """
        while True:
            candidate = f"{scope}.{ref}" if scope else ref
            if candidate in self.drafts:
                return candidate
            if scope is None:
                return None
            scope = self.drafts[scope].parent

    def known(self, exclude: str) -> str:
        return listing(i for i in self.drafts if i != exclude)

    def resolve_deps(self, draft: _Draft) -> list[str]:
        resolved: list[str] = []
        for entry in draft.deps:
            ref = entry.value
            target = self.lookup(ref, draft.parent)
            if target is None:
                fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on unknown step '{ref}'",
                    f"known steps: {self.known(draft.id)}"
                    + did_you_mean(ref, (i for i in self.drafts if i != draft.id)),
                )
            if target == draft.id:
                fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on itself",
                    f"remove '{ref}' from its depends_on",
                )
            if draft.id.startswith(target + "."):
                fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on its own branch '{target}'",
                    "remove it: a branch's steps already wait for what the branch waits for",
                )
            if target.startswith(draft.id + "."):
                fail(
                    entry.line,
                    entry.column,
                    f"branch '{draft.id}' depends on its own step '{target}'",
                    "remove it, or move that step out of the branch",
                )
            if target not in resolved:
                resolved.append(target)
        return resolved

    def leaves(self, step_id: str) -> list[str]:
        """The non-branch steps a dependency on ``step_id`` waits for."""
        draft = self.drafts[step_id]
        if draft.action != "branch":
            return [step_id]
        return [leaf for child in draft.children for leaf in self.leaves(child)]

    def effective(self, resolved: dict[str, list[str]]) -> dict[str, list[str]]:
        effective: dict[str, list[str]] = {}
        for draft in self.drafts.values():  # file order: a branch before its steps
            waits: set[str] = set()
            for target in resolved[draft.id]:
                waits.update(self.leaves(target))
            parent = draft.parent
            # A step that waits for nothing inside its branch starts the branch,
            # so it waits for whatever the branch waits for.
            if parent and not any(t.startswith(parent + ".") for t in resolved[draft.id]):
                waits.update(effective[parent])
            effective[draft.id] = sorted(waits, key=lambda i: self.drafts[i].index)
        return effective

    def order(self, effective: dict[str, list[str]]) -> list[str]:
        """Steps in dependency order (file order where free); fails on a cycle."""
        leaf_ids = [i for i, d in self.drafts.items() if d.action != "branch"]
        self.fail_on_cycle(leaf_ids, lambda i: effective[i])

        def waits_for(step_id: str) -> list[str]:
            parent = self.drafts[step_id].parent
            return effective[step_id] + ([parent] if parent else [])

        pending = {i: len(waits_for(i)) for i in self.drafts}
        followers: dict[str, list[str]] = {i: [] for i in self.drafts}
        for step_id in self.drafts:
            for target in waits_for(step_id):
                followers[target].append(step_id)
        ready = [(d.index, i) for i, d in self.drafts.items() if pending[i] == 0]
        heapq.heapify(ready)
        order: list[str] = []
        while ready:
            _, step_id = heapq.heappop(ready)
            order.append(step_id)
            for follower in followers[step_id]:
                pending[follower] -= 1
                if pending[follower] == 0:
                    heapq.heappush(ready, (self.drafts[follower].index, follower))
        if len(order) != len(self.drafts):
            # Not expected once the step graph is acyclic; report it all the same.
            self.fail_on_cycle(list(self.drafts), waits_for)
        return order

    def fail_on_cycle(self, nodes: list[str], waits_for: Callable[[str], list[str]]) -> None:
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        for start in nodes:
            if start in state:
                continue
            path = [start]
            state[start] = 1
            stack = [iter(waits_for(start))]
            while stack:
                target = next(stack[-1], None)
                if target is None:
                    state[path.pop()] = 2
                    stack.pop()
                elif state.get(target) == 1:
                    self.cycle_error(path[path.index(target) :])
                elif target not in state:
                    state[target] = 1
                    path.append(target)
                    stack.append(iter(waits_for(target)))

    def cycle_error(self, cycle: list[str]) -> NoReturn:
        # Start from the step written first, so the message is stable.
        first = min(range(len(cycle)), key=lambda k: self.drafts[cycle[k]].index)
        cycle = cycle[first:] + cycle[:first]
        node = self.drafts[cycle[0]].node
        fail(
            node.line,
            node.column,
            f"dependency cycle: {' -> '.join([*cycle, cycle[0]])} (each step waits for the next)",
            "remove one of these dependencies",
        )

    # -- conditions --

    def conditions(self, effective: dict[str, list[str]]) -> dict[str, tuple[Condition, ...]]:
        result: dict[str, tuple[Condition, ...]] = {}
        for draft in self.drafts.values():  # file order: a branch before its steps
            own = (self.condition(draft, effective),) if draft.condition else ()
            result[draft.id] = own + (result[draft.parent] if draft.parent else ())
        return result

    def condition(self, draft: _Draft, effective: dict[str, list[str]]) -> Condition:
        raw = draft.condition
        assert raw is not None
        node = raw.field
        field: str = node.value
        shape = "write it as steps.<step id>.output or steps.<step id>.output.<path>"
        parts = field.split(".")
        outputs = [k for k in range(2, len(parts)) if parts[k] == "output"]
        if parts[0] != "steps" or not outputs:
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition field '{field}' is malformed",
                shape,
            )
        if any(not part for part in parts):
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition field '{field}' has an empty part",
                shape,
            )
        # A step may itself be called "output": try the longest step id first.
        target: str | None = None
        path: tuple[str, ...] = ()
        for k in reversed(outputs):
            target = self.lookup(".".join(parts[1:k]), draft.parent)
            if target is not None:
                path = tuple(parts[k + 1 :])
                break
        if target is None:
            ref = ".".join(parts[1 : outputs[0]])
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads unknown step '{ref}'",
                f"known steps: {self.known(draft.id)}"
                + did_you_mean(ref, (i for i in self.drafts if i != draft.id)),
            )
        if self.drafts[target].action == "branch":
            example = self.drafts[target].children[0]
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads branch '{target}', which has no output",
                f"read one of its steps instead, e.g. steps.{example}.output",
            )
        if target == draft.id:
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads its own output",
                "a condition decides whether the step runs; test an earlier step's output",
            )
        if target.startswith(draft.id + "."):
            fail(
                node.line,
                node.column,
                f"branch '{draft.id}' condition reads its own step '{target}'",
                "put the condition on the steps that follow it instead",
            )
        if not self.waits_for(draft.id, target, effective):
            same_scope = self.drafts[target].parent == draft.parent
            written = target.rsplit(".", 1)[-1] if same_scope else target
            fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads step '{target}', "
                "which may not have finished when the condition is checked",
                f"add '{written}' to the depends_on of '{draft.id}'",
            )
        return Condition(
            field=field,
            step=target,
            path=path,
            op=raw.op,
            value=raw.value,
            line=raw.line,
            column=raw.column,
        )

    @staticmethod
    def waits_for(step_id: str, target: str, effective: dict[str, list[str]]) -> bool:
        seen: set[str] = set()
        todo = list(effective[step_id])
        while todo:
            current = todo.pop()
            if current == target:
                return True
            if current not in seen:
                seen.add(current)
                todo.extend(effective[current])
        return False

    def step(self, d: _Draft, depends_on: list[str], conditions: tuple[Condition, ...]) -> Step:
        return Step(
            id=d.id,
            title=d.title,
            description=d.description,
            action=d.action,
            tool=d.tool,
            inputs=d.inputs,
            depends_on=tuple(depends_on),
            conditions=conditions,
            parent=d.parent,
            priority=d.priority,
            network_channel=d.network_channel,
            approval=d.approval,
            max_attempts=d.max_attempts,
            metadata=d.metadata,
            task_ref=d.task_ref,
            line=d.node.line,
            column=d.node.column,
        )
