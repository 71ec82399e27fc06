"""What the bulk jobs other than profile imports (suppressions, catalogs) share: queueing a new
job, getting one by id, and the job list endpoints (status filter, cursor paging).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import paging
from ..calls import ApiResponseError, Backend, Call, bad_parameter, not_found
from ..filters import STRING, Condition
from ..resources import ApiError
from ..state import Job, Store
from ..work import Work

# Klaviyo's OpenAPI spec: the status enum of every bulk job.
JOB_STATUSES = ("cancelled", "complete", "processing", "queued")
# Klaviyo: catalogs API: a catalog job list "Returns a maximum of 100 jobs per request"; the
# suppression job lists (no page[size] in the spec either) are given the same page.
JOB_PAGE_SIZE = 100

Render = Callable[[Any, str], dict[str, Any]]


def submit(backend: Backend, call: Call, job_type: str, job: Job) -> None:
    """Keep a new job (already under ``store.lock``) and queue it; the cancel_job fault applies."""
    if backend.faults.take(call.operation.operation_id, job=True) is not None:
        job.cancel = True
    backend.store.bulk_jobs[job_type][job.id] = job
    backend.submit(Work("job", time.monotonic(), None, job.created_at, job))


def find(store: Store, job_type: str, call: Call, label: str) -> Job:
    job = store.bulk_jobs.get(job_type, {}).get(call.params["job_id"])
    if job is None:
        raise not_found(f"{label} '{call.params['job_id']}' does not exist.")
    return job


def status_filter() -> dict[str, tuple[str, frozenset[str]]]:
    # Klaviyo's OpenAPI spec: the job lists' filter "`status`: `equals`".
    return {"status": (STRING, frozenset({"equals"}))}


def list_jobs(
    store: Store,
    call: Call,
    job_type: str,
    allowed: dict[str, tuple[str, frozenset[str]]],
    render: Render,
    fields: Callable[[Job], dict[str, Any]],
) -> dict[str, Any]:
    """A page of the jobs of ``job_type``, in creation order (``sort=-created``: newest first).

    ``fields`` gives the values a job is filtered on (field -> value).
    """
    if "page[size]" in call.query:
        # Klaviyo's OpenAPI spec: these job lists take fields, filter, page[cursor] (and, for
        # suppressions, sort) only; Klaviyo refuses a query parameter an endpoint does not take.
        raise bad_parameter("page[size]", "Page size is not supported by this endpoint.")
    conditions = paging.filters(call, allowed)
    for condition in conditions:
        if condition.field == "status" and condition.value not in JOB_STATUSES:
            raise bad_parameter(
                "filter",
                f"'{condition.value}' is not a valid status. Valid: {', '.join(JOB_STATUSES)}.",
            )
    start = paging.cursor_given(call)
    descending = call.options.sort == "-created"
    with store.lock:
        jobs = list(store.bulk_jobs.get(job_type, {}).values())
        matching = [
            position for position, job in enumerate(jobs) if _matches(fields(job), conditions)
        ]
        positions, next_position, prev_position = paging.page(
            matching[::-1] if descending else matching, start, JOB_PAGE_SIZE, descending=descending
        )
        data = [render(jobs[position], call.base_url) for position in positions]
    return {"data": data, "links": paging.links(call, next_position, prev_position)}


def _matches(values: dict[str, Any], conditions: list[Condition]) -> bool:
    return all(values.get(condition.field) == condition.value for condition in conditions)


def too_many_in_progress(limit: int) -> ApiResponseError:
    """Klaviyo: catalogs API: "The maximum number of jobs in progress at one time is 500". What
    Klaviyo answers beyond it is not documented: the emulator throttles (429, Retry-After 1)."""
    return ApiResponseError(
        [
            ApiError(
                429,
                "throttled",
                f"Too many jobs in progress: at most {limit} catalog jobs can be queued or "
                "processing at one time. Try again when some have completed.",
            )
        ],
        headers={"Retry-After": "1", "X-Emulator-Retry-After-Exact": "1.000"},
    )
