"""Settings: the config JSON schema shown by ``--about`` and the typed stream mapping model.

The ``streams`` mapping is parsed once at start-up; every problem in it is collected and
reported together, naming the stream and the key, before any input is read.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from singer_sdk import typing as th

DEFAULT_BASE_URL = "https://a.klaviyo.com"
DEFAULT_REVISION = "2026-07-15"
DEFAULT_STATE_DIR = ".target-klaviyo"

ObjectKind = Literal["profile", "list", "event", "subscription"]
OBJECTS: tuple[ObjectKind, ...] = ("profile", "list", "event", "subscription")

# Klaviyo's standard profile attributes (klaviyo-api.md §2.1). A source column with one of
# these names maps to the attribute without being listed in `fields`.
TOP_LEVEL_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "first_name",
    "last_name",
    "organization",
    "title",
    "image",
    "locale",
)
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "region",
    "zip",
    "timezone",
    "latitude",
    "longitude",
    "ip",
)
IDENTIFIER_FIELDS = ("email", "phone_number", "external_id")
STANDARD_PATHS = frozenset(TOP_LEVEL_FIELDS) | {f"location.{name}" for name in LOCATION_FIELDS}

LIST_BEHAVIORS = ("insert", "delete", "mirror")
SUBSCRIPTION_BEHAVIORS = ("subscribe", "unsubscribe")
CHANNELS = ("email", "sms")

_COMMON_KEYS = {"object", "fields", "properties", "exclude"}
# Event settings that each name one column or value (text).
_EVENT_TEXT_KEYS = (
    "event_name",
    "event_name_field",
    "time_field",
    "value_field",
    "value_currency",
    "value_currency_field",
)
ALLOWED_KEYS: dict[str, set[str]] = {
    "profile": _COMMON_KEYS | {"nulls"},
    "list": _COMMON_KEYS
    | {
        "nulls",
        "list_id",
        "list_name",
        "create_list",
        "behavior",
        "mirror_on",
        "mirror_max_removal_ratio",
    },
    "event": _COMMON_KEYS
    | set(_EVENT_TEXT_KEYS)
    | {
        "unique_id_fields",
        "profile_properties",
        "backfill",
    },
    "subscription": _COMMON_KEYS
    | {
        "list_id",
        "list_name",
        "create_list",
        "behavior",
        "channels",
        "consented_at_field",
        "historical_import",
    },
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
    object: ObjectKind
    fields: Mapping[str, str] = field(default_factory=dict)
    properties: Literal["all"] | tuple[str, ...] = "all"
    exclude: frozenset[str] = frozenset()
    nulls: Literal["ignore", "unset"] = "ignore"
    list_id: str | None = None
    list_name: str | None = None
    create_list: bool = False
    behavior: str = "upsert"
    mirror_on: Literal["activate_version", "end_of_stream"] = "activate_version"
    mirror_max_removal_ratio: float = 0.2
    channels: tuple[str, ...] = ("email",)
    consented_at_field: str | None = None
    historical_import: bool = False
    event_name: str | None = None
    event_name_field: str | None = None
    time_field: str | None = None
    value_field: str | None = None
    value_currency: str | None = None
    value_currency_field: str | None = None
    unique_id_fields: tuple[str, ...] | None = None
    profile_properties: tuple[str, ...] = ()
    backfill: bool = False

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


def _string_tuple(value: Any, where: str, errors: list[str]) -> tuple[str, ...]:
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    errors.append(f"{where}: expected a list of column names")
    return ()


def _optional_str(raw: Mapping[str, Any], key: str, where: str, errors: list[str]) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        errors.append(f"{where}.{key}: expected a non-empty string")
        return None
    return value


def _bool(raw: Mapping[str, Any], key: str, where: str, errors: list[str]) -> bool:
    value = raw.get(key, False)
    if not isinstance(value, bool):
        errors.append(f"{where}.{key}: expected true or false")
        return False
    return value


def _choice(
    raw: Mapping[str, Any], key: str, allowed: Sequence[str], where: str, errors: list[str]
) -> Any:
    """The value of `key` (default: the first allowed one), which must be one of `allowed`."""
    value = raw.get(key, allowed[0])
    if value not in allowed:
        errors.append(f"{where}.{key}: {value!r} is not one of {', '.join(allowed)}")
    return value


def _parse_fields(raw: Any, where: str, errors: list[str]) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(f"{where}.fields: expected an object of klaviyo_field: source_column")
        return {}
    fields: dict[str, str] = {}
    for target, source in raw.items():
        if not isinstance(source, str) or not source:
            errors.append(f"{where}.fields.{target}: expected a source column name")
            continue
        if target in STANDARD_PATHS or (target.startswith("properties.") and len(target) > 11):
            fields[target] = source
        elif target in LOCATION_FIELDS:
            fields[f"location.{target}"] = source
        else:
            errors.append(
                f"{where}.fields.{target}: not a Klaviyo profile field "
                "(use a standard field, location.<field> or properties.<name>)"
            )
    return fields


def _parse_one(pattern: str, raw: Any, errors: list[str]) -> StreamMapping | None:
    where = f"streams.{pattern}"
    if not isinstance(raw, dict):
        errors.append(f"{where}: expected an object with at least an `object` key")
        return None
    obj = raw.get("object")
    if obj not in OBJECTS:
        errors.append(f"{where}.object: {obj!r} is not one of {', '.join(OBJECTS)}")
        return None
    before = len(errors)
    unknown = sorted(set(raw) - ALLOWED_KEYS[obj])
    for key in unknown:
        errors.append(f"{where}.{key}: unknown key for object {obj}")

    kwargs: dict[str, Any] = {"pattern": pattern, "object": obj}
    kwargs["fields"] = _parse_fields(raw.get("fields"), where, errors)

    properties = raw.get("properties", "all")
    if properties == "all":
        kwargs["properties"] = "all"
    else:
        kwargs["properties"] = _string_tuple(properties, f"{where}.properties", errors)
    if "exclude" in raw:
        kwargs["exclude"] = frozenset(_string_tuple(raw["exclude"], f"{where}.exclude", errors))

    if "nulls" in raw:
        kwargs["nulls"] = _choice(raw, "nulls", ("ignore", "unset"), where, errors)

    if obj in ("list", "subscription"):
        kwargs["list_id"] = _optional_str(raw, "list_id", where, errors)
        kwargs["list_name"] = _optional_str(raw, "list_name", where, errors)
        kwargs["create_list"] = _bool(raw, "create_list", where, errors)
        if kwargs["list_id"] and kwargs["list_name"]:
            errors.append(f"{where}: give list_id or list_name, not both")
        elif obj == "list" and not (kwargs["list_id"] or kwargs["list_name"]):
            errors.append(f"{where}: a list mapping needs list_id or list_name")
        if kwargs["create_list"] and not kwargs["list_name"]:
            errors.append(f"{where}.create_list: needs list_name")

    if obj == "list":
        behavior = kwargs["behavior"] = _choice(raw, "behavior", LIST_BEHAVIORS, where, errors)
        kwargs["mirror_on"] = _choice(
            raw, "mirror_on", ("activate_version", "end_of_stream"), where, errors
        )
        ratio = raw.get("mirror_max_removal_ratio", 0.2)
        # Config files are read with floats as Decimal (singer-sdk).
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float, Decimal))
            or not 0 <= ratio <= 1
        ):
            errors.append(f"{where}.mirror_max_removal_ratio: expected a number from 0 to 1")
        else:
            kwargs["mirror_max_removal_ratio"] = float(ratio)
        if behavior != "mirror" and ("mirror_on" in raw or "mirror_max_removal_ratio" in raw):
            errors.append(f"{where}: mirror_on / mirror_max_removal_ratio need behavior: mirror")
    elif obj == "subscription":
        behavior = kwargs["behavior"] = _choice(
            raw, "behavior", SUBSCRIPTION_BEHAVIORS, where, errors
        )
        channels = _string_tuple(raw.get("channels", ["email"]), f"{where}.channels", errors)
        if not channels or any(channel not in CHANNELS for channel in channels):
            errors.append(f"{where}.channels: expected a non-empty list of email and/or sms")
        kwargs["channels"] = tuple(dict.fromkeys(channels))
        kwargs["consented_at_field"] = _optional_str(raw, "consented_at_field", where, errors)
        kwargs["historical_import"] = _bool(raw, "historical_import", where, errors)
        if kwargs["historical_import"] and not kwargs["consented_at_field"]:
            errors.append(
                f"{where}.historical_import: Klaviyo requires consented_at, "
                "so consented_at_field is needed"
            )
        if behavior == "unsubscribe" and (
            kwargs["historical_import"] or kwargs["consented_at_field"]
        ):
            errors.append(
                f"{where}: historical_import / consented_at_field apply to subscribe only"
            )
    elif obj == "event":
        kwargs["behavior"] = "insert"
        for key in _EVENT_TEXT_KEYS:
            kwargs[key] = _optional_str(raw, key, where, errors)
        if bool(kwargs["event_name"]) == bool(kwargs["event_name_field"]):
            errors.append(f"{where}: give exactly one of event_name or event_name_field")
        if kwargs["event_name"] and len(kwargs["event_name"]) >= 128:
            errors.append(f"{where}.event_name: Klaviyo metric names must be under 128 characters")
        if kwargs["value_currency"] and kwargs["value_currency_field"]:
            errors.append(f"{where}: give value_currency or value_currency_field, not both")
        if "unique_id_fields" in raw:
            unique = _string_tuple(raw["unique_id_fields"], f"{where}.unique_id_fields", errors)
            if not unique:
                errors.append(f"{where}.unique_id_fields: expected at least one column")
            kwargs["unique_id_fields"] = unique
        if "profile_properties" in raw:
            kwargs["profile_properties"] = _string_tuple(
                raw["profile_properties"], f"{where}.profile_properties", errors
            )
        kwargs["backfill"] = _bool(raw, "backfill", where, errors)
    else:
        kwargs["behavior"] = "upsert"

    if len(errors) > before:
        return None
    return StreamMapping(**kwargs)


def parse_stream_mappings(raw: Any) -> StreamMappings:
    """Parse the `streams` setting; raise MappingConfigError listing every problem."""
    errors: list[str] = []
    if not isinstance(raw, dict) or not raw:
        raise MappingConfigError(
            ["streams: expected an object mapping stream names (or globs) to mappings"]
        )
    mappings = []
    for pattern, value in raw.items():
        mapping = _parse_one(str(pattern), value, errors)
        if mapping is not None:
            mappings.append(mapping)
    if errors:
        raise MappingConfigError(errors)
    return StreamMappings(tuple(mappings))


CONFIG_SCHEMA = th.PropertiesList(
    th.Property(
        "private_api_key",
        th.StringType,
        required=True,
        secret=True,
        description="Klaviyo private API key (starts with pk_). Sent as "
        "`Authorization: Klaviyo-API-Key <key>`; never logged or written to disk.",
    ),
    th.Property(
        "public_api_key",
        th.StringType,
        description="The account's public API key (site ID). When given, it is checked against "
        "GET /api/accounts at start-up, which catches a private key from the wrong account.",
    ),
    th.Property(
        "api_base_url",
        th.StringType,
        default=DEFAULT_BASE_URL,
        description="Klaviyo API base URL. Plain http:// is refused unless the host is loopback "
        "(127.0.0.0/8, ::1, localhost).",
    ),
    th.Property(
        "revision",
        th.StringType,
        default=DEFAULT_REVISION,
        description="Klaviyo API revision, sent as the `revision` header.",
    ),
    th.Property(
        "default_phone_region",
        th.StringType,
        description="ISO 3166-1 alpha-2 region (e.g. US) for phone numbers written without a "
        "+country prefix. Without it such numbers are rejected.",
    ),
    th.Property(
        "state_dir",
        th.StringType,
        default=DEFAULT_STATE_DIR,
        description="Directory of the local ledger (SQLite): records on hold, jobs in flight, "
        "unchanged-record hashes, mirror membership and the last run summary (last_run.json).",
    ),
    th.Property(
        "rejects_path",
        th.StringType,
        description="JSONL file that rejected records are appended to (mode 0600). "
        "Default: <state_dir>/rejects.jsonl.",
    ),
    th.Property(
        "max_retries",
        th.IntegerType,
        default=5,
        description="Retries of one request on 429, 5xx or connection errors before its records "
        "go on hold (they are replayed on the next run).",
    ),
    th.Property(
        "skip_unchanged",
        th.BooleanType,
        default=True,
        description="Do not resend a record whose outgoing payload is identical to the last one "
        "Klaviyo accepted.",
    ),
    th.Property(
        "dry_run",
        th.BooleanType,
        default=False,
        description="Validate, map and plan every request and write the plan to "
        "<state_dir>/dry_run.jsonl; send nothing and leave the ledger untouched.",
    ),
    th.Property(
        "streams",
        th.ObjectType(additional_properties=True),
        required=True,
        description="Stream name (or glob such as public-*) -> mapping: object (profile, list, "
        "event, subscription), fields, properties, exclude, nulls, list_id/list_name, "
        "create_list, behavior, mirror_on, mirror_max_removal_ratio, channels, "
        "consented_at_field, historical_import, event_name/event_name_field, time_field, "
        "value_field, value_currency/value_currency_field, unique_id_fields, "
        "profile_properties, backfill. See the README.",
    ),
    th.Property(
        "request_timeout_s",
        th.NumberType,
        default=60,
        description="Tuning: timeout in seconds of one HTTP request (connect and read).",
    ),
    th.Property(
        "job_timeout_s",
        th.NumberType,
        default=3600,
        description="Tuning: how long to poll one bulk import job before its records go on hold.",
    ),
    th.Property(
        "max_jobs_in_flight",
        th.IntegerType,
        default=4,
        description="Tuning: how much one stream may have outstanding while input is read, in "
        "full profile import jobs (10,000 records each); streams of smaller requests (events, "
        "list calls) queue as many requests as those records fill.",
    ),
    th.Property(
        "progress_interval_s",
        th.NumberType,
        default=10,
        description="Tuning: seconds between progress lines on stderr.",
    ),
).to_dict()
