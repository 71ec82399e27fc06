"""JSON:API documents the emulator answers with (shapes from the spec's response schemas)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from .catalog import CATEGORY, ITEM, PATHS, PLURALS, RESOURCE_TYPES, VARIANT, Entry
from .state import (
    LOCATION_FIELDS,
    RESPONSE_FIELDS,
    CatalogJob,
    DataSource,
    ImportJob,
    KlaviyoList,
    Profile,
    SuppressionJob,
)

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
    501: "Not implemented.",
    503: "Service unavailable.",
}


@dataclass
class ApiError:
    """One entry of a JSON:API ``errors`` array (Klaviyo: rate limits and errors)."""

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


# The spec's ProfileResponse relationships: POST answers have lists, segments and push-tokens;
# get_profiles adds conversations.
PROFILE_RELATIONSHIPS = ("lists", "segments", "push-tokens")


def profile_resource(
    profile: Profile,
    base_url: str,
    additional: frozenset[str] | set[str] | None = None,
    relationships: tuple[str, ...] = PROFILE_RELATIONSHIPS,
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
        attributes["subscriptions"] = subscriptions_resource(
            profile.subscriptions, profile.suppressions
        )
    if additional and "predictive_analytics" in additional:
        # Predictions are not modelled: every figure is null (the spec makes each nullable).
        attributes["predictive_analytics"] = dict.fromkeys(PREDICTIVE_ANALYTICS)
    self_link = f"{base_url}/api/profiles/{profile.id}/"
    return {
        "type": "profile",
        "id": profile.id,
        "attributes": attributes,
        "relationships": {
            name: {
                "links": {
                    "self": f"{self_link}relationships/{name}/",
                    "related": f"{self_link}{name}/",
                }
            }
            for name in relationships
        },
        "links": {"self": self_link},
    }


# The spec's PredictiveAnalytics attributes.
PREDICTIVE_ANALYTICS = (
    "historic_clv",
    "predicted_clv",
    "total_clv",
    "historic_number_of_orders",
    "predicted_number_of_orders",
    "average_days_between_orders",
    "average_order_value",
    "churn_probability",
    "expected_date_of_next_order",
    "ranked_channel_affinity",
)


def subscriptions_resource(
    stored: dict[str, Any], suppressions: list[dict[str, str]] | None = None
) -> dict[str, Any]:
    """A profile's consent as the spec's ``Subscriptions`` object (additional-fields[profile]).

    The spec's descriptions: ``can_receive_email_marketing`` is "True if [the] profile does not
    have any global suppressions"; ``can_receive_sms_marketing`` "whether or not this profile is
    subscribed"; ``custom_method_detail`` is the detail the caller gave when subscribing (bulk
    subscribe's ``custom_source``). An email unsubscribe is a global UNSUBSCRIBE suppression,
    which a later subscribe removes (Klaviyo: lists and subscriptions); the other suppressions
    (USER_SUPPRESSED from bulk suppress, HARD_BOUNCE, ...) are kept on the profile
    (Klaviyo: profile suppressions). Entries are in time order.
    """
    email = _leaf(stored, "email", "marketing")
    entries: list[dict[str, Any]] = [dict(entry) for entry in suppressions or ()]
    if email.get("consent") == "UNSUBSCRIBED":
        entries.append({"reason": "UNSUBSCRIBE", "timestamp": email.get("last_updated")})
    entries.sort(key=lambda entry: entry["timestamp"] or "")
    return {
        "email": {
            "marketing": {
                **_consent(email, "can_receive_email_marketing", can_receive=not entries),
                "custom_method_detail": email.get("method_detail"),
                "double_optin": False if email.get("consent") == "SUBSCRIBED" else None,
                "suppression": entries,
                "list_suppressions": [],
            },
        },
        "sms": {
            "marketing": _consent(_leaf(stored, "sms", "marketing"), "can_receive_sms_marketing"),
            "transactional": _consent(
                _leaf(stored, "sms", "transactional"), "can_receive_sms_transactional"
            ),
        },
        "mobile_push": {
            "marketing": {
                key: value
                for key, value in _consent(
                    _leaf(stored, "push", "marketing"), "can_receive_push_marketing"
                ).items()
                if key in ("can_receive_push_marketing", "consent", "consent_timestamp")
            }
        },
        "whatsapp": {
            kind: _whatsapp(_leaf(stored, "whatsapp", kind))
            for kind in ("marketing", "transactional", "conversational")
        },
    }


def _leaf(stored: dict[str, Any], channel: str, kind: str) -> dict[str, Any]:
    leaf = (stored.get(channel) or {}).get(kind)
    return leaf if isinstance(leaf, dict) else {}


def _consent(leaf: dict[str, Any], flag: str, can_receive: bool | None = None) -> dict[str, Any]:
    consent = leaf.get("consent") or "NEVER_SUBSCRIBED"
    if consent == "SUBSCRIBED":
        stamp = leaf.get("consented_at")
    elif consent == "UNSUBSCRIBED":
        stamp = leaf.get("last_updated")
    else:
        stamp = None
    return {
        flag: consent == "SUBSCRIBED" if can_receive is None else can_receive,
        "consent": consent,
        "consent_timestamp": stamp,
        "last_updated": leaf.get("last_updated"),
        "method": leaf.get("method"),
        "method_detail": "",
    }


def _whatsapp(leaf: dict[str, Any]) -> dict[str, Any]:
    consent = _consent(leaf, "can_receive")
    return {
        "consent": consent["consent"],
        "consent_timestamp": consent["consent_timestamp"],
        "last_updated": consent["last_updated"],
        "created_timestamp": None,
        "metadata": None,
        "can_receive": consent["can_receive"],
        "valid_until": None,
        "phone_number": None,
    }


def with_relationship_data(resource: dict[str, Any], names: frozenset[str]) -> dict[str, Any]:
    """Fill ``relationships.<name>.data`` for included relationships the emulated account has
    nothing in (tags, flows, push tokens, conversations are not modelled: empty)."""
    for name in names:
        relationship = resource.setdefault("relationships", {}).setdefault(name, {})
        relationship.setdefault("data", [])
    return resource


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
            # The spec's list resource relationships.
            name: {
                "links": {
                    "self": f"{self_link}relationships/{name}/",
                    "related": f"{self_link}{name}/",
                }
            }
            for name in ("profiles", "tags", "flow-triggers")
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
                "data": [{"type": "list", "id": list_id} for list_id in job.resolved_ids],
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


def suppression_job_resource(job: SuppressionJob, base_url: str) -> dict[str, Any]:
    """The spec's BulkProfileSuppressionsCreateJob / ...RemoveJob response object."""
    path = "profile-suppression-bulk-create-jobs"
    if job.type != "profile-suppression-bulk-create-job":
        path = "profile-suppression-bulk-delete-jobs"
    self_link = f"{base_url}/api/{path}/{job.id}/"
    return {
        "type": job.type,
        "id": job.id,
        "attributes": {
            "status": job.status,
            "created_at": job.created_at,
            "total_count": job.total_count,
            "completed_count": job.completed_count,
            "skipped_count": job.skipped_count,
            "completed_at": job.completed_at,
        },
        "relationships": {
            name: {
                "data": [{"type": kind, "id": related}] if related else [],
                "links": {
                    "self": f"{self_link}relationships/{name}/",
                    "related": f"{self_link}{name}/",
                },
            }
            for name, kind, related in (
                ("lists", "list", job.list_id),
                ("segments", "segment", job.segment_id),
            )
        },
        "links": {"self": self_link},
    }


