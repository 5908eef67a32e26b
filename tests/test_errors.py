"""Error classes: codes and kinds pinned to PROTOCOL.md §2, and the client
re-raising exactly the class the daemon raised."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from agh import errors
from tests.helpers.wire import RawConn

if TYPE_CHECKING:
    from agh.client import Client
    from tests.helpers.daemons import ThreadDaemon

EXPECTED = [
    (errors.ParseError, -32700, "parse_error"),
    (errors.InvalidRequest, -32600, "invalid_request"),
    (errors.MethodNotFound, -32601, "method_not_found"),
    (errors.InvalidParams, -32602, "invalid_params"),
    (errors.InternalError, -32603, "internal"),
    (errors.NotFound, -32004, "not_found"),
    (errors.Forbidden, -32003, "forbidden"),
    (errors.Conflict, -32009, "conflict"),
    (errors.LeaseLost, -32010, "lease_lost"),
    (errors.Busy, -32029, "busy"),
]


@pytest.mark.parametrize(
    ("cls", "code", "kind"), EXPECTED, ids=[c.__name__ for c, _, _ in EXPECTED]
)
def test_code_and_kind_pinned(cls: type[errors.AghError], code: int, kind: str) -> None:
    assert cls.code == code
    assert cls.kind == kind
    assert issubclass(cls, errors.AghError)
    wire = cls("boom", {"x": 1}).to_wire()
    assert wire == {"code": code, "message": "boom", "data": {"kind": kind, "details": {"x": 1}}}
    back = errors.AghError.from_wire(wire)
    assert type(back) is cls
    assert back.message == "boom" and back.details == {"x": 1}


def test_every_wire_error_is_listed_once() -> None:
    assert {c for c, _, _ in EXPECTED} == set(errors.WIRE_ERRORS)
    codes = [c.code for c in errors.WIRE_ERRORS]
    assert len(codes) == len(set(codes))


def test_error_without_details_still_has_details_object() -> None:
    wire = errors.NotFound("gone").to_wire()
    assert wire["data"] == {"kind": "not_found", "details": {}}


def test_unknown_code_from_newer_daemon() -> None:
    exc = errors.AghError.from_wire(
        {"code": -32077, "message": "new", "data": {"kind": "shiny", "details": {"a": 1}}}
    )
    assert type(exc) is errors.AghError
    assert exc.code == -32077 and exc.kind == "shiny" and exc.details == {"a": 1}
    assert isinstance(errors.AghError.from_wire("nonsense"), errors.ProtocolError)


# -- over the wire, through the client ---------------------------------------------------


def test_not_found_task(client: Client) -> None:
    with pytest.raises(errors.NotFound) as info:
        client.tasks_get("T-999")
    assert info.value.code == -32004 and info.value.kind == "not_found"
    assert "T-999" in info.value.message


def test_not_found_run(client: Client) -> None:
    with pytest.raises(errors.NotFound):
        client.runs_get("run_doesnotexist")
    with pytest.raises(errors.NotFound):
        client.heartbeat("run_doesnotexist", "tok")


def test_complete_queued_run_is_conflict_naming_state(client: Client) -> None:
    run = client.tasks_create("queued one", start=True).run
    assert run is not None and run.status == "queued"
    with pytest.raises(errors.Conflict) as info:
        client.runs_complete(run.id, result={"ok": True})
    assert "queued" in info.value.message
    assert info.value.code == -32009
    assert client.runs_get(run.id).run.run.status == "queued"


def test_fail_queued_run_is_conflict(client: Client) -> None:
    run = client.tasks_create("queued two", start=True).run
    assert run is not None
    with pytest.raises(errors.Conflict) as info:
        client.runs_fail(run.id, error="nope")
    assert "queued" in info.value.message


def test_start_queued_run_is_conflict(client: Client) -> None:
    run = client.tasks_create("queued three", start=True).run
    assert run is not None
    with pytest.raises(errors.Conflict) as info:
        client.runs_start(run.id)
    assert "queued" in info.value.message


def test_wrong_token_is_forbidden(client: Client) -> None:
    run = client.tasks_create("fenced", start=True).run
    assert run is not None
    claimed = client.runs_claim(run.id, lease_ms=60_000)
    with pytest.raises(errors.Forbidden):
        client.heartbeat(run.id, "not-the-token")
    with pytest.raises(errors.Forbidden):
        client.complete(run.id, "not-the-token")
    assert client.heartbeat(run.id, claimed.claim_token).lease.status == "running"


def test_canceled_run_token_is_lease_lost(client: Client) -> None:
    run = client.tasks_create("to cancel", start=True).run
    assert run is not None
    claimed = client.runs_claim(run.id, lease_ms=60_000)
    client.runs_cancel(run.id, reason="operator")
    with pytest.raises(errors.LeaseLost) as info:
        client.heartbeat(run.id, claimed.claim_token)
    assert info.value.code == -32010 and info.value.kind == "lease_lost"


def test_invalid_params_through_client(client: Client) -> None:
    with pytest.raises(errors.InvalidParams) as info:
        client.call("tasks.create", {"title": 5}, dict)
    assert info.value.details["field"] == "$.params.title"
    with pytest.raises(errors.InvalidParams):
        client.call("tasks.create", {"title": "t", "nope": 1}, dict)


def test_method_not_found_through_client(client: Client) -> None:
    with pytest.raises(errors.MethodNotFound) as info:
        client.call("no.such.method", {}, dict)
    assert info.value.code == -32601


def test_client_connection_still_usable_after_errors(client: Client) -> None:
    for _ in range(3):
        with pytest.raises(errors.NotFound):
            client.tasks_get("T-12345")
    assert client.server_info().protocol == 1


def test_raw_wire_codes_match_classes(raw: RawConn) -> None:
    cases: list[tuple[bytes, type[errors.AghError]]] = [
        (b"{not json\n", errors.ParseError),
        (b"17\n", errors.InvalidRequest),
        (b'{"jsonrpc":"2.0","method":"x.y","id":1}\n', errors.MethodNotFound),
        (
            b'{"jsonrpc":"2.0","method":"tasks.get","params":{"id":1},"id":1}\n',
            errors.InvalidParams,
        ),
        (
            b'{"jsonrpc":"2.0","method":"tasks.get","params":{"id":"T-77"},"id":1}\n',
            errors.NotFound,
        ),
    ]
    for line, cls in cases:
        raw.send(line)
        reply = raw.recv()
        assert reply["error"]["code"] == cls.code, (line, reply)
        assert reply["error"]["data"]["kind"] == cls.kind, (line, reply)
        assert type(errors.AghError.from_wire(reply["error"])) is cls


def test_long_poll_interrupted_by_shutdown_gets_a_reply(make_daemon: Any) -> None:
    """A claim_next waiting when the daemon stops is answered (busy, or no claim),
    never left without a reply."""
    d: ThreadDaemon = make_daemon()
    outcome: dict[str, Any] = {}

    def waiter() -> None:
        conn = RawConn(d.socket, timeout=15)
        try:
            conn.request("agent.claim_next", {"wait_ms": 30_000}, id="lp")
            outcome["reply"] = conn.recv()
        except BaseException as exc:
            outcome["exc"] = exc
        finally:
            conn.close()

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.5)
    started = time.monotonic()
    d.stop()
    t.join(15)
    assert not t.is_alive()
    assert time.monotonic() - started < 10
    assert "exc" not in outcome, outcome
    reply = outcome["reply"]
    assert reply["id"] == "lp"
    if "error" in reply:
        assert reply["error"]["code"] == errors.Busy.code
        assert reply["error"]["data"]["kind"] == "busy"
    else:
        assert reply["result"] == {"claim": None}
