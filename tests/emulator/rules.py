"""Klaviyo's documented limits and value rules, as the emulator enforces them.

Every rule cites the Klaviyo source it models (listed in README.md, "Sources"). The functions here
are pure: they look at a parsed request body (already valid against the derived schema) and
return the 400 errors Klaviyo would answer with, as ``(pointer, detail)`` pairs.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import msgspec
import phonenumbers

# ---------------------------------------------------------------------------------------------
# Size and count limits. Klaviyo does not say whether "5 MB" / "100 KB" are decimal or binary;
# the target and the emulator take the stricter, decimal reading.
# ---------------------------------------------------------------------------------------------

# Klaviyo: rate limits and errors: profile-import max payload 100 KB.
PROFILE_IMPORT_MAX_BYTES = 100_000
# Klaviyo: bulk profile import: bulk import ≤10,000 profiles, ≤5 MB, ≤100 KB per profile.
BULK_IMPORT_MAX_PROFILES = 10_000
BULK_IMPORT_MAX_BYTES = 5_000_000
BULK_IMPORT_MAX_PROFILE_BYTES = 100_000
# Klaviyo: events API: event-bulk-create ≤1,000 events, 5 MB, strings ≤100 KB.
BULK_EVENTS_MAX_EVENTS = 1_000
EVENTS_MAX_BYTES = 5_000_000
MAX_STRING_BYTES = 100_000
# Klaviyo: events API: ≤400 properties per event; metric name < 128 characters.
EVENT_MAX_PROPERTIES = 400
METRIC_NAME_MAX_CHARS = 127
# Klaviyo: rate limits and errors (older ingestion table, "treat them as likely still in force"):
# ≤4000 items per array, ≤10 levels of nesting.
MAX_ARRAY_ITEMS = 4_000
MAX_NESTING_DEPTH = 10
# Klaviyo: lists and subscriptions: list add/remove ≤1,000 ids per call.
LIST_MEMBERS_MAX_IDS = 1_000
# Klaviyo: lists and subscriptions: subscribe ≤1,000 profiles, unsubscribe ≤100.
SUBSCRIBE_MAX_PROFILES = 1_000
UNSUBSCRIBE_MAX_PROFILES = 100

# Klaviyo: profile suppressions: "Email address per request limit: 100" (suppress and unsuppress).
SUPPRESSION_MAX_EMAILS = 100

# Klaviyo: catalogs API: bulk catalog jobs take "up to 100" items (variants, categories) and
# "The maximum allowed payload size is 5MB"; custom_metadata "May not exceed 100kb".
CATALOG_MAX_RESOURCES = 100
CATALOG_MAX_BYTES = 5_000_000
CUSTOM_METADATA_MAX_BYTES = 100_000
# Klaviyo: catalogs API: bulk job operation -> (resource plural, action).
CATALOG_BULK_OPERATIONS: dict[str, tuple[str, str]] = {
    f"bulk_{action}_catalog_{plural}": (plural, action)
    for plural in ("items", "variants", "categories")
    for action in ("create", "update", "delete")
}

# Klaviyo: custom objects: bulk_create_data_source_records "Accepts up to 500 records per
# request. The maximum allowed payload size is 4MB. The maximum allowed payload size per-record is
# 512KB"; a data source title "Must be between 1 and 255 characters".
DATA_SOURCE_MAX_RECORDS = 500
DATA_SOURCE_MAX_BYTES = 4_000_000
DATA_SOURCE_RECORD_MAX_BYTES = 512_000
DATA_SOURCE_TITLE_MAX_CHARS = 255

# Whole-body byte limits per operation. Over the limit answers 413: Klaviyo: rate limits and errors
# lists
# 413 "payload too large" (observed by a third-party tool that splits the batch on it) and §7.4
# gives the byte limits.
MAX_BODY_BYTES: dict[str, int] = {
    "create_or_update_profile": PROFILE_IMPORT_MAX_BYTES,
    "bulk_import_profiles": BULK_IMPORT_MAX_BYTES,
    "create_event": EVENTS_MAX_BYTES,
    "bulk_create_events": EVENTS_MAX_BYTES,
    **dict.fromkeys(CATALOG_BULK_OPERATIONS, CATALOG_MAX_BYTES),
    "bulk_create_data_source_records": DATA_SOURCE_MAX_BYTES,
}

# Klaviyo: events API: event `time` must be after 1990 and at most 1 year in the future.
EVENT_TIME_MIN = datetime(1990, 1, 1, tzinfo=timezone.utc)
EVENT_TIME_MAX_AHEAD = timedelta(days=365)

# Regions the emulated account can send SMS to. Klaviyo: profile identifiers: "Phone number is valid
# but is
# not in a supported region for this account." The real set depends on the account; this is
# Klaviyo's SMS country list as commonly configured (configurable per Emulator).
# GG/JE/IM share the +44 plan with GB (libphonenumber reports e.g. +447911… as GG).
# fmt: off
DEFAULT_SUPPORTED_REGIONS: frozenset[str] = frozenset({
    "US", "CA", "PR", "GB", "GG", "JE", "IM", "IE", "AU", "NZ", "DE", "AT", "CH",
    "FR", "BE", "NL", "LU", "ES", "PT", "IT", "SE", "NO", "DK", "FI", "PL",
})
# fmt: on

PROFILE_IDENTIFIERS = ("id", "email", "phone_number", "external_id", "_kx")
EVENT_PROFILE_IDENTIFIERS = ("id", "email", "phone_number", "external_id", "anonymous_id", "_kx")

Error = tuple[str, str]  # (JSON pointer, detail)


@dataclass(frozen=True)
class PhoneCheck:
    ok: bool
    region: str | None = None
    detail: str = ""


# Klaviyo: profile identifiers: phone numbers must be E.164 (+, country code, up to 15 digits).
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
# Klaviyo: profile identifiers: "Klaviyo rejects malformed addresses with 400" (exact rules
# UNVERIFIED).
# A plausible-form check: no whitespace, one @, dotted domain of letters/digits/hyphens.
EMAIL = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(?<!\.)"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
EMAIL_MAX_CHARS = 254


def email_error(value: str) -> str | None:
    if len(value) > EMAIL_MAX_CHARS or not EMAIL.match(value):
        return f"Invalid email address: '{value}'."
    return None


# "+1" and a national number that does not start with 0 or 1: a North American number.
NANP_E164 = re.compile(r"\+1[2-9]\d{9}")


def check_phone(value: str) -> PhoneCheck:
    """E.164 shape and libphonenumber validity (Klaviyo: profile identifiers)."""
    if NANP_E164.fullmatch(value):
        region = nanp_exchange_region(value[2:9])
        if region is None:
            return PhoneCheck(False, None, f"'{value}' is not a valid phone number.")
        return _valid_in(region)
    return _check_parsed(value)


@functools.cache
def _valid_in(region: str) -> PhoneCheck:
    """One answer per region (of the 25 sharing +1), not one per number: PhoneCheck is frozen."""
    return PhoneCheck(True, region)


# Bulk jobs check each number when the request comes and again when its row is applied, up to
# a million rows later.
@functools.lru_cache(maxsize=1 << 20)
def _check_parsed(value: str) -> PhoneCheck:
    if not E164.match(value):
        return PhoneCheck(False, None, f"'{value}' is not a valid phone number.")
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        return PhoneCheck(False, None, f"'{value}' is not a valid phone number.")
    # Same answer as phonenumbers.is_valid_number (which looks the region up itself), at half
    # the cost: bulk jobs check thousands of numbers.
    region = phonenumbers.region_code_for_number(parsed)
    if region is None or not phonenumbers.is_valid_number_for_region(parsed, region):
        return PhoneCheck(False, None, f"'{value}' is not a valid phone number.")
    return PhoneCheck(True, region)


@functools.lru_cache(maxsize=1 << 17)
def nanp_exchange_region(first_seven: str) -> str | None:
    """The region of a valid North American number, None for an invalid one, from the first
    seven digits of its national number: libphonenumber's patterns for country code 1 decide
    both by the area code and exchange and accept any line number, so one parse serves the
    1,000 numbers of an exchange (bulk imports bring 10,000 numbers a job)."""
    number = phonenumbers.PhoneNumber(country_code=1, national_number=int(first_seven + "000"))
    region = phonenumbers.region_code_for_number(number)
    if region is None:
        return None
    # libphonenumber finds a region without leading digits (US, CA) by its full patterns, the
    # ones is_valid_number_for_region would match again: only a region found by its area codes
    # is checked again (is_valid_number's answer, at half the cost for most numbers).
    if _found_by_full_patterns(region) or phonenumbers.is_valid_number_for_region(number, region):
        return str(region)
    return None


@functools.cache
def _found_by_full_patterns(region: str) -> bool:
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    return metadata is not None and metadata.leading_digits is None


UNSUPPORTED_REGION = "Phone number is valid but is not in a supported region for this account."

_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|z|[+-]\d{2}(?::?\d{2})?)?$"
)


def parse_datetime(value: str) -> datetime | None:
    """ISO 8601 date-time as Klaviyo accepts it; no offset means UTC. None when malformed.

    Written by hand because ``datetime.fromisoformat`` of Python 3.10 rejects ``Z``.
    """
    match = _DATETIME.match(value)
    if not match:
        return None
    year, month, day, hour, minute, second, fraction, offset = match.groups()
    if second and not fraction and offset and len(offset) == 6:
        # ``2024-05-01T12:00:00+00:00``, the common form, is one that every Python's
        # ``fromisoformat`` reads, with the same result, in a fraction of the time.
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    try:
        tz = timezone.utc
        if offset and offset not in ("Z", "z"):
            sign = -1 if offset[0] == "-" else 1
            digits = offset[1:].replace(":", "")
            hours, minutes = int(digits[:2]), int(digits[2:4] or 0)
            tz = timezone(sign * timedelta(hours=hours, minutes=minutes))
        micro = int((fraction or "0")[:6].ljust(6, "0"))
        return datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), micro, tz
        )
    except ValueError:
        return None


def is_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%Y-%m-%d")
    except ValueError:
        return False
    return True


def iso(moment: datetime) -> str:
    """Timestamps the way Klaviyo renders them: ``2024-05-01T12:00:00+00:00``."""
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def measure_row(row: Any) -> int:
    """Encoded size of one bulk row.

    How Klaviyo measures "100 KB per profile" is UNVERIFIED (Klaviyo: bulk profile import); the
    emulator
    uses the stricter plausible reading: Python's default ``json.dumps`` (", "/": " separators,
    non-ASCII escaped as \\uXXXX), which is never smaller than a compact UTF-8 encoding.
    """
    return len(json.dumps(row).encode("ascii"))


def size_over(row: Any, limit: int, raw_size: int | None = None) -> int | None:
    """The row's size (`measure_row`) when it is over `limit`, else None. Its compact UTF-8
    encoding bounds it: ", "/": " separators and \\uXXXX escapes make it at most three times as
    long, so a row whose compact encoding is under a third of the limit is not measured again
    (bulk jobs bring 10,000 rows a request). `raw_size`, the length of the row's text in the
    request, bounds it too, without encoding: a number written again may grow 4.5 times
    ("9e15" is 9000000000000000.0), anything else at most three times."""
    if raw_size is not None and RAW_GROWTH * raw_size + 64 < limit:
        return None
    try:
        compact: int | None = len(msgspec.json.encode(row))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        compact = None
    if compact is not None and 3 * compact + 64 < limit:
        return None
    size = measure_row(row)
    return size if size > limit else None


RAW_GROWTH = 5


class _RawProfiles(msgspec.Struct):
    data: list[msgspec.Raw]


class _RawAttributes(msgspec.Struct):
    profiles: _RawProfiles


class _RawData(msgspec.Struct):
    attributes: _RawAttributes


class _RawImport(msgspec.Struct):
    data: _RawData


def raw_import_rows(raw: bytes | None) -> list[msgspec.Raw] | None:
    """A bulk import body's profile rows as slices of its JSON text, or None."""
    if raw is None:
        return None
    try:
        return msgspec.json.decode(raw, type=_RawImport).data.attributes.profiles.data
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None  # a body only Python's json reads (see bodies.parse_body)


