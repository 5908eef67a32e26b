"""``agh agent …`` for shell-script agents and ``agh run …`` for operators,
against a real daemon: in-process for most, a real bash for the eval
round trip of ``agh agent claim --env``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.cli import Agh, clean_environ, ok_json
from tests.helpers.daemons import chained_claims

if TYPE_CHECKING:
    from agh.client import Client


def test_claim_with_a_name_is_claimed_by_that_agent_session(agh: Agh, client: Client) -> None:
    task = client.tasks_create("named", start=True).task
    got = ok_json(agh("agent", "claim", "--name", "coder-7", "--json"))["claim"]
    assert got["task"]["id"] == task.id
    session_id = got["run"]["session_id"]
    assert got["run"]["claimed_by"] == {"kind": "agent_session", "ref": session_id}
    sessions = {s.session_id: s for s in client.sessions_list().sessions}
    assert sessions[session_id].agent_name == "coder-7"
    # The board and ls show the agent's name, not its session id.
    row = agh("ls").stdout.splitlines()[1]
    assert "coder-7" in row and session_id not in row
    assert "coder-7" in agh("show", task.identifier).stdout


def test_env_lines_drive_the_other_agent_commands(agh: Agh, client: Client) -> None:
    client.tasks_create("env driven", input={"n": 1}, start=True)
    out = agh("agent", "claim", "--name", "sh-agent", "--env")
    assert out.exit_code == 0, out.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.stdout.splitlines())
    env = {k: v.strip("'") for k, v in env.items()}
    assert set(env) == {
        "AGH_RUN_ID",
        "AGH_CLAIM_TOKEN",
        "AGH_TASK_ID",
        "AGH_ATTEMPT",
        "AGH_INPUT",
        "AGH_SESSION_ID",
    }
    assert json.loads(env["AGH_INPUT"]) == {"n": 1}
    run_id = env["AGH_RUN_ID"]
    assert agh("agent", "heartbeat", env=env).exit_code == 0
    assert agh("agent", "log", "step one", "--level", "warn", env=env).exit_code == 0
    piped = agh("agent", "log", "-", env=env, input="line a\nline b\n")
    assert piped.exit_code == 0, piped.stderr
    logs = client.runs_logs(run_id).logs
    assert [(x.level, x.message) for x in logs] == [
        ("warn", "step one"),
        ("info", "line a"),
        ("info", "line b"),
    ]
    asked = agh("agent", "ask", "which branch?", env=env)
    assert asked.exit_code == 0 and asked.stdout.startswith("asked")
    assert agh("agent", "messages", env=env).stdout == ""
    client.tasks_send(env["AGH_TASK_ID"], "main, please")
    listed = ok_json(agh("agent", "messages", "--json", env=env))["messages"]
    assert [m["message"] for m in listed] == ["main, please"]
    after = agh("agent", "messages", "--after", str(listed[-1]["id"]), "--wait", "0.3", env=env)
    assert after.exit_code == 6 and "no message" in after.stderr
    done = agh("agent", "complete", "--result", '{"ok": true}', env=env)
    assert done.exit_code == 0, done.stderr
    assert client.runs_get(run_id).run.run.result == {"ok": True}
    # Its session stays the run's, across the separate connections.
    assert client.runs_get(run_id).run.run.session_id == env["AGH_SESSION_ID"]


def test_no_work_exits_6_and_waits_for_work(agh: Agh) -> None:
    empty = agh("agent", "claim", "--wait", "0.2")
    assert empty.exit_code == 6 and empty.stderr == "agh: no work available\n"
    assert agh("agent", "claim", "--env").stdout == ""  # nothing for eval to run


def test_fail_release_and_the_exit_codes_of_lost_claims(agh: Agh, client: Client) -> None:
    client.tasks_create("retried", max_attempts=2, start=True)
    env = claim_env(agh)
    failed = agh("agent", "fail", "--error", "flaky", env=env)
    assert failed.exit_code == 0 and "queued" in failed.stdout
    # The token is spent: lease lost, exit 4.
    assert agh("agent", "heartbeat", env=env).exit_code == 4
    assert agh("agent", "complete", env=env).exit_code == 4
    wrong = agh("agent", "heartbeat", env={**env, "AGH_CLAIM_TOKEN": "ct_wrong"})
    assert wrong.exit_code in (4, 5)
    client.tasks_create("given back", start=True)
    env = claim_env(agh)
    assert agh("agent", "release", "--reason", "context full", env=env).exit_code == 0
    assert agh("agent", "release", env=env).exit_code == 4


def claim_env(agh: Agh, *args: str) -> dict[str, str]:
    got = ok_json(agh("agent", "claim", "--json", *args))["claim"]
    assert got is not None
    return {"AGH_RUN_ID": got["run"]["id"], "AGH_CLAIM_TOKEN": got["claim_token"]}


def test_missing_run_or_token_is_a_usage_error(agh: Agh) -> None:
    assert agh("agent", "heartbeat").exit_code == 2
    assert agh("agent", "complete", "run_x").exit_code == 2  # no token
    assert agh("agent", "log", env={"AGH_RUN_ID": "r", "AGH_CLAIM_TOKEN": "t"}).exit_code == 2


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_a_bash_agent_loop_with_eval(daemon: Any, client: Client) -> None:
    for n in range(3):
        client.tasks_create(f"job {n}", input={"n": n}, start=True)
    agh = f"{sys.executable} -m agh.cli --socket {daemon.socket}"
    script = f"""
