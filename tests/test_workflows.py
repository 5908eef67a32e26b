"""workflows.compose against a real daemon: the kt-style pipeline (build →
test → conditional deploy) as a dry run and for real with the condition true
and false, restart, update, branches and errors with positions.

Updates get their own section: a new version of the definition must never
destroy finished work (step tasks that ran keep their runs, results, logs and
events, or the update is refused, dry run included)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from agh import errors
from agh import protocol as p

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

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

# prepare, then release behind a manual approval.
GATED = """\
name: gated
steps:
  - id: prepare
  - id: release
    approval: manual
    depends_on: [prepare]
"""

# setup, then lint and unit side by side in a branch, then merge.
FAN_OUT = """\
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


def _work(agent: Client, results: dict[str, Any], *, log: bool = False) -> list[str]:
    """Claim and complete runs until none is left; the step ids, in order.
    With ``log``, each run logs "<step> ran" before it completes."""
    order = []
    while (claim := agent.claim_next().claim) is not None:
        step = claim.run.input["step"]
        order.append(step)
        if log:
            agent.agent_log(claim.run.id, claim.claim_token, [{"message": f"{step} ran"}])
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
    composed = client.workflows_compose(GATED, start=True)
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
    composed = client.workflows_compose(FAN_OUT, start=True)
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

    def fixed(channel: p.CoordinationChannel | None) -> p.CoordinationChannel:
        assert channel is not None, "a step's run has a coordination channel"
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


# -- update: a new version never destroys finished work ----------------------------

# The next version of PIPELINE: build's inputs changed, test and deploy as
# they were, and a new notify step after deploy.
PIPELINE_V2 = PIPELINE.replace(
    'target: "{{ var.env }}"\n  - id: test', 'target: "{{ var.env }}-eu"\n  - id: test'
) + (
    """\
  - id: notify
    depends_on: [deploy]
"""
)


def _record(client: Client, task_id: str) -> dict[str, Any]:
    """What must survive an update: the task, its runs with their results,
    their logs, and the task's events."""
    task = client.tasks_get(task_id).task.task
    runs = client.tasks_runs_list(task_id).runs
    return {
        "identifier": task.identifier,
        "status": task.status,
        "runs": [(r.id, r.status, r.result, r.input) for r in runs],
        "logs": {r.id: [line.message for line in client.runs_logs(r.id).logs] for r in runs},
        "events": [e.event_id for e in client.tasks_timeline(task_id, limit=1000).timeline],
    }


def _finished_pipeline(
    daemon: ThreadDaemon, client: Client
) -> tuple[p.ComposeResult, dict[str, tuple[str, dict[str, Any]]]]:
    """PIPELINE run to completion, every run logging; each step's task id and
    ``_record``."""
    composed = client.workflows_compose(PIPELINE, vars={"env": "prod"}, start=True)
    assert composed.task is not None and composed.workflow is not None
    with daemon.client(agent_name="runner") as agent:
        assert _work(agent, {"test": {"passed": True}}, log=True) == ["build", "test", "deploy"]
    assert client.tasks_get(composed.task.id).task.task.status == "completed"
    steps = _steps(client, composed.task.id)
    return composed, {k: (s.id, _record(client, s.id)) for k, s in steps.items()}


def test_update_after_a_run_keeps_every_step_with_its_runs_logs_and_events(
    daemon: ThreadDaemon, client: Client
) -> None:
    composed, before = _finished_pipeline(daemon, client)
    assert composed.task is not None and composed.workflow is not None
    root = composed.task.id
    assert all(rec["logs"] and rec["runs"] for _, rec in before.values())

    updated = client.workflows_compose(PIPELINE_V2, vars={"env": "prod"}, update=root)
    assert updated.workflow is not None and updated.task is not None
    assert updated.workflow.id == composed.workflow.id and updated.workflow.version == 2
    after = _steps(client, root)
    assert set(after) == {"build", "test", "deploy", "notify"}
    assert after["notify"].status == "pending"
    for step, (task_id, rec) in before.items():
        assert after[step].id == task_id  # the same task, not a copy
        now = _record(client, task_id)
        assert now["identifier"] == rec["identifier"] and now["status"] == "completed"
        assert now["runs"] == rec["runs"] and now["logs"] == rec["logs"]
        assert now["events"][: len(rec["events"])] == rec["events"]
    # The reply says what was kept and what changed.
    assert updated.kept_steps == ["build", "test", "deploy"]
    assert updated.changed_steps == ["build"]
    assert updated.removed_steps == []
    # The new version has a step that never ran, so the root is pending again:
    # said by the reply and by an event, not silently.
    assert updated.task.status == "pending"
    root_events = client.tasks_timeline(root, limit=1000).timeline
    changes = [e.payload for e in root_events if e.event_type == "task.status_changed"]
    assert changes[-1]["from"] == "completed" and changes[-1]["to"] == "pending"
    (event,) = [e for e in root_events if e.event_type == "workflow.updated"]
    assert event.payload["kept_steps"] == ["build", "test", "deploy"]
    # The changed step says so on its own timeline.
    build_events = client.tasks_timeline(before["build"][0], limit=1000).timeline
    assert build_events[-1].event_type == "task.updated"
    assert build_events[-1].payload == {"fields": ["step_spec"], "workflow_version": 2}

    # Starting the new version adds runs to the same tasks, with the new inputs.
    client.tasks_start(root)
    with daemon.client(agent_name="runner") as agent:
        order = _work(agent, {"test": {"passed": True}}, log=True)
    assert order == ["build", "test", "deploy", "notify"]
    build_runs = client.tasks_runs_list(before["build"][0]).runs
    assert len(build_runs) == 2
    assert {r.input["inputs"]["target"] for r in build_runs} == {"prod", "prod-eu"}
    assert client.tasks_get(root).task.task.status == "completed"


