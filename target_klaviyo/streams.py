"""The `streams` setting: which Klaviyo object each stream loads into, and how.

Parsed once at start-up into frozen `StreamMapping`s. Every problem is collected and reported
together, one line each naming the stream and the key, before any input is read.
`STREAMS_SCHEMA` is the same contract as JSON schema, for `--about` and Meltano.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from target_klaviyo.klaviyo.fields import (
    LOCATION_FIELDS,
    PROPERTIES_PREFIX,
    STANDARD_PATHS,
)

# Each object's behaviours; the first is its default.
BEHAVIORS: dict[str, tuple[str, ...]] = {
    "profile": ("upsert",),
    "list": ("insert", "delete", "mirror"),
    "event": ("insert",),
    "subscription": ("subscribe", "unsubscribe"),
    "suppression": ("suppress", "unsuppress"),
    "deletion": ("delete",),
    "catalog_item": ("upsert", "delete"),
    "catalog_variant": ("upsert", "delete"),
    "catalog_category": ("upsert", "delete"),
    "custom_object": ("upsert",),
}
CATALOG_OBJECTS = ("catalog_item", "catalog_variant", "catalog_category")
# What `fields` may name for each catalog object (the spec's create attributes), and the
# relationship a column can carry: a variant's item, an item's categories (external ids).
CATALOG_FIELDS: dict[str, frozenset[str]] = {
    "catalog_item": frozenset(
        {
            "external_id",
            "title",
            "price",
            "description",
            "url",
            "image_full_url",
            "image_thumbnail_url",
            "images",
            "custom_metadata",
            "published",
            "categories",
        }
    ),
    "catalog_variant": frozenset(
        {
            "external_id",
            "title",
            "description",
            "sku",
            "inventory_policy",
            "inventory_quantity",
            "price",
            "url",
            "image_full_url",
            "image_thumbnail_url",
            "images",
            "custom_metadata",
            "published",
            "item",
        }
    ),
    "catalog_category": frozenset({"external_id", "name", "items"}),
}
DELETION_FIELDS = frozenset({"email", "phone_number", "external_id", "id"})
MAX_DELETIONS_PER_RUN = 1_000
OBJECTS = tuple(BEHAVIORS)
CHANNELS = ("email", "sms")
NULLS = ("ignore", "unset")
MIRROR_ON = ("activate_version", "end_of_stream")
MAX_METRIC_NAME = 128  # Klaviyo metric names are *under* 128 characters
CURRENCY = re.compile(r"[A-Z]{3}")

_COMMON_KEYS = frozenset({"object", "behavior", "fields", "properties", "exclude"})
_LIST_KEYS = frozenset({"list_id", "list_name", "create_list"})
# Event settings that each name one column or value (text).
EVENT_TEXT_KEYS = (
    "event_name",
    "event_name_field",
    "time_field",
    "value_field",
    "value_currency",
    "value_currency_field",
)
ALLOWED_KEYS: dict[str, frozenset[str]] = {
    "profile": _COMMON_KEYS | {"nulls"},
    "list": _COMMON_KEYS
    | _LIST_KEYS
    | {"nulls", "behavior", "mirror_on", "mirror_max_removal_ratio"},
    "event": _COMMON_KEYS
    | set(EVENT_TEXT_KEYS)
    | {"unique_id_fields", "profile_properties", "backfill"},
    "subscription": _COMMON_KEYS
    | _LIST_KEYS
    | {"behavior", "channels", "consented_at_field", "historical_import"},
    "suppression": _COMMON_KEYS,
    "deletion": _COMMON_KEYS | {"irreversible", "max_deletions_per_run"},
    **dict.fromkeys(CATALOG_OBJECTS, _COMMON_KEYS),
    "custom_object": _COMMON_KEYS | {"data_source_id", "data_source_name", "create_data_source"},
}


class MappingConfigError(ValueError):
    """One or more problems in the `streams` setting; `errors` lists every one."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


