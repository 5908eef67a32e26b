"""workflows.compose against a real daemon: the kt-style pipeline (build →
test → conditional deploy) as a dry run and for real with the condition true
and false, restart, update, branches and errors with positions."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from agh import errors
from agh import protocol as p
from agh.client import Client
from tests.conftest import ThreadDaemon

PIPELINE = """\
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
    action: tool_execution
    tool: deploy_service
    depends_on: [test]
    inputs:
      target: "{{ var.env }}"
    condition:
      field: steps.test.output.passed
      equals: true
"""


def _work(agent: Client, results: dict[str, Any]) -> list[str]:
    """Claim and complete runs until none is left; the step ids, in order."""
    order = []
    while (claim := agent.claim_next().claim) is not None:
        step = claim.run.input["step"]
        order.append(step)
        agent.complete(claim.run.id, claim.claim_token, result=results.get(step))
    return order


def _steps(client: Client, root_id: str) -> dict[str, Any]:
    return {
        t.step_id: t
        for t in client.tasks_list(parent_task_id=root_id).tasks
        if t.step_id is not None
    }


def test_dry_run_returns_the_plan_and_writes_nothing(client: Client) -> None:
    before = client.tasks_list(include_drafts=True).tasks
    result = client.workflows_compose(PIPELINE, vars={"env": "staging"}, dry_run=True)
    assert result.workflow is None and result.task is None
    plan = result.plan
    assert plan.name == "Deploy Pipeline"
    assert [lvl.steps for lvl in plan.levels] == [["build"], ["test"], ["deploy"]]
    steps = {s.id: s for s in plan.steps}
    assert steps["build"].inputs == {"target": "staging"}
    assert steps["deploy"].conditions[0].field == "steps.test.output.passed"
    assert client.tasks_list(include_drafts=True).tasks == before


def test_pipeline_deploys_when_tests_pass(daemon: ThreadDaemon, client: Client) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "prod"})
    assert composed.workflow is not None and composed.task is not None
    root = composed.task
    assert root.kind == "workflow" and root.status == "pending"
    steps = _steps(client, root.id)
    assert set(steps) == {"build", "test", "deploy"}
    assert all(s.status == "pending" for s in steps.values())
    with daemon.client(agent_name="runner") as agent:
        assert agent.claim_next().claim is None  # nothing runs before the start
        started = client.tasks_start(root.identifier)
        assert started.task.status == "in_progress" and started.run is None
        order = _work(agent, {"test": {"passed": True}})
    assert order == ["build", "test", "deploy"]
    steps = _steps(client, root.id)
    assert {k: s.status for k, s in steps.items()} == dict.fromkeys(steps, "completed")
    assert client.tasks_get(root.id).task.task.status == "completed"


def test_pipeline_skips_deploy_when_tests_fail(daemon: ThreadDaemon, client: Client) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "prod"}, start=True)
    assert composed.task is not None
    with daemon.client(agent_name="runner") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        # The run's input carries the step's definition with variables resolved.
        assert claim.run.input["tool"] == "build_service"
        assert claim.run.input["inputs"] == {"target": "prod"}
        agent.complete(claim.run.id, claim.claim_token)
        order = _work(agent, {"test": {"passed": False}})
    assert order == ["test"]
    deploy = _steps(client, composed.task.id)["deploy"]
    assert deploy.status == "canceled" and deploy.closed_reason == "condition not met"
    assert client.tasks_get(composed.task.id).task.task.status == "completed"


def test_restarting_a_finished_workflow_runs_the_dag_afresh(
    daemon: ThreadDaemon, client: Client
) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "dev"}, start=True)
    assert composed.task is not None
    root = composed.task.id
    with daemon.client(agent_name="runner") as agent:
        assert _work(agent, {"test": {"passed": False}}) == ["build", "test"]
        client.tasks_start(root, idempotency_key="second")
        assert _work(agent, {"test": {"passed": True}}) == ["build", "test", "deploy"]
        # A retried start (its reply lost) does not run the workflow a third time.
        again = client.tasks_start(root, idempotency_key="second")
        assert again.task.status == "completed" and again.run is None
        assert agent.claim_next().claim is None
    build = _steps(client, root)["build"]
    assert len(client.tasks_runs_list(build.id).runs) == 2  # new runs, same tasks


def test_start_and_update_refused_while_a_step_is_active(
    daemon: ThreadDaemon, client: Client
) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "dev"}, start=True)
    assert composed.task is not None and composed.workflow is not None
    with pytest.raises(errors.Conflict, match="build"):
        client.tasks_start(composed.task.id)
    with pytest.raises(errors.Conflict, match="never has a run"):
        client.tasks_send(composed.task.id, "input for a container")
    with pytest.raises(errors.Conflict, match="wait for it to finish"):
        client.workflows_compose(PIPELINE, vars={"env": "dev"}, update=composed.workflow.id)
    client.tasks_cancel(composed.task.id)
    smaller = PIPELINE.split("  - id: test")[0]
    updated = client.workflows_compose(
        smaller, vars={"env": "dev"}, update=composed.task.identifier
    )
    assert updated.workflow is not None and updated.workflow.version == 2
    assert updated.workflow.id == composed.workflow.id
    assert set(_steps(client, composed.task.id)) == {"build"}


def test_step_approval_and_failure_inside_a_workflow(daemon: ThreadDaemon, client: Client) -> None:
    text = """\
name: gated
steps:
  - id: prepare
  - id: release
    approval: manual
    depends_on: [prepare]
