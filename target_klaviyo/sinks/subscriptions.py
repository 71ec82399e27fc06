"""Subscriptions: explicit consent (being written)."""

from __future__ import annotations

from target_klaviyo.sinks.base import KlaviyoSink


class SubscriptionSink(KlaviyoSink):
    OBJECT = "subscription"
    MAX_ITEMS = 1_000

    def setup(self) -> None:
        raise NotImplementedError("subscription mappings are not available yet")
