"""The task-graph and workflow commands of ``agh`` against a real daemon:
publish, start, approve/deny, cancel, rm, dep, child, tree and compose,
with their output, exit codes and confirmation rules."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import typing
from typing import Any

import pytest
from click.testing import CliRunner

from agh import protocol as p
from agh.cli import main
from agh.cli.options import ACTIVE_RUN_STATUSES, CLOSED_STATUSES, TASK_STATUSES
from tests.helpers.cli import Agh, add_task, claim, clean_environ, ok_json

if typing.TYPE_CHECKING:
    from pathlib import Path

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
  - id: lint
    action: agent
  - id: test
    action: tool_execution
    tool: run_tests
    depends_on: [build, lint]
  - id: deploy
    action: tool_execution
    tool: deploy_service
    depends_on: [test]
    approval: manual
    inputs:
      target: "{{ var.env }}"
    condition:
      field: steps.test.output.passed
      equals: true
"""


def ident(created: dict[str, Any]) -> str:
    return created["task"]["identifier"]  # type: ignore[no-any-return]


def status_of(agh: Agh, ref: str) -> str:
    return ok_json(agh("show", ref, "--json"))["task"]["task"]["status"]  # type: ignore[no-any-return]


def gated(agh: Agh, title: str, *args: str) -> str:
    """A started task waiting for manual approval (`agh add --approval manual`)."""
    task = add_task(agh, title, "--approval", "manual", *args)["task"]
    assert task["status"] == "blocked" and task["approval_state"] == "pending"
    assert task["blocking_reason"] == "awaiting approval"
    return str(task["identifier"])


# -- publish and start ----------------------------------------------------------------


def test_publish_queues_the_run_of_a_draft(agh: Agh) -> None:
    draft = add_task(agh, "a sketch", "--draft")
    assert draft["run"] is None
    published = ok_json(agh("publish", ident(draft), "--json"))
    assert published["task"]["status"] == "ready" and published["task"]["draft"] is False
    assert published["run"]["status"] == "queued"

    again = agh("publish", ident(draft))
    assert again.exit_code == 4
    assert "not a draft" in again.stderr and again.stdout == ""


def test_publish_prints_what_a_blocked_task_waits_for(agh: Agh) -> None:
    first = add_task(agh, "first")
    second = add_task(agh, "second", "--draft")
    ok_json(agh("dep", "add", ident(second), ident(first), "--json"))
    result = agh("publish", ident(second))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.split()[:3] == [ident(second), second["task"]["id"], "blocked"]
    assert f"waits: waiting on {ident(first)}" in result.stdout
    assert "run " not in result.stdout


def test_start_requests_a_run_with_input_and_idempotency_key(agh: Agh) -> None:
    created = ok_json(agh("child", ident(add_task(agh, "parent")), "later", "--no-start", "--json"))
    assert created["run"] is None and created["task"]["status"] == "pending"
    args = ("start", ident(created), "--input", '{"n": 1}', "--idempotency-key", "k1")
    started = ok_json(agh(*args, "--json"))
    assert started["run"]["status"] == "queued" and started["run"]["input"] == {"n": 1}
    assert started["task"]["status"] == "ready"
    # The same key again: the same run, not a second one.
    assert ok_json(agh(*args, "--json"))["run"]["id"] == started["run"]["id"]
    text = agh(*args)
    assert text.exit_code == 0
    assert f"run {started['run']['id']} queued" in text.stdout
    # A new request while that run is queued is a conflict.
    assert agh("start", ident(created)).exit_code == 4


def test_start_of_a_draft_waits_for_publish(agh: Agh) -> None:
    draft = add_task(agh, "not yet", "--draft")
    result = agh("start", ident(draft), "--input", '{"x": true}')
    assert result.exit_code == 0, result.stderr
    assert f"queued when published (agh publish {ident(draft)})" in result.stdout
    published = ok_json(agh("publish", ident(draft), "--json"))
    assert published["run"]["input"] == {"x": True}  # the input of the earlier start


def test_bad_start_input_is_a_usage_error(agh: Agh) -> None:
    task = add_task(agh, "x", "--draft")
    bad = agh("start", ident(task), "--input", "{nope")
    assert bad.exit_code == 2 and "not valid JSON" in bad.stderr
    assert agh("start", "T-999").exit_code == 3


# -- approval ---------------------------------------------------------------------------


