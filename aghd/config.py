"""Daemon configuration: defaults, environment, command-line overrides.

Paths follow PROTOCOL §1: ``$AGH_SOCKET`` / ``$AGH_DB``, else the user runtime
and state dirs (see ``agh.paths``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agh.paths import default_db_path, default_socket_path
from aghd import health


@dataclass(slots=True)
class Config:
    socket_path: str = field(default_factory=default_socket_path)
    db_path: str = field(default_factory=default_db_path)
    # FULL: a commit is on disk before the reply leaves (PROTOCOL §8).
    synchronous: str = "FULL"
    # Check the database's structure (PRAGMA quick_check) before serving it:
    # a damaged file is refused at start rather than failing requests later.
    integrity_check: bool = True
    # How long a write waits for another program's lock on the database
    # before the client gets ``busy``.
    busy_timeout_ms: int = 5000
    default_lease_ms: int = 300_000
    default_max_attempts: int = 1
    retry_backoff_base_ms: int = 1_000
    retry_backoff_cap_ms: int = 300_000
    max_claims_per_session: int = 1
    max_line_bytes: int = 1 << 20
    # Requests one connection may have in flight before we stop reading it,
    # and the bytes of their request lines (one request is always admitted).
    max_inflight_per_connection: int = 256
    max_inflight_bytes_per_connection: int = 4 << 20
    # Open connections at most (0: from the descriptor limit, at most 4096).
    # At the limit the longest-idle one is closed; with none idle, refused.
    max_connections: int = 0
    # A connection with nothing in flight and no subscription is closed after
    # this long (the client reconnects on its next call).
    idle_timeout_s: float = 600.0
    # A connection whose replies sit unsent (the client reads none) this long
    # is cut off and its buffered output dropped.
    write_stall_timeout_s: float = 60.0
    # uids besides our own that may connect (SO_PEERCRED).
    allowed_uids: tuple[int, ...] = ()
    # The reaper never sleeps longer than this, as a safety net.
    reaper_max_sleep_s: float = 5.0
    # Seconds to let in-flight requests finish on SIGTERM.
    shutdown_grace_s: float = 10.0
    use_uvloop: bool = True
    # Read connections (and threads) serving reads side by side.
    read_connections: int = 2
    # Streams (PROTOCOL §7): a keepalive when nothing else was sent for this
    # long; a subscriber whose unsent notifications exceed the byte limit is
    # dropped with "overflow" instead of growing the daemon's memory.
    stream_keepalive_s: float = 15.0
    stream_max_backlog_bytes: int = 1 << 20
    # Run logs kept per run (agent.log); older lines are deleted.
    log_retention_lines: int = 10_000
    # Events and run log lines of closed tasks older than this many days are
    # deleted (0: kept forever, the default: the timeline is the history).
    event_retention_days: int = 0
    log_retention_days: int = 0
    # -- observe.dashboard thresholds (rules: aghd/health.py) --
    # An active run whose agent showed no life (claim, start, heartbeat) this long is stuck.
    stuck_after_ms: int = health.STUCK_AFTER_MS
    # The queue is backlogged when its oldest run waited this long (4x: critical).
    backlog_threshold_ms: int = health.BACKLOG_THRESHOLD_MS
    # Live work with no activity at all for this long makes the dashboard stale.
    stale_after_ms: int = health.STALE_AFTER_MS
    # Claim and start latencies cover the runs claimed within this window.
    latency_window_ms: int = health.LATENCY_WINDOW_MS
