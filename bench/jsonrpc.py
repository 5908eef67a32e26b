"""A blocking JSON-RPC client for the benchmarks: one connection, one
request at a time, standard library only (``bench/agent_proc.py`` must stay
a plain client with nothing of agh in it, as a real agent would be)."""

from __future__ import annotations

import json
import socket
from typing import Any


class Conn:
    """A blocking JSON-RPC connection (one request at a time)."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.next_id = 0

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        message = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        self.sock.sendall(json.dumps(message).encode() + b"\n")
        reply = json.loads(self.file.readline())
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def close(self) -> None:
        self.file.close()
        self.sock.close()
