"""The ``agh`` CLI against a real daemon: output formats, exit codes, light imports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import typing
from datetime import datetime
from typing import Any

import pytest

from agh import __version__
from agh import protocol as p
from agh.cli.exits import EXIT_UNAVAILABLE
from agh.cli.options import PRIORITIES, TASK_STATUSES, workspace_ref
from agh.cli.output import format_table
from agh.client import Client
from agh.errors import DaemonUnreachable
from tests.helpers.cli import Agh, add_task, claim, clean_environ, invoke, ok_json


def listed(agh: Agh, *args: str) -> list[str]:
    """The identifiers `agh ls ARGS` lists, in order."""
    result = agh("ls", "-c", "identifier", *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout.split()[1:]


def seconds_between(earlier: str, later: str) -> float:
    """Seconds from one protocol timestamp (ISO 8601, ``Z``) to another."""

    def parse(ts: str) -> datetime:
        return datetime.fromisoformat(ts.replace("Z", "+00:00"))

    return (parse(later) - parse(earlier)).total_seconds()


# -- the main path ------------------------------------------------------------------


def test_round_trip_add_ls_show_claim_heartbeat_complete(agh: Agh) -> None:
    created = add_task(
        agh,
        "Write the docs",
        "--priority",
        "high",
        "--channel",
        "docs",
        "--input",
        '{"pages": [1, 2]}',
        "--description",
        "all of them",
    )
    task, run = created["task"], created["run"]
    assert task["title"] == "Write the docs"
    assert task["priority"] == "high"
    assert task["network_channel"] == "docs"
    assert task["description"] == "all of them"
    assert task["status"] == "ready"
    assert run["status"] == "queued" and run["input"] == {"pages": [1, 2]}
    ident = task["identifier"]

    listed = ok_json(agh("ls", "--json"))
    assert [t["identifier"] for t in listed["tasks"]] == [ident]
    assert listed["tasks"][0]["active_run"] is None or listed["tasks"][0]["active_run"]["id"]

    table = agh("ls")
    assert table.exit_code == 0
    header, row = table.stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "PRIORITY", "RUN", "AGENT", "UPDATED", "TITLE"]
    assert row.split()[:5] == [ident, "ready", "high", "queued", "-"]
    assert row.endswith("Write the docs")
    assert agh("ls", "-q").stdout == f"{task['id']}\n"
    picked = agh("ls", "-c", "channel,identifier", "--column", "title")
    assert picked.stdout.splitlines()[1].split(None, 2) == ["docs", ident, "Write the docs"]

    shown = agh("show", ident)
    assert shown.exit_code == 0
    assert "Write the docs" in shown.stdout
    assert run["id"] in shown.stdout and "task.created" in shown.stdout

    got = claim(agh, "--lease", "120", "--channel", "docs")
    assert got["run"]["id"] == run["id"]
    assert got["task"]["identifier"] == ident
    assert got["lease"]["status"] == "claimed"
    token = got["claim_token"]

    in_progress = agh("ls")
    assert in_progress.stdout.splitlines()[1].split()[1:4] == ["in_progress", "high", "claimed"]

    beat = ok_json(agh("heartbeat", run["id"], "--token", token, "--lease", "600", "--json"))
    assert beat["lease"]["run_id"] == run["id"]
    assert beat["lease"]["status"] == "running"
    assert beat["lease"]["lease_until"] > got["lease"]["lease_until"]

    done = ok_json(
        agh("complete", run["id"], "--token", token, "--result", '{"ok": true}', "--json")
    )
    assert done["lease"]["status"] == "completed"

    detail = ok_json(agh("show", ident, "--json"))["task"]
    assert detail["task"]["status"] == "completed"
    assert detail["runs"][0]["result"] == {"ok": True}
    # The CLI says who it is: the daemon records origin kind cli, actor human.
    assert detail["task"]["origin"]["kind"] == "cli"
    assert detail["task"]["created_by"]["kind"] == "human"


def test_human_output_of_add_claim_and_agent_calls(agh: Agh) -> None:
    added = agh("add", "Human readable")
    assert added.exit_code == 0
    ident, task_id, status, _, run_id, run_status = added.stdout.split()
    assert ident.startswith("T-") and task_id.startswith("task_")
    assert (status, run_status) == ("ready", "queued")

    claimed = agh("claim")
    assert claimed.exit_code == 0
    fields = dict(line.split(":", 1) for line in claimed.stdout.splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["run"] == run_id
    assert fields["task"].split(None, 1) == [ident, "Human readable"]
    assert fields["lease until"].endswith(("Z (in 4m)", "Z (in 5m)"))

    # The token can come from the environment, as scripts do.
    beat = agh("heartbeat", run_id, env={"AGH_CLAIM_TOKEN": fields["claim token"]})
    assert beat.exit_code == 0, beat.stderr
    assert beat.stdout.startswith(f"{run_id}  running  attempt 1  lease until ")

    done = agh("complete", run_id, env={"AGH_CLAIM_TOKEN": fields["claim token"]})
    assert done.stdout.strip() == f"{run_id}  completed  attempt 1"


def test_ping(agh: Agh, daemon: Any) -> None:
    info = ok_json(agh("ping", "--json"))
    assert info["socket"] == daemon.socket
    assert info["pid"] == os.getpid()  # the test daemon runs in this process
    text = agh("ping")
    assert text.exit_code == 0
    assert f"socket:       {daemon.socket}" in text.stdout
    assert "database:" in text.stdout and "pid:" in text.stdout


# -- claims and their outcomes ----------------------------------------------------


def test_claim_with_nothing_queued_exits_6(agh: Agh) -> None:
    result = agh("agent", "claim")
    assert result.exit_code == 6
    assert result.stdout == ""
    assert "no work available" in result.stderr

    as_json = agh("claim", "--json", "--wait", "0.1")
    assert as_json.exit_code == 6
    assert json.loads(as_json.stdout) == {"claim": None}
    assert "no work available" in as_json.stderr


def test_claim_waits_for_work_on_its_channel_only(agh: Agh) -> None:
    add_task(agh, "elsewhere", "--channel", "other")
    assert agh("claim", "--channel", "mine", "--wait", "0.2").exit_code == 6
    assert claim(agh, "--channel", "other")["task"]["title"] == "elsewhere"


def test_fail_no_retry_marks_task_failed(agh: Agh) -> None:
    created = add_task(agh, "doomed", "--max-attempts", "3")
    got = claim(agh)
    failed = ok_json(
        agh(
            "fail",
            got["run"]["id"],
            "--token",
            got["claim_token"],
            "--error",
            "bad spec",
            "--no-retry",
            "--json",
        )
    )
    assert failed["lease"]["status"] == "failed"
    detail = ok_json(agh("show", created["task"]["id"], "--json"))["task"]
    assert detail["task"]["status"] == "failed"
    assert detail["runs"][0]["error"] == "bad spec"
    assert "bad spec" in agh("show", created["task"]["identifier"]).stdout


def test_fail_is_final_by_default(agh: Agh) -> None:
    # Tasks default to max_attempts 1: without --max-attempts there is no retry.
    created = add_task(agh, "one shot")
    assert created["task"]["max_attempts"] == 1
    got = claim(agh)
    failed = ok_json(
        agh("fail", got["run"]["id"], "--token", got["claim_token"], "--error", "nope", "--json")
    )
    assert failed["lease"]["status"] == "failed"
    assert ok_json(agh("show", created["task"]["id"], "--json"))["task"]["task"]["status"] == (
        "failed"
    )


def test_fail_with_attempts_left_requeues(agh: Agh) -> None:
    add_task(agh, "flaky", "--max-attempts", "2")
    got = claim(agh)
    again = ok_json(
        agh("fail", got["run"]["id"], "--token", got["claim_token"], "--error", "flaked", "--json")
    )
    assert again["lease"]["status"] == "queued"


def test_release_requeues(agh: Agh) -> None:
    created = add_task(agh, "hand back")
    got = claim(agh)
    released = ok_json(
        agh(
            "release",
            got["run"]["id"],
            "--token",
            got["claim_token"],
            "--reason",
            "out of context",
            "--json",
        )
    )
    assert released["lease"]["status"] == "queued"
    listed = ok_json(agh("ls", "--json"))["tasks"]
    assert [t["status"] for t in listed] == ["ready"]
    # Same run, same attempt, claimable again; the old token is fenced off.
    again = claim(agh)
    assert again["run"]["id"] == created["run"]["id"]
    assert again["run"]["attempt"] == got["run"]["attempt"]
    stale = agh("complete", got["run"]["id"], "--token", got["claim_token"])
    assert stale.exit_code == 4  # lease lost
    assert stale.stderr.startswith("agh: ")


def test_heartbeat_without_lease_keeps_the_claimed_length(agh: Agh) -> None:
    add_task(agh, "short lease")
    got = claim(agh, "--lease", "120")
    run_id, token = got["run"]["id"], got["claim_token"]
    beat = ok_json(agh("heartbeat", run_id, "--token", token, "--json"))["lease"]
    # Extended by the 120 s granted at the claim, not the daemon's default 300 s.
    assert 119 <= seconds_between(beat["heartbeat_at"], beat["lease_until"]) <= 121
    longer = ok_json(agh("heartbeat", run_id, "--token", token, "--lease", "600", "--json"))
    again = ok_json(agh("heartbeat", run_id, "--token", token, "--json"))["lease"]
    assert longer["lease"]["lease_until"] <= again["lease_until"]
    assert 599 <= seconds_between(again["heartbeat_at"], again["lease_until"]) <= 601


def test_claim_idempotency_key_returns_the_same_run_with_a_fresh_token(agh: Agh) -> None:
    add_task(agh, "first")
    add_task(agh, "second")
    got = claim(agh, "--idempotency-key", "job-1")
    retried = claim(agh, "--idempotency-key", "job-1")
    assert retried["run"]["id"] == got["run"]["id"]
    assert retried["claim_token"] != got["claim_token"]
    # The fresh token replaces the old one, and the other task is still queued.
    run_id = got["run"]["id"]
    assert agh("heartbeat", run_id, "--token", got["claim_token"]).exit_code == 4
    assert agh("heartbeat", run_id, "--token", retried["claim_token"]).exit_code == 0
    other = claim(agh, "--idempotency-key", "job-2")
    assert other["run"]["id"] != run_id and other["task"]["title"] != got["task"]["title"]


def test_claim_for_a_session_holds_one_claim_at_a_time(agh: Agh, daemon: Any) -> None:
    add_task(agh, "first")
    add_task(agh, "second")
    with daemon.client(agent_name="coder-1") as session_client:
        session_id = session_client.session.session_id
        got = claim(agh, "--session", session_id)
        assert got["run"]["session_id"] == session_id
        second = agh("claim", "--session", session_id)
        assert second.exit_code == 4  # conflict
        assert "already holds" in second.stderr and got["run"]["id"] in second.stderr
        # Without --session the CLI claims for itself, outside that limit.
        assert claim(agh)["run"]["id"] != got["run"]["id"]
    # An unknown session id is a new session (session.hello creates it),
    # which finds nothing left to claim.
    unknown = agh("claim", "--session", "new-session")
    assert unknown.exit_code == 6 and unknown.stderr == "agh: no work available\n"


def test_wrong_token_exits_5_with_hint(agh: Agh) -> None:
    add_task(agh, "guarded")
    got = claim(agh)
    result = agh("heartbeat", got["run"]["id"], "--token", "not-the-token")
    assert result.exit_code == 5
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith("agh: ")
    assert lines[1].startswith("hint: ")


# -- listing filters --------------------------------------------------------------


def test_drafts_are_listed_only_with_all(agh: Agh) -> None:
    draft = add_task(agh, "just an idea", "--draft")
    assert draft["task"]["status"] == "draft" and draft["run"] is None
    live = add_task(agh, "real work", "--priority", "urgent")
    ident = live["task"]["identifier"]
    assert listed(agh) == [ident]
    assert set(listed(agh, "--all")) == {ident, draft["task"]["identifier"]}
    assert listed(agh, "--priority", "low") == []
    assert listed(agh, "--priority", "urgent") == [ident]
    assert listed(agh, "--status", "ready") == [ident]
    assert listed(agh, "--query", "real") == [ident]


def test_query_matches_identifier_or_title_not_description(agh: Agh) -> None:
    hit = add_task(agh, "Rotate the keys", "--description", "quarterly chore")
    other = add_task(agh, "Something else")
    ident = hit["task"]["identifier"]
    assert listed(agh, "--query", "rotate") == [ident]
    assert listed(agh, "--query", ident.lower()) == [ident]
    assert listed(agh, "--query", "quarterly") == []
    # The identifier must match whole: a prefix of it is only a title search.
    assert other["task"]["identifier"] not in listed(agh, "--query", "T-")
    empty = agh("ls", "--status", "failed")
    assert empty.exit_code == 0 and empty.stdout == "" and "no tasks" in empty.stderr


def test_workspace_dot_is_made_absolute(
    agh: Agh, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    monkeypatch.chdir(project)
    created = add_task(agh, "in a workspace", "--workspace", ".")
    assert created["task"]["workspace_id"].startswith("ws_")
    assert created["task"]["identifier"].startswith("PROJ-")
    add_task(agh, "global")
    assert listed(agh, "--workspace", ".") == [created["task"]["identifier"]]
    assert listed(agh, "--workspace", str(project)) == [created["task"]["identifier"]]
    assert claim(agh, "--workspace", ".")["task"]["title"] == "in a workspace"


def test_limit_prints_a_continuation_hint(agh: Agh) -> None:
    for n in range(3):
        add_task(agh, f"task {n}")
    first = agh("ls", "-q", "--limit", "2")
    assert len(first.stdout.split()) == 2 and first.stdout.startswith("task_")
    assert "agh ls --cursor " in first.stderr
    cursor = first.stderr.split("--cursor ")[1].split()[0]
    rest = agh("ls", "-q", "--limit", "2", "--cursor", cursor)
    assert len(rest.stdout.split()) == 1
    assert set(first.stdout.split()) | set(rest.stdout.split()) == {
        t["id"] for t in ok_json(agh("ls", "--json"))["tasks"]
    }


# -- errors and exit codes ---------------------------------------------------------


def test_bad_json_option_is_a_usage_error(agh: Agh) -> None:
    bad_input = agh("add", "x", "--input", "{not json")
    assert bad_input.exit_code == 2
    assert "--input" in bad_input.stderr and "not valid JSON" in bad_input.stderr
    bad_result = agh("complete", "run_x", "--token", "t", "--result", "[1,")
    assert bad_result.exit_code == 2
    assert "--result" in bad_result.stderr
    assert ok_json(agh("ls", "--json"))["tasks"] == []  # nothing was created


def test_usage_errors_exit_2(agh: Agh) -> None:
    assert agh("add", "x", "--priority", "asap").exit_code == 2
    assert agh("claim", "--wait", "61").exit_code == 2
    assert agh("heartbeat", "run_x").exit_code == 2  # no token
    assert agh("frobnicate").exit_code == 2


def test_unknown_task_exits_3_with_message(agh: Agh) -> None:
    result = agh("show", "T-999")
    assert result.exit_code == 3
    assert result.stdout == ""
    assert "agh: task T-999 not found" in result.stderr
    assert "hint: " in result.stderr


def test_unreachable_daemon_exits_69(short_dir: str) -> None:
    sock = os.path.join(short_dir, "agh.sock")
    result = invoke("--socket", sock, "ls")
    assert result.exit_code == EXIT_UNAVAILABLE == 69
    assert result.stdout == ""
    assert "aghd" in result.stderr and sock in result.stderr
    # AGH_SOCKET selects the socket too.
    assert invoke("ping", env={"AGH_SOCKET": sock}).exit_code == 69


def test_silent_daemon_times_out_with_a_no_answer_message(short_dir: str) -> None:
    path = os.path.join(short_dir, "silent.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)  # accepted by the kernel, never answered
        with Client(path, timeout=0.5) as client, pytest.raises(DaemonUnreachable) as caught:
            client.server_info()
    message = caught.value.message
    assert "did not answer within 0.5 seconds" in message and path in message
    assert "overloaded or stuck" in message and "agh ping" in message
    assert "not running" not in message


def test_permission_denied_names_the_socket_not_a_missing_daemon(
    short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Root ignores a chmod 000 socket, so make connect() fail as it would for
    # another user's daemon.
    def denied(self: socket.socket, address: Any) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", denied)
    path = os.path.join(short_dir, "agh.sock")
    with pytest.raises(DaemonUnreachable) as caught:
        Client(path)
    message = caught.value.message
    assert "permission denied" in message and path in message
    assert "--socket" in message and "AGH_SOCKET" in message
    assert "not running" not in message
    result = invoke("--socket", path, "ls")
    assert result.exit_code == EXIT_UNAVAILABLE
    assert "permission denied" in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root may connect to any socket")
def test_permission_denied_on_a_real_socket(short_dir: str) -> None:
    path = os.path.join(short_dir, "agh.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(1)
        os.chmod(path, 0)
        with pytest.raises(DaemonUnreachable, match="permission denied"):
            Client(path)


def test_missing_daemon_says_not_running(short_dir: str) -> None:
    path = os.path.join(short_dir, "agh.sock")
    with pytest.raises(DaemonUnreachable, match=r"not running .*Start it"):
        Client(path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as stale:
        stale.bind(path)  # a socket file nobody listens on: connection refused
    with pytest.raises(DaemonUnreachable, match=r"not running .*Start it"):
        Client(path)


# -- the real program ---------------------------------------------------------------


def run_agh(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = clean_environ()
    return subprocess.run(
        [sys.executable, "-m", "agh.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**base, **(env or {})},
        check=False,
    )


def test_subprocess_round_trip_and_exit_codes(daemon: Any, short_dir: str) -> None:
    created = run_agh("--socket", daemon.socket, "add", "from a shell", "--json")
    assert created.returncode == 0, created.stderr
    ident = json.loads(created.stdout)["task"]["identifier"]
    shown = run_agh("show", ident, env={"AGH_SOCKET": daemon.socket})
    assert shown.returncode == 0 and "from a shell" in shown.stdout

    gone = run_agh("--socket", os.path.join(short_dir, "none", "agh.sock"), "ping")
    assert gone.returncode == 69
    assert "aghd" in gone.stderr and gone.stdout == ""

    version = run_agh("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"agh {__version__}"


HEAVY = ("aghd", "anyio", "watchfiles", "uvloop", "yaml")
WATCHING_COMMANDS = ("timeline", "watch", "logs", "send", "events", "dashboard", "inbox")


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["ls", "--help"],
        ["claim", "-h"],
        ["compose", "--help"],
        ["tree", "-h"],
        ["dep", "add", "--help"],
        ["cancel", "-h"],
        *([command, "--help"] for command in WATCHING_COMMANDS),
    ],
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    code = (
        "import json, sys\n"
        "from agh.cli import main\n"
        "try:\n"
        f"    main({args!r}, prog_name='agh')\n"
        "except SystemExit as exc:\n"
        "    assert exc.code == 0, exc.code\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in heavy)))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.splitlines()[-1]) == []


def test_a_real_command_imports_nothing_heavy(short_dir: str) -> None:
    # Connecting (here: failing to) must not pull in the daemon's stack either.
    proc = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "agh.cli",
            "--socket",
            os.path.join(short_dir, "agh.sock"),
            "ls",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 69
    imported = {
        line.split("|")[-1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "agh.client" in imported
    assert not {m for m in imported if m.split(".")[0] in HEAVY}


# -- help text ----------------------------------------------------------------------


# -- pure helpers -------------------------------------------------------------------


def test_choices_match_the_protocol() -> None:
    assert typing.get_args(p.Priority) == PRIORITIES
    assert typing.get_args(p.TaskStatus) == TASK_STATUSES


def test_format_table_aligns_columns() -> None:
    assert format_table(("A", "BB"), [("xxx", "y"), ("z", "")]).splitlines() == [
        "A    BB",
        "xxx  y",
        "z",
    ]


def test_workspace_ref() -> None:
    assert workspace_ref(None) is None
    assert workspace_ref(".") == os.getcwd()
    assert workspace_ref("sub/dir") == os.path.join(os.getcwd(), "sub", "dir")
    assert workspace_ref("/abs/path") == "/abs/path"
    assert workspace_ref("ws_01ABC") == "ws_01ABC"
    assert workspace_ref("PROJ") == "PROJ"
