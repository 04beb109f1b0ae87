"""Sliding-window rate limits kept in memory (per process: with several workers behind a
balancer, each counts its own share), and the login throttle built from them."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from fiduciary.errors import RateLimited

#: Beyond this many tracked keys, keys with nothing left in their window are forgotten.
_MAX_KEYS = 10_000


class SlidingWindow:
    """At most ``limit`` hits per key in any ``window`` seconds."""

    def __init__(self, limit: int, window: float,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._now = now
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float:
        """Count a hit; 0 when allowed, else the seconds until one would be (not counted)."""
        now = self._now()
        with self._lock:
            hits = self._hits.get(key)
            if hits is None:
                if len(self._hits) >= _MAX_KEYS:
                    self._forget(now)
                hits = self._hits[key] = deque()
            while hits and hits[0] <= now - self.window:
                hits.popleft()
            if len(hits) >= self.limit:
                return hits[0] + self.window - now
            hits.append(now)
            return 0.0

    def _forget(self, now: float) -> None:
        stale = [k for k, h in self._hits.items() if not h or h[-1] <= now - self.window]
        for k in stale:
            del self._hits[k]


class LoginThrottle:
    """Logins and enrolments per client address and for the whole server."""

    def __init__(self, per_client: int, overall: int, window: float,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._client = SlidingWindow(per_client, window, now)
        self._global = SlidingWindow(overall, window, now)

    def check(self, client: str | None) -> None:
        wait = self._client.hit(client or "unknown")
        if wait:
            raise RateLimited("too many login attempts from this address; try again later",
                              wait)
        wait = self._global.hit("*")
        if wait:
            raise RateLimited("too many login attempts; try again later", wait)
