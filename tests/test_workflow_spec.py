"""Workflow YAML (``aghd.workflows``): parsing, validation (with exact
positions) and plans.

Pure functions, no daemon. Every test runs with both the libyaml loader and
the pure-Python one, because positions and values must not depend on which
is installed.
"""

from __future__ import annotations

from textwrap import dedent
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
import yaml

from agh.errors import InvalidParams
from agh.protocol import PlanLevel, StepCondition, WorkflowPlan
from aghd import workflows as ws
from aghd.workflows import reader

if TYPE_CHECKING:
    from collections.abc import Iterator

LOADERS = [yaml.SafeLoader] + ([yaml.CSafeLoader] if hasattr(yaml, "CSafeLoader") else [])


@pytest.fixture(autouse=True, params=LOADERS, ids=lambda loader: loader.__name__)
def loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(reader, "_LOADER", request.param)
    yield


EXAMPLE = dedent("""\
    name: Deploy Pipeline
    description: Build, test, and deploy
    steps:
      - id: build
        action: tool_execution
        tool: build_service
        inputs:
          target: "{{ var.env }}"
      - id: test
        action: tool_execution
        tool: run_tests
        depends_on: [build]
      - id: deploy
        action: sub_task
        task_definition_id: T-7
        depends_on: [test]
        condition:
          field: steps.test.output.passed
          equals: true
    """)


def levels(plan: WorkflowPlan) -> list[list[str]]:
    return [level.steps for level in plan.levels]


def by_id(wf: ws.Workflow) -> dict[str, ws.Step]:
    return {step.id: step for step in wf.steps}


def parse_error(text: str, variables: dict[str, Any] | None = None) -> InvalidParams:
    with pytest.raises(InvalidParams) as info:
        ws.parse(text, variables or {})
    return info.value


# -- valid workflows --------------------------------------------------------


def test_example_parses_into_a_chain_with_vars_and_condition() -> None:
    wf = ws.parse(EXAMPLE, {"env": "staging"})

    assert wf.name == "Deploy Pipeline"
    assert wf.description == "Build, test, and deploy"
    assert [s.id for s in wf.steps] == ["build", "test", "deploy"]
    build, test, deploy = wf.steps
    assert build.inputs == {"target": "staging"}
    assert (build.action, build.tool, build.line, build.column) == (
        "tool_execution",
        "build_service",
        4,
        5,
    )
    assert test.depends_on == ("build",)
    assert deploy.depends_on == ("test",)
    assert (deploy.action, deploy.task_ref, deploy.tool) == ("sub_task", "T-7", None)
    assert deploy.title == "deploy"  # no title: the id
    assert deploy.approval == "none"
    assert deploy.conditions == (
        ws.Condition(
            field="steps.test.output.passed",
            step="test",
            path=("passed",),
            op="equals",
            value=True,
            line=18,
            column=7,
        ),
    )

    plan = ws.to_plan(wf)
    assert plan.levels == [
        PlanLevel(level=0, steps=["build"], parallel=False),
        PlanLevel(level=1, steps=["test"], parallel=False),
        PlanLevel(level=2, steps=["deploy"], parallel=False),
    ]
    assert [(s.id, s.level, s.depends_on) for s in plan.steps] == [
        ("build", 0, []),
        ("test", 1, ["build"]),
        ("deploy", 2, ["test"]),
    ]
    assert plan.steps[2].conditions == [
        StepCondition(field="steps.test.output.passed", op="equals", value=True)
    ]
    # The plan is a wire shape: it must encode and decode back unchanged.
    wire = msgspec.json.encode(plan)
    assert msgspec.json.decode(wire, type=WorkflowPlan) == plan


