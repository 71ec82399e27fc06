"""One run of the target: the shared client, ledger, counters, STATE gate and workers."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from target_klaviyo.checkpoint import StateGate
from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.ledger.rejects import RejectsFile
from target_klaviyo.ledger.store import Ledger
from target_klaviyo.ledger.summary import RunStats
from target_klaviyo.settings import StreamMappings

LOGGER = logging.getLogger("target-klaviyo")


class Client(Protocol):
    """The real client, or the dry-run planner that records requests instead."""

    calls: Any
    rate_limit_wait_s: float

    def request(
        self,
        operation_name: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        url: str | None = None,
    ) -> ApiResult: ...

    def close(self) -> None: ...


class Run:
    def __init__(
        self,
        *,
        config: Mapping[str, Any],
        mappings: StreamMappings,
        client: Client,
        ledger: Ledger | None,
        rejects: RejectsFile,
        state_dir: Path,
    ) -> None:
        self.config = config
        self.mappings = mappings
        self.client = client
        self.ledger = ledger
        self.rejects = rejects
        self.state_dir = state_dir
        self.stats = RunStats()
        self.gate = StateGate()
        self.list_ids: dict[str, str] = {}  # stream mapping pattern -> resolved list id
        self.sinks: list[Any] = []  # every sink of the run, in creation order
        self._failure: BaseException | None = None
        self._failure_lock = threading.Lock()

    def register(self, sink: Any) -> None:
        """A new sink: the STATE gate waits for it, and a failed run can hold what it kept."""
        self.sinks.append(sink)
        self.gate.track(sink)

    def fail(self, exc: BaseException) -> None:
        """A worker hit an error that must stop the run; the reading thread raises it."""
        with self._failure_lock:
            if self._failure is None:
                self._failure = exc

    def raise_if_failed(self) -> None:
        if self._failure is not None:
            raise self._failure

    @property
    def failed(self) -> bool:
        return self._failure is not None

    def reject(
        self,
        stream: str,
        obj: str,
        identifiers: Mapping[str, Any],
        reason: str,
        record: Mapping[str, Any],
    ) -> None:
        self.rejects.write(
            stream=stream,
            obj=obj,
            identifiers=dict(identifiers),
            reason=reason,
            record=dict(record),
        )

    def wait_for_requests(self) -> None:
        """Every stream's requests in flight come back (their records get an outcome)."""
        for sink in self.sinks:
            sink.executor.shutdown(wait=True)

    def close(self) -> None:
        self.wait_for_requests()
        self.rejects.close()
        self.client.close()
        if self.ledger is not None:
            self.ledger.close()
