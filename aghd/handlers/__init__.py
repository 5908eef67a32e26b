"""JSON-RPC handlers, one module per resource. Importing this package
registers every method in ``aghd.rpc.REGISTRY``."""

from aghd.handlers import agent, runs, sessions, tasks, workflows

__all__ = ["agent", "runs", "sessions", "tasks", "workflows"]
