"""Progress lines: every `progress_interval_s`, one stderr line per active stream — a stream
that read records since the last line, or that has records read and not yet accounted for
(waiting in a chunk, on a rate limit or in Klaviyo's jobs)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from target_klaviyo.run.stats import RunStats


class Progress:
    """Every `interval` seconds, one stderr line per active stream. `refresh` brings the
    records read so far into the figures first (they are published there per chunk)."""

    def __init__(
        self,
        stats: RunStats,
        interval: float,
        log: Any,
        wait_s: Any,
        refresh: Callable[[], None] = lambda: None,
    ) -> None:
        self._stats = stats
        self._refresh = refresh
        self._interval = interval
        self._log = log
        self._wait_s = wait_s
        self._stop = threading.Event()
        self._last: dict[str, tuple[int, float]] = {}
        self._thread = threading.Thread(target=self._run, name="progress", daemon=True)

    def start(self) -> None:
        if self._interval > 0:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.report()

    def report(self) -> None:
        self._refresh()
        now = time.monotonic()
        for name, stats in self._stats.snapshot().items():
            done = stats.accounted
            previous = self._last.get(name)
            if previous is not None and previous[0] == stats.read and done == stats.read:
                continue  # idle: nothing read since the last line, and nothing waiting
            rate = 0.0
            if previous is not None and now > previous[1]:
                rate = (stats.read - previous[0]) / (now - previous[1])
            self._last[name] = (stats.read, now)
            self._log(
                "progress %s: read %d, loaded %d, in jobs %d, on hold %d, rejected %d,"
                " %.0f records/s, waited on rate limits %.1f s (%d accounted)",
                name,
                stats.read,
                stats.loaded,
                stats.in_jobs,
                stats.on_hold,
                stats.rejected,
                rate,
                self._wait_s(),
                done,
            )
