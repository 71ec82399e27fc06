"""What every stream of a run shares: settings, the client, the ledger, the rejects file, the
run's figures, the STATE gate, and the first error a request thread hit."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.ledger.rejects import RejectsFile
from target_klaviyo.ledger.store import Ledger, StreamLock, new_run_id
from target_klaviyo.mapping.values import to_json
from target_klaviyo.records.jobs import CATALOG_JOBS_IN_PROGRESS, JobSlots, JobWatcher
from target_klaviyo.records.spool import Spool
from target_klaviyo.run.gate import StateGate
from target_klaviyo.run.stats import RunStats
from target_klaviyo.sdk import StopReading
from target_klaviyo.settings import Settings

if TYPE_CHECKING:
    from target_klaviyo.sinks.base import KlaviyoSink


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

    def writes_waiting(self) -> bool: ...

    def close(self) -> None: ...


def _no_reader(line: str, number: int) -> None:
    raise RuntimeError("no reader to read a line with")


class Run:
    def __init__(
        self,
        *,
        settings: Settings,
        client: Client,
        ledger: Ledger | None,
        rejects: RejectsFile,
    ) -> None:
        self.settings = settings
        self.mappings = settings.streams
        self.client = client
        self.ledger = ledger
        self.rejects = rejects
        self.stats = RunStats()
        self.gate = StateGate()
        self.resolved_ids: dict[str, str] = {}  # mapping pattern -> its list or data source id
        self.run_id = new_run_id()
        # The Klaviyo account, for stream locks and the shared rate budget: its id, or a hash
        # of the key (never the key itself, which the ledger would store).
        self.account = (
            "key-" + hashlib.blake2b(settings.private_api_key.encode(), digest_size=8).hexdigest()
        )
        self._stream_locks: dict[str, StreamLock] = {}
        self.sinks: list[KlaviyoSink] = []  # every sink of the run, in creation order
        self.failure: BaseException | None = None  # the first error a request thread hit
        self.stopping: int | None = None  # the signal that asked the run to stop
        self._failure_lock = threading.Lock()
        self._shared_lock = threading.Lock()
        self._jobs: JobWatcher | None = None
        self.catalog_job_slots = JobSlots(CATALOG_JOBS_IN_PROGRESS)  # every catalog stream's
        self._spool: Spool | None = None
        # Streams whose records are mapped in a second process (records/offload.py): the
        # reader hands them their lines undecoded.
        self.offloaded: dict[str, KlaviyoSink] = {}
        self.mapping_processes = 0  # running (at most one a spare CPU)
        # A line back from that process unmapped, read here as the reader would have read it
        # at that line number (set by the target).
        self.read_line_here: Callable[[str, int], None] = _no_reader

    @property
    def jobs(self) -> JobWatcher:
        """Every open bulk job of the run, watched together (started on first use)."""
        with self._shared_lock:
            if self._jobs is None:
                self._jobs = JobWatcher(self.client, fail=self.fail)
            return self._jobs

    @property
    def spool(self) -> Spool:
        """The records of submitted bulk jobs, on disk until their job ends."""
        with self._shared_lock:
            if self._spool is None:
                self._spool = Spool()
            return self._spool

    def lock_stream(self, stream: str) -> None:
        """One run per stream at a time: hold the stream's lock until the run ends (waiting
        up to `lock_timeout_s` for another live run to finish it; StreamLocked otherwise)."""
        if self.ledger is None or stream in self._stream_locks:
            return
        self._stream_locks[stream] = self.ledger.lock_stream(
            self.account, stream, self.settings.lock_timeout_s
        )

    def write_reject(
        self,
        stream: str,
        obj: str,
        key: str | None,
        identifiers: Mapping[str, Any],
        reason: str,
        record: Mapping[str, Any],
    ) -> None:
        """A rejected record: the rejects file, and the ledger's rejects table (PostgreSQL)."""
        self.rejects.write(
            stream=stream,
            obj=obj,
            identifiers=dict(identifiers),
            reason=reason,
            record=dict(record),
        )
        if self.ledger is not None:
            self.ledger.record_reject(self.run_id, stream, key, reason, to_json(dict(record)))

    def register(self, sink: KlaviyoSink) -> None:
        """A new sink: the STATE gate waits for it, and a stopping run holds what it kept."""
        self.sinks.append(sink)
        self.gate.track(sink.dispatch)

    def fail(self, exc: BaseException) -> None:
        """A request thread hit an error that must stop the run; the reading thread raises it."""
        with self._failure_lock:
            if self.failure is None:
                self.failure = exc

    def raise_if_failed(self) -> None:
        """Where the reading thread waits: a request thread's error, or a stop, ends the wait."""
        if self.failure is not None:
            raise self.failure
        if self.stopping is not None:
            raise StopReading(self.stopping)

    @property
    def failed(self) -> bool:
        return self.failure is not None

    def abandon_jobs(self, reason: str) -> None:
        """Every open bulk job ends now, its records on hold (a stopping run's grace is over);
        so does a job Klaviyo accepts from now on, the run's first included."""
        jobs = self.jobs
        jobs.abandon(reason)
        jobs.close()

    def wait_for_requests(self) -> None:
        """Every stream's requests in flight come back (their records get an outcome)."""
        for sink in self.sinks:
            sink.dispatch.shutdown(wait=self.stopping is None)

    def close(self) -> None:
        self.wait_for_requests()
        if self._jobs is not None:
            self._jobs.close()
        if self._spool is not None:
            self._spool.close()
        self.rejects.close()
        self.client.close()
        if self.ledger is not None:
            self.ledger.close()  # releases the stream locks too
