"""Profiles: ``POST /api/profile-import`` (upsert) and ``GET /api/profiles`` (Klaviyo: profiles
API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import paging, rules
from ..calls import ApiResponseError, Backend, Call, Reply, not_found
from ..filters import DATETIME, STRING, Condition, compare_datetimes
from ..resources import (
    PROFILE_RELATIONSHIPS,
    ApiError,
    profile_resource,
    subscriptions_resource,
    with_relationship_data,
)
from ..state import Profile, ProfileConflictError, Store, UnknownProfileError


def create_or_update_profile(backend: Backend, call: Call) -> Reply:
    data = call.body["data"]
    store = backend.store
    with store.lock:
        try:
            profile, created, _ = store.upsert(data["attributes"], data.get("meta"), data.get("id"))
        except ProfileConflictError as conflict:
            # Klaviyo: profiles API: identifiers of two different profiles -> 409.
            raise ApiResponseError(
                [
                    ApiError(
                        409,
                        "duplicate_profile",
                        "A profile already exists with one of these identifiers.",
                        pointer="/data/attributes",
                        meta={"duplicate_profile_id": conflict.duplicate_profile_id},
                    )
                ]
            ) from None
        except UnknownProfileError as unknown:
            raise not_found(f"Profile with id '{unknown.profile_id}' does not exist.") from None
        document = {"data": _document(profile, call), "links": {"self": call.url}}
    # Klaviyo: profiles API: 201 when created, 200 when updated.
    return Reply(201 if created else 200, document)


def _document(profile: Profile, call: Call, relationships: tuple[str, ...] = ()) -> dict[str, Any]:
    resource = profile_resource(
        profile,
        call.base_url,
        additional=call.options.additional_fields.get("profile"),
        relationships=PROFILE_RELATIONSHIPS + relationships,
    )
    return with_relationship_data(resource, call.options.include)


PROFILE_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    # Klaviyo: profiles API: filterable fields and operators of get_profiles.
    "id": (STRING, frozenset({"equals", "any"})),
    "email": (STRING, frozenset({"equals", "any"})),
    "phone_number": (STRING, frozenset({"equals", "any"})),
    "external_id": (STRING, frozenset({"equals", "any"})),
    "_kx": (STRING, frozenset({"equals"})),
    "created": (DATETIME, frozenset({"greater-than", "less-than"})),
    "updated": (DATETIME, frozenset({"greater-than", "less-than"})),
}


def get_profiles(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    conditions = paging.filters(call, PROFILE_FILTERS)
    store = backend.store
    sort = call.options.sort or "id"
    descending = sort.startswith("-")
    with store.lock:
        order: range | list[int] = _candidates(store, conditions)
        checks = [_time_check(c) for c in conditions if c.field in ("created", "updated")]
        ids, profiles = store.profile_order, store.profiles

        def keep(position: int) -> bool:
            profile_id = ids[position]
            if profile_id is None:
                return False  # deleted
            profile = profiles[profile_id]
            return all(check(profile) for check in checks)

        if sort.lstrip("-") in ("id", "created"):
            # Profile ids grow with creation (new_ulid), so both are the creation order: the
            # cursor is a position in it, which new profiles never shift.
            positions, next_position, prev_position = paging.page(
                order[::-1] if descending else order, start, size, keep, descending=descending
            )
            page = [profiles[str(ids[position])] for position in positions]
        else:
            # Another sort field: the matching profiles in that order; the cursor is an offset.
            matching = [profiles[str(ids[position])] for position in order if keep(position)]
            matching.sort(key=_sort_key(sort.lstrip("-")), reverse=descending)
            offsets, next_position, prev_position = paging.page(range(len(matching)), start, size)
            page = [matching[offset] for offset in offsets]
        data = [_document(profile, call, ("conversations",)) for profile in page]
    document: dict[str, Any] = {
        "data": data,
        "links": paging.links(call, next_position, prev_position),
    }
    if call.options.include:
        # The emulated account has no push tokens or conversations to include.
        document["included"] = []
    return Reply(200, document)


def _candidates(store: Store, conditions: list[Condition]) -> range | list[int]:
    """Positions (creation order) of the profiles the identifier conditions select."""
    candidates: set[int] | None = None
    for condition in conditions:
        if condition.field in ("created", "updated"):
            continue
        values = condition.value if isinstance(condition.value, list) else [condition.value]
        found = set()
        for value in values:
            profile = store.find_by(condition.field, value)
            if profile is not None:
                found.add(store.profile_position[profile.id])
        candidates = found if candidates is None else candidates & found
    return range(len(store.profile_order)) if candidates is None else sorted(candidates)


def _sort_key(field: str) -> Callable[[Profile], tuple[Any, ...]]:
    """Sort on the spec's get_profiles sort fields; profiles without a value come last, ties in
    creation order (the id)."""

    def value(profile: Profile) -> Any:
        if field in ("updated",):
            return profile.updated
        if field == "email":
            return profile.fields.get("email")
        # subscriptions.email.marketing.suppression.timestamp / list_suppressions.timestamp
        marketing = subscriptions_resource(profile.subscriptions, profile.suppressions)["email"][
            "marketing"
        ]
        entries = marketing[field.split(".")[-2]]
        return max((entry["timestamp"] for entry in entries), default=None)

    def key(profile: Profile) -> tuple[Any, ...]:
        found = value(profile)
        return (found is None, found or "", profile.id)

    return key


def _time_check(condition: Condition) -> Callable[[Profile], bool]:
    def check(profile: Profile) -> bool:
        stamp = rules.parse_datetime(getattr(profile, condition.field))
        return stamp is not None and compare_datetimes(condition.operator, stamp, condition.value)

    return check