def _links(self_link: str, name: str) -> dict[str, str]:
    return {"self": f"{self_link}relationships/{name}/", "related": f"{self_link}{name}/"}


def catalog_self_link(kind: str, entry_id: str, base_url: str) -> str:
    # Compound ids keep "$" and ":" (allowed in a path); anything else is percent-encoded.
    return f"{base_url}/api/{PATHS[kind]}/{quote(entry_id, safe='$:')}/"


def catalog_resource(
    kind: str, entry: Entry, base_url: str, variants: bool = False
) -> dict[str, Any]:
    """A catalog item, variant or category as the spec's Catalog*ResponseObjectResource.

    ``variants``: an item's ``relationships.variants.data`` (``include=variants``).
    """
    self_link = catalog_self_link(kind, entry.id, base_url)
    attributes: dict[str, Any] = {"external_id": entry.external_id, **entry.attributes}
    if kind != CATEGORY:
        attributes["created"] = entry.created
    attributes["updated"] = entry.updated
    relationships: dict[str, Any]
    if kind == ITEM:
        relationships = {"variants": {"links": _links(self_link, "variants")}}
        if variants:
            relationships["variants"]["data"] = [
                {"type": RESOURCE_TYPES[VARIANT], "id": variant_id} for variant_id in entry.variants
            ]
    elif kind == VARIANT:
        relationships = {
            "item": {
                "data": {"type": RESOURCE_TYPES[ITEM], "id": entry.item_id},
                "links": _links(self_link, "item"),
            }
        }
    else:
        relationships = {"items": {"links": _links(self_link, "items")}}
    return {
        "type": RESOURCE_TYPES[kind],
        "id": entry.id,
        "attributes": attributes,
        "relationships": relationships,
        "links": {"self": self_link},
    }


def catalog_job_resource(job: CatalogJob, base_url: str) -> dict[str, Any]:
    """The spec's Catalog{Item,Variant,Category}{Create,Update,Delete}JobResponseObjectResource."""
    self_link = f"{base_url}/api/{RESOURCE_TYPES[job.kind]}-bulk-{job.action}-jobs/{job.id}/"
    plural = PLURALS[job.kind]
    return {
        "type": job.type,
        "id": job.id,
        "attributes": {
            "status": job.status,
            "created_at": job.created_at,
            "total_count": job.total_count,
            "completed_count": job.completed_count,
            "failed_count": job.failed_count,
            "completed_at": job.completed_at,
            "errors": [dict(error) for error in job.errors],
            "expires_at": job.expires_at,
        },
        "relationships": {
            plural: {
                "data": [
                    {"type": RESOURCE_TYPES[job.kind], "id": resource_id}
                    for resource_id in job.resource_ids
                ],
                "links": _links(self_link, plural),
            }
        },
        "links": {"self": self_link},
    }


def data_source_resource(source: DataSource, base_url: str) -> dict[str, Any]:
    """The spec's DataSourceResponseObjectResource."""
    return {
        "type": "data-source",
        "id": source.id,
        "attributes": {
            "title": source.title,
            "visibility": source.visibility,
            "description": source.description,
            "namespace": source.namespace,
        },
        "links": {"self": f"{base_url}/api/data-sources/{source.id}/"},
    }