def test_update_of_a_finished_workflow_keeps_it_completed(
    daemon: ThreadDaemon, client: Client
) -> None:
    """Only definitions change (no new step): the root stays completed, with
    no status change in its log."""
    composed, before = _finished_pipeline(daemon, client)
    assert composed.task is not None
    root = composed.task.id
    events_before = len(client.tasks_timeline(root, limit=1000).timeline)
    renamed = PIPELINE.replace("name: Deploy Pipeline", "name: Deploy Pipeline v2")
    updated = client.workflows_compose(renamed, vars={"env": "prod"}, update=root)
    assert updated.task is not None and updated.task.status == "completed"
    assert updated.task.title == "Deploy Pipeline v2"
    assert updated.kept_steps == ["build", "test", "deploy"] and updated.changed_steps == []
    new_events = client.tasks_timeline(root, limit=1000).timeline[events_before:]
    assert [e.event_type for e in new_events] == ["workflow.updated"]
    for step, (task_id, rec) in before.items():
        assert _record(client, task_id) == rec, step  # not even an event added


def test_update_refuses_to_drop_a_step_that_ran_and_writes_nothing(
    daemon: ThreadDaemon, client: Client
) -> None:
    composed, before = _finished_pipeline(daemon, client)
    assert composed.task is not None and composed.workflow is not None
    root = composed.task
    without_deploy = PIPELINE.split("  - id: deploy")[0]
    for dry_run in (True, False):  # a dry run refuses exactly as the update would
        with pytest.raises(errors.Conflict) as refused:
            client.workflows_compose(
                without_deploy, vars={"env": "prod"}, update=root.identifier, dry_run=dry_run
            )
        message = str(refused.value)
        deploy_identifier = before["deploy"][1]["identifier"]
        assert f"deploy ({deploy_identifier}: 1 run; not in the new file)" in message
        assert f"tasks.delete {root.identifier}" in message and "without update" in message
        (lost,) = refused.value.details["steps"]
        assert lost["step"] == "deploy" and lost["runs"] == 1
    # Turning a step that ran into a branch would lose it too.
    build = PIPELINE.split("  - id: test")[0].split("  - id: build\n")[1]
    branched = PIPELINE.replace(build, "    steps:\n      - id: compile\n", 1)
    with pytest.raises(errors.Conflict, match=r"build \(.*a branch in the new file"):
        client.workflows_compose(branched, vars={"env": "prod"}, update=root.id)
    # Nothing was written: same version, same steps, same history.
    same = client.workflows_compose(PIPELINE, vars={"env": "prod"}, dry_run=True, update=root.id)
    assert same.kept_steps == ["build", "test", "deploy"] and same.workflow is None
    assert client.tasks_get(root.id).task.task.status == "completed"
    for step, (task_id, rec) in before.items():
        assert _record(client, task_id) == rec, step
    # Deleting the workflow is the explicit way to let it all go.
    client.tasks_delete(root.id)
    fresh = client.workflows_compose(without_deploy, vars={"env": "prod"})
    assert fresh.workflow is not None and fresh.workflow.version == 1


def test_update_keeps_a_step_that_was_only_sent_input(client: Client) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "dev"})
    assert composed.task is not None
    deploy = _steps(client, composed.task.id)["deploy"]
    client.tasks_send(deploy.id, "use the blue slot")  # kept for its first run
    without_deploy = PIPELINE.split("  - id: deploy")[0]
    with pytest.raises(errors.Conflict, match=r"deploy \(.*0 runs and 1 message"):
        client.workflows_compose(without_deploy, vars={"env": "dev"}, update=composed.task.id)
    assert client.tasks_get(deploy.id).task.task.id == deploy.id


