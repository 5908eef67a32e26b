"""SO_PEERCRED: connections from another uid are closed unless allowed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="needs root to connect as another uid")

NOBODY = 65534

# Runs as `nobody`: connect, ask server.info, print what came back.
_PROBE = """
import json, os, socket, sys
os.setgid({uid}); os.setuid({uid})
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
data = b""
try:  # a refused peer may see the close before or during its send
    s.sendall(b'{{"jsonrpc":"2.0","id":1,"method":"server.info"}}\\n')
    while not data.endswith(b"\\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
print(json.dumps(data.decode()))
"""


def _probe(make_daemon: Any, **overrides: Any) -> str:
    d = make_daemon(**overrides)
    # Let the other uid reach the socket at all: the daemon's own 0700/0600
    # modes would stop it before the peer check could be exercised.
    os.chmod(os.path.dirname(d.socket), 0o755)
    os.chmod(d.socket, 0o666)
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(uid=NOBODY), d.socket],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return str(json.loads(out.stdout))


def test_other_uid_is_refused(make_daemon: Any) -> None:
    assert _probe(make_daemon) == ""


def test_allowed_uid_is_served(make_daemon: Any) -> None:
    reply = json.loads(_probe(make_daemon, allowed_uids=(NOBODY,)))
    assert reply["id"] == 1 and "version" in reply["result"]


# Runs as `nobody`: one request answered, then wait for the daemon to hang up.
_HOLD = """
import os, socket, sys, time
os.setgid({uid}); os.setuid({uid})
s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
s.sendall(b'{{"jsonrpc":"2.0","id":1,"method":"server.info"}}\\n')
data = b""
while not data.endswith(b"\\n"):
    data += s.recv(65536)
print("served", flush=True)
started = time.monotonic()
try:
    while s.recv(65536):
        pass
    print("closed after %.1f s" % (time.monotonic() - started), flush=True)
except OSError as exc:
    print("closed after %.1f s (%s)" % (time.monotonic() - started, exc), flush=True)
"""


def test_a_uid_taken_out_of_allowed_uids_is_cut_off_without_reconnecting(
    make_daemon: Any,
) -> None:
    # A short stall timeout makes the server sweep its connections often.
    d = make_daemon(allowed_uids=(NOBODY,), write_stall_timeout_s=0.4)
    os.chmod(os.path.dirname(d.socket), 0o755)
    os.chmod(d.socket, 0o666)
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD.format(uid=NOBODY), d.socket],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "served"
        # What a reload of config.yaml without the uid does to the live config.
        d.call_in_loop(setattr, d.daemon.config, "allowed_uids", ())
        line = proc.stdout.readline()
        assert line.startswith("closed after"), line
        assert float(line.split()[2]) < 5, line
    finally:
        proc.kill()
        proc.communicate(timeout=10)
