"""Scripted failures: what production Klaviyo (and Cloudflare in front of it) can do to a client.

Klaviyo: rate limits and errors: 429 storms (with or without Retry-After), 5xx including
Cloudflare's 524, connection resets (errno 104), HTML 403 challenges, 413 and slow responses.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from typing import Any

# kind -> allowed parameters with defaults
FAULT_KINDS: dict[str, dict[str, Any]] = {
    "429": {"retry_after": 1},
    "500": {},
    "503": {},
    "504": {},
    "524": {},
    "reset": {},
    "slow": {"delay_s": 1.0},
    "timeout": {"delay_s": 30.0},
    "html403": {},
    "413": {},
    "cancel_job": {},
}
# Faults that change what happens to a bulk import job rather than to the HTTP exchange.
JOB_FAULTS = frozenset({"cancel_job"})

_ids = itertools.count(1)


@dataclass
class Fault:
    kind: str
    operation: str | None
    remaining: int | None  # None: until cleared
    params: dict[str, Any]
    id: int = field(default_factory=lambda: next(_ids))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "operation": self.operation,
            "count": self.remaining,
            **self.params,
        }


def make_fault(
    kind: str, operation: str | None = None, count: int | None = 1, **params: Any
) -> Fault:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; known: {', '.join(FAULT_KINDS)}")
    unknown = set(params) - set(FAULT_KINDS[kind])
    if unknown:
        raise ValueError(f"fault {kind!r} takes no parameter(s) {', '.join(sorted(unknown))}")
    if count is not None and count < 1:
        raise ValueError("count must be >= 1 (or None for 'until cleared')")
    return Fault(kind, operation, count, {**FAULT_KINDS[kind], **params})


class FaultBook:
    """Pending faults, consumed in the order they were added."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [f.to_dict() for f in self._faults]

    def take(self, operation: str, *, job: bool = False) -> Fault | None:
        """Consume one use of the first fault matching ``operation``.

        ``job=False`` looks at HTTP faults, ``job=True`` at job faults (cancel_job).
        """
        with self._lock:
            for fault in self._faults:
                if (fault.kind in JOB_FAULTS) != job:
                    continue
                if fault.operation is not None and fault.operation != operation:
                    continue
                if fault.remaining is not None:
                    fault.remaining -= 1
                    if fault.remaining == 0:
                        self._faults.remove(fault)
                return fault
        return None
