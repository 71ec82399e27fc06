"""Passing STATE on only once every record read before it is accounted for.

A STATE message from the tap is held back until each sink has accounted for (loaded,
unchanged, rejected or durably put on hold) every record it had read when the STATE arrived.
States are passed on in order; when several are ready at once only the newest is written.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Callable
from typing import Any, Protocol


class Tracked(Protocol):
    """What the gate needs from a sink."""

    def records_seen(self) -> int: ...

    def accounted_through(self) -> int: ...


def write_state_line(state: dict[str, Any]) -> None:
    # stdout belongs to STATE messages: one JSON document per line, flushed at once.
    sys.stdout.write(json.dumps(state) + "\n")
    sys.stdout.flush()


class StateGate:
    def __init__(self, write: Callable[[dict[str, Any]], None] = write_state_line) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._tracked: list[Tracked] = []
        self._pending: list[tuple[list[tuple[Tracked, int]], dict[str, Any]]] = []
        self.last_written: dict[str, Any] | None = None

    def track(self, sink: Tracked) -> None:
        with self._lock:
            self._tracked.append(sink)

    def receive(self, state: dict[str, Any]) -> None:
        """A STATE message arrived: remember how far each sink had read."""
        with self._lock:
            marks = [(sink, sink.records_seen()) for sink in self._tracked]
            self._pending.append((marks, state))
        self.check()

    def check(self) -> None:
        """Write the newest state whose earlier records are all accounted for."""
        with self._lock:
            ready = None
            while self._pending:
                marks, state = self._pending[0]
                if any(sink.accounted_through() < seen for sink, seen in marks):
                    break
                ready = state
                self._pending.pop(0)
            if ready is not None and ready != self.last_written:
                self._write(ready)
                self.last_written = ready
