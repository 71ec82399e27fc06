"""Profiles: ``POST /api/profile-import`` (upsert) and ``GET /api/profiles`` (klaviyo-api.md §2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from .. import paging, rules
from ..calls import ApiResponseError, Backend, Call, Reply, not_found
from ..filters import DATETIME, STRING, Condition, compare_datetimes
from ..resources import ApiError, profile_resource
from ..state import Profile, ProfileConflictError, UnknownProfileError


def create_or_update_profile(backend: Backend, call: Call) -> Reply:
    data = call.body["data"]
    store = backend.store
    with store.lock:
        try:
            profile, created, _ = store.upsert(data["attributes"], data.get("meta"), data.get("id"))
        except ProfileConflictError as conflict:
            # klaviyo-api.md §2.4: identifiers of two different profiles -> 409.
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
        document = {"data": profile_document(profile, call), "links": {"self": call.url}}
    # klaviyo-api.md §2.1: 201 when created, 200 when updated.
    return Reply(201 if created else 200, document)


def profile_document(profile: Profile, call: Call) -> dict[str, Any]:
    fields = call.query.get("fields[profile]")
    additional = call.query.get("additional-fields[profile]")
    return profile_resource(
        profile,
        call.base_url,
        fields=set(fields.split(",")) if fields else None,
        additional=set(additional.split(",")) if additional else None,
    )


PROFILE_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    # klaviyo-api.md §2.3: filterable fields and operators of get_profiles.
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
    start = paging.cursor(call)
    conditions = paging.filters(call, PROFILE_FILTERS)
    store = backend.store
    with store.lock:
        candidates: list[int] | None = None
        checks: list[Callable[[Profile], bool]] = []
        for condition in conditions:
            if condition.field in ("created", "updated"):
                checks.append(_time_check(condition))
                continue
            values = condition.value if isinstance(condition.value, list) else [condition.value]
            found = set()
            for value in values:
                profile = store.find_by(condition.field, value)
                if profile is not None:
                    found.add(store.profile_position[profile.id])
            candidates = sorted(found if candidates is None else found & set(candidates))
        order = store.profile_order
        positions = candidates if candidates is not None else range(len(order))

        def scan() -> Iterator[tuple[int, Profile]]:
            for position in positions:
                if position < start:
                    continue
                profile = store.profiles[order[position]]
                if all(check(profile) for check in checks):
                    yield position, profile

        page, next_position = paging.take(scan(), size)
        data = [profile_document(profile, call) for profile in page]
    return Reply(200, {"data": data, "links": paging.links(call, next_position)})


def _time_check(condition: Condition) -> Callable[[Profile], bool]:
    def check(profile: Profile) -> bool:
        stamp = rules.parse_datetime(getattr(profile, condition.field))
        return stamp is not None and compare_datetimes(condition.operator, stamp, condition.value)

    return check
