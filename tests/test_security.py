"""Security properties of the daemon and the client, tested from outside.

Owns: the modes of every file the daemon creates (whatever the umask),
refusing a socket directory others can reach or replace, refusing other
uids in both directions (daemon → client peer and client → daemon peer),
claim tokens that never appear anywhere but in their own claim reply, and
a static proof that every SQL statement of the store is parameterised.
It does not repeat tests/test_peercred.py (a probe refused by the daemon,
the allow-list) or the basic socket mode check of tests/test_crash.py.

Tests that need another uid run only as root (CI runs as root).
"""

from __future__ import annotations

import ast
import base64
import binascii
import json
import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agh.client import Client
from agh.errors import AghError
from tests.helpers.cli import clean_environ
from tests.helpers.daemons import spawn_daemon, stop_process, wait_for_socket
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

NOBODY = 65534
ROOT = Path(__file__).resolve().parent.parent
as_root = pytest.mark.skipif(os.getuid() != 0, reason="needs root to act as another uid")


# -- helpers ----------------------------------------------------------------------------


def _entries(directory: str) -> dict[str, os.stat_result]:
    return {name: os.lstat(os.path.join(directory, name)) for name in os.listdir(directory)}


def _not_private(directory: str) -> dict[str, str]:
    """Entries of ``directory`` that others could read: files and sockets
    not 0600, directories not 0700. Names mapped to their octal mode."""
    bad = {}
    for name, st in _entries(directory).items():
        want = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        if stat.S_IMODE(st.st_mode) != want:
            bad[name] = oct(stat.S_IMODE(st.st_mode))
    return bad


@dataclass
class Paths:
    base: str
    sock_dir: str
    db_dir: str

    @property
    def sock(self) -> str:
        return os.path.join(self.sock_dir, "agh.sock")

    @property
    def db(self) -> str:
        return os.path.join(self.db_dir, "agh.db")


@pytest.fixture
def fresh(short_dir: str) -> Paths:
    """Socket and database directories that do not exist yet: the daemon makes them."""
    return Paths(short_dir, os.path.join(short_dir, "run"), os.path.join(short_dir, "state"))


