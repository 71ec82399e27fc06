"""Subscriptions: explicit consent through the bulk subscribe / unsubscribe jobs.

`behavior: subscribe` sends up to 1,000 profiles a request to
`profile-subscription-bulk-create-jobs`; `behavior: unsubscribe` up to 100 to
`profile-subscription-bulk-delete-jobs` (klaviyo-api.md §4.3). Both answer 202 with no job
to poll: a 202 means every profile of the request was accepted. A 400 whose pointers name
rows rejects those rows with Klaviyo's detail and resends the rest once.

Bodies follow the official schemas `SubscriptionCreateJobCreateQuery` and
`SubscriptionDeleteJobCreateQuery`: subscribe carries `custom_source`, `historical_import`
(when set) and `relationships.list` (when the mapping names a list); unsubscribe carries the
profiles and `relationships.list` (Klaviyo: profiles not in that list are unsubscribed
globally).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.ledger.store import sent_keys
from target_klaviyo.mapping.subscription import SubscriptionMapper
from target_klaviyo.mapping.values import encode
from target_klaviyo.sinks.base import Item, KlaviyoSink, Mapped, Request, row_locator

# klaviyo-api.md §3.1 / §4.3: the pointer of a bad row names its index.
ROWS_POINTER = "/data/attributes/profiles/data"
CUSTOM_SOURCE = "target-klaviyo"
SUBSCRIBE_MAX = 1_000  # klaviyo-api.md §4.3
UNSUBSCRIBE_MAX = 100  # klaviyo-api.md §4.3
# skip_unchanged keys consent per identity across every subscription stream, so that a
# subscribe after an unsubscribe (from another stream) is never skipped as unchanged.
CONSENT_NAMESPACE = "\x00consent"


class SubscriptionSink(KlaviyoSink):
    """`object: subscription` — subscribe or unsubscribe by email and/or phone_number."""

    OBJECT: ClassVar[str] = "subscription"
    unsubscribe: bool = False

    def prepare(self) -> None:
        self.unsubscribe = self.mapping.behavior == "unsubscribe"
        self.operation = (
            "bulk_unsubscribe_profiles" if self.unsubscribe else "bulk_subscribe_profiles"
        )
        self.list_id: str | None = self.run.list_ids.get(self.mapping.pattern)
        self.mapper = SubscriptionMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            self.config.get("default_phone_region"),
        )

    @property
    def MAX_ITEMS(self) -> int:  # type: ignore[override]  # noqa: N802
        return UNSUBSCRIBE_MAX if self.unsubscribe else SUBSCRIBE_MAX

    def map_record(self, record: dict[str, Any]) -> Mapped:
        subscription = self.mapper.map(record)
        return (
            subscription.identity.key(),
            subscription.identity.as_attributes(),
            subscription.resource,
            subscription.size,
            subscription.warnings,
            None,
        )

    def sent_keys(self) -> Callable[[str], int]:
        # Consent belongs to the profile, whichever stream sets it.
        return sent_keys(CONSENT_NAMESPACE, self.OBJECT)

    # -- sending --------------------------------------------------------------------------

    def job_request(self, items: list[Item]) -> Request:
        attributes: dict[str, Any] = {}
        if self.unsubscribe:
            data: dict[str, Any] = {"type": "profile-subscription-bulk-delete-job"}
        else:
            data = {"type": "profile-subscription-bulk-create-job"}
            attributes["custom_source"] = CUSTOM_SOURCE
            if self.mapping.historical_import:
                attributes["historical_import"] = True
        attributes["profiles"] = {"data": [item.payload for item in items]}
        data["attributes"] = attributes
        if self.list_id:
            data["relationships"] = {"list": {"data": {"type": "list", "id": self.list_id}}}
        return Request(encode({"data": data}), row_locator(ROWS_POINTER, len(items)))

    def send(self, items: list[Item]) -> None:
        self.send_rows(self.operation, items, self.job_request, self.accepted)

    def accepted(self, items: list[Item], result: ApiResult) -> None:
        # 202 with no body and no job to poll (klaviyo-api.md §4.3).
        self.loaded(items)
