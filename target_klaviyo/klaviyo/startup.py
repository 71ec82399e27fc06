"""The start-up check (README: Quick start): key, scopes, public key and every configured list,
before any input is read. Also run alone by `--test-connection`."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from target_klaviyo.klaviyo.client import (
    ApiResult,
    KlaviyoAuthError,
    KlaviyoClient,
    page_data,
    pages,
)
from target_klaviyo.klaviyo.filters import equals
from target_klaviyo.settings import Settings
from target_klaviyo.streams import StreamMapping

LOGGER = logging.getLogger("target-klaviyo")


class StartupError(RuntimeError):
    """The account is not usable as configured; one line says why."""


def _require(result: ApiResult, what: str) -> Any:
    if result.exhausted:
        raise StartupError(f"could not reach Klaviyo to check {what}: {result.describe()}")
    if not result.ok:
        raise StartupError(f"checking {what} failed: {result.describe()}")
    return result.body


def check_key(client: KlaviyoClient) -> None:
    """A cheap read: 401 for a wrong key, 403 naming the scope (raised by the client)."""
    _require(client.request("get_profiles", params={"page[size]": 1}), "the private API key")


def check_public_key(client: KlaviyoClient, public_key: str) -> None:
    body = _require(client.request("get_accounts"), "the public API key")
    accounts = body.get("data") or []
    found = [a.get("attributes", {}).get("public_api_key") for a in accounts]
    if public_key not in found:
        raise StartupError(
            f"public_api_key {public_key!r} does not match the account of the private key"
            f" (its public key is {', '.join(map(str, found)) or 'unknown'})"
        )


def _lists_matching(client: KlaviyoClient, filter_expr: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for page in pages(client, "get_lists", {"filter": filter_expr, "page[size]": 10}):
        _require(page, "the lists")
        found.extend(page_data(page))
    return found


def resolve_list(client: KlaviyoClient, mapping: StreamMapping) -> str:
    where = f"streams.{mapping.pattern}"
    if mapping.list_id:
        if not _lists_matching(client, equals("id", mapping.list_id)):
            raise StartupError(f"{where}.list_id: Klaviyo has no list with id {mapping.list_id!r}")
        return mapping.list_id
    name = mapping.list_name
    assert name is not None
    matches = _lists_matching(client, equals("name", name))
    return _the_one_named(client, LIST, where, name, matches, create=mapping.create_list)


@dataclass(frozen=True)
class _Named:
    """A kind of Klaviyo object a mapping names: a list by its name, a data source by its
    title (the mapping's `<key>_id`, `<key>_name` and `create_<key>`)."""

    noun: str
    plural: str
    verb: str
    key: str
    create_operation: str
    resource_type: str
    attribute: str


LIST = _Named("list", "lists", "named", "list", "create_list", "list", "name")
DATA_SOURCE = _Named(
    "data source",
    "data sources",
    "titled",
    "data_source",
    "create_data_source",
    "data-source",
    "title",
)


def _the_one_named(
    client: KlaviyoClient,
    what: _Named,
    where: str,
    name: str,
    matches: list[dict[str, Any]],
    *,
    create: bool,
) -> str:
    """The id of the one object of `matches` (those named `name`); created when there is
    none and the mapping asks for it; a clear error when there are several or none."""
    if len(matches) > 1:
        ids = ", ".join(str(item.get("id")) for item in matches)
        raise StartupError(
            f"{where}.{what.key}_name: {len(matches)} {what.plural} are {what.verb} {name!r}"
            f" ({ids}); use {what.key}_id"
        )
    if matches:
        return str(matches[0]["id"])
    if not create:
        raise StartupError(
            f"{where}.{what.key}_name: Klaviyo has no {what.noun} {what.verb} {name!r}"
            f" (set create_{what.key}: true to create it)"
        )
    body = json.dumps(
        {"data": {"type": what.resource_type, "attributes": {what.attribute: name}}}
    ).encode()
    created = _require(
        client.request(what.create_operation, body=body), f"creating {what.noun} {name!r}"
    )
    return str(created["data"]["id"])


# Reads that need the scopes a mapping's run reads with (its jobs are followed through these
# lists): a key without the scope gets 403 naming it. Klaviyo has no way to check a write scope
# (subscriptions:write, data-privacy:write) short of writing; a missing one stops the run at its
# first request, naming the scope.
SCOPE_READS: dict[tuple[str, str], str] = {
    ("suppression", "suppress"): "get_bulk_suppress_profiles_jobs",
    ("suppression", "unsuppress"): "get_bulk_unsuppress_profiles_jobs",
}


def check_scopes(client: KlaviyoClient, mapping: StreamMapping) -> None:
    operation = SCOPE_READS.get(mapping.route)
    if operation is not None:
        _require(client.request(operation), f"the scopes of streams.{mapping.pattern}")
    if mapping.object == "deletion":
        LOGGER.info(
            "streams.%s: data-privacy:write cannot be checked without requesting a deletion; "
            "a key without it stops the run at the first request, naming the scope",
            mapping.pattern,
        )


def resolve_data_source(client: KlaviyoClient, mapping: StreamMapping) -> str:
    """The id of a custom_object mapping's data source (created when asked to)."""
    where = f"streams.{mapping.pattern}"
    # Klaviyo's get_data_sources takes no filter: read them all (an account has a few).
    sources: list[dict[str, Any]] = []
    for page in pages(client, "get_data_sources", {"page[size]": 100}):
        _require(page, "the data sources")
        sources.extend(page_data(page))
    if mapping.data_source_id:
        if not any(str(source.get("id")) == mapping.data_source_id for source in sources):
            raise StartupError(
                f"{where}.data_source_id: Klaviyo has no data source with id "
                f"{mapping.data_source_id!r}"
            )
        return mapping.data_source_id
    name = mapping.data_source_name
    assert name is not None
    matches = [s for s in sources if (s.get("attributes") or {}).get("title") == name]
    return _the_one_named(
        client, DATA_SOURCE, where, name, matches, create=mapping.create_data_source
    )


def check_catalogs(client: KlaviyoClient) -> None:
    """A catalog mapping needs the catalogs scopes: a cheap read names a missing one (403)."""
    _require(client.request("get_catalog_items", params={"page[size]": 1}), "the catalog")


def check_account(client: KlaviyoClient, settings: Settings) -> dict[str, str]:
    """Run every check; return the list id of each list or subscription mapping, and the
    data source id of each custom_object mapping (both by mapping pattern)."""
    check_key(client)
    if settings.public_api_key:
        check_public_key(client, settings.public_api_key)
    resolved_ids: dict[str, str] = {}
    for mapping in settings.streams.mappings:
        if mapping.list_id or mapping.list_name:
            resolved_ids[mapping.pattern] = resolve_list(client, mapping)
        check_scopes(client, mapping)
        if mapping.object == "custom_object":
            resolved_ids[mapping.pattern] = resolve_data_source(client, mapping)
    if any(mapping.object.startswith("catalog_") for mapping in settings.streams.mappings):
        check_catalogs(client)
    return resolved_ids


def account_of(client: KlaviyoClient, *, may_fail: bool = True) -> str | None:
    """The id of the key's account, or None when the key may not read it (or, `may_fail`,
    when Klaviyo did not answer; otherwise that raises StartupError)."""
    try:
        result = client.request("get_accounts")
    except KlaviyoAuthError:
        return None
    if not result.ok:
        if may_fail or result.status in (401, 403):
            return None
        raise StartupError(f"Klaviyo did not tell the key's account: {result.describe()}")
    accounts = page_data(result)
    return str(accounts[0].get("id")) if accounts and accounts[0].get("id") else None