@dataclass(frozen=True)
class StreamMapping:
    """How one stream (or a glob of streams) is loaded into Klaviyo."""

    pattern: str
    object: str
    behavior: str
    fields: Mapping[str, str] = field(default_factory=dict)
    properties: Literal["all"] | tuple[str, ...] = "all"
    exclude: frozenset[str] = frozenset()
    nulls: Literal["ignore", "unset"] = "ignore"
    list_id: str | None = None
    list_name: str | None = None
    create_list: bool = False
    mirror_on: Literal["activate_version", "end_of_stream"] = "activate_version"
    mirror_max_removal_ratio: float = 0.2
    channels: tuple[str, ...] = ("email",)
    consented_at_field: str | None = None
    historical_import: bool = False
    event_name: str | None = None
    event_name_field: str | None = None
    time_field: str | None = None
    value_field: str | None = None
    value_currency: str | None = None  # upper-case ISO 4217, checked at start-up
    value_currency_field: str | None = None
    unique_id_fields: tuple[str, ...] | None = None
    profile_properties: tuple[str, ...] = ()
    backfill: bool = False
    irreversible: bool = False  # deletion: the user said they know it cannot be undone
    max_deletions_per_run: int = MAX_DELETIONS_PER_RUN
    data_source_id: str | None = None
    data_source_name: str | None = None
    create_data_source: bool = False

    @property
    def route(self) -> tuple[str, str]:
        """(object, behaviour): what picks the stream's sink class."""
        return (self.object, self.behavior)

    @property
    def fingerprint(self) -> str:
        """A stable digest of the mapping: a change of mapping changes it."""
        data = asdict(self)
        data.pop("pattern")
        encoded = json.dumps(data, sort_keys=True, default=sorted).encode()
        return hashlib.blake2b(encoded, digest_size=8).hexdigest()


@dataclass(frozen=True)
class StreamMappings:
    """All configured mappings, in config order; resolves a stream name to its mapping."""

    mappings: tuple[StreamMapping, ...]

    def resolve(self, stream_name: str) -> StreamMapping | None:
        """Exact name first, then glob patterns in config order (`*` last)."""
        for mapping in self.mappings:
            if mapping.pattern == stream_name:
                return mapping
        fallback = None
        for mapping in self.mappings:
            if mapping.pattern == "*":
                fallback = mapping
            elif fnmatch.fnmatchcase(stream_name, mapping.pattern):
                return mapping
        return fallback

    @property
    def names(self) -> list[str]:
        return [mapping.pattern for mapping in self.mappings]


# -- parsing ------------------------------------------------------------------------------


class _Reader:
    """Reads one stream's raw mapping, collecting every problem (one line each)."""

    def __init__(self, pattern: str, raw: Mapping[str, Any], errors: list[str]) -> None:
        self.where = f"streams.{pattern}"
        self.raw = raw
        self.errors = errors

    def error(self, message: str, key: str | None = None) -> None:
        self.errors.append(f"{self.where}{'.' + key if key else ''}: {message}")

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.error("expected a non-empty string", key)
            return None
        return value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key, False)
        if not isinstance(value, bool):
            self.error("expected true or false", key)
            return False
        return value

    def choice(self, key: str, allowed: Sequence[str]) -> Any:
        """The value of `key` (default: the first allowed one), which must be one of them."""
        value = self.raw.get(key, allowed[0])
        if value not in allowed:
            self.error(f"{value!r} is not one of {', '.join(allowed)}", key)
        return value

    def columns(self, key: str, default: Any = ()) -> tuple[str, ...]:
        value = self.raw.get(key, default)
        if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
            return tuple(value)
        self.error("expected a list of column names", key)
        return ()

    def fields(self, obj: str) -> dict[str, str]:
        raw = self.raw.get("fields")
        if raw is None:
            return {}
        if not isinstance(raw, dict):
            self.error("expected an object of klaviyo_field: source_column", "fields")
            return {}
        fields: dict[str, str] = {}
        for target, source in raw.items():
            if not isinstance(source, str) or not source:
                self.error("expected a source column name", f"fields.{target}")
            elif obj == "custom_object":  # a data source record's keys are the user's own
                fields[target] = source
            elif obj in CATALOG_FIELDS:
                if target in CATALOG_FIELDS[obj]:
                    fields[target] = source
                else:
                    allowed = ", ".join(sorted(CATALOG_FIELDS[obj]))
                    self.error(f"not a field of {obj} (one of {allowed})", f"fields.{target}")
            elif obj == "suppression" and target != "email":
                self.error("a suppression is by email only", f"fields.{target}")
            elif obj == "deletion" and target not in DELETION_FIELDS:
                allowed = ", ".join(sorted(DELETION_FIELDS))
                self.error(f"a deletion names its profile by one of {allowed}", f"fields.{target}")
            elif (
                obj in ("suppression", "deletion")
                or target in STANDARD_PATHS
                or (target.startswith(PROPERTIES_PREFIX) and len(target) > len(PROPERTIES_PREFIX))
            ):
                fields[target] = source
            elif target in LOCATION_FIELDS:
                fields[f"location.{target}"] = source
            else:
                self.error(
                    "not a Klaviyo profile field "
                    "(use a standard field, location.<field> or properties.<name>)",
                    f"fields.{target}",
                )
        return fields


