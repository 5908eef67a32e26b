"""Workspaces: a directory an agent works in, with a short key for identifiers.

Owns: the ``workspaces`` rows, their lookup by id, path, key or name, and
the numbering of task identifiers. Must not: import a store module above
``db``: tasks, claims and the event stream build on it.
"""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from agh.errors import InvalidParams, NotFound
from aghd.store.db import Tx, new_id

if TYPE_CHECKING:
    import sqlite3


def find_workspace(tx: Tx, ref: str) -> sqlite3.Row | None:
    """Look a workspace up by id, absolute path, key or name (in that order)."""
    if ref.startswith("ws_"):
        return tx.one("SELECT * FROM workspaces WHERE id = ?", (ref,))
    if ref.startswith("/"):
        return tx.one("SELECT * FROM workspaces WHERE path = ?", (os.path.normpath(ref),))
    return tx.one(
        "SELECT * FROM workspaces WHERE key = ? OR name = ? ORDER BY created_at LIMIT 1",
        (ref.upper(), ref),
    )


def resolve_workspace(tx: Tx, ref: str) -> sqlite3.Row:
    """A workspace for a write: an absolute path is created on first use;
    an unknown id, key or name raises NotFound."""
    row = find_workspace(tx, ref)
    if row is not None:
        return row
    if ref.startswith("/"):
        return _create(tx, os.path.normpath(ref))
    if "/" in ref or ref.startswith("."):
        raise InvalidParams(
            f"workspace path {ref!r} must be absolute",
            {"field": "$.params.workspace", "hint": "pass an absolute path; the agh CLI does this"},
        )
    raise NotFound(
        f"workspace {ref!r} not found",
        {"workspace": ref, "hint": "name a workspace by its absolute path to create it"},
    )


def _create(tx: Tx, path: str) -> sqlite3.Row:
    name = os.path.basename(path) or path
    base = re.sub(r"[^A-Z0-9]", "", name.upper())[:8]
    if not base or not base[0].isalpha():
        base = ("W" + base)[:8]
    key, n = base, 1
    while tx.one("SELECT 1 FROM workspaces WHERE key = ?", (key,)) is not None:
        n += 1
        key = f"{base}{n}"
    row = tx.one(
        "INSERT INTO workspaces (id, key, name, path, created_at) VALUES (?,?,?,?,?) RETURNING *",
        (new_id("ws"), key, name, path, tx.now),
    )
    assert row is not None
    return row


def next_identifier(tx: Tx, workspace: sqlite3.Row | None) -> str:
    """``T-42`` for global tasks, ``<KEY>-42`` inside a workspace."""
    if workspace is None:
        n = tx.scalar("UPDATE meta SET value = value + 1 WHERE key = 'task_number' RETURNING value")
        return f"T-{n}"
    n = tx.scalar(
        "UPDATE workspaces SET next_number = next_number + 1 WHERE id = ?"
        " RETURNING next_number - 1",
        (workspace["id"],),
    )
    return f"{workspace['key']}-{n}"
