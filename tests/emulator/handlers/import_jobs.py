"""Bulk profile import jobs: create, get one, and page through a job's import errors
(Klaviyo: bulk profile import).
"""

from __future__ import annotations

import json
import time
from typing import Any

from .. import paging
from ..calls import Backend, Call, Reply, bad_parameter, not_found
from ..filters import STRING
from ..resources import import_error_resource, job_resource, list_resource
from ..rules import raw_import_rows
from ..state import ImportJob, Store, iso, new_ulid, now_utc
from ..work import Work
from .lists import require_lists


def bulk_import_profiles(backend: Backend, call: Call) -> Reply:
    data = call.body["data"]
    resolved_ids = [
        item["id"]
        for item in ((data.get("relationships") or {}).get("lists") or {}).get("data", [])
    ]
    store = backend.store
    with store.lock:
        require_lists(store, resolved_ids)
        stamp = iso(now_utc())
        job = ImportJob(
            id=new_ulid(),
            created_at=stamp,
            rows=_raw_rows(call.raw, data["attributes"]["profiles"]["data"]),
            resolved_ids=resolved_ids,
        )
        if backend.faults.take(call.operation.operation_id, job=True) is not None:
            job.cancel = True
        store.jobs[job.id] = job
        document = {"data": job_resource(job, call.base_url), "links": {"self": call.url}}
    backend.submit(Work("job", time.monotonic(), None, stamp, job))
    # Klaviyo: bulk profile import: 202 with the job resource, status queued.
    return Reply(202, document)


def _raw_rows(raw: bytes, rows: list[dict[str, Any]]) -> list[Any]:
    """The rows as slices of the request's JSON: a job keeps its body, not the parsed rows."""
    found = raw_import_rows(raw)
    if found is not None and len(found) == len(rows):
        return list(found)
    # A body only Python's json reads (see bodies.parse_body): the rows encoded again.
    return [json.dumps(row).encode() for row in rows]


def _job(store: Store, call: Call, name: str) -> ImportJob:
    job = store.jobs.get(call.params[name])
    if job is None:
        raise not_found(f"Bulk import job '{call.params[name]}' does not exist.")
    return job


def get_bulk_import_profiles_job(backend: Backend, call: Call) -> Reply:
    with backend.store.lock:
        job = _job(backend.store, call, "job_id")
        document: dict[str, Any] = {
            "data": job_resource(job, call.base_url),
            "links": {"self": call.url},
        }
        if "lists" in call.options.include:
            # The spec's include=lists: the job's lists as list resources.
            lists = backend.store.lists
            document["included"] = [
                list_resource(lists[list_id], call.base_url)
                for list_id in job.resolved_ids
                if list_id in lists
            ]
    return Reply(200, document)


def get_errors_for_bulk_import_profiles_job(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    with backend.store.lock:
        job = _job(backend.store, call, "id")
        errors = job.errors
        positions, next_position, prev_position = paging.page(range(len(errors)), start, size)
        data = [import_error_resource(errors[position]) for position in positions]
    return Reply(200, {"data": data, "links": paging.links(call, next_position, prev_position)})


# The spec's get_bulk_import_profiles_jobs: filter "`status`: `any`, `equals`", with the status
# enum of ProfileImportJobResponseObjectResource (sort created_at | -created_at: query.py).
JOB_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    "status": (STRING, frozenset({"equals", "any"})),
}
JOB_STATUSES = ("cancelled", "complete", "processing", "queued")


def get_bulk_import_profiles_jobs(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    conditions = paging.filters(call, JOB_FILTERS)
    wanted: set[str] | None = None
    for condition in conditions:
        values = condition.value if isinstance(condition.value, list) else [condition.value]
        for value in values:
            if value not in JOB_STATUSES:
                raise bad_parameter(
                    "filter",
                    f"'{value}' is not a valid status. Valid: {', '.join(JOB_STATUSES)}.",
                )
        wanted = set(values) if wanted is None else wanted & set(values)
    descending = call.options.sort == "-created_at"
    with backend.store.lock:
        # Jobs in creation order: their position is the cursor, created_at ties keep that order.
        jobs = list(backend.store.jobs.values())
        matching = [
            position for position, job in enumerate(jobs) if wanted is None or job.status in wanted
        ]
        positions, next_position, prev_position = paging.page(
            matching[::-1] if descending else matching, start, size, descending=descending
        )
        data = [job_resource(jobs[position], call.base_url) for position in positions]
    return Reply(200, {"data": data, "links": paging.links(call, next_position, prev_position)})
