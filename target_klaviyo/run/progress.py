"""Progress lines: at least every `progress_interval_s`, one stderr line per active stream."""

from __future__ import annotations

import threading
import time
from typing import Any

from target_klaviyo.run.stats import RunStats


class Progress:
    """At most every `interval` seconds, one stderr line per active stream."""

    def __init__(self, stats: RunStats, interval: float, log: Any, wait_s: Any) -> None:
        self._stats = stats
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
        now = time.monotonic()
        for name, stats in self._stats.snapshot().items():
            done = stats.accounted
            previous = self._last.get(name)
            if previous is not None and previous[0] == stats.read and stats.in_jobs == 0:
                continue  # nothing happened on this stream since the last line
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
