"""What the bulk jobs other than profile imports (suppressions, catalogs) share: queueing a new
job, getting one by id, and the job list endpoints (status filter, cursor paging).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .. import paging
from ..calls import Backend, Call, bad_parameter, not_found
from ..filters import STRING, Condition
from ..state import Job, Store
from ..work import Work

# Klaviyo's OpenAPI spec: the status enum of every bulk job.
JOB_STATUSES = ("cancelled", "complete", "processing", "queued")
# Emulator choice: the job lists have no page[size] in the spec; a page holds 100 jobs.
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
