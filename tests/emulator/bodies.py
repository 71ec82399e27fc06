"""Request bodies: size, content type and JSON parsing, then the errors Klaviyo would answer for
a parsed body (the spec's schema first, then Klaviyo's limits and value rules).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from email.message import Message
from typing import Any

import msgspec

from . import rules
from .calls import ApiResponseError, invalid
from .resources import ApiError
from .schemas import Operation
from .state import now_utc

# Rows of bulk bodies: a 400 carries one error per bad row (Klaviyo: bulk profile import).
ROW_PATTERNS: dict[str, re.Pattern[str]] = {
    "bulk_import_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_subscribe_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_unsubscribe_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_suppress_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_unsuppress_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_create_events": re.compile(
        r"^/data/attributes/events-bulk-create/data/\d+(?:/attributes/events/data/\d+)?"
    ),
    "add_profiles_to_list": re.compile(r"^/data/\d+"),
    "remove_profiles_from_list": re.compile(r"^/data/\d+"),
    **{
        operation: re.compile(rf"^/data/attributes/{plural}/data/\d+")
        for operation, (plural, _) in rules.CATALOG_BULK_OPERATIONS.items()
    },
    "bulk_create_data_source_records": re.compile(
        r"^/data/attributes/data-source-records/data/\d+"
    ),
}


def parse_body(operation: Operation, headers: Message, raw: bytes) -> Any:
    limit = rules.MAX_BODY_BYTES.get(operation.operation_id)
    if limit is not None and len(raw) > limit:
        # Klaviyo: rate limits and errors: a payload over the operation's limit -> 413.
        raise invalid(
            [("/data", f"Payload is {len(raw)} bytes; the maximum is {limit} bytes.")],
            status=413,
        )
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type not in ("application/vnd.api+json", "application/json"):
        # Klaviyo: API overview: bodies are application/vnd.api+json (application/json works).
        raise ApiResponseError(
            [
                ApiError(
                    415,
                    "unsupported_media_type",
                    f'Unsupported media type "{content_type}" in request.',
                )
            ],
            violation=True,
        )
    if not raw:
        raise invalid([("/data", "A request body is required.")])
    try:
        # msgspec reads a well-formed body several times faster than json; anything it
        # refuses (bad JSON, but also numbers beyond a double or a BOM, which Python's
        # parser takes) gets json's answer, so json decides what is accepted.
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        pass
    try:
        # NaN / Infinity are not JSON; Klaviyo's parser refuses them.
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid([("/data", f"JSON parse error - {exc}")]) from exc


def body_errors(
    operation: Operation,
    body: Any,
    regions: frozenset[str],
    *,
    validate: bool,
    raw: bytes | None = None,
) -> list[tuple[str, str]]:
    """Schema violations, then Klaviyo's rules; bulk bodies get one error per bad row."""
    op_id = operation.operation_id
    schema_errors = operation.body_errors(body) if validate else []
    row_pattern = ROW_PATTERNS.get(op_id)
    if schema_errors and row_pattern is None:
        return schema_errors
    try:
        rule_errors = _rule_errors(op_id, body, regions, raw)
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        # The rules assume a schema-valid body; without one, report the schema errors.
        rule_errors = [] if schema_errors else [("/data", f"Invalid request body: {exc!r}")]
    if row_pattern is None:
        return rule_errors
    # Rows that broke the schema report that; the other rows report rule violations.
    bad_rows = {m.group(0) for where, _ in schema_errors if (m := row_pattern.match(where))}
    combined = schema_errors + [
        (where, detail)
        for where, detail in rule_errors
        if not ((m := row_pattern.match(where)) and m.group(0) in bad_rows)
    ]
    combined.sort(key=lambda error: _row_numbers(error[0]))
    return _first_per_row(combined, row_pattern)


def _rule_errors(
    op_id: str, body: Any, regions: frozenset[str], raw: bytes | None
) -> list[tuple[str, str]]:
    now = now_utc()
    checks: dict[str, Callable[[], list[tuple[str, str]]]] = {
        "create_or_update_profile": lambda: rules.profile_import_errors(body, regions),
        "bulk_import_profiles": lambda: rules.bulk_import_errors(body, regions, raw),
        "create_list": lambda: rules.create_list_errors(body),
        "add_profiles_to_list": lambda: rules.list_members_errors(body),
        "remove_profiles_from_list": lambda: rules.list_members_errors(body),
        "create_event": lambda: rules.create_event_errors(body, regions, now),
        "bulk_create_events": lambda: rules.bulk_events_errors(body, regions, now),
        "bulk_subscribe_profiles": lambda: rules.subscribe_errors(body, regions, now),
        "bulk_unsubscribe_profiles": lambda: rules.unsubscribe_errors(body, regions),
        "bulk_suppress_profiles": lambda: rules.suppression_errors(body),
        "bulk_unsuppress_profiles": lambda: rules.suppression_errors(body),
        "request_profile_deletion": lambda: rules.deletion_errors(body),
        "create_data_source": lambda: rules.data_source_errors(body),
        "bulk_create_data_source_records": lambda: rules.records_errors(body),
    }
    if op_id in rules.CATALOG_BULK_OPERATIONS:
        return rules.catalog_errors(body, op_id)
    check = checks.get(op_id)
    return check() if check else []


def _first_per_row(
    errors: list[tuple[str, str]], pattern: re.Pattern[str] | None
) -> list[tuple[str, str]]:
    if pattern is None:
        return errors
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for where, detail in errors:
        match = pattern.match(where)
        row = match.group(0) if match else where
        if row not in seen:
            seen.add(row)
            kept.append((where, detail))
    return kept


def _row_numbers(where: str) -> list[int]:
    return [int(number) for number in re.findall(r"/(\d+)(?=/|$)", where)]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def loads_quietly(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def count_items(operation: str, body: Any) -> int:
    """Profiles / events / ids carried by a request body, for the request log."""
    if operation in (
        "create_or_update_profile",
        "create_event",
        "create_list",
        "request_profile_deletion",
        "create_data_source",
    ):
        return 1
    try:
        data = body["data"]
        if operation in ("add_profiles_to_list", "remove_profiles_from_list"):
            return len(data)
        if operation == "bulk_create_events":
            return sum(
                len(entry["attributes"]["events"]["data"])
                for entry in data["attributes"]["events-bulk-create"]["data"]
            )
        if operation in (
            "bulk_import_profiles",
            "bulk_subscribe_profiles",
            "bulk_unsubscribe_profiles",
            "bulk_suppress_profiles",
            "bulk_unsuppress_profiles",
        ):
            return len(data["attributes"]["profiles"]["data"])
        if operation == "bulk_create_data_source_records":
            return len(data["attributes"]["data-source-records"]["data"])
        if operation in rules.CATALOG_BULK_OPERATIONS:
            plural, _ = rules.CATALOG_BULK_OPERATIONS[operation]
            return len(data["attributes"][plural]["data"])
    except (KeyError, TypeError, AttributeError):
        pass
    return 0
