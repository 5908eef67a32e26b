"""Time on the wire: RFC 3339 UTC with milliseconds (PROTOCOL §3).

The store keeps integer milliseconds; replies and event payloads use this.
"""

from __future__ import annotations

import time

_ts_cache: tuple[int, str] = (-1, "")


def ts(ms: int | None) -> str | None:
    """``1764000000123`` → ``2025-11-24T16:00:00.123Z``.

    The formatted second is cached: a reply formats many times that share it.
    """
    global _ts_cache
    if ms is None:
        return None
    sec = ms // 1000
    cached_sec, prefix = _ts_cache
    if sec != cached_sec:
        t = time.gmtime(sec)
        prefix = "%04d-%02d-%02dT%02d:%02d:%02d." % (
            t.tm_year,
            t.tm_mon,
            t.tm_mday,
            t.tm_hour,
            t.tm_min,
            t.tm_sec,
        )
        _ts_cache = (sec, prefix)
    return "%s%03dZ" % (prefix, ms % 1000)
