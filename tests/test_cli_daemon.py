"""No daemon running: the CLI starts one (unless AGH_AUTOSTART=0), ``agh
daemon start|stop|status``, and the socket's fallback directory when
XDG_RUNTIME_DIR is unset. Real ``aghd`` subprocesses throughout."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import pytest

from agh.cli.daemon import pid_alive
from tests.helpers.cli import clean_environ

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def home(short_dir: str) -> Iterator[dict[str, str]]:
    """An environment whose state dir, database and socket are all in
    ``short_dir``; any aghd left running at the end is killed."""
    env = clean_environ(
        AGH_AUTOSTART="1",
        XDG_STATE_HOME=os.path.join(short_dir, "state"),
        AGH_DB=os.path.join(short_dir, "agh.db"),
        AGH_SOCKET=os.path.join(short_dir, "run", "agh.sock"),
    )
    yield env
    pid_file = env["AGH_SOCKET"] + ".lock"
    if os.path.exists(pid_file):
        try:
            with open(pid_file, encoding="ascii") as f:
                pid = int(f.read().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (ValueError, OSError, IndexError):
            pass


def agh(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agh.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def test_a_command_starts_aghd_when_none_runs(home: dict[str, str]) -> None:
    first = agh(home, "add", "started for me", "-q")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("task_")
    assert "agh: started aghd (pid " in first.stderr
    assert os.path.join(home["XDG_STATE_HOME"], "agh", "aghd.log") in first.stderr
    # The next command finds it running and says nothing on stderr.
    second = agh(home, "ls", "-q")
    assert second.returncode == 0 and second.stderr == ""
    assert second.stdout.split() == [first.stdout.strip()]
    status = agh(home, "daemon", "status", "--json")
    assert status.returncode == 0, status.stderr
    info = json.loads(status.stdout)
    assert info["running"] is True and info["totals"]["tasks_total"] == 1
    pid = info["server"]["pid"]
    text = agh(home, "daemon", "status").stdout
    assert "pid:" in text and str(pid) in text and "1 (1 ready" in text
    # The daemon is in its own session: it outlives the terminal's Ctrl-C.
    assert os.getsid(pid) == pid
    stopped = agh(home, "daemon", "stop")
    assert stopped.returncode == 0 and f"stopped aghd (pid {pid})" in stopped.stderr
    assert not pid_alive(pid)
    assert agh(home, "daemon", "stop").stderr.startswith("agh: aghd is not running")


def test_autostart_off_exits_69_and_ping_status_never_start_it(home: dict[str, str]) -> None:
    off = agh({**home, "AGH_AUTOSTART": "0"}, "ls")
    assert off.returncode == 69
    assert "aghd is not running" in off.stderr and "Start it with `aghd`" in off.stderr
    for args in (("ping",), ("daemon", "status")):
        result = agh(home, *args)
        assert result.returncode == 69, args
        assert "started aghd" not in result.stderr
    assert not os.path.exists(home["AGH_SOCKET"])


def test_daemon_start_is_idempotent(home: dict[str, str]) -> None:
    started = agh(home, "daemon", "start")
    assert started.returncode == 0 and "started aghd" in started.stderr
    again = agh(home, "daemon", "start")
    assert again.returncode == 0 and "already running" in again.stderr
    assert agh(home, "daemon", "stop").returncode == 0


def test_a_daemon_that_cannot_start_is_reported_with_the_next_step(
    home: dict[str, str], short_dir: str
) -> None:
    bad_db = os.path.join(short_dir, "not-a-db")
    with open(bad_db, "wb") as f:
        f.write(b"this is not an SQLite database" * 100)
    result = agh({**home, "AGH_DB": bad_db}, "ls", timeout=90)
    assert result.returncode == 69
    assert "starting it failed: it exited with status" in result.stderr
    assert "not a database" in result.stderr  # the daemon's own reason, from its log
    assert "aghd.log" in result.stderr and "run `aghd --socket" in result.stderr


def test_two_commands_racing_to_start_share_one_daemon(home: dict[str, str]) -> None:
    racers = [
        subprocess.Popen(
            [sys.executable, "-m", "agh.cli", "add", f"racer {n}", "-q"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=home,
        )
        for n in range(3)
    ]
    outs = [r.communicate(timeout=60) for r in racers]
    assert [r.returncode for r in racers] == [0, 0, 0], outs
    listed = agh(home, "ls", "-q").stdout.split()
    assert sorted(listed) == sorted(o[0].strip() for o in outs)
    assert agh(home, "daemon", "stop").returncode == 0


LOGIND_DIR = f"/run/user/{os.getuid()}"


@pytest.mark.skipif(
    os.path.isdir(LOGIND_DIR), reason=f"{LOGIND_DIR} exists: the socket goes there first"
)
def test_without_xdg_runtime_dir_the_socket_dir_is_private_and_nothing_warns(
    short_dir: str,
) -> None:
    env = clean_environ(TMPDIR=short_dir, AGH_DB=os.path.join(short_dir, "agh.db"))
    env.pop("XDG_RUNTIME_DIR", None)
    env.pop("AGH_SOCKET", None)
    code = "from agh.paths import default_socket_path; print(default_socket_path())"
    proc = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )
    expected = os.path.join(short_dir, f"agh-{os.getuid()}", "agh.sock")
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.strip() == expected
    daemon = subprocess.Popen(
        [sys.executable, "-m", "aghd"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while not os.path.exists(expected):
            assert time.monotonic() < deadline, "aghd never made its socket"
            assert daemon.poll() is None, daemon.stderr.read() if daemon.stderr else ""
            time.sleep(0.05)
        mode = stat.S_IMODE(os.stat(os.path.dirname(expected)).st_mode)
        assert mode == 0o700
        ping = agh(env, "ping", "--json")
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout)["socket"] == expected
        assert "Warning" not in ping.stderr and ping.stderr == ""
    finally:
        daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=30)
    assert "RuntimeDirWarning" not in err.decode()