def _json_pointer(parts: tuple[Any, ...]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def pointer(*parts: Any) -> str:
    return _json_pointer(parts)


def walk_strings(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], str]]:
    if isinstance(node, str):
        yield path, node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from walk_strings(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk_strings(value, (*path, index))


def _has_string_longer(node: Any, chars: int) -> bool:
    """Whether any string value in ``node`` has more than ``chars`` characters (no paths kept)."""
    stack = [node]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if len(node) > chars:
                return True
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def long_string_errors(body: Any) -> list[Error]:
    # Klaviyo: events API: "A single string cannot exceed 100KB" (UTF-8 bytes). A string
    # of more than 100,000 bytes has more than 25,000 characters: bodies without one (nearly
    # all) are cleared by one walk that builds no paths.
    if not _has_string_longer(body, MAX_STRING_BYTES // 4):
        return []
    return [
        (_json_pointer(path), f"String exceeds the maximum size of {MAX_STRING_BYTES} bytes.")
        for path, text in walk_strings(body)
        if len(text) > MAX_STRING_BYTES // 4 and len(text.encode("utf-8")) > MAX_STRING_BYTES
    ]


def shape_errors(node: Any, path: tuple[Any, ...]) -> list[Error]:
    """Array length and nesting depth of a free-form object (Klaviyo: rate limits and errors, older
    table).
    """
    errors: list[Error] = []

    def visit(value: Any, where: tuple[Any, ...], depth: int) -> None:
        # depth counts containers: the properties object itself is level 1.
        if isinstance(value, (dict, list)) and depth > MAX_NESTING_DEPTH:
            errors.append(
                (_json_pointer(where), f"Exceeds the maximum nesting depth of {MAX_NESTING_DEPTH}.")
            )
            return
        if isinstance(value, dict):
            for key, item in value.items():
                visit(item, (*where, key), depth + 1)
        elif isinstance(value, list):
            if len(value) > MAX_ARRAY_ITEMS:
                errors.append(
                    (_json_pointer(where), f"Arrays may hold at most {MAX_ARRAY_ITEMS} items.")
                )
                return
            for index, item in enumerate(value):
                visit(item, (*where, index), depth + 1)

    if isinstance(node, dict) and not _is_flat(node):
        visit(node, path, 1)
    return errors


def _is_flat(node: dict[str, Any]) -> bool:
    """Whether no value is an object or array: a flat object (the usual properties) has
    nothing for ``shape_errors`` to visit. A loop: bulk jobs bring 10,000 a request."""
    for value in node.values():  # noqa: SIM110 (a loop: any() is slower)
        if isinstance(value, (dict, list)):
            return False
    return True


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


def profile_attribute_errors(
    attributes: dict[str, Any],
    base: tuple[Any, ...],
    *,
    identifiers: tuple[str, ...] = PROFILE_IDENTIFIERS,
    resource_id: str | None = None,
    phone_mode: str = "reject",
    supported_regions: frozenset[str] = DEFAULT_SUPPORTED_REGIONS,
) -> list[Error]:
    """Identifier and format rules shared by every endpoint that takes a profile.

    ``phone_mode``: "reject" answers 400 for a bad phone (profile-import, Klaviyo: profiles API);
    "defer" leaves it to the bulk-import job, which silently drops it (Klaviyo: bulk profile
    import).
    """
    errors: list[Error] = []
    email = attributes.get("email")
    if isinstance(email, str):
        problem = email_error(email)
        if problem:
            # Klaviyo: profile identifiers: malformed email -> 400 with pointer
            # .../attributes/email.
            errors.append((_json_pointer((*base, "email")), problem))
    phone = attributes.get("phone_number")
    if isinstance(phone, str) and phone_mode == "reject":
        check = check_phone(phone)
        if not check.ok:
            # Klaviyo: profile identifiers: phone numbers must be E.164.
            errors.append((_json_pointer((*base, "phone_number")), check.detail))
        elif check.region not in supported_regions:
            # Klaviyo: profile identifiers: observed "not in a supported region" error.
            errors.append((_json_pointer((*base, "phone_number")), UNSUPPORTED_REGION))
    external_id = attributes.get("external_id")
    if isinstance(external_id, str) and not external_id.strip():
        # Emulator choice: a blank external_id is not a usable identifier.
        errors.append((_json_pointer((*base, "external_id")), "external_id must not be blank."))
    if not resource_id and not has_identifier(attributes, identifiers):
        # Klaviyo: profiles API: profiles are matched by an identifier; §5.1: event profiles need
        # "at least one identifier".
        errors.append(
            (
                _json_pointer(base),
                "A profile requires at least one of: "
                + ", ".join(n for n in identifiers if n != "id")
                + ".",
            )
        )
    properties = attributes.get("properties")
    if isinstance(properties, dict) and not _is_flat(properties):
        errors.extend(shape_errors(properties, (*base, "properties")))
    return errors


def has_identifier(attributes: dict[str, Any], identifiers: tuple[str, ...]) -> bool:
    """Whether one of ``identifiers`` but id is a string in ``attributes`` (a loop that stops
    at the first: once per row of a bulk job, when it comes and when it is applied)."""
    for name in identifiers:  # noqa: SIM110 (a loop: any() is slower)
        if name != "id" and isinstance(attributes.get(name), str):
            return True
    return False


def profile_import_errors(body: dict[str, Any], regions: frozenset[str]) -> list[Error]:
    data = body["data"]
    return profile_attribute_errors(
        data["attributes"],
        ("data", "attributes"),
        resource_id=data.get("id"),
        supported_regions=regions,
    )


def bulk_import_errors(
    body: dict[str, Any], regions: frozenset[str], raw: bytes | None = None
) -> list[Error]:
    rows = body["data"]["attributes"]["profiles"]["data"]
    if len(rows) > BULK_IMPORT_MAX_PROFILES:
        # Klaviyo: bulk profile import: up to 10,000 profiles per request.
        return [
            (
                "/data/attributes/profiles/data",
                f"A maximum of {BULK_IMPORT_MAX_PROFILES} profiles can be imported per request.",
            )
        ]
    if not rows:
        return [("/data/attributes/profiles/data", "At least one profile is required.")]
    errors: list[Error] = []
    raw_rows = raw_import_rows(raw)
    if raw_rows is not None and len(raw_rows) != len(rows):
        raw_rows = None
    for index, row in enumerate(rows):
        base = ("data", "attributes", "profiles", "data", index)
        raw_size = len(raw_rows[index]) if raw_rows is not None else None
        size = size_over(row, BULK_IMPORT_MAX_PROFILE_BYTES, raw_size)
        if size is not None:
            # Klaviyo: bulk profile import: max 100 KB per profile; the pointer names the row.
            errors.append(
                (
                    _json_pointer(base),
                    f"Profile payload is {size} bytes; the maximum is "
                    f"{BULK_IMPORT_MAX_PROFILE_BYTES} bytes.",
                )
            )
            continue
        # Klaviyo: bulk profile import: invalid phone numbers are not a validation error in bulk
        # import
        # (they are silently dropped while the job runs), hence phone_mode="defer".
        errors.extend(
            profile_attribute_errors(
                row["attributes"],
                (*base, "attributes"),
                resource_id=row.get("id"),
                phone_mode="defer",
                supported_regions=regions,
            )
        )
    return errors


# ---------------------------------------------------------------------------------------------
# Lists
# ---------------------------------------------------------------------------------------------


def create_list_errors(body: dict[str, Any]) -> list[Error]:
    name = body["data"]["attributes"]["name"]
    if not name.strip():
        return [("/data/attributes/name", "This field may not be blank.")]
    return []


def list_members_errors(body: dict[str, Any]) -> list[Error]:
    ids = body["data"]
    if len(ids) > LIST_MEMBERS_MAX_IDS:
        # Klaviyo: lists and subscriptions: ≤1000 profiles per add/remove call.
        return [("/data", f"A maximum of {LIST_MEMBERS_MAX_IDS} profiles is allowed per call.")]
    if not ids:
        return [("/data", "At least one profile is required.")]
    return []


# ---------------------------------------------------------------------------------------------
# Events
# ---------------------------------------------------------------------------------------------


def event_errors(event: dict[str, Any], base: tuple[Any, ...], now: datetime) -> list[Error]:
    """Rules for one event's attributes (Klaviyo: events API)."""
    errors: list[Error] = []
    name = event["metric"]["data"]["attributes"]["name"]
    if not name.strip():
        errors.append(
            (
                _json_pointer((*base, "metric", "data", "attributes", "name")),
                "Metric name may not be blank.",
            )
        )
    elif len(name) > METRIC_NAME_MAX_CHARS:
        # Klaviyo: events API: metric name < 128 characters.
        errors.append(
            (
                _json_pointer((*base, "metric", "data", "attributes", "name")),
                f"Metric name must be fewer than {METRIC_NAME_MAX_CHARS + 1} characters.",
            )
        )
    properties = event["properties"]
    if len(properties) > EVENT_MAX_PROPERTIES:
        # Klaviyo: events API: ≤400 properties per event.
        errors.append(
            (
                _json_pointer((*base, "properties")),
                f"An event may have at most {EVENT_MAX_PROPERTIES} properties.",
            )
        )
    errors.extend(shape_errors(properties, (*base, "properties")))
    raw_time = event.get("time")
    if isinstance(raw_time, str):
        moment = parse_datetime(raw_time)
        if moment is None:
            errors.append((_json_pointer((*base, "time")), f"Invalid datetime: '{raw_time}'."))
        elif moment <= EVENT_TIME_MIN or moment > now + EVENT_TIME_MAX_AHEAD:
            # Klaviyo: events API: after 1990 and at most 1 year in the future.
            errors.append(
                (
                    _json_pointer((*base, "time")),
                    "Event time must be after 1990-01-01 and at most 1 year in the future.",
                )
            )
    return errors


def event_profile_errors(
    profile: dict[str, Any], base: tuple[Any, ...], regions: frozenset[str]
) -> list[Error]:
    # Events validate profile identifiers at request time (a 400 for the whole request): the
    # endpoint answers 202 "validated and submitted" (Klaviyo: events API) with no later
    # feedback channel, so the emulator checks formats here rather than dropping silently.
    return profile_attribute_errors(
        profile["attributes"],
        (*base, "attributes"),
        identifiers=EVENT_PROFILE_IDENTIFIERS,
        resource_id=profile.get("id"),
        supported_regions=regions,
    )


def create_event_errors(
    body: dict[str, Any], regions: frozenset[str], now: datetime
) -> list[Error]:
    attributes = body["data"]["attributes"]
    base = ("data", "attributes")
    errors = long_string_errors(body)
    errors.extend(event_errors(attributes, base, now))
    errors.extend(
        event_profile_errors(attributes["profile"]["data"], (*base, "profile", "data"), regions)
    )
    return errors


def profile_identity(profile: dict[str, Any]) -> list[tuple[str, str]]:
    """Identifier values of an event's profile, used to group entries of one request."""
    attributes = profile.get("attributes") or {}
    keys = [("id", profile["id"])] if isinstance(profile.get("id"), str) else []
    keys.extend(
        (name, attributes[name])
        for name in EVENT_PROFILE_IDENTIFIERS[1:]
        if isinstance(attributes.get(name), str)
    )
    return keys


def bulk_events_errors(body: dict[str, Any], regions: frozenset[str], now: datetime) -> list[Error]:
    entries = body["data"]["attributes"]["events-bulk-create"]["data"]
    total = sum(len(entry["attributes"]["events"]["data"]) for entry in entries)
    if total > BULK_EVENTS_MAX_EVENTS:
        # Klaviyo: events API: ≤1,000 events per request (counted across profiles).
        return [
            (
                "/data/attributes/events-bulk-create/data",
                f"A maximum of {BULK_EVENTS_MAX_EVENTS} events can be created per request; "
                f"got {total}.",
            )
        ]
    if total == 0:
        return [("/data/attributes/events-bulk-create/data", "At least one event is required.")]
    errors = long_string_errors(body)

    # Entries whose profiles share any identifier are the same profile (union-find), so a
    # repeated unique_id across them is caught like one inside a single entry.
    parent = list(range(len(entries)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, str], int] = {}
    for index, entry in enumerate(entries):
        for key in profile_identity(entry["attributes"]["profile"]["data"]):
            if key in owner:
                parent[find(index)] = find(owner[key])
            else:
                owner[key] = index

    seen: set[tuple[int, str, str]] = set()
    dedupe_key: tuple[int, str, str]
    for index, entry in enumerate(entries):
        base = ("data", "attributes", "events-bulk-create", "data", index, "attributes")
        errors.extend(
            event_profile_errors(
                entry["attributes"]["profile"]["data"], (*base, "profile", "data"), regions
            )
        )
        for position, event in enumerate(entry["attributes"]["events"]["data"]):
            event_base = (*base, "events", "data", position, "attributes")
            attributes = event["attributes"]
            errors.extend(event_errors(attributes, event_base, now))
            unique_id = attributes.get("unique_id")
            if isinstance(unique_id, str):
                metric = attributes["metric"]["data"]["attributes"]["name"]
                dedupe_key = (find(index), metric, unique_id)
                if dedupe_key in seen:
                    # Klaviyo: events API: a repeated unique_id for the same profile and metric
                    # within one bulk request fails the whole request.
                    errors.append(
                        (
                            _json_pointer((*event_base, "unique_id")),
                            f"Duplicate unique_id '{unique_id}' for the same profile and metric "
                            "in this request; no events will be processed.",
                        )
                    )
                seen.add(dedupe_key)
    return errors


# ---------------------------------------------------------------------------------------------
# Subscriptions
# ---------------------------------------------------------------------------------------------

CONSENT_LEAVES = {
    "email": ("marketing",),
    "sms": ("marketing", "transactional"),
    "whatsapp": ("marketing", "transactional"),
    "push": ("marketing",),
}


def consent_entries(subscriptions: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(channel, kind, parameters) for every consent given in a subscriptions object."""
    for channel, kinds in CONSENT_LEAVES.items():
        params = subscriptions.get(channel)
        if not isinstance(params, dict):
            continue
        for kind in kinds:
            leaf = params.get(kind)
            if isinstance(leaf, dict):
                yield channel, kind, leaf


def subscribe_errors(body: dict[str, Any], regions: frozenset[str], now: datetime) -> list[Error]:
    attributes = body["data"]["attributes"]
    rows = attributes["profiles"]["data"]
    if len(rows) > SUBSCRIBE_MAX_PROFILES:
        # Klaviyo: lists and subscriptions: ≤1000 profiles per subscribe call.
        return [
            (
                "/data/attributes/profiles/data",
                f"A maximum of {SUBSCRIBE_MAX_PROFILES} profiles can be subscribed per request.",
            )
        ]
    if not rows:
        return [("/data/attributes/profiles/data", "At least one profile is required.")]
    historical = attributes.get("historical_import") is True
    errors: list[Error] = []
    for index, row in enumerate(rows):
        base = ("data", "attributes", "profiles", "data", index, "attributes")
        errors.extend(_subscription_profile_errors(row, base, regions))
        subscriptions = row["attributes"]["subscriptions"]
        entries = list(consent_entries(subscriptions))
        if not entries:
            errors.append(
                (
                    _json_pointer((*base, "subscriptions")),
                    "At least one channel subscription is required.",
                )
            )
        for channel, kind, leaf in entries:
            where = _json_pointer((*base, "subscriptions", channel, kind, "consented_at"))
            consented_at = leaf.get("consented_at")
            if consented_at is not None and not historical:
                # Klaviyo: lists and subscriptions: consented_at without historical_import is an
                # error.
                errors.append(
                    (where, "'consented_at' is only allowed when 'historical_import' is true.")
                )
            elif historical and consented_at is None:
                # Klaviyo: lists and subscriptions: historical_import requires consented_at on every
                # channel.
                errors.append(
                    (where, "'consented_at' is required when 'historical_import' is true.")
                )
            elif historical and isinstance(consented_at, str):
                moment = parse_datetime(consented_at)
                if moment is None or moment > now:
                    # Klaviyo: lists and subscriptions: consented_at must be in the past.
                    errors.append((where, "'consented_at' must be a datetime in the past."))
        errors.extend(_channel_identifier_errors(row["attributes"], subscriptions, base))
    return errors


def unsubscribe_errors(body: dict[str, Any], regions: frozenset[str]) -> list[Error]:
    rows = body["data"]["attributes"]["profiles"]["data"]
    if len(rows) > UNSUBSCRIBE_MAX_PROFILES:
        # Klaviyo: lists and subscriptions: ≤100 profiles per unsubscribe call.
        return [
            (
                "/data/attributes/profiles/data",
                f"A maximum of {UNSUBSCRIBE_MAX_PROFILES} profiles can be unsubscribed "
                "per request.",
            )
        ]
    if not rows:
        return [("/data/attributes/profiles/data", "At least one profile is required.")]
    errors: list[Error] = []
    for index, row in enumerate(rows):
        base = ("data", "attributes", "profiles", "data", index, "attributes")
        errors.extend(_subscription_profile_errors(row, base, regions))
        subscriptions = row["attributes"]["subscriptions"]
        if not any(isinstance(subscriptions.get(c), dict) for c in CONSENT_LEAVES):
            errors.append(
                (_json_pointer((*base, "subscriptions")), "At least one channel is required.")
            )
        errors.extend(_channel_identifier_errors(row["attributes"], subscriptions, base))
    return errors


def _subscription_profile_errors(
    row: dict[str, Any], base: tuple[Any, ...], regions: frozenset[str]
) -> list[Error]:
    # Klaviyo: lists and subscriptions: profile attributes allowed are email, phone_number (E.164),
    # subscriptions, age_gated_date_of_birth (unknown ones are rejected by the schema).
    return profile_attribute_errors(
        row["attributes"],
        base,
        identifiers=("id", "email", "phone_number"),
        resource_id=row.get("id"),
        supported_regions=regions,
    )


def _channel_identifier_errors(
    attributes: dict[str, Any], subscriptions: dict[str, Any], base: tuple[Any, ...]
) -> list[Error]:
    errors: list[Error] = []
    if isinstance(subscriptions.get("sms"), dict) and not attributes.get("phone_number"):
        # Klaviyo: profile identifiers: observed error wording.
        errors.append(
            (
                _json_pointer((*base, "phone_number")),
                "'phone_number' must not be empty when the sms channel is included in "
                "'subscriptions'.",
            )
        )
    if isinstance(subscriptions.get("email"), dict) and not attributes.get("email"):
        # Same rule for the email channel (emulator extension of the observed SMS rule).
        errors.append(
            (
                _json_pointer((*base, "email")),
                "'email' must not be empty when the email channel is included in 'subscriptions'.",
            )
        )
    return errors


# ---------------------------------------------------------------------------------------------
# Suppressions
# ---------------------------------------------------------------------------------------------


def suppression_errors(body: dict[str, Any]) -> list[Error]:
    """Bulk suppress / unsuppress: emails, or a list or a segment (Klaviyo: profile
    suppressions)."""
    data = body["data"]
    profiles = data["attributes"].get("profiles")
    relationships = data.get("relationships") or {}
    sources = [name for name in ("list", "segment") if (relationships.get(name) or {}).get("data")]
    rows = profiles["data"] if isinstance(profiles, dict) else None
    if rows is not None and sources:
        # Emulator choice: Klaviyo takes emails "or" a list/segment; both at once is refused.
        return [
            (
                "/data/relationships",
                "Provide either profiles or a list or segment relationship, not both.",
            )
        ]
    if len(sources) > 1:
        return [("/data/relationships", "Provide a list or a segment, not both.")]
    if rows is None:
        if not sources:
            return [
                (
                    "/data/attributes/profiles",
                    "Provide profiles (emails) or a list or segment relationship.",
                )
            ]
        return []
    if len(rows) > SUPPRESSION_MAX_EMAILS:
        return [
            (
                "/data/attributes/profiles/data",
                f"A maximum of {SUPPRESSION_MAX_EMAILS} email addresses is allowed per request.",
            )
        ]
    if not rows:
        return [("/data/attributes/profiles/data", "At least one profile is required.")]
    errors: list[Error] = []
    for index, row in enumerate(rows):
        problem = email_error(row["attributes"]["email"])
        if problem:
            # Klaviyo: profile identifiers: malformed email -> 400 with pointer .../email.
            where = pointer("data", "attributes", "profiles", "data", index, "attributes", "email")
            errors.append((where, problem))
    return errors


# ---------------------------------------------------------------------------------------------
# Privacy deletion
# ---------------------------------------------------------------------------------------------

DELETION_IDENTIFIERS = ("id", "email", "phone_number")


def deletion_identifier(body: dict[str, Any]) -> list[tuple[str, str]]:
    """The identifiers a deletion request names, as (field, value)."""
    data = body["data"]["attributes"]["profile"]["data"]
    attributes = data.get("attributes") or {}
    found = [("id", data["id"])] if isinstance(data.get("id"), str) else []
    found.extend(
        (name, attributes[name])
        for name in ("email", "phone_number")
        if isinstance(attributes.get(name), str)
    )
    return found


def deletion_errors(body: dict[str, Any]) -> list[Error]:
    """Klaviyo: data privacy: one of email, phone_number or id; "If multiple identifiers are
    provided, we will return an error"."""
    found = deletion_identifier(body)
    base = "/data/attributes/profile/data"
    if len(found) != 1:
        detail = "Exactly one of email, phone_number or id must be provided"
        return [(base, f"{detail}; got {len(found)}.")]
    name, value = found[0]
    if name == "email":
        problem = email_error(value)
        if problem:
            return [(f"{base}/attributes/email", problem)]
    elif name == "phone_number":
        check = check_phone(value)
        if not check.ok:
            # Klaviyo: profile identifiers: phone numbers must be E.164.
            return [(f"{base}/attributes/phone_number", check.detail)]
    elif not value.strip():
        return [(f"{base}/id", "'id' must not be blank.")]
    return []


# ---------------------------------------------------------------------------------------------
# Catalogs
# ---------------------------------------------------------------------------------------------


def catalog_errors(body: dict[str, Any], operation: str) -> list[Error]:
    """A bulk catalog job body (Klaviyo: catalogs API); the ids it names are checked when the
    job runs (job errors), not here."""
    plural, action = CATALOG_BULK_OPERATIONS[operation]
    rows = body["data"]["attributes"][plural]["data"]
    where = f"/data/attributes/{plural}/data"
    if len(rows) > CATALOG_MAX_RESOURCES:
        return [(where, f"A maximum of {CATALOG_MAX_RESOURCES} {plural} is allowed per request.")]
    if not rows:
        return [(where, f"At least one of {plural} is required.")]
    errors: list[Error] = []
    for index, row in enumerate(rows):
        base = ("data", "attributes", plural, "data", index)
        attributes = row.get("attributes") or {}
        if action == "create":
            catalog_type = attributes.get("catalog_type")
            if catalog_type is not None and catalog_type != "$default":
                # Klaviyo: catalogs API: "the only supported catalog type is `$default`".
                errors.append(
                    (pointer(*base, "attributes", "catalog_type"), "catalog_type must be $default.")
                )
            if not attributes["external_id"].strip():
                errors.append(
                    (pointer(*base, "attributes", "external_id"), "external_id may not be blank.")
                )
            item = (row.get("relationships") or {}).get("item")
            if plural == "variants" and not (item or {}).get("data"):
                # Klaviyo's OpenAPI spec: a variant is created for "The original catalog item".
                errors.append(
                    (pointer(*base, "relationships", "item", "data"), "'data' is a required field.")
                )
        metadata = attributes.get("custom_metadata")
        if (
            isinstance(metadata, dict)
            and size_over(metadata, CUSTOM_METADATA_MAX_BYTES) is not None
        ):
            errors.append(
                (
                    pointer(*base, "attributes", "custom_metadata"),
                    f"custom_metadata may not exceed {CUSTOM_METADATA_MAX_BYTES} bytes.",
                )
            )
    return errors


# ---------------------------------------------------------------------------------------------
# Custom objects
# ---------------------------------------------------------------------------------------------


def data_source_errors(body: dict[str, Any]) -> list[Error]:
    title = body["data"]["attributes"]["title"]
    if not title.strip() or len(title) > DATA_SOURCE_TITLE_MAX_CHARS:
        # Klaviyo: custom objects: "Must be between 1 and 255 characters".
        detail = f"title must be between 1 and {DATA_SOURCE_TITLE_MAX_CHARS} characters."
        return [("/data/attributes/title", detail)]
    return []


def records_errors(body: dict[str, Any]) -> list[Error]:
    data = body["data"]
    container = data["attributes"].get("data-source-records")
    where = "/data/attributes/data-source-records"
    if container is None:
        return [(where, "'data-source-records' is a required field.")]
    rows = container["data"]
    if len(rows) > DATA_SOURCE_MAX_RECORDS:
        return [
            (
                f"{where}/data",
                f"A maximum of {DATA_SOURCE_MAX_RECORDS} records is allowed per request.",
            )
        ]
    if not rows:
        return [(f"{where}/data", "At least one record is required.")]
    errors: list[Error] = []
    if not ((data.get("relationships") or {}).get("data-source") or {}).get("data"):
        # Emulator choice: the spec leaves the relationship optional, but records need a data
        # source to go to.
        errors.append(("/data/relationships/data-source/data", "'data' is a required field."))
    for index, row in enumerate(rows):
        size = size_over(row, DATA_SOURCE_RECORD_MAX_BYTES)
        if size is not None:
            # Klaviyo: custom objects: at most 512KB a record; measured like a bulk-import row.
            errors.append(
                (
                    pointer("data", "attributes", "data-source-records", "data", index),
                    f"Record payload is {size} bytes; the maximum is "
                    f"{DATA_SOURCE_RECORD_MAX_BYTES} bytes.",
                )
            )
    return errors
