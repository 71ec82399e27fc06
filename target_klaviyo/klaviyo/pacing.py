"""Client-side pacing: keep every operation inside Klaviyo's burst and steady windows.

Klaviyo counts requests per operation in a 1 s (burst) and a 60 s (steady) window, by the time
it *receives* them (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling). We
only know that a request arrived somewhere between our send and its answer, so a request holds
its slot from `acquire` (before sending) until `release` (answer received), and the window
length counts from the answer. A later request therefore always arrives a full window after the
earlier ones, whatever the network or thread-scheduling delays in between. That holds by
construction; the small margin only absorbs a difference in clock rates (1 % is thousands of
times what NTP allows). One pacer is shared by all threads.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from target_klaviyo.klaviyo.operations import Operation

WINDOW_MARGIN = 0.01  # 1 % of each window


class _Window:
    __slots__ = ("done", "in_flight", "length", "limit")

    def __init__(self, limit: int, length: float) -> None:
        self.limit = limit
        self.length = length
        self.done: deque[float] = deque()  # answer times, oldest first
        self.in_flight = 0

    def wait_needed(self, now: float) -> float | None:
        """0 when a request may go now; None when only an answer can free a slot."""
        while self.done and now - self.done[0] >= self.length:
            self.done.popleft()
        if len(self.done) + self.in_flight < self.limit:
            return 0.0
        if not self.done:
            return None
        return self.done[0] + self.length - now


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
        self._lock = threading.Condition()
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

    def acquire(
        self, operation: Operation, give_up: Callable[[], bool] | None = None
    ) -> float | None:
        """Wait for a slot for `operation`; return the seconds spent waiting, or None when
        `give_up()` became true while waiting (no slot was taken).

        Every `acquire` that returns a number must be followed by one `release` once the
        request is answered (or has failed).
        """
        started = self._clock()
        waited = False
        # Waits are cut into slices when the caller may give up (a stopping run).
        slice_s = 0.25 if give_up is not None else None
        while True:
            if give_up is not None and give_up():
                return None
            with self._lock:
                now = self._clock()
                windows = self._windows_for(operation)
                delays = [window.wait_needed(now) for window in windows]
                if all(delay == 0 for delay in delays):
                    for window in windows:
                        window.in_flight += 1
                    return now - started if waited else 0.0
                waited = True
                if None in delays:
                    # Every free slot is held by a request in flight: wait for an answer.
                    self._lock.wait(timeout=slice_s or 1.0)
                    continue
                delay = max(d for d in delays if d is not None)
            self._sleep(min(delay, slice_s) if slice_s else delay)

    def release(self, operation: Operation) -> None:
        """The request that `acquire` admitted has been answered: its window starts now."""
        with self._lock:
            now = self._clock()
            for window in self._windows_for(operation):
                window.in_flight = max(0, window.in_flight - 1)
                window.done.append(now)
            self._lock.notify_all()
