"""``agh worker``: a real worker subprocess running real ``sh`` commands for
runs it claims from a real daemon (in-process, or an ``aghd`` subprocess
for the restart)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh.client import Client
from tests.helpers.cli import clean_environ, invoke
from tests.helpers.daemons import (
    ThreadDaemon,
    chained_claims,
    spawn_daemon,
    stop_process,
    wait_run_status,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator


class WorkerProc:
    """``agh --socket S worker ARGS…`` as a subprocess; its stderr goes to a
    file (a pipe nobody reads would block its echo of the output)."""

    def __init__(self, socket_path: str, args: tuple[str, ...], log: str) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "agh.cli", "--socket", socket_path, "worker", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=clean_environ(),
            )

    def stderr(self) -> str:
        with open(self.log, encoding="utf-8", errors="replace") as f:
            return f.read()

    def wait(self, timeout: float = 10) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running; its stderr:\n{self.stderr()}") from None

    def stop(self, timeout: float = 10) -> int:
        """SIGTERM, and its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def wait_for_output(self, text: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.stderr():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no {text!r} from the worker; its stderr:\n{self.stderr()}")
            time.sleep(0.02)


@pytest.fixture
def worker(short_dir: str) -> Iterator[Callable[..., WorkerProc]]:
    """``worker(*args, socket=...)`` starts a worker (on the ``daemon``
    fixture's socket unless given); stopped at the end of the test."""
    started: list[WorkerProc] = []

    def start(*args: str, socket: str) -> WorkerProc:
        w = WorkerProc(socket, args, os.path.join(short_dir, f"worker-{len(started)}.log"))
        started.append(w)
        return w

    yield start
    for w in started:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGTERM)
            try:
                w.proc.wait(15)
            except subprocess.TimeoutExpired:
                w.proc.kill()
                w.proc.wait()


def wait_until(check: Callable[[], Any], timeout: float = 10, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet does not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def task_status(c: Client, task_id: str) -> str:
    return c.tasks_get(task_id).task.task.status


def test_exit_0_completes_with_the_last_json_stdout_line(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc]
) -> None:
    created = client.tasks_create("add", start=True)
    assert created.run is not None
    script = 'echo "adding up"; echo \'{"sum": 3}\'; echo'
    w = worker("--once", "--wait", "5", "--", "sh", "-c", script, socket=daemon.socket)
    assert w.wait() == 0
    run = client.runs_get(created.run.id).run.run
    assert run.status == "completed"
    assert run.result == {"sum": 3}  # the last non-empty line, parsed
    err = w.stderr()
    assert f"T-1 {run.id} started (attempt 1 of 1)" in err
    assert "T-1 | adding up" in err  # the output, echoed
    assert "T-1 completed in " in err


def test_the_command_gets_the_run_in_its_environment_and_the_input_on_stdin(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc], short_dir: str
) -> None:
    created = client.tasks_create("env", start=True, input={"path": "docs/", "n": 2})
    assert created.run is not None
    agh = f"{sys.executable} -m agh.cli"
    script = (
        'cat > "$0/stdin"; env | grep "^AGH_" > "$0/env"; '
        f'{agh} agent log "logged from inside" && echo done'
    )
    w = worker("--once", "--wait", "5", "--", "sh", "-c", script, short_dir, socket=daemon.socket)
    assert w.wait() == 0, w.stderr()
    with open(os.path.join(short_dir, "stdin")) as f:
        assert json.loads(f.read()) == {"path": "docs/", "n": 2}
    with open(os.path.join(short_dir, "env")) as f:
        env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    assert env["AGH_TASK_ID"] == created.task.id
    assert env["AGH_TASK_IDENTIFIER"] == created.task.identifier
    assert env["AGH_RUN_ID"] == created.run.id
    assert env["AGH_ATTEMPT"] == "1"
    assert json.loads(env["AGH_INPUT"]) == {"path": "docs/", "n": 2}
    assert env["AGH_SOCKET"] == os.path.abspath(daemon.socket)
    assert env["AGH_CLAIM_TOKEN"].startswith("ct_")
    assert env["AGH_SESSION_ID"].startswith("ses_")
    assert not os.path.exists(env["AGH_MESSAGES"])  # removed after the run
    run = client.runs_get(created.run.id).run.run
    assert run.status == "completed"
    assert run.result == {"exit_code": 0}  # "done" is not JSON
    assert run.session_id == env["AGH_SESSION_ID"]
    # `agh agent log` inside the command reached the run, as its session.
    messages = [line.message for line in client.runs_logs(run.id).logs]
    assert "logged from inside" in messages


def test_output_lines_go_to_the_run_log_with_their_stream(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc]
) -> None:
    created = client.tasks_create("chatty", start=True)
    assert created.run is not None
    script = "echo 'out one'; echo 'err one' >&2; echo 'out two'"
    w = worker("--once", "--quiet", "--wait", "5", "--", "sh", "-c", script, socket=daemon.socket)
    assert w.wait() == 0
    logs = client.runs_logs(created.run.id).logs
    got = {(line.message, line.level, line.metadata["stream"]) for line in logs}
    assert got >= {
        ("out one", "info", "stdout"),
        ("out two", "info", "stdout"),
        ("err one", "error", "stderr"),
    }
    stdout = [line.message for line in logs if line.metadata["stream"] == "stdout"]
    assert stdout == ["out one", "out two"]  # in order
    assert "out one" not in w.stderr()  # --quiet: not echoed