def _list_keys(read: _Reader, kwargs: dict[str, Any], *, required: bool) -> None:
    kwargs["list_id"] = read.text("list_id")
    kwargs["list_name"] = read.text("list_name")
    kwargs["create_list"] = read.flag("create_list")
    if kwargs["list_id"] and kwargs["list_name"]:
        read.error("give list_id or list_name, not both")
    elif required and not (kwargs["list_id"] or kwargs["list_name"]):
        read.error("a list mapping needs list_id or list_name")
    if kwargs["create_list"] and not kwargs["list_name"]:
        read.error("needs list_name", "create_list")


def _list(read: _Reader, kwargs: dict[str, Any]) -> None:
    _list_keys(read, kwargs, required=True)
    kwargs["mirror_on"] = read.choice("mirror_on", MIRROR_ON)
    ratio = read.raw.get("mirror_max_removal_ratio", 0.2)
    # Config files are read with floats as Decimal (singer-sdk).
    if (
        isinstance(ratio, bool)
        or not isinstance(ratio, (int, float, Decimal))
        or not 0 <= ratio <= 1
    ):
        read.error("expected a number from 0 to 1", "mirror_max_removal_ratio")
    else:
        kwargs["mirror_max_removal_ratio"] = float(ratio)
    if kwargs["behavior"] != "mirror" and (
        "mirror_on" in read.raw or "mirror_max_removal_ratio" in read.raw
    ):
        read.error("mirror_on / mirror_max_removal_ratio need behavior: mirror")


def _subscription(read: _Reader, kwargs: dict[str, Any]) -> None:
    _list_keys(read, kwargs, required=False)
    channels = read.columns("channels", ["email"])
    if not channels or any(channel not in CHANNELS for channel in channels):
        read.error("expected a non-empty list of email and/or sms", "channels")
    kwargs["channels"] = tuple(dict.fromkeys(channels))
    kwargs["consented_at_field"] = read.text("consented_at_field")
    kwargs["historical_import"] = read.flag("historical_import")
    if kwargs["historical_import"] and not kwargs["consented_at_field"]:
        read.error(
            "Klaviyo requires consented_at, so consented_at_field is needed", "historical_import"
        )
    if kwargs["behavior"] == "unsubscribe" and (
        kwargs["historical_import"] or kwargs["consented_at_field"]
    ):
        read.error("historical_import / consented_at_field apply to subscribe only")


def _event(read: _Reader, kwargs: dict[str, Any]) -> None:
    for key in EVENT_TEXT_KEYS:
        kwargs[key] = read.text(key)
    if bool(kwargs["event_name"]) == bool(kwargs["event_name_field"]):
        read.error("give exactly one of event_name or event_name_field")
    if kwargs["event_name"] and len(kwargs["event_name"]) >= MAX_METRIC_NAME:
        read.error(f"Klaviyo metric names must be under {MAX_METRIC_NAME} characters", "event_name")
    if kwargs["value_currency"] and kwargs["value_currency_field"]:
        read.error("give value_currency or value_currency_field, not both")
    elif kwargs["value_currency"]:
        currency = kwargs["value_currency"].strip().upper()
        if not CURRENCY.fullmatch(currency):
            read.error(
                f"{kwargs['value_currency']!r} is not a 3-letter ISO 4217 currency code (e.g. USD)",
                "value_currency",
            )
        kwargs["value_currency"] = currency
    if "unique_id_fields" in read.raw:
        unique = read.columns("unique_id_fields")
        if not unique:
            read.error("expected at least one column", "unique_id_fields")
        kwargs["unique_id_fields"] = unique
    kwargs["profile_properties"] = read.columns("profile_properties")
    kwargs["backfill"] = read.flag("backfill")


