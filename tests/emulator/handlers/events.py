"""Events: ``POST /api/events`` and ``POST /api/event-bulk-create-jobs`` (Klaviyo: events API).
Both answer 202 and queue the events; the writes lane records them (``Store.apply_events``).
"""

from __future__ import annotations

import time

from ..calls import Backend, Call, Reply
from ..state import iso, now_utc
from ..work import Work


def create_event(backend: Backend, call: Call) -> Reply:
    attributes = call.body["data"]["attributes"]
    entry = {
        "operation": "create_event",
        "profile": attributes["profile"]["data"],
        "events": [attributes],
        "backfill": bool(attributes.get("backfill")),
    }
    backend.submit(Work("events", time.monotonic(), [entry], iso(now_utc())))
    # Klaviyo: events API: 202, no body: validated and queued, not processed.
    return Reply(202)


def bulk_create_events(backend: Backend, call: Call) -> Reply:
    entries = [
        {
            "operation": "bulk_create_events",
            "profile": entry["attributes"]["profile"]["data"],
            "events": [event["attributes"] for event in entry["attributes"]["events"]["data"]],
            "backfill": bool(entry["attributes"].get("backfill")),
        }
        for entry in call.body["data"]["attributes"]["events-bulk-create"]["data"]
    ]
    backend.submit(Work("events", time.monotonic(), entries, iso(now_utc())))
    # Klaviyo: events API: 202, no body, no job id.
    return Reply(202)
