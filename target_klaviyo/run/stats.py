"""Run figures: per-stream counters and the run summary (a table on stderr, `last_run.json`).

Every record read ends in exactly one of loaded, unchanged, rejected or on_hold; `read`
includes records replayed from hold, and `replayed` says how many of them there were.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

OUTCOMES = ("loaded", "unchanged", "rejected", "on_hold")


@dataclass
class StreamStats:
    object: str
    read: int = 0
    loaded: int = 0
    unchanged: int = 0
    rejected: int = 0
    on_hold: int = 0
    replayed: int = 0
    warnings: int = 0
    in_jobs: int = 0  # gauge: records sent and not yet accounted for

    @property
    def accounted(self) -> int:
        return self.loaded + self.unchanged + self.rejected + self.on_hold


class RunStats:
    """Thread-safe counters for one run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.streams: dict[str, StreamStats] = {}
        self.started = time.monotonic()
        self.notes: list[str] = []

    def add(self, stream: str, obj: str, **counts: int) -> None:
        with self._lock:
            stats = self.streams.get(stream)
            if stats is None:
                stats = self.streams[stream] = StreamStats(obj)
            for name, value in counts.items():
                setattr(stats, name, getattr(stats, name) + value)

    def in_jobs(self) -> int:
        """Records sent (in requests or jobs) and not yet accounted for, over all streams."""
        with self._lock:
            return sum(stats.in_jobs for stats in self.streams.values())

    def note(self, message: str) -> None:
        """A line for the summary (e.g. why a mirror pass removed nothing)."""
        with self._lock:
            self.notes.append(message)

    def snapshot(self) -> dict[str, StreamStats]:
        with self._lock:
            return {name: StreamStats(**asdict(stats)) for name, stats in self.streams.items()}

    def to_dict(self, api_calls: Mapping[str, int], rate_limit_wait_s: float) -> dict[str, Any]:
        streams = {}
        for name, stats in sorted(self.snapshot().items()):
            data = asdict(stats)
            data.pop("in_jobs")
            streams[name] = data
        return {
            "streams": streams,
            "api_calls": dict(sorted(api_calls.items())),
            "rate_limit_wait_s": round(rate_limit_wait_s, 3),
            "duration_s": round(time.monotonic() - self.started, 3),
            "notes": list(self.notes),
        }


def render_table(summary: Mapping[str, Any]) -> str:
    """The summary as a plain-text table for stderr."""
    columns = ("read", "loaded", "unchanged", "rejected", "on_hold", "replayed", "warnings")
    rows = [("stream", "object", *columns)]
    for name, stats in summary["streams"].items():
        rows.append((name, stats["object"], *(str(stats[c]) for c in columns)))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["Run summary"]
    for index, row in enumerate(rows):
        cells = [
            cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ]
        lines.append("  " + "  ".join(cells).rstrip())
        if index == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    calls = summary["api_calls"]
    if calls:
        lines.append("API calls: " + ", ".join(f"{name} {count}" for name, count in calls.items()))
    else:
        lines.append("API calls: none")
    lines.append(
        f"Waited on rate limits: {summary['rate_limit_wait_s']:.1f} s;"
        f" duration: {summary['duration_s']:.1f} s"
    )
    lines.extend(f"Note: {note}" for note in summary.get("notes", ()))
    return "\n".join(lines)


def write_summary_file(state_dir: Path, summary: Mapping[str, Any]) -> Path:
    """<state_dir>/last_run.json, replaced atomically, mode 0600 (the directory is made when
    the ledger lives elsewhere and a fresh worker has none)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / "last_run.json"
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    os.replace(tmp, path)
    return path