def test_update_of_a_workflow_that_never_ran(client: Client) -> None:
    composed = client.workflows_compose(PIPELINE, vars={"env": "dev"})
    assert composed.task is not None and composed.workflow is not None
    first = _steps(client, composed.task.id)
    smaller = PIPELINE.split("  - id: deploy")[0].replace("run_tests", "run_all_tests")
    smaller += "  - id: notify\n    depends_on: [test]\n"
    updated = client.workflows_compose(smaller, vars={"env": "dev"}, update=composed.workflow.id)
    assert updated.workflow is not None and updated.workflow.version == 2
    assert updated.task is not None and updated.task.status == "pending"
    # Nothing had run: nothing to keep, the dropped step is gone.
    assert updated.kept_steps == [] and updated.changed_steps == []
    assert updated.removed_steps == ["deploy"]
    steps = _steps(client, composed.task.id)
    assert set(steps) == {"build", "test", "notify"}
    assert all(s.status == "pending" for s in steps.values())
    # A step that stays keeps its task (and identifier) and takes the new definition.
    assert steps["test"].identifier == first["test"].identifier
    with pytest.raises(errors.NotFound):
        client.tasks_get(first["deploy"].id)
    assert [d.depends_on_task_id for d in steps["notify"].dependencies] == [steps["test"].id]
    assert client.tasks_start(composed.task.id).task.status == "in_progress"


def test_update_refused_while_a_step_is_active_even_as_a_dry_run(
    daemon: ThreadDaemon, client: Client
) -> None:
    composed, before = _finished_pipeline(daemon, client)
    assert composed.task is not None
    root = composed.task.id
    client.tasks_start(root)  # run it again
    with daemon.client(agent_name="runner") as agent:
        claim = agent.claim_next().claim
        assert claim is not None and claim.run.input["step"] == "build"
        for dry_run in (True, False):
            with pytest.raises(errors.Conflict, match="wait for it to finish") as refused:
                client.workflows_compose(
                    PIPELINE_V2, vars={"env": "prod"}, update=root, dry_run=dry_run
                )
            assert refused.value.details["run_id"] == claim.run.id
        # The active run was not touched: its holder completes it.
        agent.complete(claim.run.id, claim.claim_token)
        assert _work(agent, {"test": {"passed": True}}) == ["test", "deploy"]
    assert len(client.tasks_runs_list(before["build"][0]).runs) == 2
    workflow = client.workflows_compose(PIPELINE, vars={"env": "prod"}, dry_run=True, update=root)
    assert workflow.kept_steps == ["build", "test", "deploy"]


def test_update_of_a_finished_branch_keeps_its_steps(daemon: ThreadDaemon, client: Client) -> None:
    composed = client.workflows_compose(FAN_OUT, start=True)
    assert composed.task is not None
    root = composed.task.id
    with daemon.client(agent_name="runner") as agent:
        assert len(_work(agent, {}, log=True)) == 4
    nodes = client.tasks_tree(root).tree.descendants
    before = {n.task.title: (n.task.id, n.task.status) for n in nodes}
    assert set(before) == {"setup", "checks", "checks.lint", "checks.unit", "merge"}
    more = FAN_OUT.replace("      - id: unit\n", "      - id: unit\n      - id: types\n")
    updated = client.workflows_compose(more, update=root)
    assert updated.kept_steps == ["setup", "checks", "checks.lint", "checks.unit", "merge"]
    shape = [(n.depth, n.task.title) for n in client.tasks_tree(root).tree.descendants]
    assert shape == [
        (1, "setup"),
        (1, "checks"),
        (2, "checks.lint"),
        (2, "checks.unit"),
        (2, "checks.types"),
        (1, "merge"),
    ]
    tree = {n.task.title: n.task for n in client.tasks_tree(root).tree.descendants}
    for title, (task_id, status) in before.items():
        if title != "checks":
            assert (tree[title].id, tree[title].status) == (task_id, status)
    assert tree["checks"].id == before["checks"][0]
    # The branch (and so the root) has a step that has not run.
    assert tree["checks"].status == "pending" and updated.task is not None
    assert updated.task.status == "pending"
    # Moving a step that ran out of its branch changes its full id: refused.
    moved = FAN_OUT.replace("      - id: lint\n", "").replace(
        "  - id: merge", "  - id: lint\n  - id: merge"
    )
    with pytest.raises(errors.Conflict, match=r"checks\.lint \(.*not in the new file"):
        client.workflows_compose(moved, update=root)


def test_update_drops_a_request_of_the_previous_version_but_keeps_its_runs(
    daemon: ThreadDaemon, client: Client
) -> None:
    """A step that ran before and now waits (for approval) in a second start:
    the update keeps its runs, and the new version waits to be started."""
    composed = client.workflows_compose(GATED, start=True)
    assert composed.task is not None
    root = composed.task.id
    with daemon.client(agent_name="runner") as agent:
        assert _work(agent, {}) == ["prepare"]
        release = _steps(client, root)["release"]
        client.tasks_approve(release.id)
        assert _work(agent, {}) == ["release"]
        client.tasks_start(root)
        assert _work(agent, {}) == ["prepare"]
        assert _steps(client, root)["release"].status == "blocked"  # awaiting approval
        updated = client.workflows_compose(
            GATED.replace("name: gated", "name: gated v2"), update=root
        )
        assert updated.kept_steps == ["prepare", "release"] and updated.changed_steps == []
        now = _steps(client, root)["release"]
        assert now.id == release.id and now.status == "pending"
        assert [r.status for r in client.tasks_runs_list(release.id).runs] == ["completed"]
        # The previous start's request is gone: nothing runs until the new
        # version is started.
        assert agent.claim_next().claim is None
        assert updated.task is not None and updated.task.status == "pending"
