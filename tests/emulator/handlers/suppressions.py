"""Email suppressions: bulk suppress and bulk unsuppress jobs, one job and the job lists
(Klaviyo: profile suppressions).
"""

from __future__ import annotations

from typing import Any

from ..calls import ApiResponseError, Backend, Call, Reply
from ..filters import STRING
from ..resources import ApiError, suppression_job_resource
from ..state import SUPPRESS_JOB, UNSUPPRESS_JOB, Job, Store, SuppressionJob, iso, new_ulid, now_utc
from . import bulk_jobs
from .lists import require_lists

# Klaviyo's OpenAPI spec: the job lists' filter: "`status`: `equals`, `list_id`: `equals`,
# `segment_id`: `equals`" (sort created | -created: query.py).
JOB_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    **bulk_jobs.status_filter(),
    "list_id": (STRING, frozenset({"equals"})),
    "segment_id": (STRING, frozenset({"equals"})),
}


def bulk_suppress_profiles(backend: Backend, call: Call) -> Reply:
    return _create(backend, call, SUPPRESS_JOB)


def bulk_unsuppress_profiles(backend: Backend, call: Call) -> Reply:
    return _create(backend, call, UNSUPPRESS_JOB)


def _create(backend: Backend, call: Call, job_type: str) -> Reply:
    data = call.body["data"]
    relationships = data.get("relationships") or {}
    list_id = ((relationships.get("list") or {}).get("data") or {}).get("id")
    segment_id = ((relationships.get("segment") or {}).get("data") or {}).get("id")
    store = backend.store
    with store.lock:
        if list_id is not None:
            require_lists(store, [list_id])
            emails = _member_emails(store, list_id)
        elif segment_id is not None:
            # The emulated account has no segments (as for include=segments elsewhere).
            raise ApiResponseError(
                [
                    ApiError(
                        400, "invalid", f"Segment ID {segment_id} does not exist.", pointer="/data"
                    )
                ]
            )
        else:
            rows = data["attributes"]["profiles"]["data"]
            emails = [row["attributes"]["email"] for row in rows]
        job = SuppressionJob(
            id=new_ulid(),
            created_at=iso(now_utc()),
            rows=list(emails),
            type=job_type,
            list_id=list_id,
        )
        bulk_jobs.submit(backend, call, job_type, job)
        resource = suppression_job_resource(job, call.base_url)
    document = {"data": resource, "links": {"self": call.url}}
    # Klaviyo's OpenAPI spec: 202 with the job, to be polled for its counts.
    return Reply(202, document)


def _member_emails(store: Store, list_id: str) -> list[str | None]:
    """Klaviyo: profile suppressions: a list suppresses "all current members": its members'
    emails when the job is created (None for a member without an email, skipped)."""
    profiles = store.profiles
    return [
        profiles[member].fields.get("email") if member in profiles else None
        for member in store.lists[list_id].members
    ]


def get_bulk_suppress_profiles_job(backend: Backend, call: Call) -> Reply:
    return _get(backend, call, SUPPRESS_JOB)


def get_bulk_unsuppress_profiles_job(backend: Backend, call: Call) -> Reply:
    return _get(backend, call, UNSUPPRESS_JOB)


def _get(backend: Backend, call: Call, job_type: str) -> Reply:
    with backend.store.lock:
        job = bulk_jobs.find(backend.store, job_type, call, "Suppression job")
        document = {"data": _render(job, call.base_url), "links": {"self": call.url}}
    return Reply(200, document)


def get_bulk_suppress_profiles_jobs(backend: Backend, call: Call) -> Reply:
    return _list(backend, call, SUPPRESS_JOB)


def get_bulk_unsuppress_profiles_jobs(backend: Backend, call: Call) -> Reply:
    return _list(backend, call, UNSUPPRESS_JOB)


def _list(backend: Backend, call: Call, job_type: str) -> Reply:
    document = bulk_jobs.list_jobs(backend.store, call, job_type, JOB_FILTERS, _render, _fields)
    return Reply(200, document)


def _render(job: Any, base_url: str) -> dict[str, Any]:
    assert isinstance(job, SuppressionJob)
    return suppression_job_resource(job, base_url)


def _fields(job: Job) -> dict[str, Any]:
    assert isinstance(job, SuppressionJob)
    return {"status": job.status, "list_id": job.list_id, "segment_id": job.segment_id}
