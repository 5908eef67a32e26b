"""JSON-RPC handlers, one module per method namespace (``tasks.*`` in
``tasks.py``, ``agent.*`` in ``agent.py``, ...; ``tests/test_methods.py``
checks it). Importing this package registers every method in
``aghd.rpc.REGISTRY``."""

from aghd.handlers import (
    agent,
    events,
    observe,
    runs,
    server,
    sessions,
    subscriptions,
    tasks,
    workflows,
)

__all__ = [
    "agent",
    "events",
    "observe",
    "runs",
    "server",
    "sessions",
    "subscriptions",
    "tasks",
    "workflows",
]
