"""Open bulk jobs, watched together.

Klaviyo processes bulk jobs asynchronously: a profile import job of 10,000 rows can take
minutes. Submitting a job does not wait for it: the job joins the run's `JobWatcher`, which
learns the state of every open job of a kind from one request to the kind's job list
(`GET /api/profile-bulk-import-jobs?sort=-created_at`, up to 100 jobs a page; the list has its
own rate-limit window, so polling never spends what submissions need). A job the list no longer
shows is asked for on its own. Polls follow the jobs' progress: when the rows done so far say a
job will end, with bounds; a job that shows none yet is asked again with backoff. When a job
ends (or fails, or passes its deadline), its owner's callback settles its records, on a small
pool of threads so that reading import errors never holds up the polls.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from target_klaviyo.klaviyo.client import ApiResult, Requester, page_data, pages
from target_klaviyo.klaviyo.filters import equals

LOGGER = logging.getLogger("target-klaviyo")

POLL_FIRST_S = 0.5  # a new job is first asked about this soon
POLL_MAX_S = 10.0
POLL_MIN_S = 0.25  # never more often (the list's window allows 10/s, 150/min)
POLL_PAST_END_S = 0.05  # a job about to end is asked about this long after its expected end
LIST_PAGE_SIZE = 100  # the largest page of the job lists
# Klaviyo: catalogs API: "The maximum number of jobs in progress at one time is 500".
CATALOG_JOBS_IN_PROGRESS = 500


# Every kind of job, by the operation that asks Klaviyo about one (the ledger records a job so).
KIND_OF_OPERATION: dict[str, JobKind] = {}


@dataclass(frozen=True)
class JobKind:
    """How to ask Klaviyo about one kind of bulk job."""

    name: str  # for logs: "profile import"
    list_operation: str | None  # the kind's job list; None: each job is asked on its own
    get_operation: str
    # The list's query: its sort (newest first lets a poll stop at the oldest open job) and
    # filter, as the spec has them for this kind's list.
    list_params: tuple[tuple[str, Any], ...] = (("sort", "-created_at"),)
    final: frozenset[str] = frozenset({"complete", "cancelled"})  # statuses a job ends in
    # page[size] of the list; None where the spec gives the list none (the catalog and
    # suppression job lists).
    page_size: int | None = LIST_PAGE_SIZE
    # Lists filtered by one status at a time (`equals`, as the catalog job lists are): one query
    # per open status, so that a poll reads open jobs only. Empty: the list as `list_params` has it.
    open_statuses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        KIND_OF_OPERATION[self.get_operation] = self

    def list_queries(self) -> list[dict[str, Any]]:
        params = dict(self.list_params)
        if self.page_size is not None:
            params["page[size]"] = self.page_size
        if not self.open_statuses:
            return [params]
        return [{**params, "filter": equals("status", s)} for s in self.open_statuses]


PROFILE_IMPORT = JobKind(
    "profile import", "get_bulk_import_profiles_jobs", "get_bulk_import_profiles_job"
)
# What ledgers written before other kinds of jobs were recorded name a profile import by.
KIND_OF_OPERATION["bulk_import_profiles"] = PROFILE_IMPORT


@dataclass
class JobEnd:
    """How a job ended: its final attributes, or why they are not known."""

    attributes: dict[str, Any] | None = None
    failure: str | None = None  # the job could not be followed (polls failed, deadline passed)


@dataclass(eq=False)
class OpenJob:
    id: str
    kind: JobKind
    created_at: datetime | None
    deadline: float
    on_end: Callable[[JobEnd], None]
    next_poll: float = 0.0
    delay: float = POLL_FIRST_S
    progress: tuple[float, int] | None = None  # (when, rows done) at the previous sighting
    ended: bool = False
    submitted: float = 0.0  # monotonic time it joined the watcher

    def saw(self, attributes: dict[str, Any], now: float, typical_s: float | None = None) -> None:
        """Plan the next poll from what the job showed now; `typical_s`: how long the kind's
        jobs that ended took, when known — a job that shows no progress yet is asked again
        when, at that length, it would end (rather than after its backoff)."""
        done, total = attributes.get("completed_count"), attributes.get("total_count")
        if isinstance(done, int) and isinstance(total, int) and done > 0:
            if self.progress is not None and done > self.progress[1]:
                # Rows are being applied: ask again just after, at this pace, the job will be
                # done (the watcher's POLL_MIN_S between two polls still holds).
                pace = (done - self.progress[1]) / max(now - self.progress[0], 1e-3)
                self.delay = min(max((total - done) / pace + POLL_PAST_END_S, 0.0), POLL_MAX_S)
            else:
                self.delay = min(self.delay * 1.5, POLL_MAX_S)
            self.progress = (now, done)
        else:
            self.delay = min(self.delay * 1.5, POLL_MAX_S)
        self.next_poll = now + self.delay
        if typical_s is not None and self.progress is None:
            # Just after it would end; once past that, often (a twentieth of its length).
            expected = self.submitted + typical_s + POLL_MIN_S
            soon = expected if expected > now else now + max(2 * POLL_MIN_S, typical_s / 20)
            self.next_poll = min(self.next_poll, soon)


def parse_time(text: Any) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class JobWatcher:
    """Every open bulk job of the run, followed by one thread."""

    def __init__(
        self,
        client: Requester,
        *,
        fail: Callable[[BaseException], None] | None = None,
        workers: int = 4,
    ) -> None:
        self._client = client
        self._fail = fail  # an error in the watcher itself stops the run
        self._lock = threading.Condition()
        self._jobs: dict[str, OpenJob] = {}
        self._stopped = False
        # Why open jobs were abandoned (the run is stopping): a job accepted after that ends
        # at once, for the same reason.
        self._abandoned: str | None = None
        self._thread: threading.Thread | None = None
        self._no_list: set[JobKind] = set()  # kinds whose job list answered with an error
        # Per kind: how long its last job that completed took at Klaviyo (created_at to
        # completed_at). Jobs of a kind submitted together take about as long.
        self._typical_s: dict[JobKind, float] = {}
        self._endings = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="klaviyo-jobs")
        self.polls = 0  # list and single-job requests, for the figures

    def watch(
        self,
        kind: JobKind,
        job_id: str,
        created_at: Any,
        timeout_s: float,
        on_end: Callable[[JobEnd], None],
    ) -> None:
        """Follow a job Klaviyo accepted; `on_end` is called once, when it ends."""
        now = time.monotonic()
        job = OpenJob(job_id, kind, parse_time(created_at), now + timeout_s, on_end)
        job.next_poll = now + POLL_FIRST_S
        job.submitted = now
        with self._lock:
            abandoned = self._abandoned
            if abandoned is None:
                if self._stopped:
                    raise RuntimeError("the job watcher has stopped")
                self._jobs[job_id] = job
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="klaviyo-job-watcher", daemon=True
                    )
                    self._thread.start()
                self._lock.notify_all()
                return
        # Accepted after the stopping run's grace was over: its records wait on hold like
        # those of the other open jobs, and the ledger keeps it for the next run to ask about.
        self._call_on_end(job, JobEnd(failure=abandoned))

    @property
    def open_jobs(self) -> int:
        with self._lock:
            return len(self._jobs)

    def abandon(self, reason: str) -> None:
        """End every open job now with `reason` (the run is stopping)."""
        with self._lock:
            self._abandoned = reason
            jobs = list(self._jobs.values())
            self._jobs.clear()
            for job in jobs:
                job.ended = True
            self._lock.notify_all()
        for job in jobs:
            self._endings.submit(self._call_on_end, job, JobEnd(failure=reason))

    def close(self) -> None:
        """Stop polling (open jobs, if any, are abandoned first by the caller) and wait for
        the endings under way."""
        with self._lock:
            self._stopped = True
            self._lock.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._endings.shutdown(wait=True)

    # -- the watcher's thread -------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and not self._jobs:
                    self._lock.wait()
                if self._stopped:
                    return
                now = time.monotonic()
                soonest = min(min(job.next_poll, job.deadline) for job in self._jobs.values())
                if soonest > now:
                    self._lock.wait(timeout=soonest - now)
                    continue
                jobs = list(self._jobs.values())
            try:
                self._poll(jobs)
            except Exception as exc:  # a bug must not leave jobs unwatched: they end unknown
                LOGGER.exception("while following bulk jobs")
                if self._fail is not None:
                    self._fail(exc)
                for job in jobs:
                    self._finish(job, JobEnd(failure=f"internal error: {type(exc).__name__}"))
            self._lock_free_wait(POLL_MIN_S)

    def _lock_free_wait(self, seconds: float) -> None:
        with self._lock:
            if not self._stopped:
                self._lock.wait(timeout=seconds)

    def _poll(self, jobs: list[OpenJob]) -> None:
        now = time.monotonic()
        for job in jobs:
            if now >= job.deadline:
                reason = f"{job.kind.name} job {job.id} did not finish in time"
                self._finish(job, JobEnd(failure=reason))
        by_kind: dict[JobKind, list[OpenJob]] = {}
        for job in jobs:
            if not job.ended:
                by_kind.setdefault(job.kind, []).append(job)
        for kind, open_jobs in by_kind.items():
            listed = kind.list_operation is not None and kind not in self._no_list
            unseen = self._poll_list(kind, open_jobs) if listed else open_jobs
            for job in unseen:
                self._poll_one(job)

    def _poll_list(self, kind: JobKind, jobs: list[OpenJob]) -> list[OpenJob]:
        """Ask the job list about every open job of a kind; return those it does not show."""
        wanted = {job.id: job for job in jobs}
        oldest = min((job.created_at for job in jobs if job.created_at), default=None)
        assert kind.list_operation is not None
        for params in kind.list_queries():
            if wanted and self._read_list(kind, kind.list_operation, params, wanted, oldest):
                return []
        return list(wanted.values())

    def _read_list(
        self,
        kind: JobKind,
        operation: str,
        params: dict[str, Any],
        wanted: dict[str, OpenJob],
        oldest: datetime | None,
    ) -> bool:
        """Read one query of a job list, taking the jobs it shows out of `wanted`; True when
        the list cannot be read (the jobs have ended or are asked for one by one)."""
        for page in pages(self._client, operation, params):
            self.polls += 1
            if page.exhausted:
                self._fail_all(list(wanted.values()), page)
                return True
            if not page.ok:
                # The list is not served here (an older revision, a proxy): ask job by job.
                LOGGER.warning(
                    "the %s job list answered %s; following each job on its own",
                    kind.name,
                    page.describe(),
                )
                self._no_list.add(kind)
                for unlisted in list(wanted.values()):
                    self._poll_one(unlisted)
                return True
            now = time.monotonic()
            passed_oldest = False
            for resource in page_data(page):
                job = wanted.pop(str(resource.get("id")), None)
                attributes = resource.get("attributes") or {}
                if job is not None:
                    self._saw(job, attributes, now)
                created = parse_time(attributes.get("created_at"))
                if oldest is not None and created is not None and created < oldest:
                    passed_oldest = True
            if not wanted or passed_oldest:
                break
        return False

    def _poll_one(self, job: OpenJob) -> None:
        result = self._client.request(job.kind.get_operation, path_params={"id": job.id})
        self.polls += 1
        if not result.ok:  # retries exhausted, or Klaviyo does not know the job (404)
            self._finish(job, JobEnd(failure=result.describe()))
            return
        self._saw(job, dict(result.body["data"].get("attributes") or {}), time.monotonic())

    def _saw(self, job: OpenJob, attributes: dict[str, Any], now: float) -> None:
        if attributes.get("status") in job.kind.final:
            self._learn(job.kind, attributes)
            self._finish(job, JobEnd(attributes=dict(attributes)))
        else:
            with self._lock:
                job.saw(attributes, now, self._typical_s.get(job.kind))

    def _learn(self, kind: JobKind, attributes: dict[str, Any]) -> None:
        """Remember how long a completed job took, by Klaviyo's own clock."""
        created, completed = (
            parse_time(attributes.get("created_at")),
            parse_time(attributes.get("completed_at")),
        )
        if attributes.get("status") == "complete" and created and completed:
            taken = (completed - created).total_seconds()
            if taken >= 0:
                with self._lock:
                    self._typical_s[kind] = taken

    def _fail_all(self, jobs: list[OpenJob], result: ApiResult) -> None:
        for job in jobs:
            self._finish(job, JobEnd(failure=result.describe()))

    def _finish(self, job: OpenJob, end: JobEnd) -> None:
        with self._lock:
            if job.ended:
                return
            job.ended = True
            self._jobs.pop(job.id, None)
            self._lock.notify_all()
        self._endings.submit(self._call_on_end, job, end)

    @staticmethod
    def _call_on_end(job: OpenJob, end: JobEnd) -> None:
        try:
            job.on_end(end)
        except Exception:
            LOGGER.exception("while settling %s job %s", job.kind.name, job.id)