"""
    composed = client.workflows_compose(text, start=True)
    assert composed.task is not None
    root = composed.task.id
    with daemon.client(agent_name="runner") as agent:
        assert _work(agent, {}) == ["prepare"]
        release = _steps(client, root)["release"]
        assert release.status == "blocked" and release.approval_state == "pending"
        assert client.tasks_get(root).task.task.status == "blocked"
        client.tasks_approve(release.id)
        claim = agent.claim_next().claim
        assert claim is not None and claim.task.id == release.id
        agent.fail(claim.run.id, claim.claim_token, "release broke", retry=False)
    assert client.tasks_get(root).task.task.status == "failed"


def test_inline_branch_runs_in_parallel_then_joins(daemon: ThreadDaemon, client: Client) -> None:
    text = """\
name: fan-out
steps:
  - id: setup
  - id: checks
    depends_on: [setup]
    steps:
      - id: lint
      - id: unit
  - id: merge
    depends_on: [checks]
"""
    composed = client.workflows_compose(text, start=True)
    assert composed.task is not None
    assert [lvl.steps for lvl in composed.plan.levels] == [
        ["setup"],
        ["checks.lint", "checks.unit"],
        ["merge"],
    ]
    tree = client.tasks_tree(composed.task.id).tree
    shape = [(n.depth, n.task.title) for n in tree.descendants]
    assert shape == [
        (1, "setup"),
        (1, "checks"),
        (2, "checks.lint"),
        (2, "checks.unit"),
        (1, "merge"),
    ]
    with daemon.client(agent_name="a") as a, daemon.client(agent_name="b") as b:
        first = a.claim_next().claim
        assert first is not None
        a.complete(first.run.id, first.claim_token)
        lint, unit = a.claim_next().claim, b.claim_next().claim  # both at once
        assert lint is not None and unit is not None
        assert {lint.run.input["step"], unit.run.input["step"]} == {"checks.lint", "checks.unit"}
        a.complete(lint.run.id, lint.claim_token)
        assert a.claim_next().claim is None  # merge waits for the whole branch
        b.complete(unit.run.id, unit.claim_token)
        assert _work(a, {}) == ["merge"]
    assert client.tasks_get(composed.task.id).task.task.status == "completed"


def test_yaml_errors_name_line_and_column(client: Client) -> None:
    bad = PIPELINE.replace("depends_on: [build]", "depends_on: [biuld]")
    with pytest.raises(errors.InvalidParams) as refused:
        client.workflows_compose(bad, vars={"env": "x"})
    assert refused.value.details["line"] == 12
    assert "biuld" in str(refused.value)
    with pytest.raises(errors.InvalidParams, match="env"):
        client.workflows_compose(PIPELINE)  # the variable is missing
    cyclic = PIPELINE.replace("depends_on: [build]", "depends_on: [build, deploy]")
    with pytest.raises(errors.InvalidParams, match="cycle"):
        client.workflows_compose(cyclic, vars={"env": "x"}, dry_run=True)


def test_sub_task_copies_the_referenced_task_and_dry_run_checks_it(client: Client) -> None:
    template = client.tasks_create("Deploy to prod", priority="high", description="runbook").task
    text = f"""\
name: release
steps:
  - id: ship
    action: sub_task
    task_definition_id: {template.identifier}
"""
    missing = text.replace(template.identifier, "T-999")
    with pytest.raises(errors.InvalidParams) as refused:
        client.workflows_compose(missing, dry_run=True)
    assert refused.value.details["line"] == 3 and "T-999" in str(refused.value)
    composed = client.workflows_compose(text)
    assert composed.task is not None
    ship = _steps(client, composed.task.id)["ship"]
    assert ship.title == "Deploy to prod" and ship.priority == "high"


def test_child_inherits_its_parents_workspace(client: Client, short_dir: str) -> None:
    parent = client.tasks_create("in a workspace", workspace=short_dir).task
    child = client.tasks_children_create(parent.id, "child").task
    assert child.workspace_id == parent.workspace_id and child.scope == "workspace"
    loose = client.tasks_children_create(parent.id, "global child", scope="global").task
    assert loose.workspace_id is None and loose.scope == "global"


def test_a_step_runs_channel_names_its_workflow_in_every_reply(
    daemon: ThreadDaemon, client: Client
) -> None:
    """The claim, a heartbeat, runs.get and the completion show one and the
    same coordination channel (only its last activity moves), naming the
    workflow and the workspace."""

    def fixed(channel: p.CoordinationChannel) -> p.CoordinationChannel:
        return msgspec.structs.replace(channel, last_activity_at=None)

    composed = client.workflows_compose(PIPELINE, vars={"env": "qa"}, workspace="/w/pipeline")
    assert composed.workflow is not None and composed.task is not None
    client.tasks_start(composed.task.id)
    with daemon.client(agent_name="runner") as agent:
        claim = agent.claim_next().claim
        assert claim is not None
        channel = fixed(claim.run.coordination_channel)
        assert channel.workflow_id == composed.workflow.id
        assert channel.workspace_id == composed.task.workspace_id is not None
        assert fixed(claim.lease.coordination_channel) == channel
        beat = agent.heartbeat(claim.run.id, claim.claim_token).lease
        assert fixed(beat.coordination_channel) == channel
        assert fixed(client.runs_get(claim.run.id).run.run.coordination_channel) == channel
        done = agent.complete(claim.run.id, claim.claim_token).lease
        assert fixed(done.coordination_channel) == channel
