"""A minimal Klaviyo client and payload builders for the emulator's own tests."""

from __future__ import annotations

import json
from typing import Any

import requests

REVISION = "2026-07-15"
JSONAPI = "application/vnd.api+json"


class Client:
    """Sends raw requests to an emulator (or anything speaking Klaviyo's API)."""

    def __init__(self, base_url: str, key: str | None, revision: str | None = REVISION) -> None:
        self.base_url = base_url
        self.session = requests.Session()
        self.headers: dict[str, str] = {"accept": JSONAPI, "content-type": JSONAPI}
        if key is not None:
            self.headers["Authorization"] = f"Klaviyo-API-Key {key}"
        if revision is not None:
            self.headers["revision"] = revision

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30,
    ) -> requests.Response:
        data = raw if raw is not None else None if body is None else encode(body)
        url = path if path.startswith("http") else self.base_url + path
        return self.session.request(
            method,
            url,
            data=data,
            params=params,
            headers={**self.headers, **(headers or {})},
            timeout=timeout,
        )

    def get(self, path: str, **params: str) -> requests.Response:
        return self.request("GET", path, params=params or None)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, body, **kwargs)

    def delete(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.request("DELETE", path, body, **kwargs)


def encode(body: Any) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def profile(attributes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "profile", "attributes": attributes, **extra}


def profile_import(attributes: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"data": profile(attributes, **extra)}


def bulk_import(rows: list[dict[str, Any]], lists: list[str] | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-bulk-import-job",
        "attributes": {"profiles": {"data": rows}},
    }
    if lists:
        data["relationships"] = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
    return {"data": data}


def create_list(name: str, **attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "list", "attributes": {"name": name, **attributes}}}


def members(profile_ids: list[str]) -> dict[str, Any]:
    return {"data": [{"type": "profile", "id": pid} for pid in profile_ids]}


def event(metric: str = "Placed Order", **attributes: Any) -> dict[str, Any]:
    """Attributes of one event inside a bulk entry."""
    return {
        "type": "event",
        "attributes": {
            "metric": {"data": {"type": "metric", "attributes": {"name": metric}}},
            "properties": attributes.pop("properties", {}),
            **attributes,
        },
    }


def single_event(profile_attributes: dict[str, Any], metric: str = "Placed Order",
                 **attributes: Any) -> dict[str, Any]:  # fmt: skip
    body = event(metric, **attributes)
    body["attributes"]["profile"] = {"data": profile(profile_attributes)}
    return {"data": body}


def bulk_events(entries: list[tuple[dict[str, Any], list[dict[str, Any]]]]) -> dict[str, Any]:
    """``entries``: (profile attributes, [event(...)]) pairs."""
    return {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": profile(attrs)},
                                "events": {"data": events},
                            },
                        }
                        for attrs, events in entries
                    ]
                }
            },
        }
    }


def subscribe(
    rows: list[dict[str, Any]],
    list_id: str | None = None,
    historical_import: bool | None = None,
    custom_source: str | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {"profiles": {"data": rows}}
    if historical_import is not None:
        attributes["historical_import"] = historical_import
    if custom_source is not None:
        attributes["custom_source"] = custom_source
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-create-job",
        "attributes": attributes,
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def unsubscribe(rows: list[dict[str, Any]], list_id: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "profile-subscription-bulk-delete-job",
        "attributes": {"profiles": {"data": rows}},
    }
    if list_id:
        data["relationships"] = {"list": {"data": {"type": "list", "id": list_id}}}
    return {"data": data}


def consent_row(
    email: str | None = None,
    phone: str | None = None,
    channels: tuple[str, ...] = ("email",),
    consented_at: str | None = None,
    consent: str = "SUBSCRIBED",
) -> dict[str, Any]:
    leaf: dict[str, Any] = {"consent": consent}
    if consented_at is not None:
        leaf["consented_at"] = consented_at
    attributes: dict[str, Any] = {
        "subscriptions": {channel: {"marketing": dict(leaf)} for channel in channels}
    }
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    return profile(attributes)


def suppression(
    emails: list[str] | None = None,
    *,
    list_id: str | None = None,
    segment_id: str | None = None,
    remove: bool = False,
) -> dict[str, Any]:
    """A bulk suppress body (``remove=True``: bulk unsuppress) by emails, list or segment."""
    kind = (
        "profile-suppression-bulk-delete-job" if remove else "profile-suppression-bulk-create-job"
    )
    attributes: dict[str, Any] = {}
    if emails is not None:
        rows = [{"type": "profile", "attributes": {"email": email}} for email in emails]
        attributes["profiles"] = {"data": rows}
    data: dict[str, Any] = {"type": kind, "attributes": attributes}
    relationships: dict[str, Any] = {}
    if list_id is not None:
        relationships["list"] = {"data": {"type": "list", "id": list_id}}
    if segment_id is not None:
        relationships["segment"] = {"data": {"type": "segment", "id": segment_id}}
    if relationships:
        data["relationships"] = relationships
    return {"data": data}


CATALOG_PREFIX = "$custom:::$default:::"
CATALOG_TYPES = {
    "items": "catalog-item",
    "variants": "catalog-variant",
    "categories": "catalog-category",
}


def catalog_item(
    external_id: str, categories: list[str] | None = None, **attributes: Any
) -> dict[str, Any]:
    """An item to create: the spec's required title, description and url, and ``attributes``."""
    values = {
        "title": f"Item {external_id}",
        "description": "",
        "url": f"https://shop.example/{external_id}",
    }
    resource: dict[str, Any] = {
        "type": "catalog-item",
        "attributes": {"external_id": external_id, **values, **attributes},
    }
    if categories is not None:
        resource["relationships"] = {
            "categories": {"data": [{"type": "catalog-category", "id": c} for c in categories]}
        }
    return resource


def catalog_variant(external_id: str, item_id: str, **attributes: Any) -> dict[str, Any]:
    values = {
        "title": f"Variant {external_id}",
        "description": "",
        "sku": external_id,
        "inventory_quantity": 1,
        "price": 1.0,
        "url": f"https://shop.example/v/{external_id}",
    }
    return {
        "type": "catalog-variant",
        "attributes": {"external_id": external_id, **values, **attributes},
        "relationships": {"item": {"data": {"type": "catalog-item", "id": item_id}}},
    }


def catalog_category(
    external_id: str, name: str | None = None, items: list[str] | None = None
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": "catalog-category",
        "attributes": {"external_id": external_id, "name": name or external_id},
    }
    if items is not None:
        resource["relationships"] = {
            "items": {"data": [{"type": "catalog-item", "id": i} for i in items]}
        }
    return resource


def catalog_update(
    plural: str, resource_id: str, relationships: dict[str, Any] | None = None, **attributes: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "type": CATALOG_TYPES[plural],
        "id": resource_id,
        "attributes": attributes,
    }
    if relationships is not None:
        resource["relationships"] = relationships
    return resource


def catalog_delete(plural: str, resource_id: str) -> dict[str, Any]:
    return {"type": CATALOG_TYPES[plural], "id": resource_id}


def catalog_job(plural: str, action: str, resources: list[dict[str, Any]]) -> dict[str, Any]:
    """A bulk catalog job body, e.g. ``catalog_job("items", "create", [catalog_item("A")])``."""
    return {
        "data": {
            "type": f"{CATALOG_TYPES[plural]}-bulk-{action}-job",
            "attributes": {plural: {"data": resources}},
        }
    }
