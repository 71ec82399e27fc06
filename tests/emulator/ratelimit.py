"""Klaviyo's per-operation fixed-window rate limits.

Klaviyo: rate limits and errors: limits are per account with fixed windows, burst (1 s) and steady
(1 min);
exceeding either gives 429, and all private keys share the account quota. ``create_list`` also
has a daily cap (§4.2). Window lengths are multiplied by ``window_scale`` so tests can exercise
the limits in milliseconds.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

WINDOW_SECONDS = {"burst": 1.0, "steady": 60.0, "daily": 86_400.0}


@dataclass(frozen=True)
class Decision:
    allowed: bool
    # Seconds until the window that blocked the request resets (0 when allowed).
    retry_after: float
    # Steady-window figures for the RateLimit-* headers (Klaviyo: rate limits and errors).
    limit: int
    remaining: int
    reset: float

    @property
    def retry_after_header(self) -> str:
        # Klaviyo: rate limits and errors: Klaviyo's clients parse Retry-After as integer seconds;
        # the value
        # is rounded up so a client that waits it is never early, and is at least 1.
        return str(max(1, math.ceil(self.retry_after)))


class RateLimiter:
    def __init__(
        self,
        window_scale: float = 1.0,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_scale <= 0:
            raise ValueError("window_scale must be positive")
        self.window_scale = window_scale
        self.enabled = enabled
        self._clock = clock
        self._origin = clock()
        self._lock = threading.Lock()
        # (operation, window name) -> (window index, requests counted in it)
        self._counts: dict[tuple[str, str], tuple[int, int]] = {}

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()
            self._origin = self._clock()

    def acquire(self, operation: str, limits: dict[str, int]) -> Decision:
        """Count one request against every window of ``operation``, or refuse it."""
        now = self._clock() - self._origin
        with self._lock:
            current: dict[str, tuple[int, int, float]] = {}
            blocked_for = 0.0
            for window, limit in limits.items():
                length = WINDOW_SECONDS[window] * self.window_scale
                index = math.floor(now / length)
                seen_index, count = self._counts.get((operation, window), (index, 0))
                if seen_index != index:
                    count = 0
                until_reset = (index + 1) * length - now
                current[window] = (index, count, until_reset)
                if count >= limit:
                    blocked_for = max(blocked_for, until_reset)
            steady_limit = limits.get("steady", 0)
            _, steady_count, steady_reset = current.get("steady", (0, 0, 0.0))
            if blocked_for > 0:
                # A refused request does not consume quota.
                return Decision(False, blocked_for, steady_limit, 0, steady_reset)
            for window, (index, count, _) in current.items():
                self._counts[(operation, window)] = (index, count + 1)
            return Decision(
                True, 0.0, steady_limit, max(0, steady_limit - steady_count - 1), steady_reset
            )
