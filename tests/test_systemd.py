"""aghd under systemd: the units `agh daemon install-unit` writes (checked by
``systemd-analyze verify``, and kept in ``contrib/systemd/``), socket
activation exactly as systemd does it (a listening socket as descriptor 3,
``LISTEN_FDS=1``, ``LISTEN_PID`` the daemon's own pid), and the
``$NOTIFY_SOCKET`` datagrams. Real ``aghd`` executables throughout."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sysconfig
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agh.cli.units import CONTRIB_EXEC_START, SERVICE, SOCKET, quote_executable, render
from aghd import systemd
from tests.helpers.cli import clean_environ, invoke

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parent.parent
AGHD = os.path.join(sysconfig.get_path("scripts"), "aghd")
REGENERATE = "python -m agh.cli.units --write contrib/systemd"


# -- the unit files ------------------------------------------------------------


def test_contrib_units_are_what_install_unit_renders() -> None:
    for name, text in render(CONTRIB_EXEC_START).items():
        committed = (ROOT / "contrib" / "systemd" / name).read_text(encoding="utf-8")
        assert committed == text, f"contrib/systemd/{name} is stale; regenerate with `{REGENERATE}`"
    assert not (ROOT / "contrib" / "aghd.service").exists(), (
        "the old unit moved to contrib/systemd/"
    )


@pytest.mark.parametrize("name", [SERVICE, SOCKET])
def test_every_directive_has_a_comment_above_it(name: str) -> None:
    lines = render(CONTRIB_EXEC_START)[name].splitlines()
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            assert i > 0 and lines[i - 1].startswith("#"), f"{name}: {line!r} is not commented"


def test_the_service_is_type_notify_and_restarts_on_failure() -> None:
    service = render(CONTRIB_EXEC_START)[SERVICE].splitlines()
    for directive in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "RestartPreventExitStatus=3",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=%h/.local/bin/aghd",
        "WantedBy=default.target",
    ):
        assert directive in service, directive
    socket_unit = render(CONTRIB_EXEC_START)[SOCKET].splitlines()
    # The path agh.paths.default_socket_path picks under the user manager.
    assert "ListenStream=%t/agh/agh.sock" in socket_unit
    assert {"SocketMode=0600", "DirectoryMode=0700", "WantedBy=sockets.target"} <= set(socket_unit)


def verify(directory: str, short_dir: str, *names: str) -> subprocess.CompletedProcess[str]:
    """``systemd-analyze --user verify`` on the units in ``directory``: it
    parses every directive, checks that ExecStart= is executable, and (with
    MANPATH on this checkout's pages) that Documentation= resolves."""
    runtime = os.path.join(short_dir, "xdg")
    os.makedirs(runtime, 0o700)
    manpath = os.path.join(short_dir, "man")
    os.makedirs(os.path.join(manpath, "man1"))
    for page in ("agh.1", "aghd.1"):
        os.symlink(ROOT / "man" / page, os.path.join(manpath, "man1", page))
    env = {**clean_environ(), "XDG_RUNTIME_DIR": runtime, "MANPATH": manpath}
    return subprocess.run(
        ["systemd-analyze", "--user", "verify", *(os.path.join(directory, n) for n in names)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def assert_verified(proc: subprocess.CompletedProcess[str]) -> None:
    about_units = [
        line for line in (proc.stdout + proc.stderr).splitlines() if "aghd" in line.lower()
    ]
    assert proc.returncode == 0 and not about_units, proc.stdout + proc.stderr


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None or shutil.which("man") is None,
    reason="systemd-analyze (and man, which it runs for Documentation=) is not installed",
)


@needs_systemd_analyze
def test_systemd_analyze_verifies_the_units_install_unit_writes(short_dir: str) -> None:
    directory = os.path.join(short_dir, "units")
    result = invoke("daemon", "install-unit", "--dir", directory)
    assert result.exit_code == 0, result.stderr
    assert_verified(verify(directory, short_dir, SERVICE, SOCKET))


@needs_systemd_analyze
def test_an_aghd_path_with_spaces_and_percent_is_quoted_for_systemd(short_dir: str) -> None:
    program = os.path.join(short_dir, "my agh 100%$x", "aghd")
    os.makedirs(os.path.dirname(program))
    with open(program, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\n")
    os.chmod(program, 0o755)
    quoted = quote_executable(program)
    assert quoted == '"' + program.replace("%", "%%") + '"'
    directory = os.path.join(short_dir, "units")
    os.mkdir(directory)
    for name, text in render(quoted).items():
        Path(directory, name).write_text(text, encoding="utf-8")
    assert_verified(verify(directory, short_dir, SERVICE, SOCKET))
    # A misquoted path is what verify would catch: the check has teeth.
    Path(directory, SERVICE).write_text(render(program)[SERVICE], encoding="utf-8")
    assert verify(directory, short_dir + "/again", SERVICE).returncode != 0


def test_a_path_systemd_cannot_run_is_refused() -> None:
    assert quote_executable("/opt/agh/bin/aghd") == "/opt/agh/bin/aghd"
    with pytest.raises(ValueError, match="may not contain quotes"):
        quote_executable("/home/o'brien/.local/bin/aghd")


# -- agh daemon install-unit ----------------------------------------------------


def test_install_unit_writes_both_units_for_this_installation(short_dir: str) -> None:
    # A socket nothing serves and autostart on: install-unit must not care.
    socket_path = os.path.join(short_dir, "none", "agh.sock")
    env: dict[str, str | None] = {"AGH_SOCKET": socket_path, "AGH_AUTOSTART": "1"}
    directory = os.path.join(short_dir, "units")
    result = invoke("daemon", "install-unit", "--dir", directory, env=env)
    assert result.exit_code == 0, result.stderr
    assert os.path.isfile(AGHD) and os.access(AGHD, os.X_OK)
    service = Path(directory, SERVICE).read_text(encoding="utf-8")
    assert f"\nExecStart={AGHD}\n" in service
    assert Path(directory, SOCKET).read_text(encoding="utf-8") == render(AGHD)[SOCKET]
    for name in (SERVICE, SOCKET):
        assert stat.S_IMODE(os.stat(os.path.join(directory, name)).st_mode) == 0o644
        assert f"written: {os.path.join(directory, name)}" in result.stdout
    for command in (
        "systemctl --user daemon-reload",
        "systemctl --user enable --now aghd.socket",
        "systemctl --user enable --now aghd.service",
        "journalctl --user -u aghd -f",
    ):
        assert command in result.stdout
    assert not os.path.exists(os.path.dirname(socket_path))  # no daemon was started
    assert sorted(os.listdir(directory)) == [SERVICE, SOCKET]  # no temporary left


def test_install_unit_defaults_to_the_user_systemd_directory(short_dir: str) -> None:
    result = invoke("daemon", "install-unit", "--json", env={"XDG_CONFIG_HOME": short_dir})
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    directory = os.path.join(short_dir, "systemd", "user")
    assert report["directory"] == directory
    assert report["exec_start"] == AGHD
    assert report["files"] == [
        {"path": os.path.join(directory, SERVICE), "status": "written"},
        {"path": os.path.join(directory, SOCKET), "status": "written"},
    ]
    assert "systemctl --user enable --now aghd.socket" in report["commands"]


def test_install_unit_is_idempotent_and_never_overwrites_edits_without_force(
    short_dir: str,
) -> None:
    directory = os.path.join(short_dir, "units")
    assert invoke("daemon", "install-unit", "--dir", directory).exit_code == 0
    again = invoke("daemon", "install-unit", "--dir", directory, "-o", "json")
    assert again.exit_code == 0
    assert {f["status"] for f in json.loads(again.stdout)["files"]} == {"unchanged"}
    edited = Path(directory, SERVICE)
    edited.write_text(edited.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    Path(directory, SOCKET).unlink()
    refused = invoke("daemon", "install-unit", "--dir", directory)
    assert refused.exit_code == 4, refused.stderr
    assert f"{edited} already exists and differs" in refused.stderr
    assert "--force" in refused.stderr
    assert edited.read_text(encoding="utf-8").endswith("# mine\n")
    assert not Path(directory, SOCKET).exists()  # nothing written at all
    forced = invoke("daemon", "install-unit", "--dir", directory, "--force", "--json")
    assert forced.exit_code == 0, forced.stderr
    statuses = {
        os.path.basename(f["path"]): f["status"] for f in json.loads(forced.stdout)["files"]
    }
    assert statuses == {SERVICE: "replaced", SOCKET: "written"}
    assert edited.read_text(encoding="utf-8") == render(AGHD)[SERVICE]


# -- notify() and inherited_listener() in-process --------------------------------


@pytest.fixture
def notify_socket(short_dir: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = os.path.join(short_dir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(5)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        yield sock


def test_notify_sends_one_datagram_of_lines(notify_socket: socket.socket) -> None:
    assert systemd.notify("A=1", "B=two words")
    assert notify_socket.recv(4096) == b"A=1\nB=two words"
    assert systemd.ready("serving x")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=serving x"
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.reloading()
    lines = notify_socket.recv(4096).decode().splitlines()
    assert lines[0] == "RELOADING=1"
    usec = int(lines[1].removeprefix("MONOTONIC_USEC="))
    assert before <= usec <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert systemd.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_notify_without_a_listener_returns_false_and_never_raises(
    short_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", os.path.join(short_dir, "nobody"))
    assert systemd.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/path")
    assert systemd.status("x") is False


def test_listen_variables_for_another_pid_are_ignored_and_removed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Descriptor 3 of this process is never looked at: the pid is not ours.
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 100_000))
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_FDNAMES", "aghd.socket")
    assert systemd.inherited_listener() is None
    assert not {"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} & os.environ.keys()
    assert systemd.inherited_listener() is None  # not activated at all


# -- a real aghd, activated as systemd does it -----------------------------------


def spawn_activated(
    fd3: int | None, env: dict[str, str], *args: str, listen_fds: str = "1"
) -> subprocess.Popen[str]:
    """The venv's ``aghd`` with ``fd3`` as descriptor 3, ``LISTEN_FDS`` and
    ``LISTEN_PID`` set to its own pid: ``sh`` sets it to ``$$`` and then
    execs aghd (whose script execs nothing more), so the pid is the same."""

    def preexec() -> None:
        if fd3 is not None and fd3 != 3:
            os.dup2(fd3, 3)  # inheritable, as systemd passes it
            os.close(fd3)

    return subprocess.Popen(
        ["sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"', AGHD, *args],
        env={**env, "LISTEN_FDS": listen_fds},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        close_fds=False,  # descriptor 3 must survive; Python's others are CLOEXEC
        pass_fds=(),
        preexec_fn=preexec,
    )


def server_info(path: str) -> dict[str, Any]:
    """One ``server.info`` over a fresh connection, no retry."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(b'{"jsonrpc":"2.0","id":1,"method":"server.info","params":{}}\n')
        reply = b""
        while not reply.endswith(b"\n"):
            chunk = sock.recv(65536)
            assert chunk, "aghd closed the connection without replying"
            reply += chunk
    result: dict[str, Any] = json.loads(reply)["result"]
    return result


@pytest.fixture
def env(short_dir: str) -> dict[str, str]:
    return clean_environ(
        AGH_DB=os.path.join(short_dir, "agh.db"),
        # What aghd would bind without activation: never touched when activated.
        AGH_SOCKET=os.path.join(short_dir, "unused", "agh.sock"),
        XDG_STATE_HOME=os.path.join(short_dir, "state"),
    )


def test_aghd_serves_the_socket_systemd_passes_and_leaves_it_in_place(
    short_dir: str, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    run = os.path.join(short_dir, "run")
    os.mkdir(run, 0o700)  # DirectoryMode=0700
    path = os.path.join(run, "agh.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        os.chmod(path, 0o600)
        listener.listen(64)
        proc = spawn_activated(listener.fileno(), env, "--log-level", "INFO")
        procs.append(proc)
        # systemd connects nothing itself; a client queued in the backlog
        # before aghd runs is answered once it does.
        deadline = time.monotonic() + 30
        while True:
            try:
                info = server_info(path)
                break
            except (OSError, AssertionError):
                assert proc.poll() is None, proc.communicate()[1]
                assert time.monotonic() < deadline, "aghd never answered on the passed socket"
                time.sleep(0.05)
        assert info["pid"] == proc.pid  # LISTEN_PID was aghd's own pid
        assert info["socket"] == path  # the inherited path, not $AGH_SOCKET
        assert not os.path.exists(os.path.dirname(env["AGH_SOCKET"]))
        assert os.path.exists(path + ".lock")  # the lock still keeps a second aghd out
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
        # aghd did not bind it, so aghd did not remove it: systemd's socket
        # keeps listening for the next start.
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        assert listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 1
        # The socket is still systemd's: the next activation serves it too.
        proc = spawn_activated(listener.fileno(), env)
        procs.append(proc)
        deadline = time.monotonic() + 30
        while True:
            try:
                assert server_info(path)["pid"] == proc.pid
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_a_manual_aghd_does_not_steal_the_socket_systemd_listens_on(
    short_dir: str, env: dict[str, str]
) -> None:
    """aghd.socket active, aghd.service down: the file looks stale (no lock
    held), but removing it would cut systemd off."""
    run = os.path.join(short_dir, "run")
    os.mkdir(run, 0o700)
    path = os.path.join(run, "agh.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(path)
        listener.listen(8)
        proc = subprocess.run(
            [AGHD, "--socket", path],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 1, proc.stderr
        assert f"something already listens on {path}" in proc.stderr
        assert "systemctl --user" in proc.stderr
        assert os.path.exists(path)


@pytest.mark.parametrize(
    ("make_fd3", "listen_fds", "expected"),
    [
        ("file", "1", "descriptor 3 is not a socket"),
        ("udp", "1", "not a listening Unix stream socket (it is AF_INET SOCK_DGRAM"),
        ("unlistened", "1", "(it is AF_UNIX SOCK_STREAM, not listening)"),
        ("unix", "2", "systemd passed 2 sockets (LISTEN_FDS=2)"),
    ],
)
def test_aghd_refuses_what_is_not_one_listening_unix_socket(
    short_dir: str, env: dict[str, str], make_fd3: str, listen_fds: str, expected: str
) -> None:
    opened: list[Any] = []
    if make_fd3 == "file":
        f = open(os.path.join(short_dir, "plain"), "w")  # noqa: SIM115
        opened.append(f)
        fd = f.fileno()
    elif make_fd3 == "udp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        opened.append(sock)
        fd = sock.fileno()
    else:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(os.path.join(short_dir, "s"))
        if make_fd3 == "unix":
            sock.listen()
        opened.append(sock)
        fd = sock.fileno()
    try:
        proc = spawn_activated(fd, env, listen_fds=listen_fds)
        _, err = proc.communicate(timeout=60)
    finally:
        for thing in opened:
            thing.close()
    assert proc.returncode == 1, err
    assert expected in err, err
    assert "aghd.socket" in err  # the next step names the unit to fix
    assert "Traceback" not in err
    assert not os.path.exists(os.path.dirname(env["AGH_SOCKET"]))  # nothing bound


# -- $NOTIFY_SOCKET ------------------------------------------------------------


def receive_until(sock: socket.socket, wanted: str, proc: subprocess.Popen[str]) -> list[str]:
    """Datagrams until one has the line ``wanted``; each as its text."""
    got: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            assert proc.poll() is None, proc.communicate()[1]
            continue
        if wanted in got[-1].splitlines():
            return got
    raise AssertionError(f"no {wanted} within 30 s; got {got}")


@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_aghd_notifies_ready_only_once_it_answers_then_stopping(
    short_dir: str, env: dict[str, str], procs: list[subprocess.Popen[str]], abstract: bool
) -> None:
    if abstract:
        name = f"agh-test-{uuid.uuid4().hex}"
        address, variable = "\0" + name, "@" + name
    else:
        address = variable = os.path.join(short_dir, "notify")
    path = os.path.join(short_dir, "run", "agh.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(0.5)
        proc = subprocess.Popen(
            [AGHD, "--socket", path],
            env={**env, "NOTIFY_SOCKET": variable},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        messages = receive_until(notify, "READY=1", proc)
        # Right now, without a retry: READY=1 promised a served socket.
        assert server_info(path)["pid"] == proc.pid
        assert messages[-1].splitlines() == ["READY=1", f"STATUS=serving {path}"]
        before = [line for m in messages[:-1] for line in m.splitlines()]
        assert before and all(line.startswith("STATUS=") for line in before), before
        assert any("opening the database" in line for line in before)
        proc.send_signal(signal.SIGTERM)
        stopping = receive_until(notify, "STOPPING=1", proc)
        assert proc.wait(30) == 0
        assert not any("READY=1" in m for m in stopping)
        notify.settimeout(5)
        assert "STATUS=draining" in notify.recv(4096).decode()
    assert not os.path.exists(path)  # a socket aghd bound itself is removed


def test_a_reload_is_announced_with_reloading_then_ready(
    short_dir: str, env: dict[str, str], procs: list[subprocess.Popen[str]]
) -> None:
    config = os.path.join(short_dir, "config.yaml")
    with open(config, "w", encoding="utf-8") as fh:
        fh.write("stuck_after_ms: 5000\n")
    path = os.path.join(short_dir, "run", "agh.sock")
    address = os.path.join(short_dir, "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(address)
        notify.settimeout(0.5)
        proc = subprocess.Popen(
            [AGHD, "--socket", path, "--config", config],
            env={**env, "NOTIFY_SOCKET": address},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        receive_until(notify, "READY=1", proc)
        proc.send_signal(signal.SIGHUP)
        reloading = receive_until(notify, "RELOADING=1", proc)[-1].splitlines()
        # systemd (Type=notify-reload) needs the monotonic time of the reload.
        assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
        after = receive_until(notify, "READY=1", proc)
        assert any(f"configuration reloaded from {config}" in m for m in after), after
        assert server_info(path)["pid"] == proc.pid
