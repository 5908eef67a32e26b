"""The agent examples in ``contrib/examples/``, run as real programs against a
real daemon: the Python agent and the bash agent as subprocesses, and the
request lines of the socat session replayed over a real socket."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.helpers.cli import clean_environ
from tests.helpers.daemons import ThreadDaemon, chained_claims, wait_run_status
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from agh.client import Client

EXAMPLES = Path(__file__).resolve().parent.parent / "contrib" / "examples"
PYTHON_AGENT = EXAMPLES / "python_agent.py"
BASH_AGENT = EXAMPLES / "bash_agent.sh"
SOCAT_SESSION = EXAMPLES / "socat_session.md"
BASH = shutil.which("bash")
needs_bash = pytest.mark.skipif(BASH is None, reason="bash is not installed")


def _sigint_default() -> None:
    # Started from a background job, this process may have SIGINT ignored;
    # an ignored signal stays ignored across exec (bash cannot even trap it),
    # and the agents must see Ctrl-C.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Agent processes a test starts (each its own process group): the group
    is killed at the end if anything of it is left."""
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)


def _spawn(
    started: list[subprocess.Popen[bytes]], args: list[str], log: Path, **env: str
) -> subprocess.Popen[bytes]:
    # Output to a file, not a pipe: a grandchild left behind must not make
    # the test wait for a pipe to close.
    environ = clean_environ(**env)
    environ.pop("AGH_SESSION_ID", None)  # a session of the developer's shell
    with log.open("wb") as out:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environ,
            preexec_fn=_sigint_default,
            start_new_session=True,
        )
    started.append(proc)
    return proc


def _until(check: Callable[[], Any], what: str, timeout: float = 8.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.03)
    return value


def _queue(client: Client, title: str, **fields: Any) -> str:
    """Create a task with its run queued; the run's id."""
    run = client.tasks_create(title, start=True, **fields).run
    assert run is not None
    return run.id


def _finished(client: Client, run_ids: list[str]) -> list[Any]:
    """The runs, once each has ended."""

    def ended(run_id: str) -> Any:
        run = client.runs_get(run_id).run.run
        return run if run.ended_at else None

    return [_until(functools.partial(ended, r), f"run {r} to end") for r in run_ids]


def _release_reasons(client: Client, run_id: str) -> list[Any]:
    """The reasons given by the releases of the run, in order."""
    task_id = client.runs_get(run_id).run.run.task_id
    timeline = client.tasks_timeline(task_id).timeline
    return [(e.payload or {}).get("reason") for e in timeline if e.event_type == "run.released"]


def _agent_name(client: Client, session_id: str | None) -> str | None:
    sessions = {s.session_id: s for s in client.sessions_list().sessions}
    return sessions[session_id].agent_name if session_id in sessions else None


# -- python_agent.py ---------------------------------------------------------------


def _python_agent(
    started: list[subprocess.Popen[bytes]], socket_path: str, log: Path, *args: str
) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(PYTHON_AGENT), "--socket", socket_path, "--name", "shouter", *args]
    return _spawn(started, cmd, log)