def test_steps_without_dependencies_share_a_parallel_level() -> None:
    wf = ws.parse(
        dedent("""\
            name: Fan out
            steps:
              - id: fetch-a
              - id: fetch-b
                title: Fetch B
                priority: high
              - id: merge
                depends_on: [fetch-a, fetch-b]
              - id: notify
                depends_on: fetch-a
            """),
        {},
    )
    plan = ws.to_plan(wf)

    assert levels(plan) == [["fetch-a", "fetch-b"], ["merge", "notify"]]
    assert [level.parallel for level in plan.levels] == [True, True]
    steps = by_id(wf)
    assert steps["fetch-a"].action == "agent"
    assert (steps["fetch-b"].title, steps["fetch-b"].priority) == ("Fetch B", "high")
    assert steps["notify"].depends_on == ("fetch-a",)  # a single string is one dependency


def test_levels_list_file_order_even_when_dependencies_point_forward() -> None:
    wf = ws.parse(
        dedent("""\
            name: Forward
            steps:
              - id: report
                depends_on: [collect]
              - id: lint
              - id: collect
            """),
        {},
    )

    # Steps come in dependency order; levels keep the order they were written.
    assert [s.id for s in wf.steps] == ["lint", "collect", "report"]
    assert levels(ws.to_plan(wf)) == [["lint", "collect"], ["report"]]


BRANCH = dedent("""\
    name: Release
    steps:
      - id: prep
      - id: checks
        depends_on: [prep]
        condition:
          field: steps.prep.output.ok
          equals: true
        steps:
          - id: lint
          - id: unit
            depends_on: [lint]
            condition:
              field: steps.lint.output.clean
              exists: true
          - id: types
            name: Type check
      - id: ship
        action: tool_execution
        tool: release
        depends_on: [checks]
      - id: announce
        depends_on: [checks.unit]
        condition:
          field: steps.checks.unit.output
          not_equals: null
    """)


def test_inline_branch_expands_dependencies_and_inherits_its_own() -> None:
    wf = ws.parse(BRANCH, {})
    steps = by_id(wf)

    assert [s.id for s in wf.steps] == [
        "prep",
        "checks",
        "checks.lint",
        "checks.unit",
        "checks.types",
        "ship",
        "announce",
    ]
    checks = steps["checks"]
    assert (checks.action, checks.parent, checks.depends_on) == ("branch", None, ("prep",))
    # Inner steps with no dependency inside the branch wait for the branch's.
    assert steps["checks.lint"].depends_on == ("prep",)
    assert steps["checks.types"].depends_on == ("prep",)
    assert steps["checks.unit"].depends_on == ("checks.lint",)
    assert {steps[i].parent for i in ("checks.lint", "checks.unit", "checks.types")} == {"checks"}
    assert steps["checks.types"].title == "Type check"
    assert steps["checks.lint"].title == "checks.lint"
    # Depending on the branch means waiting for every step inside it.
    assert steps["ship"].depends_on == ("checks.lint", "checks.unit", "checks.types")
    assert steps["announce"].depends_on == ("checks.unit",)

    branch_condition = checks.conditions[0]
    assert (branch_condition.step, branch_condition.path) == ("prep", ("ok",))
    assert steps["checks.lint"].conditions == (branch_condition,)
    own = steps["checks.unit"].conditions[0]
    assert (own.step, own.op, own.value) == ("checks.lint", "exists", True)
    assert steps["checks.unit"].conditions == (own, branch_condition)
    announce = steps["announce"].conditions[0]
    assert (announce.step, announce.path, announce.op) == ("checks.unit", (), "not_equals")
    assert steps["ship"].conditions == ()

    plan = ws.to_plan(wf)
    assert levels(plan) == [
        ["prep"],
        ["checks.lint", "checks.types"],
        ["checks.unit"],
        ["ship", "announce"],
    ]
    plan_steps = {s.id: s for s in plan.steps}
    assert plan_steps["checks"].level is None
    assert plan_steps["checks"].depends_on == ["prep"]
    assert len(plan_steps["checks.unit"].conditions) == 2