set -u
done=0
while claimed=$({agh} agent claim --name bash-1 --env); do
  eval "$claimed"
  n=$(printf '%s' "$AGH_INPUT" | {sys.executable} -c "$SQUARE")
  {agh} agent log "working on $AGH_TASK_ID" >/dev/null
  {agh} agent complete --result "{{\\"square\\": $((n * n))}}" >/dev/null
  done=$((done + 1))
done
echo "done=$done"
"""
    env = clean_environ(SQUARE='import json, sys; print(json.load(sys.stdin)["n"])')
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done=3"
    tasks = client.tasks_list().tasks
    results = sorted(
        client.runs_get(t.active_run.id).run.run.result["square"] for t in tasks if t.active_run
    )
    assert [t.status for t in tasks] == ["completed"] * 3
    assert results in ([], [0, 1, 4])


def test_a_bash_agent_with_next_makes_one_command_per_run(daemon: Any, client: Client) -> None:
    """`agh agent complete|fail --next --env` finishes a run and claims the
    next in one command (one round trip per cycle), as agh(1) shows."""
    for n in range(4):
        client.tasks_create(f"job {n}", input={"n": n}, start=True)
    agh = f"{sys.executable} -m agh.cli --socket {daemon.socket}"
    script = f"""
set -u
done=0
claimed=$({agh} agent claim --name bash-next --env) || exit 3
while eval "$claimed"; do
  n=$(printf '%s' "$AGH_INPUT" | {sys.executable} -c "$N")
  done=$((done + 1))
  if [ "$n" != 2 ]; then
    claimed=$({agh} agent complete --result "{{\\"n\\": $n}}" --next --env) || break
  else
    claimed=$({agh} agent fail --error "two" --no-retry --next --env) || break
  fi
