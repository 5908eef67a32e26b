"""Crash durability and process behaviour of a real ``python -m aghd``
(PROTOCOL.md §1, §8)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time

import pytest

from agh import errors
from agh.client import Client
from tests.helpers.daemons import spawn_daemon, stop_process

pytestmark = pytest.mark.slow


class Paths:
    def __init__(self, directory: str) -> None:
        self.socket = os.path.join(directory, "d.sock")
        self.db = os.path.join(directory, "d.db")


@pytest.fixture
def paths(short_dir: str) -> Paths:
    return Paths(short_dir)


def _all_task_ids(c: Client) -> set[str]:
    ids: set[str] = set()
    cursor = None
    while True:
        page = c.tasks_list(limit=1000, cursor=cursor)
        ids.update(t.id for t in page.tasks)
        cursor = page.next_cursor
        if cursor is None:
            return ids


def test_kill_9_loses_no_acknowledged_write(
    paths: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(spawn_daemon(paths.socket, paths.db))
    acked: list[str] = []
    acked_lock = threading.Lock()
    stop = threading.Event()

    def writer(n: int) -> None:
        try:
            with Client(paths.socket, timeout=10) as c:
                i = 0
                while not stop.is_set():
                    task = c.tasks_create(f"w{n}-{i}", start=(i % 2 == 0)).task
                    with acked_lock:
                        acked.append(task.id)
                    i += 1
        except (errors.AghError, OSError):
            return  # the daemon died under us: expected

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    stop_process(procs[0], signal.SIGKILL)
    for t in threads:
        t.join(15)
    assert not any(t.is_alive() for t in threads)
    with acked_lock:
        acknowledged = list(acked)
    assert len(acknowledged) > 20, "the writers barely wrote anything"

    procs.append(spawn_daemon(paths.socket, paths.db))
    with Client(paths.socket) as c:
        present = _all_task_ids(c)
        missing = [tid for tid in acknowledged if tid not in present]
        assert missing == [], f"{len(missing)} acknowledged task(s) lost, e.g. {missing[:3]}"
        # The most recent acknowledgements are the ones most at risk.
        for tid in acknowledged[-20:]:
            assert c.tasks_get(tid).task.task.id == tid
        # And the store is consistent enough to keep working.
        assert c.tasks_create("after crash").task.id not in present
    assert stop_process(procs[1]) == 0


def test_sigterm_exits_zero_and_removes_socket(
    paths: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(spawn_daemon(paths.socket, paths.db))
    with Client(paths.socket) as c:
        c.tasks_create("before stop")
    assert os.path.exists(paths.socket)
    code = stop_process(procs[0], signal.SIGTERM)
    assert code == 0, procs[0].stderr.read().decode() if procs[0].stderr else ""
    assert not os.path.exists(paths.socket)
    with pytest.raises(errors.DaemonUnreachable):
        Client(paths.socket)
    # The write made before the stop is there after a restart.
    procs.append(spawn_daemon(paths.socket, paths.db))
    with Client(paths.socket) as c:
        assert [t.title for t in c.tasks_list().tasks] == ["before stop"]


def test_sigterm_with_idle_connections_open(
    paths: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(spawn_daemon(paths.socket, paths.db))
    idle = [Client(paths.socket) for _ in range(3)]
    try:
        idle[0].server_info()
        started = time.monotonic()
        assert stop_process(procs[0], signal.SIGTERM) == 0
        assert time.monotonic() - started < 10
        assert not os.path.exists(paths.socket)
    finally:
        for c in idle:
            c.close()


def test_second_daemon_refuses_to_start(paths: Paths, procs: list[subprocess.Popen[bytes]]) -> None:
    first = spawn_daemon(paths.socket, paths.db)
    procs.append(first)
    second = spawn_daemon(paths.socket, paths.db, wait=False)
    procs.append(second)
    try:
        code = second.wait(20)
    except subprocess.TimeoutExpired:
        pytest.fail("the second daemon kept running next to the first")
    stderr = second.stderr.read().decode() if second.stderr else ""
    assert code == 3, (code, stderr)
    assert "already running" in stderr
    assert first.poll() is None
    assert os.path.exists(paths.socket)
    with Client(paths.socket) as c:
        assert c.server_info().pid == first.pid


def test_second_daemon_on_same_db_other_socket_refuses(
    paths: Paths, short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    first = spawn_daemon(paths.socket, paths.db)
    procs.append(first)
    other_socket = os.path.join(short_dir, "other.sock")
    second = spawn_daemon(other_socket, paths.db, wait=False)
    procs.append(second)
    code = second.wait(20)
    stderr = second.stderr.read().decode() if second.stderr else ""
    assert code == 3, (code, stderr)
    assert "already running" in stderr
    with Client(paths.socket) as c:
        assert c.server_info().pid == first.pid


def test_stale_socket_does_not_prevent_restart(
    paths: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    procs.append(spawn_daemon(paths.socket, paths.db))
    with Client(paths.socket) as c:
        kept = c.tasks_create("survives").task.id
    stop_process(procs[0], signal.SIGKILL)
    assert os.path.exists(paths.socket), "SIGKILL should leave the socket file behind"
    with pytest.raises(errors.DaemonUnreachable):
        Client(paths.socket)
    restarted = spawn_daemon(paths.socket, paths.db)
    procs.append(restarted)
    with Client(paths.socket) as c:
        assert c.server_info().pid == restarted.pid
        assert c.tasks_get(kept).task.task.title == "survives"
    assert stop_process(restarted) == 0


def test_socket_and_directory_permissions(
    paths: Paths, short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock = os.path.join(short_dir, "run", "agh.sock")
    procs.append(spawn_daemon(sock, paths.db))
    assert os.stat(sock).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(sock)).st_mode & 0o777 == 0o700


def test_regular_file_at_socket_path_is_refused_and_kept(
    paths: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    with open(paths.socket, "w") as f:
        f.write("not a socket")
    proc = spawn_daemon(paths.socket, paths.db, wait=False)
    procs.append(proc)
    assert proc.wait(20) == 1
    assert proc.stderr is not None
    assert "is not a socket" in proc.stderr.read().decode()
    with open(paths.socket) as f:
        assert f.read() == "not a socket"