def test_nested_branches_resolve_ids_from_the_inside_out() -> None:
    wf = ws.parse(
        dedent("""\
            name: Nested
            steps:
              - id: setup
              - id: outer
                depends_on: [setup]
                steps:
                  - id: first
                  - id: inner
                    steps:
                      - id: a
                        depends_on: [first]
                      - id: b
              - id: after
                depends_on: [outer.inner]
            """),
        {},
    )
    steps = by_id(wf)

    # "first" is not a sibling of a, so the enclosing branch's step is meant;
    # a waits for nothing inside "inner", so it also waits for what "inner" does.
    assert steps["outer.inner.a"].depends_on == ("setup", "outer.first")
    # b has no dependency inside "inner", which has none inside "outer".
    assert steps["outer.inner.b"].depends_on == ("setup",)
    assert steps["outer.inner"].parent == "outer"
    assert steps["after"].depends_on == ("outer.inner.a", "outer.inner.b")
    assert levels(ws.to_plan(wf)) == [
        ["setup"],
        ["outer.first", "outer.inner.b"],
        ["outer.inner.a"],
        ["after"],
    ]


def test_whole_placeholder_keeps_the_variable_type() -> None:
    variables = {
        "n": 3,
        "flags": ["-v", "--fast"],
        "cfg": {"region": "eu", "replicas": 2},
        "on": True,
        "nothing": None,
        "env": "prod",
    }
    wf = ws.parse(
        dedent("""\
            name: "Deploy {{ var.env }}"
            steps:
              - id: run
                title: "Run on {{var.env}} x{{ var.n }}"
                max_attempts: "{{ var.n }}"
                network_channel: "chan-{{ var.env }}"
                inputs:
                  count: "{{ var.n }}"
                  flags: "{{ var.flags }}"
                  cfg: "{{  var.cfg  }}"
                  enabled: "{{ var.on }}"
                  empty: "{{ var.nothing }}"
                  text: "cfg={{ var.cfg }} on={{ var.on }}"
                  nested: ["{{ var.n }}", {deep: "{{ var.env }}"}]
                  "{{ var.env }}": keys are not interpolated
                metadata: {owner: "{{ var.env }}"}
            """),
        variables,
    )
    step = wf.steps[0]

    assert wf.name == "Deploy prod"
    assert step.title == "Run on prod x3"
    assert step.max_attempts == 3
    assert step.network_channel == "chan-prod"
    assert step.metadata == {"owner": "prod"}
    assert step.inputs == {
        "count": 3,
        "flags": ["-v", "--fast"],
        "cfg": {"region": "eu", "replicas": 2},
        "enabled": True,
        "empty": None,
        "text": 'cfg={"region": "eu", "replicas": 2} on=true',
        "nested": [3, {"deep": "prod"}],
        "{{ var.env }}": "keys are not interpolated",
    }
    # Steps get their own copies: changing one cannot change the caller's variable.
    step.inputs["flags"].append("x")
    assert variables["flags"] == ["-v", "--fast"]


def test_yaml_value_types_merges_and_nulls() -> None:
    wf = ws.parse(
        dedent("""\
            name: Types
            steps:
              - &base
                id: one
                priority: low
                approval: manual
                inputs: {when: 2024-05-01, ratio: 0.5, big: 12, flag: no, tilde: ~}
              - <<: *base
                id: two
                approval: none
                description: ""
                condition: ~
                depends_on: ~
            """),
        {},
    )
    one, two = wf.steps

    # Dates stay as written: the plan travels as JSON.
    assert one.inputs == {
        "when": "2024-05-01",
        "ratio": 0.5,
        "big": 12,
        "flag": False,
        "tilde": None,
    }
    assert (one.priority, one.approval) == ("low", "manual")
    # Merged keys apply; keys written in the step win; null means "not set".
    assert two.inputs == one.inputs
    assert (two.priority, two.approval, two.description) == ("low", "none", "")
    assert (two.conditions, two.depends_on) == ((), ())


