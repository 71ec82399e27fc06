"""Bulk profile import jobs: create, get one, and page through a job's import errors
(klaviyo-api.md §3).
"""

from __future__ import annotations

import time

from .. import paging
from ..calls import Backend, Call, Reply, not_found
from ..resources import import_error_resource, job_resource
from ..state import ImportJob, Store, iso, new_ulid, now_utc
from ..work import Work
from .lists import require_lists


def bulk_import_profiles(backend: Backend, call: Call) -> Reply:
    data = call.body["data"]
    list_ids = [
        item["id"]
        for item in ((data.get("relationships") or {}).get("lists") or {}).get("data", [])
    ]
    store = backend.store
    with store.lock:
        require_lists(store, list_ids)
        stamp = iso(now_utc())
        job = ImportJob(
            id=new_ulid(),
            created_at=stamp,
            rows=data["attributes"]["profiles"]["data"],
            list_ids=list_ids,
        )
        if backend.faults.take(call.operation.operation_id, job=True) is not None:
            job.cancel = True
        store.jobs[job.id] = job
        document = {"data": job_resource(job, call.base_url), "links": {"self": call.url}}
    backend.submit(Work("import", time.monotonic(), None, stamp, job))
    # klaviyo-api.md §3.1: 202 with the job resource, status queued.
    return Reply(202, document)


def _job(store: Store, call: Call, name: str) -> ImportJob:
    job = store.jobs.get(call.params[name])
    if job is None:
        raise not_found(f"Bulk import job '{call.params[name]}' does not exist.")
    return job


def get_bulk_import_profiles_job(backend: Backend, call: Call) -> Reply:
    with backend.store.lock:
        job = _job(backend.store, call, "job_id")
        return Reply(200, {"data": job_resource(job, call.base_url), "links": {"self": call.url}})


def get_errors_for_bulk_import_profiles_job(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor(call)
    with backend.store.lock:
        job = _job(backend.store, call, "id")
        errors = job.errors
        page, next_position = paging.take(((i, errors[i]) for i in range(start, len(errors))), size)
        data = [import_error_resource(error) for error in page]
    return Reply(200, {"data": data, "links": paging.links(call, next_position)})
