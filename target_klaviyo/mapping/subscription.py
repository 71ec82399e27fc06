"""Map a record to a profile entry of a bulk subscribe / unsubscribe job (explicit consent).

Shapes follow the official schemas ``ProfileSubscriptionCreateQueryResourceObject`` and
``ProfileSubscriptionDeleteQueryResourceObject``: attributes ``email``, ``phone_number`` and
``subscriptions.<channel>.marketing`` with ``consent`` (and ``consented_at`` for a historical
import subscribe only; the unsubscribe schema has no ``consented_at``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from target_klaviyo.mapping.event import utc_now
from target_klaviyo.mapping.identity import (
    Identity,
    Rejection,
    blank,
    normalise_email,
    normalise_phone,
    show,
)
from target_klaviyo.mapping.profile import standard_columns
from target_klaviyo.mapping.values import encoded_size, format_seconds, parse_instant
from target_klaviyo.streams import StreamMapping

__all__ = ["MappedSubscription", "SubscriptionMapper"]

NO_SUBSCRIPTION_IDENTIFIER = "subscriptions need email or phone_number"


@dataclass(slots=True)
class MappedSubscription:
    """A record mapped to one profile of a subscribe or unsubscribe job."""

    identity: Identity
    resource: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    size: int = 0


class SubscriptionMapper:
    """Maps records of one stream to subscribe (``SUBSCRIBED``) or unsubscribe entries."""

    def __init__(
        self,
        mapping: StreamMapping,
        schema_properties: Collection[str],
        default_region: str | None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.mapping = mapping
        self.default_region = default_region
        self._now = now
        reserved = [mapping.consented_at_field] if mapping.consented_at_field else []
        plan = standard_columns(mapping.fields, mapping.exclude, reserved)
        self.email_column: str | None = plan.get("email")
        self.phone_column: str | None = plan.get("phone_number")
        self._consent = "UNSUBSCRIBED" if mapping.behavior == "unsubscribe" else "SUBSCRIBED"
        self._channels = tuple(mapping.channels)
        self._consented_at_field = (
            mapping.consented_at_field
            if mapping.historical_import and self._consent == "SUBSCRIBED"
            else None
        )

    def _identity(self, record: Mapping[str, Any]) -> tuple[Identity, list[str]]:
        email = record.get(self.email_column) if self.email_column else None
        phone = record.get(self.phone_column) if self.phone_column else None
        warnings: list[str] = []
        if blank(email) and blank(phone):
            raise Rejection(NO_SUBSCRIPTION_IDENTIFIER)
        email_out = None if blank(email) else normalise_email(email)
        phone_out = None
        if not blank(phone):
            try:
                phone_out = normalise_phone(phone, self.default_region)
            except Rejection as rejection:
                if email_out is None or "sms" in self._channels:
                    raise
                warnings.append(f"phone_number dropped: {rejection.reason}")
        if "email" in self._channels and email_out is None:
            raise Rejection("an email subscription needs an email")
        if "sms" in self._channels and phone_out is None:
            raise Rejection("an sms subscription needs a phone_number")
        return Identity(email_out, phone_out, None), warnings

    def _consented_at(self, record: Mapping[str, Any], column: str) -> str:
        value = record.get(column)
        if value is None:
            raise Rejection(
                f"consented_at column {column!r} is null; historical_import needs the time "
                "consent was given"
            )
        moment = parse_instant(value)
        if moment is None:
            raise Rejection(
                f"consented_at column {column!r} value {show(value)} is not a date-time "
                "(ISO 8601 expected)"
            )
        if moment > self._now():
            raise Rejection(
                f"consented_at {format_seconds(moment)} is in the future; Klaviyo needs a past "
                "consent time"
            )
        return format_seconds(moment)

    def map(self, record: Mapping[str, Any]) -> MappedSubscription:
        """Map one record; raises Rejection with a reason the user can act on."""
        identity, warnings = self._identity(record)
        marketing: dict[str, Any] = {"consent": self._consent}
        if self._consented_at_field is not None:
            marketing["consented_at"] = self._consented_at(record, self._consented_at_field)
        subscriptions = {channel: {"marketing": dict(marketing)} for channel in self._channels}
        attributes: dict[str, Any] = identity.as_attributes()
        attributes["subscriptions"] = subscriptions
        resource = {"type": "profile", "attributes": attributes}
        return MappedSubscription(identity, resource, warnings, encoded_size(resource))