def test_condition_on_a_step_called_output() -> None:
    wf = ws.parse(
        dedent("""\
            name: Output
            steps:
              - id: output
              - id: use
                depends_on: [output]
                condition: {field: steps.output.output.output.x, equals: 1}
            """),
        {},
    )
    condition = wf.steps[1].conditions[0]

    assert (condition.step, condition.path) == ("output", ("output", "x"))


def test_condition_may_read_an_indirect_dependency() -> None:
    wf = ws.parse(
        dedent("""\
            name: Transitive
            steps:
              - id: a
              - id: b
                depends_on: [a]
              - id: c
                depends_on: [b]
                condition: {field: steps.a.output, exists: false}
            """),
        {},
    )

    assert wf.steps[2].conditions[0].step == "a"


# -- errors: every one names the thing and points at it ---------------------


def assert_error(err: InvalidParams, line: int, column: int, *fragments: str) -> None:
    assert err.details["field"] == "$.params.yaml"
    assert (err.details["line"], err.details["column"]) == (line, column), err.message
    assert err.message.startswith(f"workflow YAML line {line}, column {column}: "), err.message
    assert err.details["hint"] and err.message.endswith(err.details["hint"])
    for fragment in fragments:
        assert fragment in err.message


def test_unknown_dependency_names_it_and_lists_known_steps() -> None:
    err = parse_error(EXAMPLE.replace("depends_on: [test]", "depends_on: [tset]"), {"env": "x"})

    assert err.message == (
        "workflow YAML line 16, column 18: step 'deploy' depends on unknown step 'tset'; "
        "known steps: build, test (did you mean 'test'?)"
    )
    assert err.details == {
        "field": "$.params.yaml",
        "line": 16,
        "column": 18,
        "hint": "known steps: build, test (did you mean 'test'?)",
    }
    assert err.code == -32602


def test_cycle_is_named_in_order() -> None:
    err = parse_error(EXAMPLE.replace("depends_on: [build]", "depends_on: [deploy]"), {"env": "x"})

    # Only the steps in the cycle are named, starting with the first written.
    assert_error(err, 9, 5, "dependency cycle: test -> deploy -> test (")
    assert "build" not in err.message


def test_two_step_cycle() -> None:
    err = parse_error(
        dedent("""\
            name: Loop
            steps:
              - id: build
                depends_on: test
              - id: test
                depends_on: [build]
            """)
    )

    assert_error(err, 3, 5, "dependency cycle: build -> test -> build")


def test_cycle_through_a_branch() -> None:
    err = parse_error(
        dedent("""\
            name: Loop
            steps:
              - id: a
                depends_on: [grp]
              - id: grp
                steps:
                  - id: x
                    depends_on: [a]
            """)
    )

    assert_error(err, 3, 5, "dependency cycle: a -> grp.x -> a")