def test_python_agent_answers_its_channel_and_stops_on_ctrl_c(
    daemon: ThreadDaemon, client: Client, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    def queue(fields: Any, channel: str = "examples") -> str:
        return _queue(client, "shout", input=fields, network_channel=channel)

    hello, agh, broken = queue({"text": "hello"}), queue({"text": "agh"}), queue({"nope": 1})
    elsewhere = queue({"text": "not mine"}, channel="other")
    log = tmp_path / "agent.log"
    agent = _python_agent(started, daemon.socket, log, "--channel", "examples")

    runs = _finished(client, [hello, agh, broken])
    assert [r.status for r in runs] == ["completed", "completed", "failed"]
    assert runs[0].result == {"text": "HELLO"} and runs[1].result == {"text": "AGH"}
    # An exception in the with block fails that run; the agent goes on.
    assert runs[2].error == "KeyError: 'text'"
    assert {_agent_name(client, r.session_id) for r in runs} == {"shouter"}
    assert [x.message for x in client.runs_logs(hello).logs] == ["upper-casing 5 characters"]
    assert client.runs_get(elsewhere).run.run.status == "queued"

    agent.send_signal(signal.SIGINT)
    assert agent.wait(10) == 0, log.read_text()
    assert "run failed: KeyError('text')" in log.read_text()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_python_agent_releases_the_run_it_is_working_on(
    daemon: ThreadDaemon,
    client: Client,
    started: list[subprocess.Popen[bytes]],
    tmp_path: Path,
    sig: int,
) -> None:
    run_id = _queue(client, "slow", input={"text": "zzz", "sleep": 60})
    log = tmp_path / "agent.log"
    agent = _python_agent(started, daemon.socket, log)
    # Its log line comes just before it starts sleeping on the run.
    _until(lambda: client.runs_logs(run_id).logs, "the agent to start on the run")
    assert client.runs_get(run_id).run.run.status == "claimed"

    agent.send_signal(sig)
    assert agent.wait(10) == 0, log.read_text()
    # Back in the queue at once (the lease had minutes left), by a release.
    assert client.runs_get(run_id).run.run.status == "queued"
    assert _release_reasons(client, run_id) == ["interrupted"]


def test_python_agent_without_a_daemon_says_so_and_exits_1(
    short_dir: str, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    agent = _python_agent(started, os.path.join(short_dir, "none.sock"), log)
    assert agent.wait(10) == 1
    assert "aghd is not running" in log.read_text()


# -- bash_agent.sh -----------------------------------------------------------------


def _bash_agent(
    started: list[subprocess.Popen[bytes]],
    socket_path: str,
    log: Path,
    *command: str,
    lease: int = 30,
) -> subprocess.Popen[bytes]:
    assert BASH is not None
    agh = f"{sys.executable} -m agh.cli --socket {socket_path}"
    args = [BASH, str(BASH_AGENT), "-n", "basher", "-l", str(lease), "--", *command]
    return _spawn(started, args, log, AGH=agh)


# The work: print the run's input; fail when it asks for that.
ECHO_OR_FAIL = [
    "sh",
    "-c",
    'printf "%s\\n" "$AGH_INPUT"; case $AGH_INPUT in *fail*) echo "no good"; exit 3;; esac',
]


@needs_bash
def test_bash_agent_completes_runs_and_fails_the_one_whose_command_fails(
    daemon: ThreadDaemon, client: Client, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    inputs = [{"text": "a"}, {"fail": True}, {"text": "b"}]
    run_ids = [_queue(client, "echo", input=i) for i in inputs]
    log = tmp_path / "agent.log"
    agent = _bash_agent(started, daemon.socket, log, *ECHO_OR_FAIL)

    runs = _finished(client, run_ids)
    assert [r.status for r in runs] == ["completed", "failed", "completed"], log.read_text()
    assert runs[0].result == runs[2].result == {"exit_status": 0}
    assert runs[1].error == "exit status 3: no good"
    # The command's output is the run's log; AGH_INPUT was the run's input.
    logged = [[x.message for x in client.runs_logs(rid).logs] for rid in run_ids]
    assert [json.loads(lines[0]) for lines in logged] == inputs
    assert logged[1][1:] == ["no good"]
    # One agent session across its claims, under its name.
    assert len({r.session_id for r in runs}) == 1
    assert _agent_name(client, runs[0].session_id) == "basher"
    # One command per run: the finishes of the first two claimed the next.
    assert chained_claims(daemon.config.db_path) == 2

    # Stopped while it waits for work (as systemd stops a unit: the whole
    # group), it exits 0 and leaves nothing behind.
    os.killpg(agent.pid, signal.SIGTERM)
    assert agent.wait(10) == 0, log.read_text()
    _until(lambda: not _group_alive(agent.pid), "the agent's processes to end", 5)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


@needs_bash
def test_bash_agent_heartbeats_and_releases_its_run_on_sigterm(
    daemon: ThreadDaemon, client: Client, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    run_id = _queue(client, "slow")
    log = tmp_path / "agent.log"
    agent = _bash_agent(started, daemon.socket, log, "sleep", "60", lease=3)
    # The first heartbeat (a second in, a third of the 3 s lease) makes it running.
    assert wait_run_status(client, run_id, "running", timeout=8).status == "running"

    agent.send_signal(signal.SIGTERM)  # the script alone, not its group
    assert agent.wait(10) == 0, log.read_text()
    assert client.runs_get(run_id).run.run.status == "queued"
    assert _release_reasons(client, run_id) == ["basher stopped"]
    # The command and the heartbeat loop went with it.
    _until(lambda: not _group_alive(agent.pid), "the agent's processes to end", 5)


@needs_bash
def test_bash_agent_releases_a_run_claimed_as_it_was_told_to_stop(
    daemon: ThreadDaemon, client: Client, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    log = tmp_path / "agent.log"
    agent = _bash_agent(started, daemon.socket, log, "sleep", "60")

    def waiting() -> bool:  # its claim is connected and long-polling
        return any(
            s.agent_name == "basher" and s.state == "connected"
            for s in client.sessions_list().sessions
        )

    _until(waiting, "the agent's claim to wait for work")
    # The script alone: bash holds the signal until the claim returns, and
    # the claim returns this run.
    agent.send_signal(signal.SIGTERM)
    time.sleep(0.1)
    run_id = _queue(client, "just in time")
    assert agent.wait(10) == 0, log.read_text()
    assert client.runs_get(run_id).run.run.status == "queued"
    assert _release_reasons(client, run_id) == ["basher stopped"]


@needs_bash
def test_bash_agent_waits_for_the_daemon_to_come_up(
    short_dir: str, make_daemon: Any, started: list[subprocess.Popen[bytes]], tmp_path: Path
) -> None:
    socket_path = os.path.join(short_dir, "agh.sock")  # where make_daemon puts it
    log = tmp_path / "agent.log"
    agent = _bash_agent(started, socket_path, log, "true")
    # Its first claim finds no daemon (exit 69): it backs off and tries again.
    _until(lambda: "aghd is not running" in log.read_text(), "a claim to find no daemon")
    daemon = make_daemon()
    assert daemon.socket == socket_path
    with daemon.client() as client:
        run_id = _queue(client, "late")
        (run,) = _finished(client, [run_id])
    assert run.status == "completed", log.read_text()
    assert agent.poll() is None
    os.killpg(agent.pid, signal.SIGTERM)
    assert agent.wait(10) == 0


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_bash_agent_is_shellcheck_clean() -> None:
    out = subprocess.run(["shellcheck", str(BASH_AGENT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


# -- socat_session.md --------------------------------------------------------------


def _session_blocks() -> list[tuple[str, Any]]:
    """Each ```json block of the session: its text and its value."""
    text = SOCAT_SESSION.read_text()
    return [(b, json.loads(b)) for b in re.findall(r"```json\n(.*?)\n```", text, re.DOTALL)]


def _shape(value: Any) -> Any:
    """Keys (nested), not values: ids, tokens and times differ every run."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return None


def test_socat_session_replays_against_a_fresh_daemon(daemon: ThreadDaemon) -> None:
    blocks = _session_blocks()
    requests = [(text, value) for text, value in blocks if "method" in value]
    replies = {value["id"]: value for _, value in blocks if "method" not in value}
    methods = [value["method"] for _, value in requests]
    assert methods == [
        "session.hello",
        "tasks.create",
        "agent.claim_next",
        "agent.heartbeat",
        "agent.complete",
        "agent.heartbeat",
    ]
    assert all("\n" not in text for text, _ in requests), "a request must be one line to type"
    assert sorted(replies) == sorted(value["id"] for _, value in requests)

    # The recorded session is consistent: the later lines use its claim.
    claim = replies[requests[2][1]["id"]]["result"]["claim"]
    for text, _ in requests[3:]:
        assert claim["run"]["id"] in text and claim["claim_token"] in text

    conn = RawConn(daemon.socket)
    try:
        swap: dict[str, str] = {}
        for text, request in requests:
            # The recorded run id and token, as this daemon's claim handed them out.
            for old, new in swap.items():
                text = text.replace(old, new)
            conn.send(text + "\n")
            live = conn.recv()
            recorded = replies[request["id"]]
            assert live["id"] == request["id"]
            if "error" in recorded:
                assert "error" in live, live
                assert live["error"]["code"] == recorded["error"]["code"]
                assert live["error"]["data"]["kind"] == recorded["error"]["data"]["kind"]
                continue
            assert "result" in live, live
            assert _shape(live["result"]) == _shape(recorded["result"]), request["method"]
            if request["method"] == "agent.claim_next":
                fresh = live["result"]["claim"]
                swap = {
                    claim["run"]["id"]: fresh["run"]["id"],
                    claim["claim_token"]: fresh["claim_token"],
                }
    finally:
        conn.close()