# -- 1. file modes, whatever the umask ----------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("umask", [0o022, 0o000], ids=["umask022", "umask000"])
def test_every_file_the_daemon_creates_is_private(
    fresh: Paths, procs: list[subprocess.Popen[bytes]], umask: int
) -> None:
    proc = spawn_daemon(fresh.sock, fresh.db, umask=umask)
    procs.append(proc)
    with Client(fresh.sock) as c:
        c.tasks_create("a write, so the WAL holds frames", start=True)
    created = set(os.listdir(fresh.db_dir)) | set(os.listdir(fresh.sock_dir))
    # Every file SQLite and the daemon make while running must be there to check.
    assert {"agh.db", "agh.db-wal", "agh.db-shm", "agh.sock"} <= created, created
    assert stat.S_IMODE(os.stat(fresh.sock_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(fresh.db_dir).st_mode) == 0o700
    assert stat.S_ISSOCK(os.lstat(fresh.sock).st_mode)
    running = {**_not_private(fresh.sock_dir), **_not_private(fresh.db_dir)}
    assert running == {}, f"readable by others while running (umask {umask:04o}): {running}"
    assert stop_process(proc) == 0
    # What stays behind (lock files, the database) stays private too.
    left = {**_not_private(fresh.sock_dir), **_not_private(fresh.db_dir)}
    assert left == {}, f"readable by others after shutdown (umask {umask:04o}): {left}"


@pytest.mark.slow
def test_files_left_readable_by_an_older_version_are_tightened_and_logged(
    fresh: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    first = spawn_daemon(fresh.sock, fresh.db)
    procs.append(first)
    with Client(fresh.sock) as c:
        kept = c.tasks_create("kept across the restart").task.id
    # SIGKILL leaves -wal, -shm and the lock files behind, as a crash would.
    stop_process(first, signal.SIGKILL)
    widened = []
    for directory in (fresh.db_dir, fresh.sock_dir):
        for name, st in _entries(directory).items():
            if stat.S_ISREG(st.st_mode):
                os.chmod(os.path.join(directory, name), 0o644)
                widened.append(name)
    assert {"agh.db", "agh.db-wal"} <= set(widened), widened
    log = os.path.join(fresh.base, "second.log")
    second = spawn_daemon(fresh.sock, fresh.db, level="INFO", log=log)
    procs.append(second)
    with Client(fresh.sock) as c:
        assert c.tasks_get(kept).task.task.title == "kept across the restart"
    still = {**_not_private(fresh.sock_dir), **_not_private(fresh.db_dir)}
    assert still == {}, f"not tightened at start-up: {still}"
    assert stop_process(second) == 0
    text = Path(log).read_text()
    said = [
        line
        for line in text.splitlines()
        if fresh.db in line and any(w in line for w in ("600", "mode", "permission"))
    ]
    assert said, f"start-up did not log that it tightened {fresh.db}:\n{text}"


# -- 2. the socket directory -----------------------------------------------------------


@dataclass
class BadDir:
    """A socket directory the daemon must refuse, and words its message may use."""

    given: str  # the directory as the daemon is told it (maybe a symlink)
    real: str  # where the files are
    problem: tuple[str, ...]


def _bad_dir(base: str, case: str) -> BadDir:
    real = os.path.join(base, "sockdir")
    os.mkdir(real)
    mode_words = ("mode", "permission", "group", "other", "writable", "readable")
    if case in ("mode0777", "link-to-0777"):
        os.chmod(real, 0o777)
        problem: tuple[str, ...] = ("777", *mode_words)
    elif case == "mode0755":
        os.chmod(real, 0o755)
        problem = ("755", *mode_words)
    else:  # owned by another uid, private to it
        os.chmod(real, 0o700)
        os.chown(real, NOBODY, NOBODY)
        problem = (str(NOBODY), "nobody", "owner", "owned", "uid")
    given = real
    if case.startswith("link-"):
        given = os.path.join(base, "link")
        os.symlink(real, given)
        problem = ("symlink", "symbolic link", "link", *problem)
    return BadDir(given, real, problem)


BAD_DIRS = ["mode0777", "mode0755", "other-owner", "link-to-0777", "link-to-other-owner"]


class _OtherDaemon:
    """A listening socket standing in for another daemon's socket file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(4)
        self.sock.settimeout(5)
        self.inode = os.lstat(path).st_ino

    def still_there(self) -> bool:
        try:
            if os.lstat(self.path).st_ino != self.inode:
                return False
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                probe.settimeout(5)
                probe.connect(self.path)
                conn, _ = self.sock.accept()
                conn.close()
            return True
        except OSError:
            return False

    def close(self) -> None:
        self.sock.close()


def _needs_root(case: str) -> None:
    if "owner" in case and os.getuid() != 0:
        pytest.skip("needs root to chown a directory to another uid")


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_DIRS)
def test_unsafe_socket_directory_is_refused(
    short_dir: str, procs: list[subprocess.Popen[bytes]], case: str
) -> None:
    _needs_root(case)
    bad = _bad_dir(short_dir, case)
    other = _OtherDaemon(os.path.join(bad.real, "agh.sock"))
    try:
        sock = os.path.join(bad.given, "agh.sock")
        proc = spawn_daemon(sock, os.path.join(short_dir, "agh.db"), wait=False)
        procs.append(proc)
        try:
            _out, err_bytes = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            pytest.fail(f"aghd started in an unsafe socket directory ({case})")
        err = err_bytes.decode()
        assert proc.returncode != 0, err
        assert "Traceback" not in err, err
        assert bad.given in err or bad.real in err, f"message does not name the directory:\n{err}"
        low = err.lower()
        assert any(w in low for w in bad.problem), f"message does not say what is wrong:\n{err}"
        hints = ("chmod", "chown", "remove", "rm ", "--socket", "agh_socket", "mkdir")
        assert any(h in low for h in hints), f"message does not say what to do:\n{err}"
        assert other.still_there(), "the other daemon's socket was unlinked or replaced"
    finally:
        other.close()


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_DIRS)
def test_refused_socket_directory_is_not_touched(
    short_dir: str, procs: list[subprocess.Popen[bytes]], case: str
) -> None:
    """The check comes before the lock: whoever controls an unsafe directory
    could plant ``agh.sock.lock`` as a symlink to a file of ours, which the
    lock would truncate and overwrite with a pid."""
    _needs_root(case)
    bad = _bad_dir(short_dir, case)
    victim = os.path.join(short_dir, "victim")
    Path(victim).write_text("precious\n")
    os.symlink(victim, os.path.join(bad.real, "agh.sock.lock"))
    before = set(os.listdir(bad.real))
    proc = spawn_daemon(
        os.path.join(bad.given, "agh.sock"), os.path.join(short_dir, "agh.db"), wait=False
    )
    procs.append(proc)
    try:
        proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail(f"aghd started in an unsafe socket directory ({case})")
    assert Path(victim).read_text() == "precious\n", "a planted lock symlink was followed"
    assert set(os.listdir(bad.real)) == before, "files were created in the refused directory"


@pytest.mark.slow
def test_private_socket_directory_made_beforehand_is_used(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    sock_dir = os.path.join(short_dir, "mine")
    os.mkdir(sock_dir, 0o700)
    os.chmod(sock_dir, 0o700)
    sock = os.path.join(sock_dir, "agh.sock")
    proc = spawn_daemon(sock, os.path.join(short_dir, "agh.db"))
    procs.append(proc)
    with Client(sock) as c:
        assert c.server_info().pid == proc.pid
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600
    assert stop_process(proc) == 0


# -- 3. another uid, with a socket open to all, cannot use a stolen token ------------------


def _in_child_as(uid: int, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``fn`` in a forked child that dropped to ``uid``; return what it returned."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, no cleanup, just os._exit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            out = fn()
        except BaseException as exc:
            out = {"child_error": repr(exc)}
        try:
            os.write(write_end, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)  # type: ignore[no-any-return]


def _send_and_read(path: str, line: bytes) -> dict[str, Any]:
    """Connect, send one line, read until the daemon closes or 5 s pass."""
    out: dict[str, Any] = {"connected": False, "received": "", "closed": False}
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        out["connected"] = True
        data = b""
        try:
            s.sendall(line)
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    out["closed"] = True
                    break
                data += chunk
        except (BrokenPipeError, ConnectionResetError):
            out["closed"] = True
        except TimeoutError:
            pass
        out["received"] = data.decode(errors="replace")
    return out


@pytest.mark.slow
@as_root
def test_other_uid_with_a_stolen_token_gets_nothing(
    fresh: Paths, procs: list[subprocess.Popen[bytes]]
) -> None:
    proc = spawn_daemon(fresh.sock, fresh.db)
    procs.append(proc)
    # Open the door as wide as a careless admin could: only the peer check is left.
    os.chmod(fresh.base, 0o755)
    os.chmod(fresh.sock_dir, 0o755)
    os.chmod(fresh.sock, 0o666)
    with Client(fresh.sock, agent_name="real-agent") as agent:
        agent.tasks_create("guarded", start=True)
        claim = agent.claim_next().claim
        assert claim is not None
        before = agent.runs_get(claim.run.id).run.run
        line = json.dumps(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "agent.complete",
                "params": {"run_id": claim.run.id, "claim_token": claim.claim_token},
            }
        ).encode()
        got = _in_child_as(NOBODY, lambda: _send_and_read(fresh.sock, line + b"\n"))
        assert got.get("connected"), f"the other uid could not even connect: {got}"
        assert got["received"] == "", f"the other uid got a reply: {got['received']!r}"
        assert got["closed"], "the daemon did not close the other uid's connection"
        after = agent.runs_get(claim.run.id).run.run
        assert after.status == "claimed"
        assert after.claimed_by == before.claimed_by
        assert after.claim_token_hash == before.claim_token_hash
        # The real agent's claim is intact.
        agent.heartbeat(claim.run.id, claim.claim_token)
        agent.complete(claim.run.id, claim.claim_token)
    assert stop_process(proc) == 0


# -- 4. the client checks the server's uid -------------------------------------------------

# Runs the real aghd as `nobody`. The interpreter lives under /root, which
# nobody cannot read, so everything is imported before dropping privileges.
_DAEMON_AS = """
import os, sys
import anyio, anyio._backends._asyncio, click, msgspec, sqlite3
import agh.paths, aghd.app, aghd.main
try:
    import uvloop
except ImportError:
    pass
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
sys.argv = ["aghd", *sys.argv[1:]]
aghd.main.main()
"""

# A fake "daemon" bound by `nobody`: records every byte a client sends.
_FAKE_SERVER = """
import os, socket, sys
os.setgroups([]); os.setgid({uid}); os.setuid({uid})
srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
srv.bind(sys.argv[1]); srv.listen(4)
print("ready", flush=True)
srv.settimeout(30)
conn, _ = srv.accept()
conn.settimeout(6)
data = b""
try:
    while True:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
except OSError:
    pass
print(repr(data), flush=True)
"""


def _dir_for(uid: int, path: str) -> str:
    os.mkdir(path, 0o700)
    os.chown(path, uid, uid)
    return path


def _assert_names_uid(exc: AghError) -> None:
    assert str(NOBODY) in exc.message or "nobody" in exc.message, (
        f"the error does not name the server's uid: {exc.message!r}"
    )


@pytest.mark.slow
@as_root
def test_client_refuses_a_daemon_run_by_another_uid(
    short_dir: str, procs: list[subprocess.Popen[bytes]]
) -> None:
    os.chmod(short_dir, 0o755)  # nobody must reach its own directories inside
    sock = os.path.join(_dir_for(NOBODY, os.path.join(short_dir, "run")), "agh.sock")
    db = os.path.join(_dir_for(NOBODY, os.path.join(short_dir, "state")), "agh.db")
    # nobody's own config dir: ours (root's, 0700 once a daemon watched it) it cannot read.
    config_home = _dir_for(NOBODY, os.path.join(short_dir, "config"))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _DAEMON_AS.format(uid=NOBODY),
            "--socket",
            sock,
            "--db",
            db,
            "--log-level",
            "WARNING",
            "--allow-uid",
            str(os.getuid()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=str(ROOT),
        env=clean_environ(XDG_CONFIG_HOME=config_home),
    )
    procs.append(proc)
    wait_for_socket(sock, proc)
    with pytest.raises(AghError) as info, Client(sock, timeout=5, agent_name="must-not-reach") as c:
        c.tasks_create("must not be created")
    _assert_names_uid(info.value)
    # The daemon itself would have served us (--allow-uid): so nothing reached
    # it only because the client refused. A raw connection does not check.
    raw = RawConn(sock)
    try:
        raw.request("sessions.list", {})
        sessions = raw.recv()["result"]["sessions"]
        assert [s for s in sessions if s.get("agent_name") == "must-not-reach"] == []
        raw.request("tasks.list", {}, id=2)
        assert raw.recv()["result"]["tasks"] == []
    finally:
        raw.close()
    assert stop_process(proc) == 0


@pytest.mark.slow
@as_root
def test_client_sends_nothing_to_a_socket_bound_by_another_uid(short_dir: str) -> None:
    os.chmod(short_dir, 0o755)
    path = os.path.join(_dir_for(NOBODY, os.path.join(short_dir, "fake")), "agh.sock")
    fake = subprocess.Popen(
        [sys.executable, "-c", _FAKE_SERVER.format(uid=NOBODY), path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert fake.stdout is not None
        assert fake.stdout.readline().strip() == "ready"
        with pytest.raises(AghError) as info, Client(path, timeout=3) as c:
            c.server_info()  # a client that does not check sends this
        refused = info.value
        out, err = fake.communicate(timeout=30)
        assert fake.returncode == 0, err
        assert out.strip() == "b''", f"the client sent {out.strip()} to another uid's socket"
        _assert_names_uid(refused)
    finally:
        if fake.poll() is None:
            fake.kill()
            fake.communicate()


# -- 5. claim tokens never leak ------------------------------------------------------------


def _forms(token: str) -> dict[str, bytes]:
    """Every spelling of a token worth looking for: as sent, its base64
    body, the raw random bytes, and those bytes as hex and standard base64."""
    body = token.removeprefix("ct_")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    return {
        "token": token.encode(),
        "body": body.encode(),
        "raw": raw,
        "hex": binascii.hexlify(raw),
        "HEX": binascii.hexlify(raw).upper(),
        "b64": base64.b64encode(raw),
        "b64-unpadded": base64.b64encode(raw).rstrip(b"="),
    }


def _leaks(data: bytes, tokens: dict[str, str]) -> list[str]:
    """``label/form`` of every token form found in ``data``."""
    return [
        f"{label}/{form}"
        for label, token in tokens.items()
        for form, needle in _forms(token).items()
        if needle in data
    ]


def _scan_dirs(*directories: str) -> dict[str, bytes]:
    out = {}
    for directory in directories:
        for name in sorted(os.listdir(directory)):
            path = os.path.join(directory, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out[path] = Path(path).read_bytes()
    return out


@dataclass
class _Wire:
    """One raw connection that keeps every line the daemon sends, in order."""

    conn: RawConn
    lines: list[tuple[str, bytes]] = field(default_factory=list)  # (what for, raw line)
    next_id: int = 1

    def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        rid = self.next_id
        self.next_id += 1
        self.conn.request(method, params, id=rid)
        while True:
            line = self._line()
            msg = json.loads(line)
            self.lines.append((f"{method}#{rid}" if msg.get("id") == rid else "notification", line))
            if msg.get("id") == rid:
                return msg  # type: ignore[no-any-return]

    def send_line(self, what: str, data: bytes) -> dict[str, Any]:
        """A hand-made (maybe broken) line: the next non-notification reply."""
        self.conn.send(data)
        while True:
            line = self._line()
            msg = json.loads(line)
            self.lines.append((what if "method" not in msg else "notification", line))
            if "method" not in msg:
                return msg  # type: ignore[no-any-return]

    def drain(self, quiet_s: float) -> None:
        self.conn.sock.settimeout(quiet_s)
        try:
            while True:
                self.lines.append(("notification", self._line()))
        except TimeoutError:
            pass

    def _line(self) -> bytes:
        while b"\n" not in self.conn.buf:
            chunk = self.conn.sock.recv(65536)
            if not chunk:
                raise EOFError("daemon closed the connection")
            self.conn.buf += chunk
        line, self.conn.buf = self.conn.buf.split(b"\n", 1)
        return line


def _issued(reply: dict[str, Any]) -> set[str]:
    """Claim tokens a reply hands out (agent.claim_next, runs.claim)."""
    result = reply.get("result") or {}
    found = set()
    if isinstance(result.get("claim_token"), str):
        found.add(result["claim_token"])
    for key in ("claim", "next"):
        item = result.get(key)
        if isinstance(item, dict) and isinstance(item.get("claim_token"), str):
            found.add(item["claim_token"])
    return found


def test_token_scan_finds_every_form(tmp_path: Path) -> None:
    """The leak scanner can fail: each spelling written to a file is found."""
    token = "ct_" + secrets.token_urlsafe(32)
    for form, needle in _forms(token).items():
        (tmp_path / "planted").write_bytes(b"\x00junk " + needle + b" junk\xff")
        found = _leaks(_scan_dirs(str(tmp_path))[str(tmp_path / "planted")], {"T": token})
        assert f"T/{form}" in found, (form, found)
    (tmp_path / "planted").write_bytes(b"nothing here")
    assert _leaks((tmp_path / "planted").read_bytes(), {"T": token}) == []


@pytest.mark.slow
def test_claim_tokens_never_leak(fresh: Paths, procs: list[subprocess.Popen[bytes]]) -> None:
    log = os.path.join(fresh.base, "aghd.log")
    proc = spawn_daemon(
        fresh.sock,
        fresh.db,
        "--backoff-base-ms",
        "0",
        "--backoff-cap-ms",
        "0",
        level="DEBUG",
        log=log,
    )
    procs.append(proc)
    w = _Wire(RawConn(fresh.sock))
    try:
        _leak_scenario(w, fresh, proc, log)
    finally:
        w.conn.close()


def _leak_scenario(w: _Wire, fresh: Paths, proc: subprocess.Popen[bytes], log: str) -> None:
    tokens: dict[str, str] = {}  # label -> token (issued, and one never issued)

    def ok(reply: dict[str, Any]) -> dict[str, Any]:
        assert "result" in reply, reply
        return reply["result"]  # type: ignore[no-any-return]

    def err(reply: dict[str, Any], *kinds: str) -> None:
        assert "error" in reply, reply
        assert reply["error"]["data"]["kind"] in kinds, reply

    def claim(label: str, **params: Any) -> tuple[str, str]:
        c = ok(w.call("agent.claim_next", params))["claim"]
        assert c is not None
        tokens[label] = c["claim_token"]
        return c["run"]["id"], c["claim_token"]

    ok(w.call("session.hello", {"agent_name": "leak-check", "session_id": "ses_leakcheck"}))
    ok(w.call("events.subscribe", {"after_sequence": 0}))  # notifications checked too
    t1 = ok(w.call("tasks.create", {"title": "one", "start": True, "priority": "urgent"}))
    ok(w.call("tasks.update", {"id": t1["task"]["id"], "max_attempts": 2}))
    t2 = ok(w.call("tasks.create", {"title": "two", "start": True, "priority": "high"}))
    t3 = ok(w.call("tasks.create", {"title": "three", "start": True, "priority": "low"}))
    r1, r2, r3 = t1["run"]["id"], t2["run"]["id"], t3["run"]["id"]

    # Claim, then replay the claim: a fresh token replaces the first.
    assert claim("A", idempotency_key="k1")[0] == r1
    assert claim("A'", idempotency_key="k1")[0] == r1
    a = tokens["A'"]
    ok(w.call("runs.start", {"id": r1}))
    ok(w.call("agent.heartbeat", {"run_id": r1, "claim_token": a}))
    ok(
        w.call(
            "agent.log",
            {"run_id": r1, "claim_token": a, "lines": [{"message": "working", "level": "debug"}]},
        )
    )
    ok(w.call("agent.send", {"run_id": r1, "claim_token": a, "message": "half way"}))
    ok(w.call("tasks.send", {"id": t1["task"]["id"], "message": "hurry"}))
    ok(w.call("agent.messages", {"run_id": r1, "claim_token": a}))
    # Wrong tokens: replaced, never issued, another run's. None may be echoed.
    tokens["never-issued"] = "ct_" + secrets.token_urlsafe(32)
    # A token the replay replaced is an earlier token of the run: lease_lost.
    replaced = {"run_id": r1, "claim_token": tokens["A"]}
    err(w.call("agent.heartbeat", replaced), "lease_lost")
    err(
        w.call("agent.complete", {"run_id": r1, "claim_token": tokens["never-issued"]}), "forbidden"
    )
    bad_params = {"run_id": r1, "claim_token": a, "claim_tokn": a, "lease_ms": -1}
    err(w.call("agent.heartbeat", bad_params), "invalid_params")
    err(w.call("agent.log", {"run_id": r1, "claim_token": a, "lines": []}), "invalid_params")
    broken = f'{{"jsonrpc":"2.0","id":900,"method":"agent.heartbeat","params":{{"claim_token":"{a}"'
    err(w.send_line("parse error", broken.encode() + b"\n"), "parse_error")
    # Fail with retry, claim the retry, fence the old token.
    ok(w.call("agent.fail", {"run_id": r1, "claim_token": a, "error": "boom", "retry": True}))
    time.sleep(0.05)
    assert claim("B")[0] == r1
    err(w.call("agent.heartbeat", {"run_id": r1, "claim_token": a}), "lease_lost")
    ok(w.call("agent.complete", {"run_id": r1, "claim_token": tokens["B"], "result": {"ok": 1}}))
    w.call("agent.complete", {"run_id": r1, "claim_token": tokens["B"]})  # a replayed finish
    # Release and re-claim.
    assert claim("C")[0] == r2
    ok(w.call("agent.release", {"run_id": r2, "claim_token": tokens["C"], "reason": "later"}))
    err(w.call("agent.complete", {"run_id": r2, "claim_token": tokens["C"]}), "lease_lost")
    assert claim("D")[0] == r2
    err(w.call("agent.complete", {"run_id": r2, "claim_token": tokens["B"]}), "forbidden")
    ok(w.call("agent.complete", {"run_id": r2, "claim_token": tokens["D"]}))
    # An operator claim, then an operator finish that fences it.
    e = ok(w.call("runs.claim", {"id": r3}))
    tokens["E"] = e["claim_token"]
    ok(w.call("runs.complete", {"id": r3}))
    err(w.call("agent.heartbeat", {"run_id": r3, "claim_token": tokens["E"]}), "lease_lost")
    # Everything an operator can read.
    for t in (t1, t2, t3):
        tid = t["task"]["id"]
        for method in ("tasks.get", "tasks.timeline", "tasks.runs.list", "tasks.tree"):
            ok(w.call(method, {"id": tid}))
    for rid in (r1, r2, r3):
        ok(w.call("runs.get", {"id": rid}))
        ok(w.call("runs.logs", {"id": rid}))
    for method in ("observe.dashboard", "observe.inbox", "sessions.list", "tasks.list"):
        ok(w.call(method, {}))
    ok(w.call("server.info", {}))
    w.drain(0.5)

    # Each token appears in exactly one line: the reply that issued it.
    seen_issued: dict[str, str] = {}
    for what, line in w.lines:
        issued = _issued(json.loads(line)) if what != "notification" else set()
        for tok in issued:
            assert tok not in seen_issued, f"token issued twice: {what} and {seen_issued[tok]}"
            seen_issued[tok] = what
        others = {k: v for k, v in tokens.items() if v not in issued}
        found = _leaks(line, others)
        assert found == [], f"{what} carries {found}: {line[:400]!r}"
    assert set(seen_issued) == {v for k, v in tokens.items() if k != "never-issued"}

    files_running = _scan_dirs(fresh.db_dir, fresh.sock_dir)
    assert os.path.basename(fresh.db) + "-wal" in {os.path.basename(p) for p in files_running}
    w.conn.close()
    assert stop_process(proc) == 0
    files_stopped = _scan_dirs(fresh.db_dir, fresh.sock_dir)
    for where, files in (("running", files_running), ("stopped", files_stopped)):
        for path, data in files.items():
            assert _leaks(data, tokens) == [], f"{path} ({where}) holds {_leaks(data, tokens)}"
    text = Path(log).read_bytes()
    assert b"DEBUG" in text or b"INFO" in text, "the daemon logged nothing: is --log-level on?"
    assert _leaks(text, tokens) == [], f"the daemon log holds {_leaks(text, tokens)}"
    # The same scan over the same directory finds a token planted there.
    Path(fresh.db_dir, "planted").write_bytes(b"x" + tokens["B"].encode() + b"x")
    planted = _scan_dirs(fresh.db_dir)[os.path.join(fresh.db_dir, "planted")]
    assert "B/token" in _leaks(planted, tokens)


# -- 6. every SQL statement is parameterised ------------------------------------------------

SQL_METHODS = frozenset({"execute", "executemany", "executescript", "one", "all", "scalar"})
STORE_FILES = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "aghd" / "store").glob("*.py"))
CHECKED_FILES = [*STORE_FILES, "aghd/committer.py"]

# (file, function qualname) whose SQL the prover cannot follow, reviewed by
# hand. Keep it short; every entry says why its SQL holds no runtime value.
ALLOWED: dict[tuple[str, str], str] = {
    # A PRAGMA cannot take a ? parameter; `synchronous` is checked against
    # SYNCHRONOUS_MODES (a tuple of literals) on the function's first line.
    ("aghd/store/db.py", "open_connection"): "validated against SYNCHRONOUS_MODES",
    # The Tx helpers pass their caller's SQL through; the callers are checked.
    ("aghd/store/db.py", "Tx.execute"): "pass-through; callers checked",
    ("aghd/store/db.py", "Tx.one"): "pass-through; callers checked",
    ("aghd/store/db.py", "Tx.all"): "pass-through; callers checked",
    ("aghd/store/db.py", "Tx.scalar"): "pass-through; callers checked",
}


class _Unproven(Exception):
    """The expression may hold a runtime value; ``node`` is the first such part."""

    def __init__(self, node: ast.AST, why: str) -> None:
        super().__init__(why)
        self.node = node
        self.why = why


# A selector path says which part of a value must be constant: () the value
# itself; ITER each item iterating it yields (a dict's keys); VAL each value
# a subscript may return; an int, that element of a tuple; ARGS the
# members of typing.Literal[...] (what get_args returns).
ITER, VAL, ARGS = "iter", "val", "args"
Sel = tuple[Any, ...]


@dataclass
class _Module:
    name: str
    path: str
    tree: ast.Module
    # node id -> (enclosing function chain, enclosing class) for every node.
    scopes: dict[int, tuple[tuple[ast.AST, ...], ast.ClassDef | None]] = field(default_factory=dict)
    classes: dict[str, ast.ClassDef] = field(default_factory=dict)
    functions: dict[str, ast.FunctionDef] = field(default_factory=dict)


_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_COMPS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


class SqlProver:
    """Proves an expression is built only from constants of the analysed code.

    Deliberately small: names bound only to provable values (in the
    function, its module, or another module of the repository via ``from
    … import``), loop and comprehension targets over provable iterables,
    lists grown by ``append``/``extend`` of provable items, dicts whose
    keys are provable, ``", ".join`` of provable items, ``"?" * n``,
    functions and methods of the module whose every ``return`` is
    provable (parameters bound to the caller's arguments), and dataclass
    fields every construction fills with a provable value. Anything else
    is unproven and reported.
    """

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self.modules: dict[str, _Module] = {}
        self._active: set[tuple[int, Sel, tuple[tuple[str, int], ...]]] = set()

    # -- modules ------------------------------------------------------------------

    def module(self, name: str) -> _Module | None:
        if name in self.modules:
            return self.modules[name]
        rel = Path(*name.split("."))
        for root in self.roots:
            for candidate in (root / rel.with_suffix(".py"), root / rel / "__init__.py"):
                if candidate.is_file():
                    return self._load(name, candidate)
        return None

    def _load(self, name: str, path: Path) -> _Module:
        tree = ast.parse(path.read_text(), str(path))
        mod = _Module(name, str(path), tree)
        self.modules[name] = mod

        def visit(node: ast.AST, funcs: tuple[ast.AST, ...], cls: ast.ClassDef | None) -> None:
            for child in ast.iter_child_nodes(node):
                mod.scopes[id(child)] = (funcs, cls)
                if isinstance(child, ast.ClassDef):
                    if not funcs:
                        mod.classes[child.name] = child
                    visit(child, funcs, child)
                elif isinstance(child, (*_FUNCS, ast.Lambda, *_COMPS)):
                    if isinstance(child, ast.FunctionDef) and not funcs and cls is None:
                        mod.functions[child.name] = child
                    visit(child, (*funcs, child), cls)
                else:
                    visit(child, funcs, cls)

        visit(tree, (), None)
        return mod

    # -- call sites ---------------------------------------------------------------

    def offences(self, rel_path: str, module_name: str) -> list[str]:
        mod = self.module(module_name)
        assert mod is not None, module_name
        found = []
        for node in ast.walk(mod.tree):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in SQL_METHODS
            ):
                continue
            sql_arg = self._sql_arg(node)
            if sql_arg is None:
                continue
            expr, sel = sql_arg
            qual = self.qualname(mod, node)
            if (rel_path, qual) in ALLOWED:
                continue
            try:
                self.prove(mod, expr, sel, {})
            except _Unproven as exc:
                found.append(
                    f"{rel_path}:{node.lineno} in {qual}(): {ast.unparse(expr)[:120]!r} — "
                    f"{exc.why}: {ast.unparse(exc.node)[:80]!r} "
                    f"(line {getattr(exc.node, 'lineno', '?')})"
                )
        return found

    @staticmethod
    def _sql_arg(call: ast.Call) -> tuple[ast.expr, Sel] | None:
        for kw in call.keywords:
            if kw.arg == "sql":
                return kw.value, ()
        if not call.args:
            return None
        first = call.args[0]
        if isinstance(first, ast.Starred):  # tx.one(*claim_query(...)): element 0
            return first.value, (0,)
        return first, ()

    def qualname(self, mod: _Module, node: ast.AST) -> str:
        funcs, cls = mod.scopes.get(id(node), ((), None))
        names = [f.name for f in funcs if isinstance(f, _FUNCS)]
        if cls is not None and funcs and self._method_of(cls, funcs[0]):
            names.insert(0, cls.name)
        return ".".join(names) or "<module>"

    @staticmethod
    def _method_of(cls: ast.ClassDef, fn: ast.AST) -> bool:
        return any(item is fn for item in cls.body)

    # -- the proof ------------------------------------------------------------------

    def prove(self, mod: _Module, e: ast.expr, sel: Sel, env: dict[str, Any]) -> None:
        """Raise _Unproven unless part ``sel`` of ``e`` is provably constant.

        ``env`` binds parameters of a function being entered from a call
        site: name -> (module, argument expression, caller's env) or
        ("const", None, None) for a default that is a literal.
        """
        key = (id(e), sel, tuple(sorted((k, id(v[1])) for k, v in env.items())))
        if key in self._active:
            return  # a cycle (x += x, recursion): the other bindings decide
        self._active.add(key)
        try:
            self._prove(mod, e, sel, env)
        finally:
            self._active.discard(key)

    def _prove(self, mod: _Module, e: ast.expr, sel: Sel, env: dict[str, Any]) -> None:
        p = self.prove
        head, rest = (sel[0], sel[1:]) if sel else (None, ())
        if isinstance(e, ast.Constant):
            return
        if isinstance(e, ast.JoinedStr):
            for part in e.values:
                p(mod, part, (), env)
            return
        if isinstance(e, ast.FormattedValue):
            p(mod, e.value, (), env)
            if e.format_spec is not None:
                p(mod, e.format_spec, (), env)
            return
        if isinstance(e, (ast.Tuple, ast.List, ast.Set)):
            if isinstance(head, int) and not any(isinstance(x, ast.Starred) for x in e.elts):
                if head >= len(e.elts):
                    raise _Unproven(e, "no such tuple element")
                return p(mod, e.elts[head], rest, env)
            inner = rest if head in (ITER, VAL, ARGS) or isinstance(head, int) else ()
            for x in e.elts:
                p(mod, x.value if isinstance(x, ast.Starred) else x, inner, env)
            return
        if isinstance(e, ast.Dict):
            for k, v in zip(e.keys, e.values, strict=True):
                if k is None:  # {**other}
                    p(mod, v, sel, env)
                    continue
                if head in (None, ITER):
                    p(mod, k, rest, env)
                if head in (None, VAL):
                    p(mod, v, rest, env)
            if isinstance(head, int) or head == ARGS:
                raise _Unproven(e, "dict used as a sequence")
            return
        if isinstance(e, _COMPS):
            return self._comprehension(mod, e, sel, env)
        if isinstance(e, ast.BinOp):
            return self._binop(mod, e, sel, env)
        if isinstance(e, ast.IfExp):
            p(mod, e.body, sel, env)
            p(mod, e.orelse, sel, env)
            return
        if isinstance(e, ast.BoolOp):
            for v in e.values:
                p(mod, v, sel, env)
            return
        if isinstance(e, ast.Subscript):
            if isinstance(e.slice, ast.Slice):
                return p(mod, e.value, sel, env)  # a slice holds the same items
            if isinstance(e.value, ast.Name) and e.value.id == "Literal" and head == ARGS:
                return p(mod, e.slice, (ITER, *rest), env)
            return p(mod, e.value, (VAL, *sel), env)
        if isinstance(e, ast.Name):
            return self._name(mod, e, sel, env)
        if isinstance(e, ast.Attribute):
            return self._attribute(mod, e, sel, env)
        if isinstance(e, ast.Call):
            return self._call(mod, e, sel, env)
        raise _Unproven(e, f"cannot follow a {type(e).__name__}")

    def _binop(self, mod: _Module, e: ast.BinOp, sel: Sel, env: dict[str, Any]) -> None:
        if isinstance(e.op, ast.Mult):
            # "?" * n or ["?"] * n: copies of a literal, whatever n is (an int,
            # or the expression raises TypeError).
            for side in (e.left, e.right):
                if isinstance(side, (ast.Constant, ast.List, ast.Tuple)):
                    return self.prove(mod, side, sel, env)
        if isinstance(e.op, (ast.Add, ast.Mult, ast.Mod)):
            # + of constants; % formatting only of constants.
            self.prove(mod, e.left, sel, env)
            self.prove(mod, e.right, sel if isinstance(e.op, ast.Add) else (), env)
            return
        raise _Unproven(e, f"operator {type(e.op).__name__}")

    def _comprehension(self, mod: _Module, e: ast.expr, sel: Sel, env: dict[str, Any]) -> None:
        head, rest = (sel[0], sel[1:]) if sel else (None, ())
        if isinstance(e, ast.DictComp):
            if head in (None, ITER):
                self.prove(mod, e.key, rest, env)
            if head in (None, VAL):
                self.prove(mod, e.value, rest, env)
            return
        assert isinstance(e, (ast.ListComp, ast.SetComp, ast.GeneratorExp))
        self.prove(mod, e.elt, rest if head in (ITER, VAL) or isinstance(head, int) else (), env)

    # -- names ------------------------------------------------------------------------

    def _name(self, mod: _Module, e: ast.Name, sel: Sel, env: dict[str, Any]) -> None:
        name = e.id
        funcs, _cls = mod.scopes.get(id(e), ((), None))
        for scope in reversed(funcs):
            if name in env and scope is env.get("__function__", (None, None))[1]:
                kind, arg, caller_env = env[name]
                if kind == "const":
                    return
                return self.prove(kind, arg, sel, caller_env)
            bindings = self._bindings(scope, name)
            if bindings is not None:
                if not bindings:
                    raise _Unproven(e, f"{name} is a parameter (a runtime value)")
                for binding in bindings:
                    self._binding(mod, scope, binding, name, sel, env)
                return
        bindings = self._bindings(mod.tree, name)
        if bindings:
            for binding in bindings:
                self._binding(mod, mod.tree, binding, name, sel, {})
            return
        raise _Unproven(e, f"{name} is not bound to a constant")

    def _bindings(self, scope: ast.AST, name: str) -> list[Any] | None:
        """Every place ``scope`` binds or grows ``name``: None if it never
        does (look outward), [] if it is a parameter."""
        if isinstance(scope, (*_FUNCS, ast.Lambda)):
            a = scope.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            params += [x for x in (a.vararg, a.kwarg) if x is not None]
            if any(x.arg == name for x in params):
                return []
        if isinstance(scope, _COMPS):
            generators = [g for g in scope.generators if name in _target_names(g.target)]
            return generators or None
        found = [node for node in _own_nodes(scope) if _binds(node, name)]
        return found or None

    def _binding(
        self, mod: _Module, scope: ast.AST, b: Any, name: str, sel: Sel, env: dict[str, Any]
    ) -> None:
        head, rest = (sel[0], sel[1:]) if sel else (None, ())
        p = self.prove
        if isinstance(b, ast.comprehension):
            if any(_guards(cond, name) for cond in b.ifs):
                cond = next(c for c in b.ifs if _guards(c, name))
                assert isinstance(cond, ast.Compare)
                return p(mod, cond.comparators[0], (ITER, *sel), env)
            return p(mod, b.iter, (ITER, *_path_in(b.target, name), *sel), env)
        if isinstance(b, (ast.For, ast.AsyncFor)):
            return p(mod, b.iter, (ITER, *_path_in(b.target, name), *sel), env)
        if isinstance(b, ast.Call):  # name.append(x), name.extend(xs), …
            if sel == ():
                raise _Unproven(b, f"{name} is a container used as text")
            method = b.func.attr  # type: ignore[attr-defined]
            args = b.args[1:] if method == "insert" else b.args
            for arg in args:
                p(mod, arg, rest if method in ("append", "add", "insert") else sel, env)
            return
        if isinstance(b, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = b.targets if isinstance(b, ast.Assign) else [b.target]
            for t in targets:
                if _is_item_of(t, name):  # name[k] = v
                    assert isinstance(t, ast.Subscript)
                    if head in (None, ITER):
                        p(mod, t.slice, rest, env)
                    if head in (None, VAL):
                        p(mod, b.value, rest, env)  # type: ignore[arg-type]
                    continue
                if name in _target_names(t):
                    assert b.value is not None
                    p(mod, b.value, (*_path_in(t, name), *sel), env)
            return
        if isinstance(b, ast.NamedExpr):
            return p(mod, b.value, sel, env)
        if isinstance(b, ast.ImportFrom) and b.module and b.level == 0:
            alias = next(x for x in b.names if (x.asname or x.name) == name)
            other = self.module(b.module)
            if other is not None:
                target = ast.Name(id=alias.name, ctx=ast.Load())
                other.scopes[id(target)] = ((), None)
                return self._name(other, target, sel, {})
        raise _Unproven(b, f"{name} is bound to something unprovable")

    # -- attributes, calls, classes ----------------------------------------------------------

    def _class_of(self, mod: _Module, e: ast.expr, env: dict[str, Any]) -> ast.ClassDef | None:
        """The class of ``e`` when annotations or constructors show it."""
        if not isinstance(e, ast.Name):
            return None
        funcs, cls = mod.scopes.get(id(e), ((), None))
        for scope in reversed(funcs):
            if not isinstance(scope, _FUNCS):
                continue
            a = scope.args
            params = [*a.posonlyargs, *a.args, *a.kwonlyargs]
            for i, arg in enumerate(params):
                if arg.arg != e.id:
                    continue
                if i == 0 and cls is not None and self._method_of(cls, scope):
                    return cls  # self
                if isinstance(arg.annotation, ast.Name):
                    return mod.classes.get(arg.annotation.id)
                return None
            kinds = set()
            for b in self._bindings(scope, e.id) or []:
                if isinstance(b, (ast.Assign, ast.AnnAssign)) and isinstance(b.value, ast.Call):
                    kinds.add(self._returns_class(mod, b.value))
                else:
                    kinds.add(None)
            if kinds:
                return kinds.pop() if len(kinds) == 1 else None
        return None

    def _returns_class(self, mod: _Module, call: ast.Call) -> ast.ClassDef | None:
        if isinstance(call.func, ast.Name):
            if call.func.id in mod.classes:
                return mod.classes[call.func.id]
            fn = mod.functions.get(call.func.id)
            if fn is not None and isinstance(fn.returns, ast.Name):
                return mod.classes.get(fn.returns.id)
        return None

    def _attribute(self, mod: _Module, e: ast.Attribute, sel: Sel, env: dict[str, Any]) -> None:
        cls = self._class_of(mod, e.value, env)
        if cls is None:
            raise _Unproven(e, "attribute of an object of unknown class")
        for item in cls.body:
            if isinstance(item, ast.FunctionDef) and item.name == e.attr:
                if not any(
                    isinstance(d, ast.Name) and d.id == "property" for d in item.decorator_list
                ):
                    raise _Unproven(e, "a method, not a value")
                return self._returns(mod, item, [], [], sel, env, mod, self_bound=True)
        return self._field(mod, cls, e, sel)

    def _field(self, mod: _Module, cls: ast.ClassDef, e: ast.Attribute, sel: Sel) -> None:
        """A dataclass field: its default and what every construction passes."""
        fields = [
            item.target.id
            for item in cls.body
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
        ]
        if e.attr not in fields:
            raise _Unproven(e, f"{cls.name}.{e.attr} is not a field")
        if not cls.name.startswith("_"):
            # A public class may be built anywhere: its fields are runtime values.
            raise _Unproven(e, f"{cls.name} is public, so {e.attr} may come from anywhere")
        index = fields.index(e.attr)
        for item in cls.body:
            if (
                isinstance(item, ast.AnnAssign)
                and isinstance(item.target, ast.Name)
                and item.target.id == e.attr
                and item.value is not None
            ):
                self.prove(mod, item.value, sel, {})
        for node in ast.walk(mod.tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == cls.name:
                passed = [kw.value for kw in node.keywords if kw.arg == e.attr]
                if index < len(node.args):
                    passed.append(node.args[index])
                if any(isinstance(a, ast.Starred) for a in node.args) or any(
                    kw.arg is None for kw in node.keywords
                ):
                    raise _Unproven(node, f"{cls.name}(*args/**kwargs)")
                for value in passed:
                    self.prove(mod, value, sel, {})
            elif isinstance(node, (ast.Assign, ast.AugAssign)) and any(
                isinstance(t, ast.Attribute) and t.attr == e.attr
                for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
            ):
                self.prove(mod, node.value, sel, {})  # obj.field = value, after construction
            elif (
                isinstance(node, ast.Call)
                and getattr(node.func, "id", None) == "replace"
                and any(kw.arg == e.attr for kw in node.keywords)
            ):
                raise _Unproven(node, f"replace() sets {cls.name}.{e.attr}")

    def _call(self, mod: _Module, e: ast.Call, sel: Sel, env: dict[str, Any]) -> None:
        f = e.func
        head, rest = (sel[0], sel[1:]) if sel else (None, ())
        p = self.prove
        if isinstance(f, ast.Attribute):
            if f.attr == "join" and len(e.args) == 1:
                p(mod, f.value, (), env)
                return p(mod, e.args[0], (ITER,), env)
            if f.attr == "format":
                p(mod, f.value, (), env)
                for arg in [*e.args, *(kw.value for kw in e.keywords)]:
                    p(mod, arg, (), env)
                return
            if f.attr in _STR_METHODS:
                return p(mod, f.value, sel if f.attr in _SPLITTERS else (), env)
            if f.attr in ("items", "keys", "values") and not e.args:
                if head != ITER:
                    raise _Unproven(e, f".{f.attr}() used as text")
                if f.attr == "keys":
                    return p(mod, f.value, (ITER, *rest), env)
                if f.attr == "values":
                    return p(mod, f.value, (VAL, *rest), env)
                if rest[:1] == (0,):  # the keys of .items()
                    return p(mod, f.value, (ITER, *rest[1:]), env)
                if rest[:1] == (1,):  # the values
                    return p(mod, f.value, (VAL, *rest[1:]), env)
                p(mod, f.value, (ITER,), env)
                return p(mod, f.value, (VAL,), env)
            cls = self._class_of(mod, f.value, env)
            if cls is not None:
                for item in cls.body:
                    if isinstance(item, ast.FunctionDef) and item.name == f.attr:
                        return self._returns(mod, item, e.args, e.keywords, sel, env, mod, True)
            raise _Unproven(e, f"call of .{f.attr}() on an unknown object")
        if isinstance(f, ast.Name):
            if f.id in ("len", "int", "range", "bool", "float"):
                return  # numbers only
            if f.id in ("list", "tuple", "sorted", "set", "frozenset", "reversed") and e.args:
                return p(mod, e.args[0], (ITER, *rest) if sel else (ITER,), env)
            if f.id == "dict" and len(e.args) == 1 and not e.keywords:
                return p(mod, e.args[0], sel, env)
            if f.id == "get_args" and len(e.args) == 1:
                return p(mod, e.args[0], (ARGS, *rest), env)
            fn, fn_mod = self._function(mod, f)
            if fn is not None and fn_mod is not None:
                return self._returns(fn_mod, fn, e.args, e.keywords, sel, env, mod, False)
        raise _Unproven(e, "call of an unknown function")

    def _function(self, mod: _Module, f: ast.Name) -> tuple[ast.FunctionDef | None, _Module | None]:
        if f.id in mod.functions:
            return mod.functions[f.id], mod
        for node in mod.tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    if (alias.asname or alias.name) == f.id:
                        other = self.module(node.module)
                        if other is not None and alias.name in other.functions:
                            return other.functions[alias.name], other
        return None, None

    def _returns(
        self,
        mod: _Module,
        fn: ast.FunctionDef,
        args: list[ast.expr],
        keywords: list[ast.keyword],
        sel: Sel,
        caller_env: dict[str, Any],
        caller_mod: _Module,
        self_bound: bool,
    ) -> None:
        """Every ``return`` of ``fn`` is provable, its parameters bound to the
        caller's arguments (or literal defaults); a missing one is unproven."""
        params = [*fn.args.posonlyargs, *fn.args.args]
        if self_bound:
            params = params[1:]
        env: dict[str, Any] = {"__function__": ("fn", fn, None)}
        if fn.args.vararg is not None or fn.args.kwarg is not None:
            pass  # never bound: using them is unproven
        defaults = dict(
            zip(
                [x.arg for x in params][len(params) - len(fn.args.defaults) :],
                fn.args.defaults,
                strict=True,
            )
        )
        for x, d in zip(fn.args.kwonlyargs, fn.args.kw_defaults, strict=True):
            if d is not None:
                defaults[x.arg] = d
        for param, default in defaults.items():
            env[param] = (mod, default, {})
        for x, arg in zip(params, args, strict=False):
            if isinstance(arg, ast.Starred):
                break
            env[x.arg] = (caller_mod, arg, caller_env)
        for kw in keywords:
            if kw.arg is not None:
                env[kw.arg] = (caller_mod, kw.value, caller_env)
        returns = [n for n in _own_nodes(fn) if isinstance(n, ast.Return)]
        if not returns:
            raise _Unproven(fn, f"{fn.name}() returns nothing provable")
        for r in returns:
            if r.value is None:
                continue
            self.prove(mod, r.value, sel, env)


_GROWERS = frozenset({"append", "extend", "insert", "add", "update"})
_STR_METHODS = frozenset(
    {"upper", "lower", "strip", "lstrip", "rstrip", "splitlines", "split", "title", "casefold"}
)
_SPLITTERS = frozenset({"splitlines", "split"})


def _own_nodes(scope: ast.AST) -> Iterator[ast.AST]:
    """Nodes of ``scope``'s body, not descending into nested scopes."""
    stack = list(ast.iter_child_nodes(scope))
    if isinstance(scope, (*_FUNCS, ast.Lambda)):
        # Defaults and annotations belong to the enclosing scope.
        stack = list(scope.body) if isinstance(scope.body, list) else [scope.body]
    while stack:
        node = stack.pop()
        yield node
        if isinstance(node, (*_SCOPES, *_COMPS)):
            continue
        stack.extend(ast.iter_child_nodes(node))


def _binds(node: ast.AST, name: str) -> bool:
    """Whether ``node`` binds ``name`` or grows it (``name.append``, ``name[k] =``)."""
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.NamedExpr)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        named = node.value is not None and any(name in _target_names(t) for t in targets)
        return named or any(_is_item_of(t, name) for t in targets)
    if isinstance(node, (ast.For, ast.AsyncFor)):
        return name in _target_names(node.target)
    if isinstance(node, ast.ImportFrom):
        return any((x.asname or x.name) == name for x in node.names)
    if isinstance(node, ast.Import):
        return any((x.asname or x.name).split(".")[0] == name for x in node.names)
    if isinstance(node, (ast.With, ast.AsyncWith)):
        return any(
            i.optional_vars is not None and name in _target_names(i.optional_vars)
            for i in node.items
        )
    if isinstance(node, ast.Call):
        f = node.func
        return (
            isinstance(f, ast.Attribute)
            and isinstance(f.value, ast.Name)
            and f.value.id == name
            and f.attr in _GROWERS
        )
    if isinstance(node, (*_FUNCS, ast.ClassDef)):
        return node.name == name
    return False


def _target_names(t: ast.AST) -> set[str]:
    if isinstance(t, ast.Name):
        return {t.id}
    if isinstance(t, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(x) for x in t.elts)) if t.elts else set()
    if isinstance(t, ast.Starred):
        return _target_names(t.value)
    return set()


def _path_in(t: ast.AST, name: str) -> Sel:
    """Where ``name`` sits in an unpacking target: () or element indices."""
    if isinstance(t, ast.Name):
        return ()
    if isinstance(t, (ast.Tuple, ast.List)):
        for i, x in enumerate(t.elts):
            if isinstance(x, ast.Starred):
                raise _Unproven(x, "starred unpacking")
            if name in _target_names(x):
                return (i, *_path_in(x, name))
    raise _Unproven(t, "cannot follow this unpacking")


def _is_item_of(t: ast.AST, name: str) -> bool:
    return isinstance(t, ast.Subscript) and isinstance(t.value, ast.Name) and t.value.id == name


def _guards(cond: ast.expr, name: str) -> bool:
    """``name in CONTAINER``: the comprehension keeps only members of it."""
    return (
        isinstance(cond, ast.Compare)
        and isinstance(cond.left, ast.Name)
        and cond.left.id == name
        and len(cond.ops) == 1
        and isinstance(cond.ops[0], ast.In)
    )


def _module_name(rel_path: str) -> str:
    return rel_path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")


def _sql_offences(roots: list[Path], files: list[str]) -> list[str]:
    prover = SqlProver(roots)
    out = []
    for rel in files:
        out.extend(prover.offences(rel, _module_name(rel)))
    return out


def test_every_sql_statement_is_parameterised() -> None:
    offences = _sql_offences([ROOT], CHECKED_FILES)
    for line in offences:
        print(line)
    assert offences == [], "SQL built from runtime values:\n" + "\n".join(offences)


def test_sql_allow_list_is_current() -> None:
    """An entry for a function that no longer exists would hide nothing but
    mislead the reader; remove it with the function."""
    prover = SqlProver([ROOT])
    present = set()
    for rel in CHECKED_FILES:
        mod = prover.module(_module_name(rel))
        assert mod is not None
        for node in ast.walk(mod.tree):
            if isinstance(node, _FUNCS):
                present.add((rel, prover.qualname(mod, node.body[0]) if node.body else ""))
    assert set(ALLOWED) <= present, set(ALLOWED) - present


# Each is an injection the prover must catch, placed in a copy of the store.
INJECTIONS = {
    "f-string": "def _bad(tx, task_id):\n"
    "    return tx.execute(f\"SELECT * FROM tasks WHERE id = '{task_id}'\")\n",
    "percent": "def _bad(tx, task_id):\n"
    "    return tx.one(\"SELECT * FROM tasks WHERE id = '%s'\" % task_id)\n",
    "format": "def _bad(tx, task_id):\n"
    "    return tx.all(\"SELECT * FROM tasks WHERE id = '{}'\".format(task_id))\n",
    "concat": "def _bad(tx, task_id):\n"
    '    return tx.scalar("SELECT * FROM tasks WHERE id = \'" + task_id + "\'")\n',
    "via-local": "def _bad(tx, column):\n"
    '    sql = "SELECT * FROM tasks"\n'
    '    sql += " ORDER BY " + column\n'
    "    return tx.all(sql)\n",
    "joined-list": "def _bad(tx, filters):\n"
    '    where = ["1"]\n'
    "    for k, v in filters.items():\n"
    "        where.append(f\"{k} = '{v}'\")\n"
    '    return tx.all("SELECT * FROM tasks WHERE " + " AND ".join(where))\n',
    "helper-arg": "def _sql(column):\n"
    '    return f"SELECT {column} FROM tasks"\n'
    "def _bad(tx, column):\n"
    "    return tx.one(_sql(column))\n",
    "dict-keys": "def _bad(tx, changes):\n"
    '    sets = ", ".join(f"{k} = ?" for k in changes)\n'
    '    return tx.execute(f"UPDATE tasks SET {sets}", list(changes.values()))\n',
    "executescript": 'def _bad(conn, name):\n    conn.executescript(f"DROP TABLE {name};")\n',
}


@pytest.fixture(scope="module")
def store_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    copy = tmp_path_factory.mktemp("store")
    shutil.copytree(ROOT / "aghd", copy / "aghd")
    return copy


@pytest.mark.parametrize("kind", sorted(INJECTIONS))
def test_sql_check_catches_an_injection(store_copy: Path, kind: str) -> None:
    target = store_copy / "aghd" / "store" / "tasks.py"
    original = target.read_text()
    try:
        target.write_text(original + "\n\n" + INJECTIONS[kind])
        offences = _sql_offences([store_copy, ROOT], ["aghd/store/tasks.py"])
    finally:
        target.write_text(original)
    assert [o for o in offences if "in _bad()" in o], offences
    # Only the planted function is reported: the rest of the copy is clean.
    assert all("in _bad()" in o for o in offences), offences