ERRORS: list[tuple[str, str, dict[str, Any], int, int, tuple[str, ...]]] = [
    (
        "yaml syntax",
        "name: x\nsteps:\n  - id: a\n    inputs: {b: [1, 2}\n",
        {},
        4,
        22,
        ("YAML syntax error",),
    ),
    ("bad indentation", "name: x\n  steps: []\n", {}, 2, 8, ("YAML syntax error",)),
    ("empty document", "", {}, 1, 1, ("empty",)),
    ("comment-only document", "# nothing\n", {}, 1, 1, ("empty",)),
    ("not a mapping", "- id: a\n", {}, 1, 1, ("must be a mapping, not a list",)),
    ("missing name", "steps:\n  - id: a\n", {}, 1, 1, ("has no name",)),
    ("missing steps", "name: x\n", {}, 1, 1, ("has no steps",)),
    ("empty steps", "name: x\nsteps: []\n", {}, 2, 8, ("non-empty list",)),
    ("name wrong type", "name: [x]\nsteps:\n  - id: a\n", {}, 1, 7, ("name must be a string",)),
    (
        "unknown top-level key",
        "name: x\nstep:\n  - id: a\n",
        {},
        2,
        1,
        ("unknown key 'step' in the workflow", "did you mean 'steps'?"),
    ),
    (
        "duplicate yaml key",
        "name: x\nsteps:\n  - id: a\n    tool: t\n    tool: u\n    action: tool_execution\n",
        {},
        5,
        5,
        ("duplicate key 'tool' (first at line 4, column 5)",),
    ),
    ("step not a mapping", "name: x\nsteps:\n  - build\n", {}, 3, 5, ("must be a mapping",)),
    ("missing id", "name: x\nsteps:\n  - title: A\n", {}, 3, 5, ("has no id",)),
    ("id wrong type", "name: x\nsteps:\n  - id: 12\n", {}, 3, 9, ("id must be a string",)),
    ("bad id", "name: x\nsteps:\n  - id: a.b\n", {}, 3, 9, ("step id 'a.b' is not valid",)),
    (
        "unknown step key",
        "name: x\nsteps:\n  - id: a\n    depend_on: [b]\n",
        {},
        4,
        5,
        ("unknown key 'depend_on' in step 'a'", "did you mean 'depends_on'?"),
    ),
    (
        "duplicate id",
        "name: x\nsteps:\n  - id: a\n  - id: b\n  - id: a\n",
        {},
        5,
        9,
        ("duplicate step id 'a' (first at line 3, column 9)",),
    ),
    (
        "duplicate inner id",
        "name: x\nsteps:\n  - id: g\n    steps:\n      - id: a\n      - id: a\n",
        {},
        6,
        13,
        ("duplicate step id 'a'",),
    ),
    (
        "title and name",
        "name: x\nsteps:\n  - id: a\n    title: A\n    name: B\n",
        {},
        5,
        5,
        ("both title and name",),
    ),
    (
        "unknown action",
        "name: x\nsteps:\n  - id: a\n    action: tool_exec\n",
        {},
        4,
        13,
        ("action 'tool_exec' is not one of", "did you mean 'tool_execution'?"),
    ),
    (
        "tool missing",
        "name: x\nsteps:\n  - id: a\n    action: tool_execution\n",
        {},
        3,
        5,
        ("step 'a' (tool_execution) has no tool",),
    ),
    (
        "tool on agent step",
        "name: x\nsteps:\n  - id: a\n    tool: t\n",
        {},
        4,
        5,
        ("step 'a' cannot have tool",),
    ),
    (
        "tool wrong type",
        "name: x\nsteps:\n  - id: a\n    action: tool_execution\n    tool: [t]\n",
        {},
        5,
        11,
        ("tool must be a string, not a list",),
    ),
    (
        "sub_task without task",
        "name: x\nsteps:\n  - id: a\n    action: sub_task\n",
        {},
        3,
        5,
        ("(sub_task) names no task",),
    ),
    (
        "task ref on agent step",
        "name: x\nsteps:\n  - id: a\n    task: T-1\n",
        {},
        4,
        5,
        ("cannot have task",),
    ),
    (
        "inputs not a mapping",
        "name: x\nsteps:\n  - id: a\n    inputs: [1]\n",
        {},
        4,
        13,
        ("inputs must be a mapping, not a list",),
    ),
    (
        "depends_on entry wrong type",
        "name: x\nsteps:\n  - id: a\n  - id: b\n    depends_on: [a, {x: 1}]\n",
        {},
        5,
        21,
        ("depends_on entries must be step ids, not a mapping",),
    ),
    (
        "bad priority",
        "name: x\nsteps:\n  - id: a\n    priority: critical\n",
        {},
        4,
        15,
        ("priority 'critical' is not one of low, medium, high, urgent",),
    ),
    (
        "bad approval",
        "name: x\nsteps:\n  - id: a\n    approval: yes\n",
        {},
        4,
        15,
        ("approval must be one of none, manual, not a boolean",),
    ),
    (
        "max_attempts out of range",
        "name: x\nsteps:\n  - id: a\n    max_attempts: 0\n",
        {},
        4,
        19,
        ("max_attempts must be an integer from 1 to 1000",),
    ),
    (
        "branch with tool",
        "name: x\nsteps:\n  - id: g\n    tool: t\n    steps:\n      - id: a\n",
        {},
        4,
        5,
        ("step 'g' cannot have tool",),
    ),
    (
        "branch with inputs",
        "name: x\nsteps:\n  - id: g\n    inputs: {a: 1}\n    steps:\n      - id: a\n",
        {},
        4,
        5,
        ("step 'g' cannot have inputs",),
    ),
    (
        "steps with another action",
        "name: x\nsteps:\n  - id: g\n    action: agent\n    steps:\n      - id: a\n",
        {},
        5,
        5,
        ("inline steps but action 'agent'",),
    ),
    (
        "branch without steps",
        "name: x\nsteps:\n  - id: g\n    action: branch\n",
        {},
        4,
        13,
        ("branch but has no steps",),
    ),
    (
        "empty branch",
        "name: x\nsteps:\n  - id: g\n    steps: []\n",
        {},
        4,
        12,
        ("steps of branch 'g' must be a non-empty list",),
    ),
    (
        "self dependency",
        "name: x\nsteps:\n  - id: a\n    depends_on: [a]\n",
        {},
        4,
        18,
        ("step 'a' depends on itself",),
    ),
    (
        "inner self dependency",
        "name: x\nsteps:\n  - id: g\n    steps:\n      - id: a\n        depends_on: a\n",
        {},
        6,
        21,
        ("step 'g.a' depends on itself",),
    ),
    (
        "depends on own branch",
        "name: x\nsteps:\n  - id: g\n    steps:\n      - id: a\n        depends_on: [g]\n",
        {},
        6,
        22,
        ("step 'g.a' depends on its own branch 'g'",),
    ),
    (
        "branch depends on own step",
        "name: x\nsteps:\n  - id: g\n    depends_on: [g.a]\n    steps:\n      - id: a\n",
        {},
        4,
        18,
        ("branch 'g' depends on its own step 'g.a'",),
    ),
    (
        "unknown inner dependency",
        "name: x\nsteps:\n  - id: g\n    steps:\n      - id: a\n        depends_on: [zz]\n",
        {},
        6,
        22,
        ("step 'g.a' depends on unknown step 'zz'", "known steps: g"),
    ),
    (
        "unknown variable",
        'name: x\nsteps:\n  - id: a\n    inputs:\n      t: "v={{ var.evn }}"\n',
        {"env": 1},
        5,
        10,
        ("unknown variable 'evn'", "--var evn=VALUE", "known variables: env", "'env'?"),
    ),
    (
        "unsupported placeholder",
        'name: x\nsteps:\n  - id: a\n    title: "{{ env }}"\n',
        {"env": 1},
        4,
        12,
        ("unsupported placeholder '{{ env }}'", "{{ var.NAME }}"),
    ),
    (
        "unquoted placeholder",
        "name: x\nsteps:\n  - id: a\n    inputs:\n      t: {{ var.env }}\n",
        {"env": 1},
        5,
        11,
        ("mapping key must be a string", 'quote it: "{{ var.NAME }}"'),
    ),
    (
        "variable of the wrong type",
        'name: x\nsteps:\n  - id: a\n    max_attempts: "{{ var.n }}"\n',
        {"n": "three"},
        4,
        19,
        ("max_attempts must be an integer",),
    ),
    (
        "condition not a mapping",
        "name: x\nsteps:\n  - id: a\n    condition: yes\n",
        {},
        4,
        16,
        ("condition must be a mapping",),
    ),
    (
        "condition without field",
        "name: x\nsteps:\n  - id: a\n    condition: {equals: 1}\n",
        {},
        4,
        16,
        ("condition has no field",),
    ),
    (
        "condition without test",
        "name: x\nsteps:\n  - id: a\n  - id: b\n    condition: {field: steps.a.output}\n",
        {},
        5,
        16,
        ("condition has no test",),
    ),
    (
        "condition with two tests",
        "name: x\nsteps:\n  - id: a\n  - id: b\n"
        "    condition: {field: f, equals: 1, exists: true}\n",
        {},
        5,
        38,
        ("has both equals and exists",),
    ),
    (
        "exists not boolean",
        "name: x\nsteps:\n  - id: a\n  - id: b\n    condition: {field: f, exists: maybe}\n",
        {},
        5,
        35,
        ("exists must be true or false, not a string",),
    ),
    (
        "unknown condition key",
        "name: x\nsteps:\n  - id: a\n  - id: b\n    condition: {field: f, equal: 1}\n",
        {},
        5,
        27,
        ("unknown key 'equal' in step 'b' condition", "did you mean 'equals'?"),
    ),
    (
        "malformed condition field",
        "name: x\nsteps:\n  - id: a\n  - id: b\n    depends_on: [a]\n"
        "    condition: {field: a.passed, equals: 1}\n",
        {},
        6,
        24,
        ("condition field 'a.passed' is malformed", "steps.<step id>.output"),
    ),
    (
        "condition on unknown step",
        "name: x\nsteps:\n  - id: test\n  - id: b\n    depends_on: [test]\n"
        "    condition: {field: steps.tset.output.ok, equals: 1}\n",
        {},
        6,
        24,
        ("reads unknown step 'tset'", "did you mean 'test'?"),
    ),
    (
        "condition on a step not waited for",
        "name: x\nsteps:\n  - id: a\n  - id: b\n"
        "    condition: {field: steps.a.output.ok, equals: 1}\n",
        {},
        5,
        24,
        ("reads step 'a', which may not have finished", "add 'a' to the depends_on of 'b'"),
    ),
    (
        "condition on own output",
        "name: x\nsteps:\n  - id: a\n    condition: {field: steps.a.output, exists: true}\n",
        {},
        4,
        24,
        ("condition reads its own output",),
    ),
    (
        "condition on a branch",
        "name: x\nsteps:\n  - id: g\n    steps:\n      - id: a\n  - id: b\n    depends_on: [g]\n"
        "    condition: {field: steps.g.output, exists: true}\n",
        {},
        8,
        24,
        ("reads branch 'g'", "steps.g.a.output"),
    ),
    (
        "branch condition on its own step",
        "name: x\nsteps:\n  - id: g\n    condition: {field: steps.g.a.output, exists: true}\n"
        "    steps:\n      - id: a\n",
        {},
        4,
        24,
        ("branch 'g' condition reads its own step 'g.a'",),
    ),
    (
        "unsupported tag",
        "name: x\nsteps:\n  - id: a\n    metadata: !!binary aGVsbG8=\n",
        {},
        4,
        15,
        ("unsupported YAML tag !!binary",),
    ),
    (
        "non-string key",
        "name: x\nsteps:\n  - id: a\n    inputs: {404: retry}\n",
        {},
        4,
        14,
        ("mapping key '404' is read as an integer",),
    ),
    (
        "not a finite number",
        "name: x\nsteps:\n  - id: a\n    inputs: {x: .nan}\n",
        {},
        4,
        17,
        ("'.nan' is not a finite number",),
    ),
    (
        "recursive alias",
        "name: x\nsteps:\n  - id: a\n    metadata: &m [1, *m]\n",
        {},
        4,
        15,
        ("recursive YAML alias",),
    ),
]


@pytest.mark.parametrize(
    ("text", "variables", "line", "column", "fragments"),
    [case[1:] for case in ERRORS],
    ids=[case[0] for case in ERRORS],
)
def test_errors_point_at_the_offending_node(
    text: str, variables: dict[str, Any], line: int, column: int, fragments: tuple[str, ...]
) -> None:
    assert_error(parse_error(text, variables), line, column, *fragments)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    text = "name: x\nsteps:\n  - id: a\n    metadata:\n" + "".join(
        f"      {line}\n" for line in lines
    )

    err = parse_error(text)

    assert err.details["line"] >= 5
    assert "expands to more than" in err.message