done
echo "done=$done"
"""
    env = clean_environ(N='import json, sys; print(json.load(sys.stdin)["n"])')
    proc = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "done=4", proc.stderr
    assert proc.stderr.strip() == "agh: no work available"  # the last --next found none
    statuses = sorted((t.title, t.status) for t in client.tasks_list().tasks)
    assert [s for _, s in statuses] == ["completed", "completed", "failed", "completed"]
    assert chained_claims(daemon.config.db_path) == 3  # runs 2-4 each came with a finish


def test_next_options_without_next_are_refused_before_the_finish(agh: Agh, client: Client) -> None:
    client.tasks_create("kept", start=True)
    env_lines = agh("agent", "claim", "--env").stdout
    env = {
        k: v.strip("'")
        for k, v in (line.removeprefix("export ").split("=", 1) for line in env_lines.splitlines())
    }
    for extra in (["--env"], ["--wait", "5"], ["--channel", "gpu"]):
        refused = agh("agent", "complete", *extra, env=env)
        assert refused.exit_code == 2 and "need --next" in refused.stderr
    # Nothing was finished: the run is still held.
    assert client.runs_get(env["AGH_RUN_ID"]).run.run.status == "claimed"
    # The only run, released with --next: never handed straight back (exit 6).
    released = agh("agent", "release", "--next", "--json", env=env)
    assert released.exit_code == 6, released.stderr
    reply = json.loads(released.stdout)
    assert reply["lease"]["status"] == "queued" and reply["next"] is None


# -- agh run ---------------------------------------------------------------------------


def test_run_show_claim_start_complete(agh: Agh, client: Client) -> None:
    made = client.tasks_create("operator run", start=True)
    assert made.run is not None
    run_id = made.run.id
    shown = agh("run", "show", run_id)
    assert shown.exit_code == 0
    assert "operator run" in shown.stdout and "queued" in shown.stdout
    # `agh show RUN` is the same view.
    assert agh("show", run_id).stdout == shown.stdout
    # A unique prefix names it too.
    assert agh("run", "show", run_id[:-6]).exit_code == 0
    claimed = ok_json(agh("run", "claim", run_id, "--lease", "60", "--json"))
    assert claimed["run"]["status"] == "claimed" and claimed["claim_token"]
    assert agh("run", "start", run_id).stdout.startswith(f"{run_id}  starting")
    refused = agh("run", "complete", run_id)  # no terminal to ask on: --yes required
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    done = agh("run", "complete", run_id, "--result", '{"by": "hand"}', "--yes")
    assert done.exit_code == 0 and "completed" in done.stdout
    assert client.runs_get(run_id).run.run.result == {"by": "hand"}
    assert agh("run", "complete", run_id, "-y").exit_code == 4  # already ended


def test_run_fail_and_cancel(agh: Agh, client: Client) -> None:
    failing = client.tasks_create("to fail", start=True).run
    assert failing is not None
    assert agh("run", "fail", failing.id, "--error", "not claimed", "-y").exit_code == 4
    assert agh("run", "claim", failing.id).exit_code == 0
    assert agh("run", "fail", failing.id, "--error", "bad input", "-y").exit_code == 0
    assert client.runs_get(failing.id).run.run.error == "bad input"
    canceled = client.tasks_create("to cancel", start=True).run
    assert canceled is not None
    refused = agh("run", "cancel", canceled.id)  # no terminal: --yes required
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    assert agh("run", "cancel", canceled.id, "--yes", "--reason", "wrong").exit_code == 0
    assert client.runs_get(canceled.id).run.run.status == "canceled"
    assert agh("run", "show", "run_nothere000000000000000000").exit_code == 3


def test_sessions_list_names_agents(agh: Agh, daemon: Any) -> None:
    with daemon.client(agent_name="lister"):
        table = agh("sessions")
        assert table.exit_code == 0
        assert table.stdout.splitlines()[0].split() == [
            "AGENT",
            "STATE",
            "CHANNEL",
            "ACTIVE",
            "SESSION",
        ]
        assert any(line.startswith("lister") for line in table.stdout.splitlines())
        ids = agh("sessions", "-q", "--state", "connected").stdout.split()
        assert ids and all(i.startswith("ses_") for i in ids)
        listed = ok_json(agh("sessions", "--json"))["sessions"]
        assert "lister" in {s["agent_name"] for s in listed}


def test_every_runs_method_takes_a_unique_prefix_and_agents_need_the_id(
    client: Client, daemon: Any
) -> None:
    from agh import errors

    def prefix(run_id: str) -> str:
        return run_id[:-2]  # runs of other tasks differ earlier, as made apart

    first = client.tasks_create("one", start=True).run
    time.sleep(0.003)
    second = client.tasks_create("two", start=True).run
    time.sleep(0.003)
    third = client.tasks_create("three", start=True).run
    assert first is not None and second is not None and third is not None
    assert client.runs_get(prefix(first.id)).run.run.id == first.id
    claimed = client.runs_claim(prefix(first.id), lease_ms=60_000)
    assert claimed.run.id == first.id and claimed.run.status == "claimed"
    assert client.runs_start(prefix(first.id)).run.status == "starting"
    with daemon.client(agent_name="attacher") as agent:
        assert agent.session is not None
        attached = client.runs_attach_session(prefix(first.id), agent.session.session_id)
        assert attached.run.id == first.id
    assert client.runs_logs(prefix(first.id)).run_id == first.id
    # An agent names its run by the id its claim returned: a prefix is not it.
    with pytest.raises(errors.NotFound):
        client.heartbeat(prefix(first.id), claimed.claim_token)
    assert client.runs_complete(prefix(first.id), result={"ok": 1}).run.status == "completed"
    # The holder's claim ended with the override: its token is spent.
    with pytest.raises(errors.LeaseLost):
        client.heartbeat(first.id, claimed.claim_token)
    client.runs_claim(prefix(second.id))
    failed = client.runs_fail(prefix(second.id), error="by hand")
    assert failed.run.id == second.id and failed.run.status == "failed"
    assert client.runs_cancel(prefix(third.id)).run.status == "canceled"
    assert client.runs_get(third.id).run.run.status == "canceled"
