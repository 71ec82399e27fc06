"""What the emulator saw: one ``LoggedRequest`` per API request, and the request violations
(bodies or parameters our client should never have sent) with the number a test declared.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass
from typing import Any


@dataclass
class LoggedRequest:
    operation: str  # operationId, or "unknown"
    method: str
    path: str
    status: int  # 0 when the connection was reset or held without a response
    items: int  # profiles / events / ids in the body
    bytes: int  # body length
    started: float  # time.monotonic()
    ended: float
    started_wall: float  # time.time()
    ended_wall: float
    retry_after_violation: bool
    query: str = ""
    key: str = ""  # last four characters of the key used, for telling clients apart
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RequestInfo:
    """What admission and the handler learnt about a request, for its log entry."""

    operation: str = "unknown"
    items: int = 0
    retry_after_violation: bool = False
    key: str = ""
    fault: str | None = None


class RequestLog:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[LoggedRequest] = []
        self._violations: list[tuple[str, str, str]] = []
        self._expected_violations = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._violations.clear()
            self._expected_violations = 0

    def append(self, entry: LoggedRequest) -> None:
        with self._lock:
            self._entries.append(entry)

    @property
    def entries(self) -> list[LoggedRequest]:
        with self._lock:
            return list(self._entries)

    def record_violations(self, operation: str, found: list[tuple[str, str]]) -> None:
        """``found``: (pointer or parameter, detail) of each error of one refused request."""
        with self._lock:
            self._violations.extend((operation, where, detail) for where, detail in found)

    @property
    def violations(self) -> list[tuple[str, str, str]]:
        with self._lock:
            return list(self._violations)

    def expect_violations(self, count: int) -> None:
        if count < 1:
            raise ValueError("expect_violations needs n >= 1")
        with self._lock:
            self._expected_violations += count

    def unexpected_violations(self) -> str | None:
        with self._lock:
            found, expected = list(self._violations), self._expected_violations
        if len(found) == expected:
            return None
        listing = "\n".join(f"  {op} {where}: {detail}" for op, where, detail in found)
        return (
            f"Klaviyo emulator recorded {len(found)} request violation(s), "
            f"the test expected {expected}:\n{listing or '  (none)'}"
        )
