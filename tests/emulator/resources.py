"""JSON:API documents the emulator answers with (shapes from the spec's response schemas)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from .state import LOCATION_FIELDS, RESPONSE_FIELDS, ImportJob, KlaviyoList, Profile

JSONAPI = "application/vnd.api+json"

TITLES = {
    400: "Invalid input.",
    401: "Incorrect authentication credentials.",
    403: "You do not have permission to perform this action.",
    404: "Not found.",
    405: "Method not allowed.",
    409: "Conflict.",
    410: "Gone.",
    413: "Request entity too large.",
    415: "Unsupported media type.",
    429: "Request was throttled.",
    500: "A server error occurred.",
    503: "Service unavailable.",
}


@dataclass
class ApiError:
    """One entry of a JSON:API ``errors`` array (klaviyo-api.md §7.3)."""

    status: int
    code: str
    detail: str
    pointer: str | None = None
    parameter: str | None = None
    title: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        source: dict[str, str] = {}
        if self.pointer is not None:
            source["pointer"] = self.pointer
        if self.parameter is not None:
            source["parameter"] = self.parameter
        return {
            "id": str(uuid.uuid4()),
            "status": self.status,
            "code": self.code,
            "title": self.title or TITLES.get(self.status, "Error."),
            "detail": self.detail,
            "source": source,
            "links": {},
            "meta": self.meta,
        }


def error_document(errors: Iterable[ApiError]) -> dict[str, Any]:
    return {"errors": [error.to_dict() for error in errors]}


def profile_resource(
    profile: Profile,
    base_url: str,
    fields: set[str] | None = None,
    additional: set[str] | None = None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {name: profile.fields.get(name) for name in RESPONSE_FIELDS}
    attributes.update(
        created=profile.created,
        updated=profile.updated,
        last_event_date=profile.last_event_date,
        location={name: profile.location.get(name) for name in LOCATION_FIELDS},
        properties=dict(profile.properties),
    )
    if additional and "subscriptions" in additional:
        attributes["subscriptions"] = profile.subscriptions
    if fields:
        # Sparse fieldsets: fields[profile]=email,external_id
        attributes = {name: value for name, value in attributes.items() if name in fields}
    self_link = f"{base_url}/api/profiles/{profile.id}/"
    return {
        "type": "profile",
        "id": profile.id,
        "attributes": attributes,
        "relationships": {
            "lists": {
                "links": {
                    "self": f"{self_link}relationships/lists/",
                    "related": f"{self_link}lists/",
                }
            },
            "segments": {
                "links": {
                    "self": f"{self_link}relationships/segments/",
                    "related": f"{self_link}segments/",
                }
            },
        },
        "links": {"self": self_link},
    }


def list_resource(item: KlaviyoList, base_url: str) -> dict[str, Any]:
    self_link = f"{base_url}/api/lists/{item.id}/"
    return {
        "type": "list",
        "id": item.id,
        "attributes": {
            "name": item.name,
            "created": item.created,
            "updated": item.updated,
            "opt_in_process": item.opt_in_process,
        },
        "relationships": {
            "profiles": {
                "links": {
                    "self": f"{self_link}relationships/profiles/",
                    "related": f"{self_link}profiles/",
                }
            },
        },
        "links": {"self": self_link},
    }


def job_resource(job: ImportJob, base_url: str) -> dict[str, Any]:
    self_link = f"{base_url}/api/profile-bulk-import-jobs/{job.id}/"
    return {
        "type": "profile-bulk-import-job",
        "id": job.id,
        "attributes": {
            "status": job.status,
            "created_at": job.created_at,
            "total_count": job.total_count,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": job.completed_at,
            "expires_at": job.expires_at,
            "started_at": job.started_at,
        },
        "relationships": {
            "lists": {
                "data": [{"type": "list", "id": list_id} for list_id in job.list_ids],
                "links": {
                    "self": f"{self_link}relationships/lists/",
                    "related": f"{self_link}lists/",
                },
            },
            "profiles": {
                "links": {
                    "self": f"{self_link}relationships/profiles/",
                    "related": f"{self_link}profiles/",
                }
            },
            "import-errors": {"links": {"related": f"{self_link}import-errors/"}},
        },
        "links": {"self": self_link},
    }


def import_error_resource(error: dict[str, Any]) -> dict[str, Any]:
    attributes = {key: value for key, value in error.items() if key != "id"}
    return {"type": "import-error", "id": error["id"], "attributes": attributes}


def account_resource(public_key: str, base_url: str) -> dict[str, Any]:
    return {
        "type": "account",
        "id": public_key,
        "attributes": {
            "test_account": False,
            "contact_information": {
                "default_sender_name": "Emulated Store",
                "default_sender_email": "marketing@emulated-store.example",
                "website_url": "https://emulated-store.example",
                "organization_name": "Emulated Store",
                "street_address": {
                    "address1": "1 Loopback Way",
                    "address2": None,
                    "city": "Boston",
                    "region": "MA",
                    "country": "US",
                    "zip": "02110",
                },
            },
            "industry": "Retail",
            "timezone": "America/New_York",
            "preferred_currency": "USD",
            "public_api_key": public_key,
            "locale": "en-US",
        },
        "links": {"self": f"{base_url}/api/accounts/{public_key}/"},
    }