def _deletion(read: _Reader, kwargs: dict[str, Any]) -> None:
    kwargs["irreversible"] = read.flag("irreversible")
    if not kwargs["irreversible"]:
        read.error(
            "a privacy deletion cannot be undone: set irreversible: true to confirm",
            "irreversible",
        )
    limit = read.raw.get("max_deletions_per_run", MAX_DELETIONS_PER_RUN)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        read.error("expected a whole number, 0 or more", "max_deletions_per_run")
    else:
        kwargs["max_deletions_per_run"] = limit


def _custom_object(read: _Reader, kwargs: dict[str, Any]) -> None:
    kwargs["data_source_id"] = read.text("data_source_id")
    kwargs["data_source_name"] = read.text("data_source_name")
    kwargs["create_data_source"] = read.flag("create_data_source")
    if kwargs["data_source_id"] and kwargs["data_source_name"]:
        read.error("give data_source_id or data_source_name, not both")
    elif not (kwargs["data_source_id"] or kwargs["data_source_name"]):
        read.error("a custom_object mapping needs data_source_id or data_source_name")
    if kwargs["create_data_source"] and not kwargs["data_source_name"]:
        read.error("needs data_source_name", "create_data_source")


def _no_keys(read: _Reader, kwargs: dict[str, Any]) -> None:
    """Objects with no keys of their own."""


# What each object reads beyond the keys every mapping has.
_OBJECT_KEYS: dict[str, Callable[[_Reader, dict[str, Any]], None]] = {
    "profile": _no_keys,
    "list": _list,
    "event": _event,
    "subscription": _subscription,
    "suppression": _no_keys,
    "deletion": _deletion,
    **dict.fromkeys(CATALOG_OBJECTS, _no_keys),
    "custom_object": _custom_object,
}


def _parse_one(pattern: str, raw: Any, errors: list[str]) -> StreamMapping | None:
    if not isinstance(raw, dict):
        errors.append(f"streams.{pattern}: expected an object with at least an `object` key")
        return None
    read = _Reader(pattern, raw, errors)
    obj = raw.get("object")
    if obj not in BEHAVIORS:
        read.error(f"{obj!r} is not one of {', '.join(OBJECTS)}", "object")
        return None
    before = len(errors)
    for key in sorted(set(raw) - ALLOWED_KEYS[obj]):
        read.error(f"unknown key for object {obj}", key)
    kwargs: dict[str, Any] = {
        "pattern": pattern,
        "object": obj,
        "behavior": read.choice("behavior", BEHAVIORS[obj]),
        "fields": read.fields(obj),
    }
    properties = raw.get("properties", "all")
    kwargs["properties"] = "all" if properties == "all" else read.columns("properties")
    kwargs["exclude"] = frozenset(read.columns("exclude"))
    if "nulls" in raw:
        kwargs["nulls"] = read.choice("nulls", NULLS)
    _OBJECT_KEYS[obj](read, kwargs)
    if len(errors) > before:
        return None
    return StreamMapping(**kwargs)


def parse_stream_mappings(raw: Any) -> StreamMappings:
    """Parse the `streams` setting; raise MappingConfigError listing every problem."""
    if not isinstance(raw, dict) or not raw:
        raise MappingConfigError(
            ["streams: expected an object mapping stream names (or globs) to mappings"]
        )
    errors: list[str] = []
    mappings = [_parse_one(str(pattern), value, errors) for pattern, value in raw.items()]
    if errors:
        raise MappingConfigError(errors)
    return StreamMappings(tuple(mapping for mapping in mappings if mapping is not None))


# -- the same contract as JSON schema (for --about and Meltano) ------------------------------

_TEXT = {"type": "string", "minLength": 1}
_COLUMNS = {"type": "array", "items": {"type": "string"}}


def _key(schema: dict[str, Any], objects: str, description: str) -> dict[str, Any]:
    return {**schema, "description": f"{objects}: {description}"}


