"""Subscriptions: explicit consent through Klaviyo's bulk subscribe and unsubscribe jobs.

`subscribe` sends up to 1,000 profiles a request to `profile-subscription-bulk-create-jobs`;
`unsubscribe` up to 100 to `profile-subscription-bulk-delete-jobs`. Both answer 202 with no job
to poll: a 202 means every profile of the request was accepted. Bodies follow the spec's
`SubscriptionCreateJobCreateQuery` and `SubscriptionDeleteJobCreateQuery`: subscribe carries
`custom_source`, `historical_import` (when set) and `relationships.list` (when the mapping names
a list); unsubscribe carries the profiles and `relationships.list` (Klaviyo: profiles not in
that list are unsubscribed globally).
"""

from __future__ import annotations

from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.mapping.subscription import SubscriptionMapper
from target_klaviyo.mapping.values import encode
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.protocol import row_locator
from target_klaviyo.sinks.base import KlaviyoSink

# The pointer of a bad row names its index.
ROWS_POINTER = "/data/attributes/profiles/data"
CUSTOM_SOURCE = "target-klaviyo"
# Consent belongs to the profile, whichever stream sets it: skip_unchanged keys it per identity
# across every subscription stream, so that a subscribe after an unsubscribe (from another
# stream) is never skipped as unchanged.
CONSENT_NAMESPACE = "\x00consent"


class SubscriptionSink(KlaviyoSink):
    """What subscribe and unsubscribe share: the mapping, the list, the request envelope."""

    OBJECT: ClassVar[str] = "subscription"
    OPERATION: ClassVar[str]
    JOB_TYPE: ClassVar[str]

    def prepare(self) -> None:
        self.list_id: str | None = self.run.resolved_ids.get(self.mapping.pattern)
        self.mapper = SubscriptionMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            self.run.settings.default_phone_region,
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        subscription = self.mapper.map(record)
        identity = subscription.identity
        return mapped(
            (
                identity.key(),
                identity.as_attributes(),
                subscription.resource,
                subscription.size,
                subscription.warnings,
                None,
            )
        )

    def unchanged_namespace(self) -> str:
        return CONSENT_NAMESPACE

    def job_attributes(self) -> dict[str, Any]:
        """The job's attributes other than its profiles."""
        return {}

    def job_request(self, items: list[Item]) -> Request:
        attributes = self.job_attributes()
        attributes["profiles"] = {"data": [item.payload for item in items]}
        data: dict[str, Any] = {"type": self.JOB_TYPE, "attributes": attributes}
        if self.list_id:
            data["relationships"] = {"list": {"data": {"type": "list", "id": self.list_id}}}
        return Request(encode({"data": data}), row_locator(ROWS_POINTER, len(items)))

    def send(self, items: list[Item]) -> None:
        self.protocol.send(self.OPERATION, items, self.job_request, self.accepted)

    def accepted(self, items: list[Item], result: ApiResult) -> None:
        # 202 with no body and no job to poll.
        self.outcomes.mark_loaded(items)


class SubscribeSink(SubscriptionSink):
    """`object: subscription`, `behavior: subscribe`."""

    BEHAVIOR: ClassVar[str] = "subscribe"
    MAX_ITEMS: ClassVar[int] = 1_000  # profiles per bulk subscribe request
    OPERATION: ClassVar[str] = "bulk_subscribe_profiles"
    JOB_TYPE: ClassVar[str] = "profile-subscription-bulk-create-job"

    def job_attributes(self) -> dict[str, Any]:
        attributes: dict[str, Any] = {"custom_source": CUSTOM_SOURCE}
        if self.mapping.historical_import:
            attributes["historical_import"] = True
        return attributes


class UnsubscribeSink(SubscriptionSink):
    """`object: subscription`, `behavior: unsubscribe`."""

    BEHAVIOR: ClassVar[str] = "unsubscribe"
    MAX_ITEMS: ClassVar[int] = 100  # profiles per bulk unsubscribe request
    OPERATION: ClassVar[str] = "bulk_unsubscribe_profiles"
    JOB_TYPE: ClassVar[str] = "profile-subscription-bulk-delete-job"
