"""Consent: bulk subscribe and bulk unsubscribe (Klaviyo: lists and subscriptions). Both answer 202
with no
body and queue the change; the writes lane applies it.
"""

from __future__ import annotations

import time
from typing import Any

from .. import rules
from ..calls import ApiResponseError, Backend, Call, Reply
from ..resources import ApiError
from ..state import Store, iso, now_utc
from ..work import Work
from .lists import require_lists


def _payload(backend: Backend, call: Call) -> dict[str, Any]:
    data = call.body["data"]
    relationship = ((data.get("relationships") or {}).get("list") or {}).get("data")
    list_id = relationship["id"] if relationship else None
    with backend.store.lock:
        require_lists(backend.store, [list_id] if list_id else [])
    attributes = data["attributes"]
    return {
        "rows": attributes["profiles"]["data"],
        "list_id": list_id,
        "historical_import": attributes.get("historical_import") is True,
        "custom_source": attributes.get("custom_source"),
    }


def bulk_subscribe_profiles(backend: Backend, call: Call) -> Reply:
    payload = _payload(backend, call)
    if payload["historical_import"]:
        _check_backdated(backend.store, payload["rows"])
    backend.submit(Work("subscribe", time.monotonic(), payload, iso(now_utc())))
    # Klaviyo: lists and subscriptions: 202 with no body, no job to poll.
    return Reply(202)


def _check_backdated(store: Store, rows: list[dict[str, Any]]) -> None:
    errors: list[ApiError] = []
    for index, row in enumerate(rows):
        attributes = row["attributes"]
        for channel, kind, leaf in rules.consent_entries(attributes["subscriptions"]):
            consented = rules.parse_datetime(leaf.get("consented_at") or "")
            stamp = store.unsubscribed_at(attributes, channel, kind)
            unsubscribed = rules.parse_datetime(stamp) if stamp else None
            if consented and unsubscribed and consented < unsubscribed:
                # Klaviyo: lists and subscriptions: backdated consent older than a newer
                # unsubscribe.
                errors.append(
                    ApiError(
                        400,
                        "invalid",
                        f"backdated consent date {leaf['consented_at']} is before current "
                        f"unsubscription date {stamp}",
                        pointer=f"/data/attributes/profiles/data/{index}/attributes/"
                        f"subscriptions/{channel}/{kind}/consented_at",
                    )
                )
    if errors:
        raise ApiResponseError(errors)


def bulk_unsubscribe_profiles(backend: Backend, call: Call) -> Reply:
    payload = _payload(backend, call)
    backend.submit(Work("unsubscribe", time.monotonic(), payload, iso(now_utc())))
    return Reply(202)
