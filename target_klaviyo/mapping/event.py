"""Map a record to a Klaviyo event (an entry of an event bulk-create job) and its profile."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from target_klaviyo.klaviyo.fields import PROPERTIES_PREFIX, STANDARD_COLUMNS, property_renames
from target_klaviyo.mapping.identity import Identity, Rejection, show
from target_klaviyo.mapping.profile import (
    ProfileMapper,
    PropertyPlan,
    is_metadata_column,
)
from target_klaviyo.mapping.values import (
    decode,
    encode,
    encode_sorted,
    encode_sorted_exact,
    format_seconds,
    parse_instant,
    to_json,
)
from target_klaviyo.streams import CURRENCY, MAX_METRIC_NAME, StreamMapping

__all__ = [
    "EARLIEST_EVENT_TIME",
    "MAX_EVENT_BYTES",
    "MAX_EVENT_PROPERTIES",
    "MAX_METRIC_NAME",
    "MAX_READABLE_UNIQUE_ID",
    "EventMapper",
    "EventParts",
    "MappedEvent",
    "record_hash",
    "utc_now",
]

MAX_EVENT_PROPERTIES = 400
MAX_EVENT_BYTES = 5_000_000  # the whole bulk request limit: one event can never exceed it
MAX_READABLE_UNIQUE_ID = 200  # longer composite unique_ids are replaced by their SHA-256
UTC = timezone.utc
EARLIEST_EVENT_TIME = datetime(1990, 1, 1, tzinfo=UTC)
LATEST_EVENT_OFFSET = timedelta(days=365)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class EventParts(NamedTuple):
    """A record mapped to an event and its profile, as the sink takes it."""

    identity: Identity
    identifiers: dict[str, str]  # the profile's identifiers
    metric_name: str
    unique_id: str
    size: int  # bytes of the event and its profile as encoded
    warnings: list[str]
    profile_encoded: bytes
    event_encoded: bytes


_new_tuple = tuple.__new__  # a NamedTuple without its Python-level constructor


@dataclass(slots=True)
class MappedEvent:
    """A record mapped to an event, with the profile it belongs to."""

    identity: Identity
    profile: dict[str, Any]
    metric_name: str
    event: dict[str, Any]
    unique_id: str
    dedupe_key: tuple[str, str, str]
    size: int = 0
    warnings: list[str] = field(default_factory=list)
    # Both encoded once (keys sorted), for the size, the request body and grouping by profile.
    profile_encoded: bytes = b""
    event_encoded: bytes = b""


@functools.lru_cache(maxsize=1024)
def _currency_code(value: str) -> str:
    """A currency column holds a handful of distinct values: each is checked once."""
    return _currency(value)


def _currency(value: Any) -> str:
    text = value.strip().upper() if isinstance(value, str) else None
    if not text or not CURRENCY.fullmatch(text):
        raise Rejection(
            f"value_currency {show(value)} is not a 3-letter ISO 4217 currency code (e.g. USD)"
        )
    return text


def _unique_part(value: Any) -> str:
    """Exact JSON text of one unique_id component (integers keep every digit)."""
    if isinstance(value, str):
        return encode(value).decode()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, Decimal) and value.is_finite() and value == value.to_integral_value():
        return str(int(value))
    return encode_sorted(to_json(value)).decode()


def _readable(text: str) -> str:
    if len(text) <= MAX_READABLE_UNIQUE_ID:
        return text
    return hashlib.sha256(text.encode()).hexdigest()


def record_hash(record: Mapping[str, Any]) -> str:
    """SHA-256 hex of a record's JSON with sorted keys, ``_sdc_*`` metadata left out.

    Metadata columns (extraction time, batch ids) change from run to run; leaving them out makes
    a replayed record hash to the same value, so Klaviyo de-duplicates it.
    """
    content = {key: value for key, value in record.items() if not is_metadata_column(key)}
    return hashlib.sha256(encode_sorted(to_json(content))).hexdigest()


class EventMapper:
    """Maps records of one stream to Klaviyo events.

    Columns feeding the profile (identifiers, standard fields, ``profile_properties``) and the
    event's name, time, value and currency are not event properties; every other column is,
    subject to ``properties`` and ``exclude``. In an event stream, ``fields`` entries
    ``properties.<name>`` rename a column into an *event* property.
    """

    def __init__(
        self,
        mapping: StreamMapping,
        schema_properties: Collection[str],
        key_properties: Sequence[str],
        default_region: str | None,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.mapping = mapping
        self._now = now
        self._latest: datetime | None = None  # the latest event time Klaviyo accepts
        self._currency = mapping.value_currency  # checked and upper-cased at start-up
        self._name_field = mapping.event_name_field
        # A fixed event name: its metric object is the same for every event (encoding only reads
        # it).
        self._fixed_name = str(mapping.event_name)
        self._fixed_metric = {"data": {"type": "metric", "attributes": {"name": self._fixed_name}}}
        self._time_field = mapping.time_field
        self._value_field = mapping.value_field
        self._currency_field = mapping.value_currency_field
        event_columns = {
            c
            for c in (self._name_field, self._time_field, self._value_field, self._currency_field)
            if c
        }
        renames = property_renames(mapping.fields)
        profile_mapping = dataclasses.replace(
            mapping,
            fields={p: c for p, c in mapping.fields.items() if not p.startswith(PROPERTIES_PREFIX)},
            properties=tuple(mapping.profile_properties),
            nulls="ignore",
        )
        self.profile_mapper = ProfileMapper(
            profile_mapping,
            schema_properties,
            default_region,
            reserved_columns=event_columns | set(renames.values()),
        )
        skip = self.profile_mapper.consumed_columns | event_columns | set(STANDARD_COLUMNS)
        self.properties = PropertyPlan(
            mapping.properties, schema_properties, skip, mapping.exclude, renames
        )
        unique = mapping.unique_id_fields or tuple(key_properties) or None
        self.unique_id_fields: tuple[str, ...] | None = tuple(unique) if unique else None

    # -- pieces ---------------------------------------------------------------------------

    def _metric_name(self, record: Mapping[str, Any]) -> str:
        if self._name_field is None:
            return str(self.mapping.event_name)
        value = record.get(self._name_field)
        if isinstance(value, str):
            name = value.strip()
        else:
            converted = to_json(value)
            name = str(converted) if isinstance(converted, (int, float)) else ""
        if not name:
            raise Rejection(f"event name column {self._name_field!r} is empty or not text")
        if len(name) >= MAX_METRIC_NAME:
            raise Rejection(
                f"event name {show(name)} is {len(name)} characters; Klaviyo metric names "
                f"must be under {MAX_METRIC_NAME} characters"
            )
        return name

    def _time(self, value: Any) -> str:
        moment = value if type(value) is datetime and value.tzinfo is UTC else parse_instant(value)
        if moment is None:
            raise Rejection(
                f"time column {self._time_field!r} value {show(value)} is not a date-time "
                "(ISO 8601 expected)"
            )
        latest = self._latest
        if latest is None or moment > latest:
            # The bound only moves forward: read the clock when a time comes near it.
            latest = self._latest = self._now() + LATEST_EVENT_OFFSET
        if not EARLIEST_EVENT_TIME < moment <= latest:
            raise Rejection(
                f"time {format_seconds(moment)} is outside Klaviyo's accepted range "
                "(after 1990-01-01 and at most one year from now)"
            )
        return format_seconds(moment)

    def _value(self, value: Any) -> int | float:
        number: Any = None
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            number = value
        elif isinstance(value, str):
            try:
                number = Decimal(value.strip())
            except InvalidOperation:
                number = None
        if number is not None:
            converted = to_json(number)
            if isinstance(converted, str):  # an integer beyond ±2**53
                converted = float(number)
            if isinstance(converted, (int, float)):
                return converted
        raise Rejection(
            f"value column {self._value_field!r} value {show(value)} is not a finite number"
        )

    def _unique_id(self, record: Mapping[str, Any]) -> str:
        fields = self.unique_id_fields
        if fields is None:
            return record_hash(record)
        if len(fields) == 1:
            # One column holding text or an integer (nearly every stream): its text as is.
            value = record.get(fields[0])
            if type(value) is int or (isinstance(value, str) and value.strip()):
                return _readable(str(value))
        parts = []
        for column in fields:
            value = record.get(column)
            if value is None:
                raise Rejection(f"unique_id field {column!r} is null")
            parts.append(value)
        if len(parts) == 1:
            converted = to_json(parts[0])
            text = converted if isinstance(converted, str) else _unique_part(parts[0])
        else:
            text = "|".join(_unique_part(value) for value in parts)
        if not text.strip():
            raise Rejection(f"unique_id field {fields[0]!r} is empty")
        return _readable(text)

    def _properties(self, record: Mapping[str, Any]) -> dict[str, Any]:
        properties, _ = self.properties.collect(record, unset=False)
        if len(properties) > MAX_EVENT_PROPERTIES:
            raise Rejection(
                f"event has {len(properties)} properties, over Klaviyo's limit of "
                f"{MAX_EVENT_PROPERTIES} per event"
            )
        return properties

    # -- the record -----------------------------------------------------------------------

    def map(self, record: Mapping[str, Any]) -> MappedEvent:
        """Map one record; raises Rejection with a reason the user can act on."""
        identity, _, metric_name, unique_id, size, warnings, profile_encoded, event_encoded = (
            self.map_parts(record)
        )
        return MappedEvent(
            identity=identity,
            profile=decode(profile_encoded),
            metric_name=metric_name,
            event=decode(event_encoded),
            unique_id=unique_id,
            dedupe_key=(identity.key(), metric_name, unique_id),
            size=size,
            warnings=warnings,
            profile_encoded=profile_encoded,
            event_encoded=event_encoded,
        )

    def map_parts(self, record: Mapping[str, Any]) -> EventParts:
        """`map` as a tuple: the sink's hot path."""
        identity, identifiers, _, profile_encoded, warnings = self.profile_mapper.map_parts(record)
        if self._name_field is None:
            metric_name = self._fixed_name
            metric = self._fixed_metric
        else:
            metric_name = self._metric_name(record)
            metric = {"data": {"type": "metric", "attributes": {"name": metric_name}}}
        attributes: dict[str, Any] = {"metric": metric, "properties": self._properties(record)}
        if self._time_field is not None:
            moment = record.get(self._time_field)
            if moment is not None:
                attributes["time"] = self._time(moment)
        if self._value_field is not None:
            value = record.get(self._value_field)
            if value is not None:
                attributes["value"] = self._value(value)
        if self._currency is not None:
            attributes["value_currency"] = self._currency
        elif self._currency_field is not None:
            currency = record.get(self._currency_field)
            if currency is not None:
                attributes["value_currency"] = (
                    _currency_code(currency) if type(currency) is str else _currency(currency)
                )
        unique_id = self._unique_id(record)
        attributes["unique_id"] = unique_id
        if self.mapping.backfill:
            attributes["backfill"] = True
        event_encoded = encode_sorted_exact({"type": "event", "attributes": attributes})
        size = len(event_encoded) + len(profile_encoded)
        if size > MAX_EVENT_BYTES:
            raise Rejection(
                f"event is {size:,} bytes, over Klaviyo's 5 MB ({MAX_EVENT_BYTES:,} bytes) "
                "request limit"
            )
        return _new_tuple(
            EventParts,
            (
                identity,
                identifiers,
                metric_name,
                unique_id,
                size,
                warnings,
                profile_encoded,
                event_encoded,
            ),
        )