def test_a_failing_command_is_retried_up_to_max_attempts(
    make_daemon: Callable[..., ThreadDaemon], worker: Callable[..., WorkerProc]
) -> None:
    d = make_daemon(retry_backoff_base_ms=20, retry_backoff_cap_ms=50)
    with d.client() as c:
        created = c.tasks_create("flaky", start=True, max_attempts=2)
        assert created.run is not None
        script = 'echo "attempt $AGH_ATTEMPT went wrong" >&2; exit 3'
        w = worker("--", "sh", "-c", script, socket=d.socket)
        wait_until(lambda: task_status(c, created.task.id) == "failed", what="the task to fail")
        run = c.runs_get(created.run.id).run.run
        assert run.attempt == 2
        assert run.error == "exit status 3: attempt 2 went wrong"
    w.wait_for_output("(attempt 2 of 2)")
    err = w.stderr()
    assert "T-1 failed: exit status 3 (attempt 1 of 2; retrying)" in err
    assert "T-1 failed: exit status 3 (attempt 2 of 2)" in err
    # Idle in a 30 s long poll: a SIGTERM still ends it at once.
    started = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - started < 3


def test_concurrency_runs_commands_side_by_side(
    daemon: ThreadDaemon,
    client: Client,
    worker: Callable[..., WorkerProc],
    short_dir: str,
) -> None:
    tasks = [client.tasks_create(f"job {i}", start=True).task for i in range(4)]
    script = (
        'date +%s.%N > "$0/$AGH_TASK_IDENTIFIER.start"; sleep 1; '
        'date +%s.%N > "$0/$AGH_TASK_IDENTIFIER.end"'
    )
    w = worker(
        "--concurrency", "4", "--name", "quad", "--", "sh", "-c", script, short_dir,
        socket=daemon.socket,
    )  # fmt: skip
    ids = [task.id for task in tasks]
    wait_until(
        lambda: all(task_status(client, i) == "completed" for i in ids), what="all four to complete"
    )
    assert w.stop() == 0

    def times(suffix: str) -> list[float]:
        out = []
        for task in tasks:
            with open(os.path.join(short_dir, f"{task.identifier}.{suffix}")) as f:
                out.append(float(f.read()))
        return out

    assert max(times("start")) < min(times("end"))  # all four ran at once
    # Each slot is its own agent session, all named --name.
    sessions = {client.tasks_get(t.id).task.runs[0].session_id for t in tasks}
    assert len(sessions) == 4
    names = {s.session_id: s.agent_name for s in client.sessions_list().sessions}
    assert {names[s] for s in sessions if s} == {"quad"}


def test_sigterm_ends_the_command_and_releases_its_run(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc], short_dir: str
) -> None:
    created = client.tasks_create("long", start=True)
    assert created.run is not None
    pids_file = os.path.join(short_dir, "pids")
    # A grandchild too: the whole process group must go.
    script = 'sleep 30 & echo "$$ $!" > "$0/pids.tmp"; mv "$0/pids.tmp" "$0/pids"; wait'
    w = worker("--grace", "2", "--", "sh", "-c", script, short_dir, socket=daemon.socket)
    wait_until(lambda: os.path.exists(pids_file), what="the command to start")
    with open(pids_file) as f:
        pids = [int(p) for p in f.read().split()]
    assert wait_run_status(client, created.run.id, "running").status == "running"
    started = time.monotonic()
    assert w.stop() == 0
    assert time.monotonic() - started < 4  # sh and sleep die on SIGTERM, no grace needed
    run = wait_run_status(client, created.run.id, "queued")
    assert run.status == "queued" and run.attempt == 0  # a release keeps the attempt
    released = [
        e for e in client.tasks_get(created.task.id).task.events if e.event_type == "run.released"
    ]
    assert released and released[-1].payload == {"reason": "worker stopped"}
    wait_until(lambda: not any(alive(pid) for pid in pids), timeout=3, what="the command to die")
    assert "T-1 released: worker stopped" in w.stderr()


def test_a_lost_lease_stops_the_command_without_finishing_the_run(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc], short_dir: str
) -> None:
    created = client.tasks_create("canceled midway", start=True)
    assert created.run is not None
    pid_file = os.path.join(short_dir, "pid")
    script = 'echo $$ > "$0/pid.tmp"; mv "$0/pid.tmp" "$0/pid"; exec sleep 30'
    w = worker("--once", "--wait", "5", "--", "sh", "-c", script, short_dir, socket=daemon.socket)
    wait_until(lambda: os.path.exists(pid_file), what="the command to start")
    with open(pid_file) as f:
        pid = int(f.read())
    client.tasks_cancel(created.task.id, reason="not needed")
    assert w.wait() == 4  # --once: lease lost
    assert not alive(pid)
    assert client.runs_get(created.run.id).run.run.status == "canceled"
    assert "T-1 lease lost" in w.stderr()


