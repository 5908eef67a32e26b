"""Workflow YAML: parse and validate a ``kt task compose``-style definition,
and build its execution plan.

This module owns the file format and nothing else: it takes YAML text and
variables, and returns a validated ``Workflow`` (every step's variables
resolved, dependencies expanded, conditions checked) and, from that, the
``WorkflowPlan`` wire shape. It must stay pure: no SQL, no sockets, no daemon
state, so the compose handler can run it for a dry run and for a real compose
alike, and tests can run it without a daemon.

Every problem raises ``InvalidParams`` whose message starts with the 1-based
line and column of the offending YAML node and ends with what to do about it.
That is why the YAML is composed into nodes (which carry positions) and
converted here, rather than loaded straight into Python values.
"""

from __future__ import annotations

import difflib
import heapq
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import yaml

from agh.errors import InvalidParams
from agh.protocol import PlanLevel, PlanStep, StepCondition, WorkflowPlan

# libyaml is much faster; the pure-Python loader gives the same nodes and marks.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_FIELD = "$.params.yaml"

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
_VAR_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_VAR_REF = re.compile(rf"\s*var\.({_VAR_NAME})\s*")
_WHOLE_VAR = re.compile(rf"\{{\{{\s*var\.({_VAR_NAME})\s*\}}\}}")

# Limits that keep a hostile or broken file from hanging the daemon: alias
# chains ("billion laughs") multiply values, and deep nesting recurses.
_MAX_VALUES = 200_000
_MAX_DEPTH = 100
_TITLE_MAX = 1000  # the wire's Title limit: a step becomes a task
_CHANNEL_MAX = 4096  # the wire's NonEmpty limit
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what the JSON encoder can carry
_KNOWN_LIST_MAX = 20

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = _T + "str", _T + "null", _T + "bool", _T + "int", _T + "float"
_TIMESTAMP, _MERGE, _VALUE = _T + "timestamp", _T + "merge", _T + "value"
_SEQ, _MAP = _T + "seq", _T + "map"


# -- the parsed workflow ----------------------------------------------------


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


# -- public API -------------------------------------------------------------


def parse(text: str, variables: Mapping[str, Any]) -> Workflow:
    """Parse, validate and resolve a workflow definition.

    ``{{ var.NAME }}`` placeholders in string values are filled from
    ``variables``. Raises ``InvalidParams`` (details: field, line, column,
    hint) for YAML syntax errors, wrong types, missing or unknown keys,
    duplicate ids, unknown or self dependencies, cycles, unknown variables
    and bad conditions.
    """
    root = _Reader(text, variables).document()
    return _Builder().build(root)


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


# -- errors -----------------------------------------------------------------


