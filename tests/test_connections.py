"""Connection limits and hostile shapes of input, each with a clear answer:
idle connections time out (the client reconnects by itself), the connection
limit evicts the longest-idle one before refusing anyone, a client that never
reads its replies is cut off and costs bounded memory, deep JSON and huge
integers get the right error with the right id."""

from __future__ import annotations

import contextlib
import json
import resource
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import msgspec
import msgspec.inspect as mi
import pytest

from agh import errors
from agh import protocol as p
from agh.client import Client
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from tests.helpers.daemons import ThreadDaemon


def _rss_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _wait(predicate: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


# -- idle connections ------------------------------------------------------------------


def test_idle_connection_is_closed_and_the_client_reconnects(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(idle_timeout_s=0.3)
    raw = RawConn(d.socket)
    with d.client(agent_name="sleepy", session_id="ses_sleepy") as agent:
        agent.tasks_create("one", start=True)
        claim = agent.claim_next().claim
        assert claim is not None
        assert _wait(raw.closed_by_peer, 5), "the idle raw connection was never closed"
        time.sleep(0.5)  # the agent's connection was idle as long
        # The next call reconnects, as the same session, and the claim holds.
        assert agent.heartbeat(claim.run.id, claim.claim_token).lease.status == "running"
        assert agent.session is not None and agent.session.session_id == "ses_sleepy"
        sessions = {s.session_id: s for s in agent.sessions_list().sessions}
        assert sessions["ses_sleepy"].state == "connected"
        assert agent.complete(claim.run.id, claim.claim_token).lease.status == "completed"
    raw.close()


def test_a_subscriber_is_not_idle(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(idle_timeout_s=0.2)
    with d.client() as watcher, d.client() as writer:
        sub = watcher.events_subscribe().subscription
        time.sleep(1.0)
        writer.tasks_create("seen")
        event = watcher.next_event(timeout=5)
        assert event.subscription == sub and event.type == "timeline"


# -- the connection limit ---------------------------------------------------------------


def test_connection_limit_closes_the_longest_idle_one(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(max_connections=4)
    idle = [RawConn(d.socket) for _ in range(4)]
    for i, conn in enumerate(idle):  # oldest activity first
        conn.request("server.info", id=i)
        assert conn.recv()["id"] == i
        time.sleep(0.02)
    with d.client() as fresh:
        assert fresh.server_info().pid
        assert _wait(idle[0].closed_by_peer)
        assert not idle[3].closed_by_peer()
    for conn in idle:
        conn.close()


def test_connection_limit_with_nothing_idle_refuses_with_busy(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(max_connections=3)
    busy = [d.client() for _ in range(3)]
    try:
        for c in busy:
            c.events_subscribe()  # streaming: never evicted
        refused = RawConn(d.socket)
        reply = refused.recv()
        assert reply["error"]["code"] == -32029
        assert "max_connections" in reply["error"]["message"]
        assert refused.closed_by_peer()
        refused.close()
    finally:
        for c in busy:
            c.close()
    with d.client() as c:  # room again
        assert c.server_info().pid


def test_a_burst_of_connections_is_accepted(daemon: ThreadDaemon) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 4096), hard))
    socks = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX)
            s.setblocking(False)
            try:
                s.connect(daemon.socket)
            except BlockingIOError:
                pytest.fail("connect() got EAGAIN: the accept backlog is too small")
            socks.append(s)
        with daemon.client() as c:
            assert c.server_info().pid
    finally:
        for s in socks:
            s.close()


# -- clients that never read -----------------------------------------------------------


def _pipeline_never_read(path: str, n: int, params: dict[str, Any]) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    line = (
        json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tasks.list", "params": params}) + "\n"
    ).encode()
    data = line * n

    def send() -> None:
        with contextlib.suppress(OSError):  # cut off by the daemon: expected
            s.sendall(data)

    threading.Thread(target=send, daemon=True).start()
    return s


def test_clients_that_never_read_cost_bounded_memory(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon()
    with d.client() as c:
        for i in range(100):
            c.tasks_create(f"task {i}", description="d" * 300)
        before = _rss_kb()
        hogs = [_pipeline_never_read(d.socket, 2000, {"limit": 100}) for _ in range(10)]
        try:
            time.sleep(4)
            latencies = []
            for _ in range(20):
                t = time.perf_counter()
                c.tasks_get(c.tasks_list(limit=1).tasks[0].id)
                latencies.append(time.perf_counter() - t)
            grown_mb = (_rss_kb() - before) / 1024
        finally:
            for s in hogs:
                s.close()
        # Before the read gate: ~11 MB per such client (replies of 256
        # requests in flight). Now about the write buffer's high-water mark.
        assert grown_mb < 40, f"RSS grew {grown_mb:.0f} MB"
        assert max(latencies) < 1.0, latencies


def test_a_client_that_never_reads_is_cut_off(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(write_stall_timeout_s=0.5)
    with d.client() as c:
        for i in range(50):
            c.tasks_create(f"task {i}", description="d" * 1000)
        hog = _pipeline_never_read(d.socket, 2000, {"limit": 100})
        hog.settimeout(0.2)
        time.sleep(2.5)
        # Cut off: reading now yields the replies sent before, then the end.
        received, ended = 0, False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = hog.recv(1 << 20)
            except TimeoutError:
                break
            except ConnectionResetError:
                ended = True
                break
            if not chunk:
                ended = True
                break
            received += len(chunk)
        hog.close()
        assert ended, f"still connected after {received} bytes"
        assert c.server_info().pid


# -- deep JSON and huge integers ---------------------------------------------------------


@pytest.mark.parametrize("depth", [200, 1000, 100_000])
def test_deep_nesting_gets_an_error_reply_with_its_id(raw: RawConn, depth: int) -> None:
    deep = "[" * depth + "]" * depth
    create = '{"jsonrpc":"2.0","id":7,"method":"tasks.create","params":{"title":"x","metadata":'
    shapes = {
        "params": create + deep + "}}",
        "id": f'{{"jsonrpc":"2.0","method":"server.info","id":7,"x":{deep}}}',
        "batch": f'[{{"jsonrpc":"2.0","id":7,"method":"server.info","params":{deep}}}]',
    }
    for shape, line in shapes.items():
        raw.send(line + "\n")
        reply = raw.recv()
        assert reply["error"]["code"] == -32600, (shape, reply)
        assert "nested more than" in reply["error"]["message"]
        assert reply["id"] == (None if shape == "batch" else 7), shape
    raw.request("server.info", id=8)
    assert raw.recv()["id"] == 8


def test_nesting_within_the_limit_is_stored_and_read_back(client: Client) -> None:
    value: Any = "leaf"
    for _ in range(100):
        value = {"k": value}
    task = client.tasks_create("deep but fine", metadata=value).task
    got = client.tasks_get(task.id).task.task.metadata
    assert got == value


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("tasks.timeline", {"id": "T-1", "after_sequence": 2**63}, "$.params.after_sequence"),
        ("tasks.stream", {"id": "T-1", "after_sequence": 2**63}, "$.params.after_sequence"),
        ("events.subscribe", {"after_sequence": 9223372036854775808}, "$.params.after_sequence"),
        ("runs.logs", {"id": "T-1", "after": 2**64}, "$.params.after"),
        ("runs.logs", {"id": "T-1", "step": -(2**63) - 1}, "$.params.step"),
        ("tasks.list", {"limit": 2**70}, "$.params.limit"),
        (
            "agent.log",
            {"run_id": "r", "claim_token": "t", "lines": [{"message": "m", "step": 2**63}]},
            "$.params.lines[0].step",
        ),
    ],
)
def test_huge_integers_are_invalid_params_naming_the_field(
    raw: RawConn, client: Client, method: str, params: dict[str, Any], field: str
) -> None:
    client.tasks_create("exists")
    raw.request(method, params, id=3)
    reply = raw.recv()
    assert reply["error"]["code"] == -32602, reply
    assert reply["error"]["data"]["details"]["field"] == field
    raw.request("server.info", id=4)  # and the daemon is alive
    assert raw.recv()["id"] == 4


def _unbounded_ints(t: Any, path: str, seen: set[type]) -> list[str]:
    if isinstance(t, mi.IntType):
        bounded = (t.le is not None or t.lt is not None) and (t.ge is not None or t.gt is not None)
        return [] if bounded else [path]
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return []
        seen.add(t.cls)
        return [x for f in t.fields for x in _unbounded_ints(f.type, f"{path}.{f.name}", seen)]
    if isinstance(t, mi.UnionType):
        return [x for sub in t.types for x in _unbounded_ints(sub, path, seen)]
    if isinstance(t, (mi.ListType, mi.SetType, mi.FrozenSetType, mi.VarTupleType)):
        return _unbounded_ints(t.item_type, path + "[]", seen)
    if isinstance(t, mi.DictType):
        return _unbounded_ints(t.value_type, path + "{}", seen)
    return []


def test_every_integer_a_client_sends_is_bounded() -> None:
    """SQLite stores 64-bit integers: an unbounded params int would reach the
    store and fail there (-32603) instead of naming its field (-32602)."""
    params = [
        c
        for c in vars(p).values()
        if isinstance(c, type) and issubclass(c, p.Params) and c is not p.Params
    ]
    assert len(params) > 30
    found = [x for c in params for x in _unbounded_ints(mi.type_info(c), c.__name__, set())]
    assert found == []
    # And the shared bound is what SQLite holds.
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"id": "x", "after_sequence": 2**63}, p.TimelineParams)


def test_stream_from_the_last_int64_sequence_is_served(raw: RawConn) -> None:
    raw.request("events.subscribe", {"after_sequence": 2**63 - 1}, id=1)
    assert "subscription" in raw.recv()["result"]
    time.sleep(0.3)
    raw.request("server.info", id=2)
    assert raw.recv()["id"] == 2


def test_client_gets_busy_not_hang_when_daemon_refuses(make_daemon: Any) -> None:
    """The Client surfaces a refusal at the limit as the daemon's busy error."""
    d: ThreadDaemon = make_daemon(max_connections=1)
    with d.client() as holder:
        holder.events_subscribe()
        with pytest.raises((errors.Busy, errors.DaemonUnreachable)):
            Client(d.socket, agent_name="late")
