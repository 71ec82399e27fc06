"""Client-side pacing: keep every operation inside Klaviyo's burst and steady windows.

Klaviyo counts requests per operation in a 1 s (burst) and a 60 s (steady) window
(klaviyo-api.md §7.1). A sliding log of send times is stricter than any fixed window, so a
paced client does not provoke 429s in the first place. A small margin absorbs the latency
between our send time and Klaviyo's receive time. One pacer is shared by all threads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from target_klaviyo.klaviyo.operations import Operation

WINDOW_MARGIN = 0.05  # 5 % of each window


class _Window:
    __slots__ = ("length", "limit", "sent")

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.sent: deque[float] = deque()

    def wait_needed(self, now: float) -> float:
        while self.sent and now - self.sent[0] >= self.length:
            self.sent.popleft()
        if len(self.sent) < self.limit:
            return 0.0
        return self.sent[0] + self.length - now


class Pacer:
    """Blocks each caller until its operation may send another request."""

    def __init__(
        self,
        *,
        window_scale: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._scale = window_scale
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[_Window, _Window]] = {}

    def _windows_for(self, operation: Operation) -> tuple[_Window, _Window]:
        windows = self._windows.get(operation.name)
        if windows is None:
            factor = self._scale * (1 + WINDOW_MARGIN)
            windows = (
                _Window(operation.tier.burst_per_s, 1.0 * factor),
                _Window(operation.tier.steady_per_min, 60.0 * factor),
            )
            self._windows[operation.name] = windows
        return windows

    def acquire(self, operation: Operation) -> float:
        """Wait for a slot for `operation`; return the seconds spent waiting."""
        waited = 0.0
        while True:
            with self._lock:
                now = self._clock()
                burst, steady = self._windows_for(operation)
                delay = max(burst.wait_needed(now), steady.wait_needed(now))
                if delay <= 0:
                    burst.sent.append(now)
                    steady.sent.append(now)
                    return waited
            self._sleep(delay)
            waited += delay
