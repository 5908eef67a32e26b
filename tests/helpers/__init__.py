"""Helpers the tests share, by topic; fixtures stay in ``tests/conftest.py``.

- ``daemons``: a daemon in a thread (``ThreadDaemon``) or a subprocess
  (``spawn_daemon``), and waiting on sockets, processes and runs.
- ``wire``: raw JSON lines over the socket (``RawConn``), bypassing the client.
- ``cli``: the ``agh`` CLI in-process (``invoke``), a clean environment for
  subprocesses, and small steps several CLI test files repeat.

Import a helper from its module here, e.g. ``from tests.helpers.daemons
import ThreadDaemon``: never from ``conftest`` (pytest imports it under its own
name, so a second import makes a second copy of every class) and never from
another ``test_*.py`` module. ``tests/test_helpers_import.py`` enforces this.
"""
