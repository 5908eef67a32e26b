"""JSON-RPC handlers, one module per resource. Importing this package
registers every method in ``aghd.rpc.REGISTRY``."""

from aghd.handlers import (
    agent,
    coordination,
    observe,
    runs,
    sessions,
    streams,
    tasks,
    workflows,
)

__all__ = [
    "agent",
    "coordination",
    "observe",
    "runs",
    "sessions",
    "streams",
    "tasks",
    "workflows",
]
