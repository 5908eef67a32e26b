"""JSON-RPC 2.0 conformance over the raw socket (PROTOCOL.md §1, §2)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import TYPE_CHECKING, Any

from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon


def _line(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


def _req(method: str, params: Any = None, id: Any = 1) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
    if params is not None:
        msg["params"] = params
    return msg


def _note(method: str, params: Any = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    return msg


def _assert_error(reply: Any, code: int, kind: str | None = None) -> dict[str, Any]:
    """``reply`` is a JSON-RPC error response with ``code`` and a well-formed data."""
    assert isinstance(reply, dict), reply
    assert reply.get("jsonrpc") == "2.0", reply
    assert "result" not in reply, reply
    error = reply["error"]
    assert error["code"] == code, reply
    assert isinstance(error["message"], str) and error["message"], reply
    data = error["data"]
    assert isinstance(data, dict), reply
    assert isinstance(data["kind"], str), reply
    assert isinstance(data["details"], dict), reply
    if kind is not None:
        assert data["kind"] == kind, reply
    return error  # type: ignore[no-any-return]


def _closed_by_peer(conn: RawConn) -> bool:
    """EOF or reset (a reset is what a close with unread input looks like)."""
    try:
        return conn.closed_by_peer()
    except ConnectionResetError:
        return True


def _server_answers(path: str, timeout: float = 5) -> None:
    conn = RawConn(path, timeout=timeout)
    try:
        conn.request("server.info", {}, id="alive")
        reply = conn.recv()
        assert reply["id"] == "alive"
        assert reply["result"]["protocol"] == 1
    finally:
        conn.close()


# -- batches and notifications --------------------------------------------------------


def test_batch_mixed_valid_invalid_notification(raw: RawConn) -> None:
    batch = [
        _req("server.info", {}, id="str-id-\u00e9"),
        {"method": "server.info", "id": 99},  # no "jsonrpc": invalid request
        _note("server.info", {}),
        _req("server.info", {}, id=7),
    ]
    raw.send(_line(batch))
    replies = raw.recv()
    assert isinstance(replies, list)
    assert len(replies) == 3, replies  # the notification gets no entry
    ok = [r for r in replies if "result" in r]
    bad = [r for r in replies if "error" in r]
    ids = [r["id"] for r in ok]
    assert "str-id-\u00e9" in ids and 7 in ids and len(ids) == 2
    # The number id stays a number, the string id a string.
    assert any(isinstance(i, int) and i == 7 for i in ids)
    assert len(bad) == 1
    _assert_error(bad[0], -32600, "invalid_request")
    assert bad[0]["id"] in (99, None)
    for r in ok:
        assert r["jsonrpc"] == "2.0"
        assert r["result"]["protocol"] == 1


def test_ids_echoed_exactly(raw: RawConn) -> None:
    for rid in ["abc", "", "0", 0, -5, 123456789012, "x" * 200]:
        raw.request("server.info", {}, id=rid)
        reply = raw.recv()
        assert reply["id"] == rid
        assert type(reply["id"]) is type(rid)
        assert "result" in reply


def test_notification_gets_no_reply_but_is_executed(raw: RawConn, client: Client) -> None:
    raw.send(_line(_note("tasks.create", {"title": "made-by-notification"})))
    raw.request("server.info", {}, id="after")
    reply = raw.recv()
    assert reply["id"] == "after"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = client.tasks_list(query="made-by-notification").tasks
        if found:
            break
        time.sleep(0.02)
    assert [t.title for t in found] == ["made-by-notification"]


def test_all_notification_batch_gets_no_reply(raw: RawConn) -> None:
    raw.send(_line([_note("server.info", {}), _note("server.info"), _note("nope.nope")]))
    raw.request("server.info", {}, id=42)
    reply = raw.recv()
    # The first thing that comes back is the reply to the normal request.
    assert reply == {"jsonrpc": "2.0", "id": 42, "result": reply["result"]}
    raw.sock.settimeout(0.3)
    try:
        extra = raw.sock.recv(65536)
    except TimeoutError:
        extra = b""
    assert extra == b""


def test_empty_batch_is_invalid_request(raw: RawConn) -> None:
    raw.send(b"[]\n")
    reply = raw.recv()
    assert isinstance(reply, dict), "an empty batch gets one error object, not an array"
    _assert_error(reply, -32600, "invalid_request")
    assert reply["id"] is None


def test_batch_of_non_objects(raw: RawConn) -> None:
    raw.send(b"[1, 2, 3]\n")
    replies = raw.recv()
    assert isinstance(replies, list) and len(replies) == 3
    for r in replies:
        _assert_error(r, -32600, "invalid_request")
        assert r["id"] is None


# -- envelope errors ----------------------------------------------------------------


def test_parse_error(raw: RawConn) -> None:
    raw.send(b'{"jsonrpc": "2.0", "method": "server.info", "id": 1\n')
    reply = raw.recv()
    _assert_error(reply, -32700, "parse_error")
    assert reply["id"] is None
    # Framing is intact: the same connection keeps working.
    raw.request("server.info", {}, id=2)
    assert raw.recv()["id"] == 2


def test_parse_error_in_batch_text(raw: RawConn) -> None:
    raw.send(b'[{"jsonrpc": "2.0", "method": "server.info", "id": 1},\n')
    reply = raw.recv()
    _assert_error(reply, -32700, "parse_error")
    assert reply["id"] is None


def test_non_object_request(raw: RawConn) -> None:
    for payload in (b"42\n", b'"hello"\n', b"null\n", b"true\n"):
        raw.send(payload)
        reply = raw.recv()
        _assert_error(reply, -32600, "invalid_request")
        assert reply["id"] is None


def test_wrong_jsonrpc_version(raw: RawConn) -> None:
    raw.send(_line({"jsonrpc": "1.0", "method": "server.info", "id": 5}))
    reply = raw.recv()
    _assert_error(reply, -32600, "invalid_request")
    assert reply["id"] in (5, None)


def test_missing_jsonrpc(raw: RawConn) -> None:
    raw.send(_line({"method": "server.info", "id": 5}))
    reply = raw.recv()
    _assert_error(reply, -32600, "invalid_request")


def test_method_not_a_string(raw: RawConn) -> None:
    for bad in (5, None, ["server.info"], {"a": 1}):
        raw.send(_line({"jsonrpc": "2.0", "method": bad, "id": 6}))
        reply = raw.recv()
        _assert_error(reply, -32600, "invalid_request")
        assert reply["id"] in (6, None)


def test_missing_method(raw: RawConn) -> None:
    raw.send(_line({"jsonrpc": "2.0", "id": 8}))
    _assert_error(raw.recv(), -32600, "invalid_request")


def test_unknown_method(raw: RawConn) -> None:
    raw.request("tasks.frobnicate", {}, id="m")
    reply = raw.recv()
    _assert_error(reply, -32601, "method_not_found")
    assert reply["id"] == "m"
    assert "tasks.frobnicate" in reply["error"]["message"]


def test_invalid_param_type_names_field(raw: RawConn) -> None:
    raw.request("tasks.create", {"title": 5}, id=3)
    reply = raw.recv()
    error = _assert_error(reply, -32602, "invalid_params")
    assert reply["id"] == 3
    assert error["data"]["details"]["field"] == "$.params.title"


def test_invalid_nested_param_names_field(raw: RawConn) -> None:
    raw.request("tasks.create", {"title": "ok", "owner": {"kind": "robot"}}, id=3)
    error = _assert_error(raw.recv(), -32602, "invalid_params")
    assert error["data"]["details"]["field"] == "$.params.owner.kind"


def test_invalid_enum_value(raw: RawConn) -> None:
    raw.request("tasks.create", {"title": "ok", "priority": "critical"}, id=3)
    error = _assert_error(raw.recv(), -32602, "invalid_params")
    assert error["data"]["details"]["field"] == "$.params.priority"


def test_unknown_param_name(raw: RawConn) -> None:
    raw.request("tasks.create", {"title": "ok", "titel": "typo"}, id=4)
    error = _assert_error(raw.recv(), -32602, "invalid_params")
    assert "titel" in error["message"]


def test_missing_required_param(raw: RawConn) -> None:
    raw.request("tasks.get", {}, id=4)
    error = _assert_error(raw.recv(), -32602, "invalid_params")
    assert "id" in error["message"]
    assert error["data"]["details"]["field"].startswith("$.params")


def test_params_not_an_object(raw: RawConn) -> None:
    raw.request("tasks.get", "T-1", id=4)
    reply = raw.recv()
    assert reply["id"] in (4, None)
    assert reply["error"]["code"] in (-32600, -32602)
    _assert_error(reply, reply["error"]["code"])


def test_out_of_range_param(raw: RawConn) -> None:
    raw.request("agent.claim_next", {"lease_ms": 10}, id=4)
    error = _assert_error(raw.recv(), -32602, "invalid_params")
    assert error["data"]["details"]["field"] == "$.params.lease_ms"


def test_application_error_has_kind_and_details(raw: RawConn) -> None:
    raw.request("tasks.get", {"id": "T-404"}, id=9)
    reply = raw.recv()
    _assert_error(reply, -32004, "not_found")
    assert reply["id"] == 9


# -- pipelining -----------------------------------------------------------------------


def test_pipelining_50_requests_in_one_write(raw: RawConn) -> None:
    payload = b"".join(
        _line(_req("tasks.create", {"title": f"pipe-{i}"}, id=i if i % 2 else f"s{i}"))
        for i in range(50)
    )
    raw.send(payload)
    seen: dict[Any, Any] = {}
    for _ in range(50):
        reply = raw.recv()
        assert reply["id"] not in seen, "duplicate reply"
        seen[reply["id"]] = reply
    assert set(seen) == {i if i % 2 else f"s{i}" for i in range(50)}
    for i in range(50):
        reply = seen[i if i % 2 else f"s{i}"]
        assert reply["result"]["task"]["title"] == f"pipe-{i}"
    identifiers = {r["result"]["task"]["identifier"] for r in seen.values()}
    assert len(identifiers) == 50


# -- oversize lines, garbage ------------------------------------------------------------


def test_line_longer_than_max_closes_connection(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(max_line_bytes=4096)
    conn = RawConn(d.socket)
    try:
        conn.request("server.info", {}, id=1)
        assert conn.recv()["id"] == 1  # a normal line is fine
        conn.send(_line(_req("tasks.create", {"title": "x" * 10_000}, id=2)))
        reply = conn.recv()
        _assert_error(reply, -32600, "invalid_request")
        conn.sock.settimeout(5)
        assert _closed_by_peer(conn), "the connection must be closed after an oversize line"
    finally:
        conn.close()
    _server_answers(d.socket)
    # Nothing from the oversize line was applied.
    with d.client() as c:
        assert c.tasks_list().tasks == []


def test_line_just_under_max_is_accepted(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(max_line_bytes=4096)
    conn = RawConn(d.socket)
    try:
        base = len(_line(_req("tasks.create", {"title": "t", "description": ""}, id=1)))
        text = "y" * (4000 - base)
        conn.send(_line(_req("tasks.create", {"title": "t", "description": text}, id=1)))
        reply = conn.recv()
        assert reply["result"]["task"]["description"] == text
    finally:
        conn.close()


def test_unterminated_oversize_line_is_not_buffered(make_daemon: Any) -> None:
    d: ThreadDaemon = make_daemon(max_line_bytes=4096)
    conn = RawConn(d.socket, timeout=5)
    try:
        try:
            # 256 KiB and never a newline: the daemon must not wait for one.
            for _ in range(64):
                conn.send(b"a" * 4096)
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed on us mid-send: fine
        try:
            reply = conn.recv()
        except (EOFError, ConnectionResetError):
            reply = None
        if reply is not None:
            _assert_error(reply, -32600, "invalid_request")
            assert _closed_by_peer(conn)
    finally:
        conn.close()
    _server_answers(d.socket)


def _send_bad_then_sentinel(path: str, bad: bytes, expected: int) -> tuple[list[Any], bool]:
    """Send ``bad`` (``expected`` non-blank lines) then a valid request.

    Returns the error replies and whether the daemon closed the connection.
    Unless it closes, every bad line must get its reply (in any order, PROTOCOL
    §1) and the sentinel too; a missing reply is a hang and fails the test.
    """
    conn = RawConn(path, timeout=3)
    replies: list[Any] = []
    sentinel = False
    try:
        try:
            conn.send(bad + _line(_req("server.info", {}, id="sentinel")))
        except (BrokenPipeError, ConnectionResetError):
            return replies, True
        while not (sentinel and len(replies) >= expected):
            try:
                reply = conn.recv()
            except (EOFError, ConnectionResetError):
                return replies, True
            except TimeoutError:
                raise AssertionError(
                    f"bad input left without a reply: {len(replies)} of {expected} error "
                    f"replies, sentinel answered: {sentinel}; got {replies!r}"
                ) from None
            if reply.get("id") == "sentinel":
                assert reply["result"]["protocol"] == 1
                sentinel = True
            else:
                replies.append(reply)
        return replies, False
    finally:
        conn.close()


def test_invalid_utf8_gets_error_reply_or_close(daemon: ThreadDaemon) -> None:
    bad = b'{"jsonrpc":"2.0","method":"server.info","id":"\xff\xfe"}\n'
    replies, closed = _send_bad_then_sentinel(daemon.socket, bad, 1)
    if not closed:
        assert len(replies) == 1, replies
    for reply in replies:
        assert reply["error"]["code"] in (-32700, -32600), reply
        _assert_error(reply, reply["error"]["code"])
    _server_answers(daemon.socket)


def test_invalid_utf8_in_params_gets_error_reply_or_close(daemon: ThreadDaemon) -> None:
    bad = b'{"jsonrpc":"2.0","method":"tasks.create","params":{"title":"\xc3\x28"},"id":1}\n'
    replies, closed = _send_bad_then_sentinel(daemon.socket, bad, 1)
    if not closed:
        assert len(replies) == 1, replies
    for reply in replies:
        assert "error" in reply, reply
        _assert_error(reply, reply["error"]["code"])
    with daemon.client() as c:
        assert c.tasks_list().tasks == []
    _server_answers(daemon.socket)


def test_garbage_bytes_get_error_replies_or_close(daemon: ThreadDaemon) -> None:
    garbage = bytes(range(256)) * 8 + b"\n\x00\x00\n}{][\n\xc3\x28\n"
    lines = [ln for ln in garbage.split(b"\n") if ln.strip()]
    replies, closed = _send_bad_then_sentinel(daemon.socket, garbage, len(lines))
    if not closed:
        assert len(replies) == len(lines), (len(replies), len(lines))
    for reply in replies:
        assert "error" in reply and "result" not in reply, reply
        assert reply["id"] is None
        _assert_error(reply, reply["error"]["code"])
    _server_answers(daemon.socket)


def test_client_half_close_still_gets_replies(daemon: ThreadDaemon) -> None:
    """`printf '...' | nc -U` closes its write side after sending."""
    import socket as _socket

    conn = RawConn(daemon.socket, timeout=5)
    try:
        conn.send(_line(_req("server.info", {}, id=1)) + _line(_req("tasks.get", {"id": "T-9"}, 2)))
        conn.sock.shutdown(_socket.SHUT_WR)
        got = {conn.recv()["id"], conn.recv()["id"]}
        assert got == {1, 2}
    finally:
        conn.close()


# -- slow readers -----------------------------------------------------------------------


def test_client_that_never_reads_does_not_block_others(
    daemon: ThreadDaemon, client: Client
) -> None:
    task = client.tasks_create("big reply " + "z" * 900, description="d" * 2000).task
    hog = RawConn(daemon.socket, timeout=10)
    payload = b"".join(_line(_req("tasks.get", {"id": task.id}, id=i)) for i in range(2000))

    def flood() -> None:
        # A timeout means the daemon stopped reading us: the backpressure we want.
        with contextlib.suppress(TimeoutError, OSError):
            hog.send(payload)

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        time.sleep(0.5)  # let the hog fill its socket buffers
        for attempt in range(3):
            other = RawConn(daemon.socket, timeout=5)
            try:
                started = time.monotonic()
                other.request("server.info", {}, id=f"other-{attempt}")
                reply = other.recv()
                elapsed = time.monotonic() - started
            finally:
                other.close()
            assert reply["id"] == f"other-{attempt}"
            assert elapsed < 3, f"server.info took {elapsed:.2f}s while another client hogged"
        # Writes still go through too.
        started = time.monotonic()
        made = client.tasks_create("while hogged")
        assert made.task.title == "while hogged"
        assert time.monotonic() - started < 3
    finally:
        hog.close()
        sender.join(15)
    assert not sender.is_alive()
    _server_answers(daemon.socket)


def test_backpressured_client_gets_every_reply_once_it_reads(
    daemon: ThreadDaemon, client: Client
) -> None:
    task = client.tasks_create("echo " + "q" * 900, description="e" * 2000).task
    n = 2000
    hog = RawConn(daemon.socket, timeout=30)
    payload = b"".join(_line(_req("tasks.get", {"id": task.id}, id=i)) for i in range(n))
    sent = threading.Event()

    def flood() -> None:
        hog.send(payload)
        sent.set()

    sender = threading.Thread(target=flood, daemon=True)
    sender.start()
    try:
        time.sleep(0.5)  # nobody reads: the daemon must stop reading too
        seen: set[int] = set()
        while len(seen) < n:
            reply = hog.recv()
            assert reply["result"]["task"]["task"]["id"] == task.id
            assert reply["id"] not in seen
            seen.add(reply["id"])
        assert seen == set(range(n))
        assert sent.wait(10)
    finally:
        hog.close()
        sender.join(15)


def test_subscription_in_a_batch_streams_only_after_the_batch_reply(
    raw: RawConn, client: Client
) -> None:
    """The replay would be ready long before the batch's slower write
    commits; still, the first line is the reply that names the subscription."""
    client.tasks_create("history", start=True)
    raw.send(
        _line(
            [
                _req("events.subscribe", {"after_sequence": 0}, id=1),
                _req("tasks.create", {"title": "new", "start": True}, id=2),
            ]
        )
    )
    reply = raw.recv()
    assert isinstance(reply, list), f"a notification came before the batch reply: {reply}"
    sub = next(r["result"]["subscription"] for r in reply if r["id"] == 1)
    first = raw.recv()
    assert first["method"] == "stream.event" and first["params"]["subscription"] == sub
    assert first["params"]["timeline"]["event_type"] == "task.created"