MAPPING_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["object"],
    "properties": {
        "object": {
            "type": "string",
            "enum": list(OBJECTS),
            "description": "The Klaviyo object the stream's records load into.",
        },
        "behavior": _key(
            {"type": "string", "enum": sorted({b for bs in BEHAVIORS.values() for b in bs})},
            "all",
            "profile: `upsert`; list: `insert` (default), `delete` or `mirror`; event: "
            "`insert`; subscription: `subscribe` (default) or `unsubscribe`; suppression: "
            "`suppress` (default) or `unsuppress`; deletion: `delete`; `catalog_item`, "
            "`catalog_variant`, `catalog_category`: `upsert` (default) or `delete`; "
            "`custom_object`: `upsert`.",
        ),
        "fields": _key(
            {"type": "object", "additionalProperties": {"type": "string"}},
            "all",
            "`{klaviyo_field: source_column}`; dotted paths such as `location.city`, and "
            "`properties.<name>` to rename a column into a custom property. Catalog objects: "
            "the catalog fields (`external_id`, `title`, `price`, ...; a variant's `item`, an "
            "item's `categories`); `custom_object`: the record's keys.",
        ),
        "properties": _key(
            {"anyOf": [{"type": "string", "enum": ["all"]}, _COLUMNS]},
            "all",
            "custom properties: `all` (default: every column not mapped to a standard "
            "field), a list of columns, or `[]`. Catalog items and variants: the keys of "
            "`custom_metadata`; `custom_object`: the record's other columns.",
        ),
        "exclude": _key(_COLUMNS, "all", "columns never sent."),
        "nulls": _key(
            {"type": "string", "enum": list(NULLS)},
            "profile, list",
            "`ignore` (default: a null leaves Klaviyo's value alone) or `unset` (clears it).",
        ),
        "list_id": _key(_TEXT, "list, subscription", "the Klaviyo list id."),
        "list_name": _key(
            _TEXT, "list, subscription", "the list's name, resolved to its id at start-up."
        ),
        "create_list": _key(
            {"type": "boolean"}, "list, subscription", "create the list named by `list_name`."
        ),
        "mirror_on": _key(
            {"type": "string", "enum": list(MIRROR_ON)},
            "list (mirror)",
            "when a full pass ends: the tap's `ACTIVATE_VERSION` message (default) or the end "
            "of the stream.",
        ),
        "mirror_max_removal_ratio": _key(
            {"type": "number", "minimum": 0, "maximum": 1},
            "list (mirror)",
            "a pass that would remove more than this share of the tracked members removes "
            "nothing (default 0.2).",
        ),
        "channels": _key(
            {"type": "array", "items": {"type": "string", "enum": list(CHANNELS)}, "minItems": 1},
            "subscription",
            "`email`, `sms` or both (default `[email]`).",
        ),
        "consented_at_field": _key(
            _TEXT, "subscription", "the column holding when consent was given."
        ),
        "historical_import": _key(
            {"type": "boolean"},
            "subscription",
            "record past consent without double opt-in or 'Added to list' flows.",
        ),
        "event_name": _key(
            {**_TEXT, "maxLength": MAX_METRIC_NAME - 1}, "event", "a fixed metric name."
        ),
        "event_name_field": _key(_TEXT, "event", "the column holding the metric name."),
        "time_field": _key(_TEXT, "event", "the column holding the event's time."),
        "value_field": _key(_TEXT, "event", "the column holding the event's value."),
        "value_currency": _key(
            {"type": "string", "pattern": "^[A-Za-z]{3}$"},
            "event",
            "a fixed ISO 4217 currency code for the value.",
        ),
        "value_currency_field": _key(_TEXT, "event", "the column holding the currency code."),
        "unique_id_fields": _key(
            {**_COLUMNS, "minItems": 1},
            "event",
            "columns whose values make the event's `unique_id` (default: the stream's key "
            "properties; with neither, a hash of the record).",
        ),
        "profile_properties": _key(
            _COLUMNS, "event", "columns sent as custom properties of the event's profile."
        ),
        "backfill": _key(
            {"type": "boolean"}, "event", "send `backfill: true` so flows are not triggered."
        ),
        "irreversible": _key(
            {"type": "boolean", "const": True},
            "deletion",
            "must be `true`: a privacy deletion request cannot be undone.",
        ),
        "max_deletions_per_run": _key(
            {"type": "integer", "minimum": 0},
            "deletion",
            "a run that would request more deletions than this requests none and says why "
            "(default 1,000).",
        ),
        "data_source_id": _key(_TEXT, "`custom_object`", "the Klaviyo data source id."),
        "data_source_name": _key(
            _TEXT, "`custom_object`", "the data source's title, resolved to its id at start-up."
        ),
        "create_data_source": _key(
            {"type": "boolean"},
            "`custom_object`",
            "create the data source named by `data_source_name` when it does not exist.",
        ),
    },
}

STREAMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "minProperties": 1,
    "additionalProperties": MAPPING_SCHEMA,
}