def test_approve_queues_the_run_and_a_second_approve_conflicts(
    agh: Agh, daemon: ThreadDaemon
) -> None:
    ref = gated(agh, "ship it")
    result = agh("approve", ref, "--comment", "looks safe")
    assert result.exit_code == 0, result.stderr
    fields = result.stdout.split()
    assert fields[:3] == [ref, "approved", "ready"]
    assert fields[3] == "run" and fields[4].startswith("run_") and fields[5] == "queued"
    detail = ok_json(agh("show", ref, "--json"))["task"]
    approved = [e for e in detail["events"] if e["event_type"] == "task.approved"]
    assert approved and approved[0]["payload"] == {"comment": "looks safe"}

    twice = agh("approve", ref)
    assert twice.exit_code == 4
    assert "already approved" in twice.stderr and twice.stdout == ""


def test_approve_json_and_a_task_that_still_waits(agh: Agh, daemon: ThreadDaemon) -> None:
    first = add_task(agh, "first")
    with daemon.client() as c:
        waiting = c.tasks_create(
            "second", approval_policy="manual", depends_on=[first["task"]["id"]], start=True
        ).task.identifier
    approved = ok_json(agh("approve", waiting, "--json"))
    assert approved["task"]["approval_state"] == "approved" and approved["run"] is None
    text = agh("approve", ref := gated(agh, "third"))
    assert text.stdout.startswith(f"{ref}  approved  ready  run ")
    assert ok_json(agh("show", waiting, "--json"))["task"]["task"]["blocking_reason"] == (
        f"waiting on {ident(first)}"
    )


def test_deny_and_its_alias_reject_close_the_task(agh: Agh, daemon: ThreadDaemon) -> None:
    denied = gated(agh, "risky")
    result = agh("deny", denied, "--reason", "not during the freeze")
    assert result.exit_code == 0, result.stderr
    assert (
        result.stdout.strip() == f"{denied}  rejected  canceled  (rejected: not during the freeze)"
    )
    assert agh("deny", denied).exit_code == 4  # already rejected

    rejected = gated(agh, "also risky")
    as_json = ok_json(agh("reject", rejected, "--json"))
    assert as_json["task"]["status"] == "canceled"
    assert as_json["task"]["approval_state"] == "rejected"
    # Needs no approval: refused.
    plain = agh("reject", ident(add_task(agh, "plain")))
    assert plain.exit_code == 4 and "needs no approval" in plain.stderr


def test_reject_works_but_is_listed_only_as_an_alias() -> None:
    listing = CliRunner().invoke(main, ["--help"], prog_name="agh").stdout
    commands = listing.split("Tasks:")[1]
    assert re.search(r"^\s+deny \(reject\)\s", commands, re.M)
    assert not re.search(r"^\s+reject\s", commands, re.M)
    alias = CliRunner().invoke(main, ["reject", "--help"], prog_name="agh")
    assert alias.exit_code == 0 and "Usage: agh reject" in alias.stdout


# -- cancel and rm ------------------------------------------------------------------------


def family(agh: Agh) -> tuple[str, str, str]:
    """A root with two children, all queued; returns their identifiers."""
    root = ident(add_task(agh, "root"))
    kids = [ident(ok_json(agh("child", root, t, "--json"))) for t in ("kid one", "kid two")]
    return root, kids[0], kids[1]


def test_cancel_yes_cancels_the_subtree_and_fences_its_agent(agh: Agh) -> None:
    root, kid, other = family(agh)
    got = claim(agh)  # the oldest queued run: the root's
    result = agh("cancel", root, "--reason", "superseded", "--yes")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"{root}  canceled  (canceled: superseded)"
    for ref in (root, kid, other):
        assert status_of(agh, ref) == "canceled"
    beat = agh("heartbeat", got["run"]["id"], "--token", got["claim_token"])
    assert beat.exit_code == 4  # the holder lost its lease
    again = agh("cancel", root, "-y", "--json")
    assert again.exit_code == 4 and "nothing to cancel" in again.stderr


@pytest.mark.parametrize("command", ["cancel", "rm"])
def test_without_yes_and_without_a_terminal_refuses_with_exit_2(agh: Agh, command: str) -> None:
    root, _, _ = family(agh)
    result = agh(command, root)
    assert result.exit_code == 2
    assert "--yes" in result.stderr and "not a terminal" in result.stderr
    assert result.stdout == ""
    assert status_of(agh, root) == "ready"  # untouched, and still there


def test_rm_yes_deletes_the_subtree(agh: Agh) -> None:
    root, kid, other = family(agh)
    keep = ident(add_task(agh, "unrelated"))
    kid_id = ok_json(agh("show", kid, "--json"))["task"]["task"]["id"]
    assert ok_json(agh("rm", kid, "-y", "--json")) == {"deleted": [kid_id]}
    result = agh("rm", root, "--yes")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == f"deleted {root}"
    for ref in (root, kid, other):
        gone = agh("show", ref)
        assert gone.exit_code == 3 and "not found" in gone.stderr
    assert agh("ls", "-c", "identifier").stdout.split() == ["ID", keep]


