"""Privacy deletion: ``POST /api/data-privacy-deletion-jobs`` (Klaviyo: data privacy)."""

from __future__ import annotations

import time

from .. import rules
from ..calls import Backend, Call, Reply
from ..state import DeletionJob, iso, new_ulid, now_utc
from ..work import Work


def request_profile_deletion(backend: Backend, call: Call) -> Reply:
    ((name, value),) = rules.deletion_identifier(call.body)  # one, checked by the rules
    stamp = iso(now_utc())
    job = DeletionJob(id=new_ulid(), created_at=stamp, rows=[value], identifier=(name, value))
    with backend.store.lock:
        backend.store.deletions.append(job)
    backend.submit(Work("job", time.monotonic(), None, stamp, job))
    # Klaviyo's OpenAPI spec: 202 with no body; "The deletion occurs asynchronously" and
    # nothing reports its outcome.
    return Reply(202)
