"""Lists and their members: find and create lists, list member ids, add and remove members
(Klaviyo: lists and subscriptions).
"""

from __future__ import annotations

from typing import Any

from .. import paging, rules
from ..calls import ApiResponseError, Backend, Call, Reply, not_found
from ..filters import DATETIME, STRING, compare_datetimes
from ..resources import ApiError, list_resource, with_relationship_data
from ..state import Store, iso, now_utc

LIST_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    # Klaviyo: lists and subscriptions: get_lists filters on name and id (any, equals),
    # created/updated.
    "name": (STRING, frozenset({"equals", "any"})),
    "id": (STRING, frozenset({"equals", "any"})),
    "created": (DATETIME, frozenset({"greater-than"})),
    "updated": (DATETIME, frozenset({"greater-than"})),
}


def require_lists(store: Store, resolved_ids: list[str]) -> None:
    """Refuse a request that names a list the account does not have."""
    missing = [list_id for list_id in resolved_ids if list_id not in store.lists]
    if missing:
        # Klaviyo: bulk profile import: unknown list id -> 400 /data "List ID … does not exist."
        raise ApiResponseError(
            [
                ApiError(400, "invalid", f"List ID {list_id} does not exist.", pointer="/data")
                for list_id in missing
            ]
        )


def get_lists(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    conditions = paging.filters(call, LIST_FILTERS)
    sort = call.options.sort
    with backend.store.lock:
        lists = list(backend.store.lists.values())

        def keep(position: int) -> bool:
            item = lists[position]
            for condition in conditions:
                value = getattr(item, condition.field)
                if condition.operator == "equals" and value != condition.value:
                    return False
                if condition.operator == "any" and value not in condition.value:
                    return False
                if condition.operator == "greater-than":
                    stamp = rules.parse_datetime(value)
                    if stamp is None or not stamp > condition.value:
                        return False
            return True

        if sort is None:
            # Creation order; the cursor is a position in it.
            positions, next_position, prev_position = paging.page(
                range(len(lists)), start, size, keep
            )
            page = [lists[position] for position in positions]
        else:
            # The spec's get_lists sort fields (created, id, name, updated); the cursor is an
            # offset in the sorted matches, ties in creation order.
            field = sort.lstrip("-")
            matching = [lists[position] for position in range(len(lists)) if keep(position)]
            matching.sort(key=lambda item: getattr(item, field))
            if sort.startswith("-"):
                matching.reverse()  # ties newest first too
            offsets, next_position, prev_position = paging.page(range(len(matching)), start, size)
            page = [matching[offset] for offset in offsets]
        data = [
            with_relationship_data(list_resource(item, call.base_url), call.options.include)
            for item in page
        ]
    document: dict[str, Any] = {
        "data": data,
        "links": paging.links(call, next_position, prev_position),
    }
    if call.options.include:
        # The emulated account has no tags or flows to include.
        document["included"] = []
    return Reply(200, document)


def create_list(backend: Backend, call: Call) -> Reply:
    attributes = call.body["data"]["attributes"]
    # Klaviyo: lists and subscriptions: names are not checked for uniqueness (UNVERIFIED) ->
    # duplicates
    # are allowed. The 150/day cap is the operation's "daily" rate-limit window.
    created = backend.store.create_list(attributes["name"], attributes.get("opt_in_process"))
    return Reply(201, {"data": list_resource(created, call.base_url), "links": {"self": call.url}})


MEMBER_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
    # Klaviyo: lists and subscriptions: members filter on email, phone_number (any, equals), _kx,
    # joined_group_at.
    "email": (STRING, frozenset({"equals", "any"})),
    "phone_number": (STRING, frozenset({"equals", "any"})),
    "_kx": (STRING, frozenset({"equals"})),
    "joined_group_at": (
        DATETIME,
        frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"}),
    ),
}


def get_profile_ids_for_list(backend: Backend, call: Call) -> Reply:
    size = paging.page_size(call)
    start = paging.cursor_given(call)
    conditions = paging.filters(call, MEMBER_FILTERS)
    sort = call.options.sort
    store = backend.store
    with store.lock:
        klaviyo_list = store.lists.get(call.params["id"])
        if klaviyo_list is None:
            raise not_found(f"List '{call.params['id']}' does not exist.")

        def keep(profile_id: str) -> bool:
            profile = store.profiles[profile_id]
            for condition in conditions:
                if condition.field == "joined_group_at":
                    joined = rules.parse_datetime(klaviyo_list.members[profile_id])
                    if joined is None or not compare_datetimes(
                        condition.operator, joined, condition.value
                    ):
                        return False
                    continue
                value = profile.fields.get(condition.field)
                wanted = condition.value if isinstance(condition.value, list) else [condition.value]
                if value not in wanted:
                    return False
            return True

        if sort is None:
            # Join order; the cursor is a member slot, which later changes never shift.
            slots = klaviyo_list.slots
            positions, next_position, prev_position = paging.page(
                range(len(slots)),
                start,
                size,
                lambda slot: (member := slots[slot]) is not None and keep(member),
            )
            page = [slots[slot] for slot in positions]
        else:
            # The spec's sort on joined_group_at; the cursor is an offset in that order.
            matching = [member for _, member in klaviyo_list.scan(0) if keep(member)]
            matching.sort(key=klaviyo_list.members.__getitem__)
            if sort.startswith("-"):
                matching.reverse()
            offsets, next_position, prev_position = paging.page(range(len(matching)), start, size)
            page = [matching[offset] for offset in offsets]
    data = [{"type": "profile", "id": profile_id} for profile_id in page]
    return Reply(200, {"data": data, "links": paging.links(call, next_position, prev_position)})


def _change_members(backend: Backend, call: Call, add: bool) -> Reply:
    store = backend.store
    ids = [item["id"] for item in call.body["data"]]
    with store.lock:
        klaviyo_list = store.lists.get(call.params["id"])
        if klaviyo_list is None:
            raise not_found(f"List '{call.params['id']}' does not exist.")
        unknown = [(i, pid) for i, pid in enumerate(ids) if pid not in store.profiles]
        if unknown:
            # Emulator choice (UNVERIFIED): an unknown profile id fails the call with 400
            # naming the row, rather than being ignored.
            raise ApiResponseError(
                [
                    ApiError(
                        400,
                        "invalid",
                        f"Profile with id '{pid}' does not exist.",
                        pointer=f"/data/{i}/id",
                    )
                    for i, pid in unknown
                ]
            )
        stamp = iso(now_utc())
        for profile_id in ids:
            if add:
                # Klaviyo: lists and subscriptions: adding an existing member is idempotent
                # (UNVERIFIED).
                klaviyo_list.add(profile_id, stamp)
            else:
                # Klaviyo: lists and subscriptions: removal does not change consent.
                klaviyo_list.remove(profile_id)
    return Reply(204)


def add_profiles_to_list(backend: Backend, call: Call) -> Reply:
    return _change_members(backend, call, add=True)


def remove_profiles_from_list(backend: Backend, call: Call) -> Reply:
    return _change_members(backend, call, add=False)
