"""``--json`` (and ``-o json``) print exactly what the RPC returned, and
``agh dashboard --watch`` follows the event stream."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import msgspec
import pytest

from tests.helpers.cli import Agh, clean_environ, ok_json

if TYPE_CHECKING:
    from agh.client import Client


def rpc(value: Any) -> Any:
    return json.loads(msgspec.json.encode(value))


@pytest.fixture
def world(client: Client) -> dict[str, Any]:
    parent = client.tasks_create("parent", start=True)
    child = client.tasks_children_create(parent.task.id, "child")
    client.tasks_send(parent.task.id, "hello")
    return {"parent": parent.task, "child": child.task, "run": parent.run}


def test_json_output_is_the_rpc_result(agh: Agh, client: Client, world: dict[str, Any]) -> None:
    parent, run = world["parent"], world["run"]
    cases = [
        (("ls",), client.tasks_list()),
        (("show", parent.identifier), client.tasks_get(parent.id)),
        (("tree", parent.identifier), client.tasks_tree(parent.id)),
        (("timeline", parent.identifier), client.tasks_timeline(parent.id)),
        (("run", "show", run.id), client.runs_get(run.id)),
        (("inbox",), client.observe_inbox()),
        (("sessions",), client.sessions_list()),
    ]
    for args, expected in cases:
        for flag in (("--json",), ("-o", "json")):
            got = ok_json(agh(*args, *flag))
            assert got == rpc(expected), args


def test_ping_and_dashboard_json_have_the_rpc_shape(agh: Agh, client: Client) -> None:
    # Both carry times that move; the keys and the stable values must match.
    info = ok_json(agh("ping", "-o", "json"))
    assert info == rpc(client.server_info())
    board = ok_json(agh("dashboard", "--json"))
    expected = rpc(client.observe_dashboard())
    assert board.keys() == expected.keys()
    assert board["dashboard"]["totals"] == expected["dashboard"]["totals"]


def test_dashboard_watch_redraws_on_an_event_and_quits_on_ctrl_c(
    daemon: Any, client: Client
) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agh.cli",
            "--socket",
            daemon.socket,
            "dashboard",
            "--watch",
            "--interval",
            "60",
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=clean_environ(),
    )
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["dashboard"]["totals"]["tasks_total"] == 0
        started = time.monotonic()
        client.tasks_create("appears", start=True)
        second = json.loads(proc.stdout.readline())
        # Well before the 60 s interval: the event woke it.
        assert time.monotonic() - started < 10
        assert second["dashboard"]["totals"]["tasks_total"] == 1
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0, err
        assert "Traceback" not in err
    finally:
        proc.kill()
        proc.wait()
