"""Workflow YAML to positioned values: the reader.

Owns reading the text: composing the YAML into nodes (which carry
positions), converting them into ``Node`` values that keep the 1-based line
and column each was written at, filling in ``{{ var.NAME }}`` placeholders,
and the limits that keep a hostile file from hanging the daemon. Also owns
how a problem at a position is reported (``fail``), shared with the
validator. Must not: judge what the values mean (``validate``).

Every problem raises ``InvalidParams`` whose message starts with the line
and column of the offending YAML node and ends with what to do about it.
That is why the YAML is composed into nodes and converted here, rather than
loaded straight into Python values.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import yaml

from agh.errors import InvalidParams

# libyaml is much faster; the pure-Python loader gives the same nodes and marks.
_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_FIELD = "$.params.yaml"

_VAR_NAME = r"[A-Za-z_][A-Za-z0-9_-]*"
_PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_VAR_REF = re.compile(rf"\s*var\.({_VAR_NAME})\s*")
_WHOLE_VAR = re.compile(rf"\{{\{{\s*var\.({_VAR_NAME})\s*\}}\}}")

# Limits that keep a hostile or broken file from hanging the daemon: alias
# chains ("billion laughs") multiply values, and deep nesting recurses.
_MAX_VALUES = 200_000
_MAX_DEPTH = 100
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what the JSON encoder can carry
_KNOWN_LIST_MAX = 20

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = _T + "str", _T + "null", _T + "bool", _T + "int", _T + "float"
_TIMESTAMP, _MERGE, _VALUE = _T + "timestamp", _T + "merge", _T + "value"
_SEQ, _MAP = _T + "seq", _T + "map"


# -- errors -----------------------------------------------------------------


def fail(line: int, column: int, problem: str, hint: str) -> NoReturn:
    raise InvalidParams(
        f"workflow YAML line {line}, column {column}: {problem}; {hint}",
        {"field": _FIELD, "line": line, "column": column, "hint": hint},
    )


def kind(value: Any) -> str:
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


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def listing(names: Iterable[str]) -> str:
    names = list(names)
    if not names:
        return "(none)"
    shown = ", ".join(names[:_KNOWN_LIST_MAX])
    return shown + (", ..." if len(names) > _KNOWN_LIST_MAX else "")


def _tag_name(tag: str) -> str:
    return "!!" + tag[len(_T) :] if tag.startswith(_T) else tag


# -- YAML nodes to positioned values ----------------------------------------


@dataclass(slots=True)
class Node:
    """A value with the 1-based position it was written at.

    ``value`` is a scalar, ``list[Node]`` or ``dict[str, Node]``; a mapping
    also records where each key was written, for unknown-key errors.
    """

    value: Any
    line: int
    column: int
    keys: dict[str, tuple[int, int]] | None = None


def plain(node: Node) -> Any:
    """The JSON-like Python value of a node (positions dropped)."""
    if isinstance(node.value, list):
        return [plain(item) for item in node.value]
    if isinstance(node.value, dict):
        return {key: plain(item) for key, item in node.value.items()}
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

    def document(self) -> Node:
        try:
            node = yaml.compose(self.text, Loader=_LOADER)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            problem = ": ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
            fail(line, column, f"YAML syntax error: {problem}", "fix the YAML syntax there")
        except yaml.YAMLError as exc:
            # Reader errors (bad characters) carry an offset, not a mark.
            line, column = self._position(getattr(exc, "position", 0))
            problem = str(exc).splitlines()[0]
            fail(line, column, f"unreadable YAML: {problem}", "remove the offending character")
        except RecursionError:
            fail(1, 1, "YAML is nested too deeply", f"keep nesting under {_MAX_DEPTH} levels")
        if node is None:
            fail(1, 1, "the workflow YAML is empty", "write a mapping with name and steps")
        return self.convert(node, 0)

    def _position(self, offset: int) -> tuple[int, int]:
        before = self.text[: max(0, offset)]
        return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1

    def convert(self, node: yaml.Node, depth: int) -> Node:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        self.budget -= 1
        if self.budget < 0:
            fail(
                line,
                column,
                f"the YAML expands to more than {_MAX_VALUES} values (through aliases?)",
                "use fewer or smaller aliases",
            )
        if depth > _MAX_DEPTH:
            fail(
                line, column, "YAML is nested too deeply", f"keep nesting under {_MAX_DEPTH} levels"
            )
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node)
            if isinstance(value, str):
                return self.interpolate(value, line, column)
            return Node(value, line, column)
        if id(node) in self.active:
            fail(line, column, "recursive YAML alias", "an anchor cannot contain its own alias")
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                if node.tag != _SEQ:
                    self._bad_tag(node, line, column)
                return Node([self.convert(item, depth + 1) for item in node.value], line, column)
            if node.tag != _MAP:
                self._bad_tag(node, line, column)
            return self.mapping(cast("yaml.MappingNode", node), depth, line, column)
        finally:
            self.active.discard(id(node))

    def mapping(self, node: yaml.MappingNode, depth: int, line: int, column: int) -> Node:
        own: dict[str, Node] = {}
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
                fail(
                    key_line,
                    key_column,
                    f"duplicate key '{key}' (first at line {first_line}, column {first_column})",
                    "remove one of them",
                )
            keys[key] = (key_line, key_column)
            own[key] = self.convert(value_node, depth + 1)
        if not merges:
            return Node(own, line, column, keys)
        merged: dict[str, Node] = {}
        merged_keys: dict[str, tuple[int, int]] = {}
        for source in merges:
            value = self.convert(source, depth + 1)
            if not isinstance(value.value, dict) or value.keys is None:
                fail(
                    value.line,
                    value.column,
                    f"'<<' merges {kind(plain(value))}",
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
        return Node(merged, line, column, merged_keys)

    def key(self, node: yaml.Node) -> str:
        line, column = node.start_mark.line + 1, node.start_mark.column + 1
        if not isinstance(node, yaml.ScalarNode):
            hint = "use a plain string key"
            if isinstance(node, yaml.MappingNode):
                # An unquoted "{{ var.x }}" parses as a nested flow mapping.
                hint = 'if this is a placeholder, quote it: "{{ var.NAME }}"'
            fail(line, column, "a mapping key must be a string", hint)
        value = self.scalar(node)
        if not isinstance(value, str):
            fail(
                line,
                column,
                f"mapping key '{node.value}' is read as {kind(value)}, not a string",
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
            fail(
                line,
                column,
                f"'{node.value}' is not a valid {_tag_name(tag)}",
                "fix the value or remove the tag",
            )
        if isinstance(value, float) and not math.isfinite(value):
            fail(
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
            fail(line, column, f"integer {node.value} is too large", "quote it to make it a string")
        return value

    def _bad_tag(self, node: yaml.Node, line: int, column: int) -> NoReturn:
        fail(
            line,
            column,
            f"unsupported YAML tag {_tag_name(node.tag)}",
            "remove the tag: only strings, numbers, booleans, null, lists and mappings work",
        )

    def interpolate(self, text: str, line: int, column: int) -> Node:
        if "{{" not in text:
            return Node(text, line, column)
        whole = _WHOLE_VAR.fullmatch(text)
        if whole:
            # The whole value is one placeholder: keep the variable's type.
            # wrap() builds new containers, so steps never share a variable's.
            return self.wrap(self.variable(whole.group(1), text, line, column), line, column, 0)

        def substitute(match: re.Match[str]) -> str:
            ref = _VAR_REF.fullmatch(match.group(1))
            if ref is None:
                fail(
                    line,
                    column,
                    f"unsupported placeholder '{match.group(0)}'",
                    "only {{ var.NAME }} is supported",
                )
            value = self.variable(ref.group(1), text, line, column)
            if isinstance(value, str):
                return value
            return json.dumps(value, ensure_ascii=False, default=str)

        return Node(_PLACEHOLDER.sub(substitute, text), line, column)

    def variable(self, name: str, text: str, line: int, column: int) -> Any:
        if name not in self.variables:
            known = listing(sorted(self.variables))
            fail(
                line,
                column,
                f"unknown variable '{name}' in '{text}'",
                f"pass it with --var {name}=VALUE; known variables: {known}"
                + did_you_mean(name, self.variables),
            )
        return self.variables[name]

    def wrap(self, value: Any, line: int, column: int, depth: int) -> Node:
        """A variable's value as nodes, all at the placeholder's position."""
        if depth > _MAX_DEPTH:
            fail(line, column, "variable value is nested too deeply", "flatten the variable")
        if isinstance(value, Mapping):
            items = {str(k): self.wrap(v, line, column, depth + 1) for k, v in value.items()}
            return Node(items, line, column, dict.fromkeys(items, (line, column)))
        if isinstance(value, list | tuple):
            return Node([self.wrap(v, line, column, depth + 1) for v in value], line, column)
        return Node(value, line, column)


def read(text: str, variables: Mapping[str, Any]) -> Node:
    """The YAML document as positioned values, placeholders filled in from
    ``variables``. Raises ``InvalidParams`` (details: field, line, column,
    hint) for YAML syntax errors, unsupported tags or values, duplicate keys,
    unknown variables and documents too large or too deep.
    """
    return _Reader(text, variables).document()