def _fail(line: int, column: int, problem: str, hint: str) -> NoReturn:
    raise InvalidParams(
        f"workflow YAML line {line}, column {column}: {problem}; {hint}",
        {"field": _FIELD, "line": line, "column": column, "hint": hint},
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null (empty)"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "(none)"
    shown = ", ".join(names[:_KNOWN_LIST_MAX])
    return shown + (", ..." if len(names) > _KNOWN_LIST_MAX else "")


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


# -- YAML nodes to positioned values ----------------------------------------


@dataclass(slots=True)
class _Node:
    """A value with the 1-based position it was written at.

    ``value`` is a scalar, ``list[_Node]`` or ``dict[str, _Node]``; a mapping
    also records where each key was written, for unknown-key errors.
    """

    value: Any
    line: int
    column: int
    keys: dict[str, tuple[int, int]] | None = None


def _plain(node: _Node) -> Any:
    """The JSON-like Python value of a node (positions dropped)."""
    if isinstance(node.value, list):
        return [_plain(item) for item in node.value]
    if isinstance(node.value, dict):
        return {key: _plain(item) for key, item in node.value.items()}
    return node.value


class _Reader:
    """Composes the YAML and converts its nodes, filling in variables."""

    def __init__(self, text: str, variables: Mapping[str, Any]) -> None:
        self.text = text
        self.variables = variables
        # A fresh constructor per parse: it caches every node it constructs.
        self.constructor = yaml.constructor.SafeConstructor()
        self.budget = _MAX_VALUES
        self.active: set[int] = set()  # mapping/sequence nodes being converted

    def document(self) -> _Node:
        try:
            node = yaml.compose(self.text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = ": ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            _fail(line, column, f"YAML syntax error: {problem}", "fix the YAML syntax there")
        except yaml.YAMLError as exc:
            # Reader errors (bad characters) carry an offset, not a mark.
            line, column = self._position(getattr(exc, "position", 0))
            problem = str(exc).splitlines()[0]
            _fail(line, column, f"unreadable YAML: {problem}", "remove the offending character")
        except RecursionError:
            _fail(1, 1, "YAML is nested too deeply", f"keep nesting under {_MAX_DEPTH} levels")
        if node is None:
            _fail(1, 1, "the workflow YAML is empty", "write a mapping with name and steps")
        return self.convert(node, 0)

    def _position(self, offset: int) -> tuple[int, int]:
        before = self.text[: max(0, offset)]
        return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1

    def convert(self, node: yaml.Node, depth: int) -> _Node:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        self.budget -= 1
        if self.budget < 0:
            _fail(
                line,
                column,
                f"the YAML expands to more than {_MAX_VALUES} values (through aliases?)",
                "use fewer or smaller aliases",
            )
        if depth > _MAX_DEPTH:
            _fail(
                line, column, "YAML is nested too deeply", f"keep nesting under {_MAX_DEPTH} levels"
            )
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            if isinstance(value, str):
                return self.interpolate(value, line, column)
            return _Node(value, line, column)
        if id(node) in self.active:
            _fail(line, column, "recursive YAML alias", "an anchor cannot contain its own alias")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self._bad_tag(node, line, column)
                return _Node([self.convert(item, depth + 1) for item in node.value], line, column)
            if node.tag != _MAP:
                self._bad_tag(node, line, column)
            return self.mapping(cast("yaml.MappingNode", node), depth, line, column)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, depth: int, line: int, column: int) -> _Node:
        own: dict[str, _Node] = {}
        keys: dict[str, tuple[int, int]] = {}
        merges: list[yaml.Node] = []
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag == _MERGE:
                # "<<: *anchor" (or a list of them): keys written here win.
                sources = (
                    value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                )
                merges.extend(sources)
                continue
            key = self.key(key_node)
            key_line, key_column = key_node.start_mark.line + 1, key_node.start_mark.column + 1
            if key in keys:
                first_line, first_column = keys[key]
                _fail(
                    key_line,
                    key_column,
                    f"duplicate key '{key}' (first at line {first_line}, column {first_column})",
                    "remove one of them",
                )
            keys[key] = (key_line, key_column)
            own[key] = self.convert(value_node, depth + 1)
        if not merges:
            return _Node(own, line, column, keys)
        merged: dict[str, _Node] = {}
        merged_keys: dict[str, tuple[int, int]] = {}
        for source in merges:
            value = self.convert(source, depth + 1)
            if not isinstance(value.value, dict) or value.keys is None:
                _fail(
                    value.line,
                    value.column,
                    f"'<<' merges {_kind(_plain(value))}",
                    "merge only mappings (<<: *anchor)",
                )
            for key, item in value.value.items():
                if key not in merged:  # the first source that has a key wins
                    merged[key] = item
                    merged_keys[key] = value.keys[key]
        for key, item in own.items():
            merged.pop(key, None)
            merged_keys.pop(key, None)
            merged[key] = item
            merged_keys[key] = keys[key]
        return _Node(merged, line, column, merged_keys)

    def key(self, node: yaml.Node) -> str:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if not isinstance(node, yaml.ScalarNode):
            hint = "use a plain string key"
            if isinstance(node, yaml.MappingNode):
                # An unquoted "{{ var.x }}" parses as a nested flow mapping.
                hint = 'if this is a placeholder, quote it: "{{ var.NAME }}"'
            _fail(line, column, "a mapping key must be a string", hint)
        value = self.scalar(node)
        if not isinstance(value, str):
            _fail(
                line,
                column,
                f"mapping key '{node.value}' is read as {_kind(value)}, not a string",
                f'quote it: "{node.value}"',
            )
        return value

    def scalar(self, node: yaml.ScalarNode) -> Any:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        tag = node.tag
        # Dates stay as written: the plan travels as JSON, which has no dates.
        if tag in (_STR, _TIMESTAMP, _MERGE, _VALUE):
            return node.value
        if tag not in (_NULL, _BOOL, _INT, _FLOAT):
            self._bad_tag(node, line, column)
        try:
            value = self.constructor.construct_object(node)
        except (yaml.YAMLError, ValueError):
            _fail(
                line,
                column,
                f"'{node.value}' is not a valid {_tag_name(tag)}",
                "fix the value or remove the tag",
            )
        if isinstance(value, float) and not math.isfinite(value):
            _fail(
                line,
                column,
                f"'{node.value}' is not a finite number",
                "quote it to make it a string",
            )
        if (
            isinstance(value, int)
            and not isinstance(value, bool)
            and not _INT_MIN <= value <= _INT_MAX
        ):
            _fail(
                line, column, f"integer {node.value} is too large", "quote it to make it a string"
            )
        return value

    def _bad_tag(self, node: yaml.Node, line: int, column: int) -> NoReturn:
        _fail(
            line,
            column,
            f"unsupported YAML tag {_tag_name(node.tag)}",
            "remove the tag: only strings, numbers, booleans, null, lists and mappings work",
        )

    def interpolate(self, text: str, line: int, column: int) -> _Node:
        if "{{" not in text:
            return _Node(text, line, column)
        whole = _WHOLE_VAR.fullmatch(text)
        if whole:
            # The whole value is one placeholder: keep the variable's type.
            # wrap() builds new containers, so steps never share a variable's.
            return self.wrap(self.variable(whole.group(1), text, line, column), line, column, 0)

        def substitute(match: re.Match[str]) -> str:
            ref = _VAR_REF.fullmatch(match.group(1))
            if ref is None:
                _fail(
                    line,
                    column,
                    f"unsupported placeholder '{match.group(0)}'",
                    "only {{ var.NAME }} is supported",
                )
            value = self.variable(ref.group(1), text, line, column)
            if isinstance(value, str):
                return value
            return json.dumps(value, ensure_ascii=False, default=str)

        return _Node(_PLACEHOLDER.sub(substitute, text), line, column)

    def variable(self, name: str, text: str, line: int, column: int) -> Any:
        if name not in self.variables:
            known = _listing(sorted(self.variables))
            _fail(
                line,
                column,
                f"unknown variable '{name}' in '{text}'",
                f"pass it with --var {name}=VALUE; known variables: {known}"
                + _did_you_mean(name, self.variables),
            )
        return self.variables[name]

    def wrap(self, value: Any, line: int, column: int, depth: int) -> _Node:
        """A variable's value as nodes, all at the placeholder's position."""
        if depth > _MAX_DEPTH:
            _fail(line, column, "variable value is nested too deeply", "flatten the variable")
        if isinstance(value, Mapping):
            items = {str(k): self.wrap(v, line, column, depth + 1) for k, v in value.items()}
            return _Node(items, line, column, dict.fromkeys(items, (line, column)))
        if isinstance(value, list | tuple):
            return _Node([self.wrap(v, line, column, depth + 1) for v in value], line, column)
        return _Node(value, line, column)


# -- nodes to a validated workflow -------------------------------------------


@dataclass(slots=True)
class _RawCondition:
    field: _Node
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
    node: _Node
    title: str
    description: str | None
    action: str
    tool: str | None
    inputs: dict[str, Any]
    deps: list[_Node]
    condition: _RawCondition | None
    priority: str | None
    network_channel: str | None
    approval: str
    max_attempts: int | None
    metadata: Any
    task_ref: str | None
    children: list[str]


def _check_keys(node: _Node, allowed: tuple[str, ...], where: str) -> dict[str, _Node]:
    items: dict[str, _Node] = node.value
    assert node.keys is not None
    for key in items:
        if key not in allowed:
            line, column = node.keys[key]
            _fail(
                line,
                column,
                f"unknown key '{key}' in {where}",
                f"allowed keys: {', '.join(allowed)}" + _did_you_mean(key, allowed),
            )
    return items


def _optional(items: dict[str, _Node], key: str) -> _Node | None:
    """The node for ``key``; an explicit null counts as not written."""
    node = items.get(key)
    return None if node is None or node.value is None else node


def _string(
    node: _Node, what: str, max_length: int | None = None, *, allow_empty: bool = False
) -> str:
    if not isinstance(node.value, str):
        _fail(
            node.line,
            node.column,
            f"{what} must be a string, not {_kind(_plain(node))}",
            "write a string",
        )
    if not allow_empty and not node.value.strip():
        _fail(node.line, node.column, f"{what} is empty", "write a non-empty string")
    if max_length is not None and len(node.value) > max_length:
        _fail(
            node.line, node.column, f"{what} is longer than {max_length} characters", "shorten it"
        )
    return node.value


def _choice(node: _Node, what: str, choices: tuple[str, ...]) -> str:
    allowed = ", ".join(choices)
    if not isinstance(node.value, str):
        _fail(
            node.line,
            node.column,
            f"{what} must be one of {allowed}, not {_kind(_plain(node))}",
            f"use one of {allowed}",
        )
    if node.value not in choices:
        _fail(
            node.line,
            node.column,
            f"{what} '{node.value}' is not one of {allowed}",
            f"use one of {allowed}" + _did_you_mean(node.value, choices),
        )
    return node.value


class _Builder:
    def __init__(self) -> None:
        self.drafts: dict[str, _Draft] = {}

    def build(self, root: _Node) -> Workflow:
        if not isinstance(root.value, dict):
            _fail(
                root.line,
                root.column,
                f"the workflow must be a mapping, not {_kind(_plain(root))}",
                "write a mapping with name, description and steps",
            )
        items = _check_keys(root, _TOP_KEYS, "the workflow")
        if "name" not in items:
            _fail(root.line, root.column, "the workflow has no name", "add a name: key")
        name = _string(items["name"], "the workflow name", _TITLE_MAX)
        description_node = _optional(items, "description")
        description = (
            _string(description_node, "the workflow description", allow_empty=True)
            if description_node
            else None
        )
        if "steps" not in items:
            _fail(root.line, root.column, "the workflow has no steps", "add a steps: list")
        self.read_steps(items["steps"], None, "the workflow")

        resolved = {d.id: self.resolve_deps(d) for d in self.drafts.values()}
        effective = self.effective(resolved)
        order = self.order(effective)
        conditions = self.conditions(effective)
        steps = tuple(self.step(self.drafts[i], effective[i], conditions[i]) for i in order)
        return Workflow(name=name, description=description, steps=steps)

    # -- reading steps --

    def read_steps(self, node: _Node, parent: _Draft | None, where: str) -> None:
        if not isinstance(node.value, list) or not node.value:
            _fail(
                node.line,
                node.column,
                f"steps of {where} must be a non-empty list, not {_kind(_plain(node))}",
                "list the steps, each starting with '- id: ...'",
            )
        siblings: dict[str, _Node] = {}
        for item in node.value:
            draft = self.read_step(item, parent, siblings)
            if parent is not None:
                parent.children.append(draft.id)

    def read_step(self, node: _Node, parent: _Draft | None, siblings: dict[str, _Node]) -> _Draft:
        where = f"a step of branch '{parent.id}'" if parent else "a step"
        if not isinstance(node.value, dict):
            _fail(
                node.line,
                node.column,
                f"{where} must be a mapping, not {_kind(_plain(node))}",
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
            _fail(node.line, node.column, f"{where} has no id", "add an id: key")
        id_node = items["id"]
        short = _string(id_node, "step id")
        if not _ID.fullmatch(short):
            _fail(
                id_node.line,
                id_node.column,
                f"step id '{short}' is not valid",
                "use letters, digits, '_' and '-', starting with a letter or digit",
            )
        if short in siblings:
            first = siblings[short]
            _fail(
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
            _fail(line, column, f"{label} has both title and name", "keep one of them")
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
            _fail(
                action_node.line,
                action_node.column,
                f"{label} is a branch but has no steps",
                "add its steps: list, or use another action",
            )
        if action != "branch" and has_steps:
            line, column = keys["steps"]
            _fail(
                line,
                column,
                f"{label} has inline steps but action '{action}'",
                "remove the action (a step with steps is a branch) or move the steps out",
            )

        def forbid(key: str, why: str) -> None:
            if _optional(items, key) is not None:
                line, column = keys[key]
                _fail(line, column, f"{label} cannot have {key}: {why}", f"remove {key}")

        tool: str | None = None
        if action == "tool_execution":
            if _optional(items, "tool") is None:
                _fail(
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
            _fail(line, column, f"{label} has both task_definition_id and task", "keep one of them")
        ref_key = "task_definition_id" if "task_definition_id" in items else "task"
        if action == "sub_task":
            if _optional(items, ref_key) is None:
                _fail(
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
                _fail(
                    inputs_node.line,
                    inputs_node.column,
                    f"{label} inputs must be a mapping, not {_kind(_plain(inputs_node))}",
                    "write inputs as key: value pairs",
                )
            inputs = _plain(inputs_node)

        deps: list[_Node] = []
        if (deps_node := _optional(items, "depends_on")) is not None:
            entries = deps_node.value if isinstance(deps_node.value, list) else [deps_node]
            for entry in entries:
                if not isinstance(entry.value, str):
                    _fail(
                        entry.line,
                        entry.column,
                        f"{label} depends_on entries must be step ids, not {_kind(_plain(entry))}",
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
                _fail(
                    attempts_node.line,
                    attempts_node.column,
                    f"{label} max_attempts must be an integer from 1 to 1000, not {value!r}",
                    "write a whole number such as 3",
                )
            max_attempts = value
        metadata = _plain(items["metadata"]) if "metadata" in items else None

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

    def read_condition(self, node: _Node, label: str) -> _RawCondition:
        if not isinstance(node.value, dict):
            _fail(
                node.line,
                node.column,
                f"{label} condition must be a mapping, not {_kind(_plain(node))}",
                "write condition: {field: steps.<id>.output.<path>, equals: <value>}",
            )
        items = _check_keys(node, _CONDITION_KEYS, f"{label} condition")
        if "field" not in items:
            _fail(
                node.line,
                node.column,
                f"{label} condition has no field",
                "add field: steps.<step id>.output.<path>",
            )
        _string(items["field"], f"{label} condition field")
        ops = [op for op in CONDITION_OPS if op in items]
        if not ops:
            _fail(
                node.line,
                node.column,
                f"{label} condition has no test",
                "add one of equals, not_equals, exists",
            )
        if len(ops) > 1:
            assert node.keys is not None
            line, column = node.keys[ops[1]]
            _fail(
                line, column, f"{label} condition has both {ops[0]} and {ops[1]}", "keep one test"
            )
        op = ops[0]
        value_node = items[op]
        value = _plain(value_node)
        if op == "exists" and not isinstance(value, bool):
            _fail(
                value_node.line,
                value_node.column,
                f"{label} condition exists must be true or false, not {_kind(value)}",
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
        return _listing(i for i in self.drafts if i != exclude)

    def resolve_deps(self, draft: _Draft) -> list[str]:
        resolved: list[str] = []
        for entry in draft.deps:
            ref = entry.value
            target = self.lookup(ref, draft.parent)
            if target is None:
                _fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on unknown step '{ref}'",
                    f"known steps: {self.known(draft.id)}"
                    + _did_you_mean(ref, (i for i in self.drafts if i != draft.id)),
                )
            if target == draft.id:
                _fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on itself",
                    f"remove '{ref}' from its depends_on",
                )
            if draft.id.startswith(target + "."):
                _fail(
                    entry.line,
                    entry.column,
                    f"step '{draft.id}' depends on its own branch '{target}'",
                    "remove it: a branch's steps already wait for what the branch waits for",
                )
            if target.startswith(draft.id + "."):
                _fail(
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
        _fail(
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
            _fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition field '{field}' is malformed",
                shape,
            )
        if any(not part for part in parts):
            _fail(
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
            _fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads unknown step '{ref}'",
                f"known steps: {self.known(draft.id)}"
                + _did_you_mean(ref, (i for i in self.drafts if i != draft.id)),
            )
        if self.drafts[target].action == "branch":
            example = self.drafts[target].children[0]
            _fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads branch '{target}', which has no output",
                f"read one of its steps instead, e.g. steps.{example}.output",
            )
        if target == draft.id:
            _fail(
                node.line,
                node.column,
                f"step '{draft.id}' condition reads its own output",
                "a condition decides whether the step runs; test an earlier step's output",
            )
        if target.startswith(draft.id + "."):
            _fail(
                node.line,
                node.column,
                f"branch '{draft.id}' condition reads its own step '{target}'",
                "put the condition on the steps that follow it instead",
            )
        if not self.waits_for(draft.id, target, effective):
            same_scope = self.drafts[target].parent == draft.parent
            written = target.rsplit(".", 1)[-1] if same_scope else target
            _fail(
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
