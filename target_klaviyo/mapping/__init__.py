"""Pure record mapping: records in, Klaviyo resources (or a Rejection with a reason) out."""

from __future__ import annotations

from target_klaviyo.mapping.event import EventMapper, MappedEvent, record_hash
from target_klaviyo.mapping.identity import (
    Identity,
    Rejection,
    normalise_email,
    normalise_external_id,
    normalise_phone,
    resolve_identity,
)
from target_klaviyo.mapping.profile import MappedProfile, ProfileMapper
from target_klaviyo.mapping.subscription import MappedSubscription, SubscriptionMapper
from target_klaviyo.mapping.values import encode, encode_sorted, encoded_size, to_json

__all__ = [
    "EventMapper",
    "Identity",
    "MappedEvent",
    "MappedProfile",
    "MappedSubscription",
    "ProfileMapper",
    "Rejection",
    "SubscriptionMapper",
    "encode",
    "encode_sorted",
    "encoded_size",
    "normalise_email",
    "normalise_external_id",
    "normalise_phone",
    "record_hash",
    "resolve_identity",
    "to_json",
]
