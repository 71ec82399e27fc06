"""Background work: what is queued (``Work``), the requests being answered (``InFlight``), and the
``Worker`` threads that apply queued work in submission order.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from .rules import iso
from .state import Job, Store, now_utc

_T = TypeVar("_T")


@dataclass
class Work:
    """One unit of asynchronous work, applied by the worker in submission order."""

    kind: str  # "job" | "events" | "subscribe" | "unsubscribe" | "records"
    submitted: float  # time.monotonic()
    payload: Any
    received: str
    job: Job | None = None  # the bulk job of kind "job"


class InFlight:
    """Requests being answered. Background work waits for a gap between them, as Klaviyo's
    event and job processing runs apart from the servers that answer its API."""

    def __init__(self) -> None:
        self._count = 0
        self._cond = threading.Condition()

    def __enter__(self) -> InFlight:
        with self._cond:
            self._count += 1
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._count -= 1
            if not self._count:
                self._cond.notify_all()

    def wait_for_gap(self, timeout: float) -> None:
        """Return when no request is being answered, or after ``timeout`` seconds at most."""
        with self._cond:
            self._cond.wait_for(lambda: not self._count, timeout)


class Worker(threading.Thread):
    """Applies queued work in submission order after ``job_delay_s``.

    Bulk import jobs go queued -> processing -> complete (Klaviyo: bulk profile import); processing
    takes ``job_delay_s * (0.5 + rows / 20000)`` and updates counts as rows are applied.
    """

    CHUNK = 500
    EVENT_CHUNK = 20  # profile entries (each with its events) per hold of the store lock
    # Longest wait for a gap between requests before each chunk: work keeps moving under a
    # steady stream of requests.
    GAP_WAIT_S = 0.002

    def __init__(
        self,
        store: Store,
        job_delay_s: float,
        in_flight: InFlight | None = None,
        *,
        name: str = "work",
    ) -> None:
        super().__init__(name=f"klaviyo-emulator-{name}", daemon=True)
        self.store = store
        self.job_delay_s = job_delay_s
        self.in_flight = in_flight
        self._queue: collections.deque[Work] = collections.deque()
        self._cond = threading.Condition()
        self._stop_event = threading.Event()

    def submit(self, work: Work) -> None:
        with self._cond:
            self._queue.append(work)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()
            self._cond.notify_all()

    def stop(self) -> None:
        self._stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._queue:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def run(self) -> None:
        while not self._stop_event.is_set():
            with self._cond:
                while not self._queue and not self._stop_event.is_set():
                    self._cond.wait()
                if self._stop_event.is_set():
                    return
                work = self._queue[0]
            ready_in = work.submitted + self.job_delay_s - time.monotonic()
            if ready_in > 0 and self._stop_event.wait(ready_in):
                return
            try:
                self._process(work)
            finally:
                with self._cond:
                    if self._queue and self._queue[0] is work:
                        self._queue.popleft()
                    self._cond.notify_all()

    def _give_way(self) -> None:
        """Let requests being answered have the interpreter first (the GIL is shared)."""
        if self.in_flight is not None:
            self.in_flight.wait_for_gap(self.GAP_WAIT_S)
        else:
            time.sleep(0)

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            self._stop_event.wait(seconds)

    def _process(self, work: Work) -> None:
        store = self.store
        if work.job is not None:
            self._process_job(work.job)
            return
        if work.kind == "events":
            # A few entries per hold of the lock, yielding in between: like Klaviyo, whose event
            # processing runs apart from its API, requests are answered while events are applied.
            for entries in _chunks(work.payload, self.EVENT_CHUNK):
                self._give_way()
                with store.lock:
                    store.apply_events(entries, work.received)
            return
        with store.lock:
            if work.kind == "subscribe":
                store.apply_subscribe(work.payload, work.received)
            elif work.kind == "unsubscribe":
                store.apply_unsubscribe(work.payload, work.received)
            elif work.kind == "records":
                store.apply_records(work.payload, work.received)

    def _process_job(self, job: Job) -> None:
        store = self.store
        with store.lock:
            job.status = "processing"
            job.started_at = iso(now_utc())
        if not job.paced:
            apply_rows(store, job, 0, job.total_count)
            finish(store, job)
            return
        hold = self.job_delay_s * (0.5 + job.total_count / 20_000)
        # The cancel_job fault: the job stops half-way; rows applied before stay applied.
        limit = job.total_count // 2 if job.cancel else job.total_count
        chunks = list(_chunks(range(limit), self.CHUNK))
        for rows in chunks:
            if self._stop_event.is_set():
                return
            self._give_way()
            apply_rows(store, job, rows[0], rows[-1] + 1)
            self._sleep(hold / max(1, len(chunks)))
        if not chunks:
            self._sleep(hold)
        finish(store, job)


def apply_rows(store: Store, job: Job, start: int, end: int) -> None:
    """Apply rows ``start`` to ``end - 1`` of a job (Klaviyo: bulk profile import), in row order."""
    decoded = [job.row(index) for index in range(start, end)]  # outside the lock
    with store.lock:
        stamp = iso(now_utc())
        for index, row in enumerate(decoded, start):
            job.apply_row(store, index, row, stamp)


def finish(store: Store, job: Job) -> None:
    """End a job: complete, or cancelled under the cancel_job fault (Klaviyo: bulk profile
    import)."""
    with store.lock:
        job.status = "cancelled" if job.cancel else "complete"
        job.completed_at = iso(now_utc())
        job.rows = []  # a finished job keeps its counts and errors, not its 5 MB payload
        job.ended(store)


def _chunks(items: Iterable[_T], size: int) -> Iterator[list[_T]]:
    batch: list[_T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class _TimedJob:
    job: Job
    starts: float  # time.monotonic() when it leaves ``queued``
    ends: float  # when its last row is due and it completes
    applied: int = 0  # rows applied so far, in row order

    @property
    def cancels(self) -> float:
        """When the cancel_job fault stops it: half-way, with half its rows applied."""
        return self.starts + (self.ends - self.starts) / 2


class ConcurrentJobWorker(threading.Thread):
    """Runs bulk jobs side by side, each ending ``latency_s`` after its own submission.

    Klaviyo: bulk profile import: jobs are processed asynchronously (queued -> processing ->
    complete);
    large imports take minutes and do not wait behind one another. A job shows ``queued`` for the
    first ``QUEUED_SHARE`` of its latency, then ``processing`` while its rows are applied in row
    order in proportion to the time elapsed (``completed_count`` / ``failed_count`` grow), then
    ``complete`` once every row is applied and its latency has passed.
    """

    QUEUED_SHARE = 0.05
    TICK_S = 0.02  # how often rows due are applied
    CHUNK = 500  # rows per hold of the store lock
    GAP_WAIT_S = Worker.GAP_WAIT_S

    def __init__(self, store: Store, in_flight: InFlight | None = None) -> None:
        super().__init__(name="klaviyo-emulator-timed-jobs", daemon=True)
        self.store = store
        self.in_flight = in_flight
        self._jobs: list[_TimedJob] = []
        self._cond = threading.Condition()
        self._stop_event = threading.Event()
        # How far behind its latency model the emulator ran (its own CPU: each row is checked
        # and applied here): jobs ended, and the most seconds one ended after it was due.
        self.ended = 0
        self.late_s_max = 0.0

    def submit(self, work: Work, latency_s: float) -> None:
        if work.job is None:
            raise ValueError("only bulk jobs run here")
        starts = work.submitted + latency_s * self.QUEUED_SHARE
        timed = _TimedJob(work.job, starts, work.submitted + latency_s)
        with self._cond:
            self._jobs.append(timed)
            self._cond.notify_all()

    def stop(self) -> None:
        self._stop_event.set()
        with self._cond:
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._jobs:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def run(self) -> None:
        while not self._stop_event.is_set():
            with self._cond:
                while not self._jobs and not self._stop_event.is_set():
                    self._cond.wait()
                jobs = list(self._jobs)
            now = time.monotonic()
            wake = now + self.TICK_S
            finished: list[_TimedJob] = []
            for timed in jobs:
                if self._advance(timed, now):
                    finished.append(timed)
                elif now < timed.starts:
                    wake = min(wake, timed.starts)
                else:
                    wake = min(wake, timed.cancels if timed.job.cancel else timed.ends)
                if self._stop_event.is_set():
                    return
            if finished:
                with self._cond:
                    self._jobs = [timed for timed in self._jobs if timed not in finished]
                    self._cond.notify_all()
            self._stop_event.wait(max(0.0, wake - time.monotonic()))

    def _advance(self, timed: _TimedJob, now: float) -> bool:
        """Bring a job to where it should be at ``now``; True once it has ended."""
        job, store = timed.job, self.store
        if now < timed.starts:
            return False
        if job.status == "queued":
            with store.lock:
                job.status = "processing"
                job.started_at = iso(now_utc())
        total = job.total_count
        span = timed.ends - timed.starts
        if now >= timed.ends or span <= 0:
            due = total
        elif not job.gradual:
            due = 0  # applied all at once when its latency has passed
        else:
            due = min(total, math.ceil(total * (now - timed.starts) / span))
        ending = now >= (timed.cancels if job.cancel else timed.ends)
        if job.cancel:
            # The cancel_job fault: the job stops half-way; rows applied before stay applied.
            due = min(due, total // 2)
        while timed.applied < due:
            if self._stop_event.is_set():
                return False
            if self.in_flight is not None:
                self.in_flight.wait_for_gap(self.GAP_WAIT_S)
            end = min(due, timed.applied + self.CHUNK)
            apply_rows(store, job, timed.applied, end)
            timed.applied = end
        if ending:
            finish(store, job)
            self.ended += 1
            was_due = timed.cancels if job.cancel else timed.ends
            self.late_s_max = max(self.late_s_max, time.monotonic() - was_due)
        return ending