def test_agh_send_reaches_the_command_through_agh_messages(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc]
) -> None:
    created = client.tasks_create("listening", start=True)
    assert created.run is not None
    script = (
        'while ! grep -q "hello there" "$AGH_MESSAGES"; do sleep 0.05; done; '
        'stat -c "mode %a" "$AGH_MESSAGES" >&2; echo "$AGH_MESSAGES" >&2; '
        'tail -n 1 "$AGH_MESSAGES"'
    )
    w = worker("--once", "--wait", "5", "--", "sh", "-c", script, socket=daemon.socket)
    wait_run_status(client, created.run.id, "running")
    client.tasks_send(created.task.id, "hello there")
    assert w.wait() == 0, w.stderr()
    run = client.runs_get(created.run.id).run.run
    assert run.status == "completed"
    # The last stdout line was the message's JSON line: it became the result.
    assert run.result["message"] == "hello there"
    assert run.result["kind"] == "input"
    stderr_lines = [line.message for line in client.runs_logs(run.id).logs if line.level == "error"]
    assert stderr_lines[0] == "mode 600"
    assert not os.path.exists(stderr_lines[1])  # removed after the run


def test_once_with_nothing_to_claim_exits_6(
    daemon: ThreadDaemon, worker: Callable[..., WorkerProc]
) -> None:
    w = worker("--once", "--wait", "0.3", "--", "true", socket=daemon.socket)
    assert w.wait() == 6
    assert "no work available" in w.stderr()


def test_a_command_that_does_not_exist_is_a_usage_error(daemon: ThreadDaemon) -> None:
    result = invoke("--socket", daemon.socket, "worker", "--", "no-such-command-here")
    assert result.exit_code == 2
    assert "no-such-command-here" in result.output


def test_the_worker_waits_out_a_daemon_restart(
    short_dir: str, procs: list[subprocess.Popen[bytes]], worker: Callable[..., WorkerProc]
) -> None:
    sock, db = os.path.join(short_dir, "agh.sock"), os.path.join(short_dir, "agh.db")
    procs.append(spawn_daemon(sock, db))
    w = worker("--wait", "1", "--lease", "5", "--", "sh", "-c", "echo '{\"ok\": 1}'", socket=sock)
    w.wait_for_output("claiming runs")
    time.sleep(0.3)  # in its long poll
    assert stop_process(procs[0]) == 0
    w.wait_for_output("waiting for aghd")
    procs.append(spawn_daemon(sock, db))
    with Client(sock) as c:
        created = c.tasks_create("after the restart", start=True)
        assert created.run is not None
        run = wait_run_status(c, created.run.id, "completed", timeout=10)
        assert run.status == "completed" and run.result == {"ok": 1}
    assert "aghd is back" in w.stderr()
    assert w.stop() == 0


def test_a_lease_shorter_than_the_command_is_kept_alive(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc]
) -> None:
    created = client.tasks_create("slow", start=True)
    assert created.run is not None
    w = worker("--once", "--lease", "1", "--", "sh", "-c", "sleep 2.5", socket=daemon.socket)
    assert w.wait() == 0, w.stderr()
    run = client.runs_get(created.run.id).run.run
    assert run.status == "completed" and run.attempt == 1  # never expired and re-claimed


def test_the_log_buffer_drops_the_oldest_lines_and_says_how_many() -> None:
    from agh.runner import _LogBuffer

    buffer = _LogBuffer(capacity=3)
    assert buffer.add({"message": "1"})  # the first waiting line wakes the sender
    for n in "2345":
        assert not buffer.add({"message": n})
    batch = buffer.take()
    assert batch[0]["message"] == "… 2 lines dropped (aghd took them too slowly)"
    assert batch[0]["metadata"] == {"stream": "worker", "dropped": 2}
    assert [line["message"] for line in batch[1:]] == ["3", "4", "5"]
    # A batch that could not be sent comes back first, still within bounds.
    buffer.put_back(batch)
    buffer.add({"message": "6"})
    assert [line["message"] for line in buffer.take()] == [
        "… 3 lines dropped (aghd took them too slowly)",
        "4",
        "5",
        "6",
    ]
    assert not buffer.pending()


def test_each_finish_claims_the_next_run_in_the_same_call(
    daemon: ThreadDaemon, client: Client, worker: Callable[..., WorkerProc]
) -> None:
    ids = [client.tasks_create(f"job {i}", start=True).task.id for i in range(4)]
    failing = client.tasks_create("fails", start=True).task.id
    w = worker("--", "sh", "-c", 'test "$AGH_TASK_ID" != "$0"', failing, socket=daemon.socket)
    wait_until(
        lambda: all(task_status(client, i) in ("completed", "failed") for i in [*ids, failing]),
        what="all five to finish",
    )
    assert [task_status(client, i) for i in ids] == ["completed"] * 4
    assert task_status(client, failing) == "failed"
    assert w.stop() == 0
    # Five runs, one slot: the first claimed by claim_next, the other four
    # each by the finish (complete, or fail) before it.
    assert chained_claims(daemon.config.db_path) == 4
