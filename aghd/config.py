"""The daemon's configuration: ``agh.settings`` (shared with the client,
which reads the same file) under the names the daemon's modules use."""

from __future__ import annotations

from agh.settings import Change, Config, Layers, Override, Reloaded

__all__ = ["Change", "Config", "Layers", "Override", "Reloaded"]