def test_rm_is_refused_while_a_run_is_active(agh: Agh) -> None:
    root, _, _ = family(agh)
    got = claim(agh)
    refused = agh("rm", root, "-y")
    assert refused.exit_code == 4
    assert got["run"]["id"] in refused.stderr and "cancel it" in refused.stderr
    assert status_of(agh, root) == "in_progress"


def on_a_terminal(socket: str, answer: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the real ``agh`` with a pseudo-terminal as stdin, typing ``answer``."""
    master, slave = os.openpty()
    try:
        env = clean_environ()
        proc = subprocess.Popen(
            [sys.executable, "-m", "agh.cli", "--socket", socket, *args],
            stdin=slave,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        os.close(slave)
        slave = -1
        os.write(master, answer.encode())
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_cancel_and_rm_ask_on_a_terminal(agh: Agh, daemon: ThreadDaemon) -> None:
    root, _, _ = family(agh)
    claim(agh)
    declined = on_a_terminal(daemon.socket, "n\n", "cancel", root)
    assert declined.returncode == 1, declined.stderr
    assert (
        f"Cancel 1 task and their subtrees:\n  {root} (root): 3 tasks (3 open), "
        "1 active run, 2 queued runs\nContinue? [y/N]"
    ) in declined.stderr
    assert f"{root} not canceled" in declined.stderr and declined.stdout == ""
    assert status_of(agh, root) == "in_progress"

    accepted = on_a_terminal(daemon.socket, "y\n", "cancel", root)
    assert accepted.returncode == 0, accepted.stderr
    assert accepted.stdout.strip() == f"{root}  canceled"
    assert status_of(agh, root) == "canceled"

    deleted = on_a_terminal(daemon.socket, "y\n", "rm", root)
    assert deleted.returncode == 0, deleted.stderr
    assert f"Delete 1 task and their subtrees:\n  {root} (root): 3 tasks" in deleted.stderr
    assert agh("show", root).exit_code == 3


# -- dependencies -----------------------------------------------------------------------


def test_dep_add_and_rm_print_the_dependencies(agh: Agh) -> None:
    first = add_task(agh, "first")
    second = add_task(agh, "second", "--draft")
    a, b = ident(first), ident(second)
    added = agh("dep", "add", b, a)
    assert added.exit_code == 0, added.stderr
    lines = added.stdout.splitlines()
    assert lines[0] == f"{b}  draft"
    assert lines[1].split() == ["DEPENDS", "ON", "STATUS", "TITLE"]
    assert lines[2].split() == [a, "ready", "first"]

    # --json before or after the subcommand.
    detail = ok_json(agh("dep", "--json", "add", b, a))["task"]  # adding again: no-op
    assert [d["depends_on_task_id"] for d in detail["dependencies"]] == [first["task"]["id"]]
    assert ok_json(agh("publish", b, "--json"))["task"]["status"] == "blocked"

    removed = agh("dep", "rm", b, a)
    assert removed.exit_code == 0, removed.stderr
    assert removed.stdout.splitlines() == [f"{b}  ready", f"{b} has no dependencies"]
    as_json = agh("dep", "rm", b, a, "--json")
    assert as_json.exit_code == 3 and "does not depend on" in as_json.stderr


def test_dep_cycle_is_refused_and_named(agh: Agh) -> None:
    a, b, c = (ident(add_task(agh, t, "--draft")) for t in ("a", "b", "c"))
    assert agh("dep", "add", b, a).exit_code == 0
    assert agh("dep", "add", c, b).exit_code == 0
    cycle = agh("dep", "add", a, c)
    assert cycle.exit_code == 4
    assert f"dependency cycle: {a} -> {c} -> {b} -> {a}" in cycle.stderr
    assert cycle.stdout == ""
    itself = agh("dep", "add", a, a)
    assert itself.exit_code == 4 and f"{a} -> {a}" in itself.stderr
    assert agh("dep", "add", a).exit_code == 2  # DEP missing


# -- children and the tree -----------------------------------------------------------------


def test_child_starts_by_default_like_add(agh: Agh) -> None:
    parent = add_task(agh, "parent")
    made = ok_json(
        agh(
            "child",
            ident(parent),
            "sub",
            "--priority",
            "high",
            "--channel",
            "docs",
            "--max-attempts",
            "2",
            "--input",
            '{"x": 1}',
            "--description",
            "the details",
            "--json",
        )
    )
    task = made["task"]
    assert task["parent_task_id"] == parent["task"]["id"]
    assert (task["priority"], task["network_channel"], task["max_attempts"]) == ("high", "docs", 2)
    assert task["description"] == "the details" and task["status"] == "ready"
    assert made["run"]["status"] == "queued" and made["run"]["input"] == {"x": 1}

    text = agh("child", ident(parent), "plain")
    assert text.exit_code == 0
    assert text.stdout.split()[2:4] == ["ready", "run"]
    quiet = agh("child", ident(parent), "quiet one", "--no-start", "-q")
    assert re.fullmatch(r"task_[0-9a-z]{26}\n", quiet.stdout)
    assert status_of(agh, quiet.stdout.strip()) == "pending"
    draft = ok_json(agh("child", ident(parent), "draft one", "--draft", "--json"))
    assert draft["task"]["status"] == "draft" and draft["run"] is None
    held = ok_json(agh("child", ident(parent), "gated one", "--approval", "manual", "--json"))
    assert held["task"]["approval_state"] == "pending" and held["run"] is None
    assert ok_json(agh("show", ident(parent), "--json"))["task"]["summary"]["child_count"] == 5

    missing = agh("child", "T-999", "orphan")
    assert missing.exit_code == 3 and "not found" in missing.stderr


def test_tree_indents_children_and_shows_runs_and_reasons(agh: Agh) -> None:
    root = ident(add_task(agh, "release 2.0"))
    build = ident(ok_json(agh("child", root, "build", "--json")))
    docs = ident(ok_json(agh("child", root, "docs", "--no-start", "--json")))
    notes = ident(ok_json(agh("child", docs, "release notes", "--draft", "--json")))
    ok_json(agh("dep", "add", notes, build, "--json"))
    ok_json(agh("publish", notes, "--json"))
    dropped = ident(ok_json(agh("child", root, "dropped", "--json")))
    ok_json(agh("cancel", dropped, "--reason", "out of scope", "-y", "--json"))
    got = claim(agh)  # the root's run, queued first

    result = agh("tree", root)
    assert result.exit_code == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert list(lines) == [root, build, docs, notes, dropped]  # depth first
    assert lines[root].startswith(f"{root} ")
    assert lines[build].startswith(f"  {build} ") and lines[docs].startswith(f"  {docs} ")
    assert lines[notes].startswith(f"    {notes} ")
    assert lines[root].split()[1:3] == ["in_progress", "release"]
    assert lines[root].endswith(f"run {got['run']['id']} claimed")
    assert lines[build].split()[1] == "ready" and " queued" in lines[build]
    assert lines[docs].split()[1:3] == ["pending", "docs"] and "run " not in lines[docs]
    assert lines[notes].split()[1] == "blocked"
    assert lines[notes].endswith(f"(waits: waiting on {build})")
    assert lines[dropped].endswith("(canceled: out of scope)")
    # The status column is aligned.
    columns = {line.index(line.split()[1]) for line in lines.values()}
    assert len(columns) == 1

    as_json = ok_json(agh("tree", root, "--json"))["tree"]
    assert as_json["root"]["task"]["identifier"] == root
    depths = {n["task"]["identifier"]: n["depth"] for n in as_json["descendants"]}
    assert depths == {build: 1, docs: 1, notes: 2, dropped: 1}


# -- compose ---------------------------------------------------------------------------------


def test_compose_dry_run_prints_the_plan_and_writes_nothing(agh: Agh) -> None:
    result = agh("compose", "-", "--var", "env=staging", "--dry-run", input=PIPELINE)
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    lines = out.splitlines()
    assert lines[0] == "workflow: Deploy Pipeline"
    assert "4 steps in 3 levels" in lines
    levels = [line for line in lines if line.startswith("level ")]
    assert levels == ["level 0 (parallel):", "level 1:", "level 2:"]
    # build and lint at level 0, test at 1, deploy at 2.
    assert lines.index("  build  tool_execution build_service") < lines.index("level 1:")
    assert lines.index("  lint  agent") < lines.index("level 1:")
    deploy = out.split("  deploy  tool_execution deploy_service\n")[1].splitlines()
    assert deploy == [
        '    inputs: {"target":"staging"}',
        "    if steps.test.output.passed == true",
        "    approval: manual (waits for `agh approve`)",
        "    depends on: test",
    ]
    assert "    depends on: build, lint" in lines
    assert ok_json(agh("ls", "--all", "--json"))["tasks"] == []


def test_compose_vars_are_strings(agh: Agh) -> None:
    text = "name: typed\nsteps:\n  - id: one\n    inputs:\n      n: '{{ var.n }}'\n"
    plan = ok_json(
        agh("compose", "-", "--var", "n=3", "--var", "n=4", "--dry-run", "--json", input=text)
    )
    assert plan["workflow"] is None and plan["task"] is None
    assert plan["plan"]["steps"][0]["inputs"] == {"n": "4"}  # a string; the later --var wins
    bad = agh("compose", "-", "--var", "n", input=text)
    assert bad.exit_code == 2 and "NAME=VALUE" in bad.stderr


def test_compose_start_then_claim_a_step(agh: Agh, tmp_path: Path) -> None:
    path = tmp_path / "deploy.yaml"
    path.write_text(PIPELINE)
    result = agh("compose", str(path), "--var", "env=prod")
    assert result.exit_code == 0, result.stderr
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    fields = {k: v.strip() for k, v in fields.items()}
    assert fields["Version"] == "1" and fields["Steps"] == "4 steps in 3 levels"
    assert fields["Workflow"].startswith("wf_") and fields["Workflow"].endswith("Deploy Pipeline")
    root, root_id, status = fields["Root task"].split()
    assert status == "pending" and root_id.startswith("task_")
    assert f"agh start {root}" in result.stderr

    assert agh("claim").exit_code == 6  # nothing runs before the start
    started = agh("start", root)
    assert started.exit_code == 0, started.stderr
    assert started.stdout.split()[:3] == [root, root_id, "in_progress"]
    got = claim(agh)
    assert got["run"]["input"]["step"] in ("build", "lint")
    if got["run"]["input"]["step"] == "build":
        assert got["run"]["input"]["inputs"] == {"target": "prod"}
    tree = agh("tree", root).stdout
    assert f"run {got['run']['id']} claimed" in tree and "deploy" in tree

    # --update replaces the steps: version 2; --start needs no hint.
    smaller = PIPELINE.split("  - id: test")[0]
    assert agh("cancel", root, "-y").exit_code == 0
    updated = ok_json(
        agh(
            "compose",
            "-",
            "--var",
            "env=prod",
            "--update",
            root,
            "--start",
            "--json",
            input=smaller,
        )
    )
    assert updated["workflow"]["version"] == 2 and updated["task"]["identifier"] == root
    assert updated["task"]["status"] == "in_progress"


def test_compose_start_flag_starts_at_once(agh: Agh) -> None:
    result = agh("compose", "-", "--var", "env=dev", "--start", input=PIPELINE)
    assert result.exit_code == 0, result.stderr
    assert "agh start" not in result.stderr
    assert "in_progress" in result.stdout
    assert claim(agh)["run"]["input"]["step"] in ("build", "lint")


def test_compose_yaml_errors_name_line_and_column(agh: Agh) -> None:
    bad = PIPELINE.replace("depends_on: [build, lint]", "depends_on: [biuld, lint]")
    result = agh("compose", "-", "--var", "env=x", input=bad)
    assert result.exit_code == 2  # invalid params
    assert result.stdout == ""
    assert result.stderr.startswith("agh: workflow YAML line 14, column 18: ")
    assert "biuld" in result.stderr and "did you mean 'build'" in result.stderr
    # The hint is part of the message: printed once, not again as "hint:".
    assert result.stderr.count("did you mean") == 1 and "hint:" not in result.stderr

    syntax = agh("compose", "-", "--dry-run", input="name: x\nsteps: [\n")
    assert syntax.exit_code == 2
    assert re.search(r"line \d+, column \d+: YAML syntax error", syntax.stderr)

    missing_var = agh("compose", "-", input=PIPELINE)
    assert missing_var.exit_code == 2 and "--var env=VALUE" in missing_var.stderr
    assert ok_json(agh("ls", "--all", "--json"))["tasks"] == []


def test_compose_file_problems_are_usage_errors(agh: Agh, tmp_path: Path) -> None:
    missing = agh("compose", str(tmp_path / "none.yaml"))
    assert missing.exit_code == 2 and "No such file" in missing.stderr
    empty = agh("compose", "-", input="  \n")
    assert empty.exit_code == 2 and "empty" in empty.stderr
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"name: \xff\n")
    assert agh("compose", str(binary)).exit_code == 2


# -- contract checks --------------------------------------------------------------------------


def test_status_groups_match_the_protocol() -> None:
    assert ACTIVE_RUN_STATUSES == p.ACTIVE_RUN_STATUSES
    assert set(CLOSED_STATUSES) <= set(TASK_STATUSES)
    assert set(ACTIVE_RUN_STATUSES) <= set(typing.get_args(p.RunStatus))
