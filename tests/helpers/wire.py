"""Raw wire access for conformance tests: bytes in, parsed JSON lines out.

Deliberately does not use ``agh.client`` or ``agh.protocol``: these tests
check what the daemon does with bytes the client would never send.
"""

from __future__ import annotations

import json
import socket
from typing import Any


class RawConn:
    """Bytes in, parsed JSON lines out: for tests that must bypass the client."""

    def __init__(self, path: str, timeout: float = 10) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def request(self, method: str, params: Any = None, id: Any = 1) -> None:
        msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id}
        if params is not None:
            msg["params"] = params
        self.send(json.dumps(msg) + "\n")

    def recv(self) -> Any:
        """The next JSON line; raises EOFError if the daemon closes first."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("connection closed by daemon")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def closed_by_peer(self) -> bool:
        try:
            return self.sock.recv(1) == b""
        except TimeoutError:
            return False

    def close(self) -> None:
        self.sock.close()