class JobSlots:
    """Jobs in progress under an account-wide cap (Klaviyo's 500 catalog jobs), shared by
    every stream of a run whose jobs count against it; and, per object, the chunks on their
    way, so that a chunk can wait for those of another object read before it."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._cond = threading.Condition()
        self.open = 0
        self.reserved = 0
        self._chunk_seq = 0
        self._chunks: dict[str, set[int]] = {}  # object -> its chunks on their way

    def reserve(self, stopped: Callable[[], bool]) -> None:
        """Wait for room for one more job (a request thread, before it submits)."""
        with self._cond:
            while self.open + self.reserved >= self.limit and not stopped():
                self._cond.wait(timeout=1.0)
            self.reserved += 1

    def unreserve(self) -> None:
        with self._cond:
            self.reserved -= 1
            self._cond.notify_all()

    def opened(self) -> None:
        with self._cond:
            self.open += 1

    def ended(self) -> None:
        with self._cond:
            self.open -= 1
            self._cond.notify_all()

    # -- one object's entries before the entries that name them ---------------------------

    def begin(self, obj: str) -> int:
        """A chunk of `obj` is on its way (from the reading thread, in input order)."""
        with self._cond:
            self._chunk_seq += 1
            self._chunks.setdefault(obj, set()).add(self._chunk_seq)
            return self._chunk_seq

    def finish(self, obj: str, seq: int) -> None:
        """The chunk has its outcomes (its jobs ended)."""
        with self._cond:
            self._chunks.get(obj, set()).discard(seq)
            self._cond.notify_all()

    def wait_for(self, obj: str, seq: int, stopped: Callable[[], bool]) -> None:
        """Wait until every chunk of `obj` that began before chunk `seq` has ended."""
        with self._cond:
            while not stopped() and any(s < seq for s in self._chunks.get(obj, ())):
                self._cond.wait(timeout=1.0)
