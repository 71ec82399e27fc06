"""Removing profiles from a list, by their identifiers.

Klaviyo removes list members by profile id only (`DELETE /api/lists/{id}/relationships/profiles`,
at most 1,000 ids a call). Identities are first resolved to ids with
`GET /api/profiles?filter=any(...)` — by email, then phone_number, then external_id for what is
still unresolved; at most 100 values a filter, kept to a URL length that proxies accept. An
identity Klaviyo does not know is no member. Used by list `delete`, mirror passes and privacy
deletions (which look profiles up the same way).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from target_klaviyo.klaviyo.client import ApiResult, Requester, page_data, pages
from target_klaviyo.klaviyo.fields import IDENTIFIER_FIELDS
from target_klaviyo.klaviyo.filters import any_of
from target_klaviyo.mapping.values import encode

FILTER_MAX_VALUES = 100  # values in one any(...) filter of get_profiles
FILTER_MAX_CHARS = 6_000  # a lookup URL well under common URL length limits
PAGE_SIZE = 100  # get_profiles' largest page
REMOVE_MAX_IDS = 1_000  # ids per remove_profiles_from_list call


@dataclass
class Removal:
    """What became of each identity (by position) in a removal."""

    unknown: list[int] = field(default_factory=list)  # Klaviyo has no such profile
    removed: list[int] = field(default_factory=list)
    failed: list[tuple[list[int], ApiResult]] = field(default_factory=list)  # per failed call
    lookup_failure: ApiResult | None = None  # the ids could not be looked up: nothing removed


def _normal(field_name: str, value: Any) -> str:
    text = str(value)
    return text.lower() if field_name == "email" else text


def profile_ids_by(
    client: Requester, field_name: str, values: Sequence[str]
) -> tuple[dict[str, str], ApiResult | None]:
    """Klaviyo's profile id for each of these values of `field_name` (an identifier, or `id`)
    it has a profile for, keyed by the value (emails in lower case); and the first failed
    lookup, if any."""
    found: dict[str, str] = {}
    for batch in _filter_batches(field_name, values):
        params = {
            "filter": any_of(field_name, batch),
            "page[size]": PAGE_SIZE,
            "fields[profile]": ",".join(IDENTIFIER_FIELDS),
        }
        for page in pages(client, "get_profiles", params):
            if not page.ok:
                return found, page
            for profile in page_data(page):
                profile_id = profile.get("id")
                if profile_id is None:
                    continue
                attributes = profile.get("attributes") or {}
                value = profile_id if field_name == "id" else attributes.get(field_name)
                if value is not None:
                    found.setdefault(_normal(field_name, value), str(profile_id))
    return found, None


def resolve_profile_ids(
    client: Requester, identities: Sequence[Mapping[str, Any]]
) -> tuple[dict[int, str], ApiResult | None]:
    """The Klaviyo profile id of each identity Klaviyo knows, by position; and the first
    failed lookup, if any."""
    found: dict[int, str] = {}
    for field_name in IDENTIFIER_FIELDS:
        wanted: dict[str, list[int]] = {}
        for position, identity in enumerate(identities):
            value = identity.get(field_name)
            if position not in found and value is not None:
                wanted.setdefault(_normal(field_name, value), []).append(position)
        ids, failure = profile_ids_by(client, field_name, list(wanted))
        for value, profile_id in ids.items():
            for position in wanted[value]:
                found.setdefault(position, profile_id)
        if failure is not None:
            return found, failure
    return found, None


def _filter_batches(field_name: str, values: Sequence[str]) -> Iterable[list[str]]:
    batch: list[str] = []
    chars = 0
    for value in values:
        size = len(quote(any_of(field_name, [value]), safe=""))
        if batch and (len(batch) >= FILTER_MAX_VALUES or chars + size > FILTER_MAX_CHARS):
            yield batch
            batch, chars = [], 0
        batch.append(value)
        chars += size
    if batch:
        yield batch


def remove_members(
    client: Requester, list_id: str, identities: Sequence[Mapping[str, Any]]
) -> Removal:
    """Resolve the identities to profile ids and remove those from the list."""
    found, failure = resolve_profile_ids(client, identities)
    if failure is not None:
        return Removal(lookup_failure=failure)
    removal = Removal(unknown=[i for i in range(len(identities)) if i not in found])
    positions_of: dict[str, list[int]] = {}
    for position, profile_id in found.items():
        positions_of.setdefault(profile_id, []).append(position)
    ids = list(positions_of)
    for start in range(0, len(ids), REMOVE_MAX_IDS):
        batch = ids[start : start + REMOVE_MAX_IDS]
        positions = [p for profile_id in batch for p in positions_of[profile_id]]
        body = encode({"data": [{"type": "profile", "id": profile_id} for profile_id in batch]})
        result = client.request("remove_profiles_from_list", body=body, path_params={"id": list_id})
        if result.ok:
            removal.removed.extend(positions)
        else:
            removal.failed.append((positions, result))
    return removal
