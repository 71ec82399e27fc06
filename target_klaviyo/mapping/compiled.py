"""A profile mapping compiled to one Python function per record shape.

Records of a stream nearly always share a shape: the same columns in the same order. For a
shape, the mapper's plan (which column feeds which identifier, standard field or custom
property) is written out as straight-line Python and compiled once, so that mapping a record
runs no loop over the plan and no generic dispatch for the common values (short strings,
booleans, integers, decimals, datetimes). Every other value goes through the helpers of the
generic path in `profile.py`, so both paths give the same resource (a test compares them on
random records).

Column and property names enter the source only as `repr()` literals.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, NamedTuple

from target_klaviyo.mapping.identity import Identity, Rejection, resolve_identity
from target_klaviyo.mapping.values import (
    MAX_SAFE_INTEGER,
    decimal_to_json,
    encode_sorted_exact,
    format_datetime,
)

# Klaviyo's limit on one profile (the stricter, decimal reading of its "100 KB").
MAX_PROFILE_BYTES = 100_000


class ProfileParts(NamedTuple):
    """A record mapped to a profile, as the sinks take it."""

    identity: Identity
    identifiers: dict[str, str]  # the identity as profile attributes
    resource: dict[str, Any]
    encoded: bytes  # the resource as sent (keys sorted): its size, its hash and the body
    warnings: list[str]


MapParts = Callable[[Mapping[str, Any]], ProfileParts]


def profile_too_large(size: int) -> Rejection:
    return Rejection(
        f"profile is {size:,} bytes, over Klaviyo's 100 KB "
        f"({MAX_PROFILE_BYTES:,} bytes) per-profile limit"
    )


# (attribute key, source column, Klaviyo path, numeric allowed) of a standard field.
FieldPlan = tuple[tuple[str, str, str, bool], ...]


def compile_shape(
    *,
    identity_columns: tuple[str | None, str | None, str | None],
    top: FieldPlan,
    location: FieldPlan,
    properties: tuple[tuple[str, str], ...],
    unset: bool,
    default_region: str | None,
    short: int,
    standard_value: Callable[..., None],
    property_value: Callable[..., None],
    label: str,
) -> MapParts:
    """`map_parts` for records of one shape: every column named here is in the record.

    `identity_columns` are the email, phone_number and external_id columns (None when the
    shape has no such column); `top` and `location` the standard fields present; `properties`
    (property name, column) in the order the generic path applies them.
    """
    lines = ["def map_parts(record):"]
    add = lines.append
    identifiers = ", ".join("None" if c is None else f"record[{c!r}]" for c in identity_columns)
    add(f"    identity, warnings = resolve_identity({identifiers}, region)")
    add("    email, phone_number, external_id = identity")
    add("    identifiers = {}")
    for name in ("email", "phone_number", "external_id"):
        add(f"    if {name} is not None:")
        add(f"        identifiers[{name!r}] = {name}")
    add("    attributes = identifiers.copy()")
    _fields(add, "attributes", top, short, unset)
    if location:
        add("    location = {}")
        _fields(add, "location", location, short, unset)
        add("    if location:")
        add("        attributes['location'] = location")
    add("    properties = {}")
    add("    nulls = []")
    for name, column in properties:
        add(f"    value = record[{column!r}]")
        add("    kind = type(value)")
        add(
            f"    if (kind is str and len(value) <= {short}) or kind is bool or "
            f"(kind is int and {-MAX_SAFE_INTEGER} <= value <= {MAX_SAFE_INTEGER}):"
        )
        add(f"        properties[{name!r}] = value")
        add("    elif kind is Decimal and (number := decimal_to_json(value)) is not None:")
        add(f"        properties[{name!r}] = number")
        add("    elif kind is datetime:")
        add(f"        properties[{name!r}] = format_datetime(value)")
        add("    else:")
        add(f"        property_value(properties, nulls, {name!r}, {column!r}, value, {unset!r})")
    add("    if properties:")
    add("        attributes['properties'] = properties")
    add("    resource = {'type': 'profile', 'attributes': attributes}")
    if unset:
        add("    if nulls and properties:")
        add("        nulls = [name for name in nulls if name not in properties]")
        add("    if nulls:")
        add("        resource['meta'] = {'patch_properties': {'unset': sorted(set(nulls))}}")
    add("    encoded = encode_sorted_exact(resource)")
    add(f"    if len(encoded) > {MAX_PROFILE_BYTES}:")
    add("        raise profile_too_large(len(encoded))")
    add("    return new_tuple(ProfileParts, (identity, identifiers, resource, encoded, warnings))")

    namespace: dict[str, Any] = {
        "resolve_identity": resolve_identity,
        "encode_sorted_exact": encode_sorted_exact,
        "decimal_to_json": decimal_to_json,
        "format_datetime": format_datetime,
        "Decimal": Decimal,
        "datetime": datetime,
        "standard_value": standard_value,
        "property_value": property_value,
        "profile_too_large": profile_too_large,
        "new_tuple": tuple.__new__,  # a NamedTuple without its Python-level constructor
        "ProfileParts": ProfileParts,
        "region": default_region,
    }
    exec(compile("\n".join(lines), f"<profile mapping of {label}>", "exec"), namespace)
    function: MapParts = namespace["map_parts"]
    return function


def _fields(
    add: Callable[[str], None], target: str, plan: FieldPlan, short: int, unset: bool
) -> None:
    for key, column, path, numeric in plan:
        add(f"    value = record[{column!r}]")
        add(f"    if type(value) is str and len(value) <= {short}:")
        add(f"        {target}[{key!r}] = value")
        add("    else:")
        add(
            f"        standard_value({target}, {key!r}, value, {column!r}, {path!r}, "
            f"{numeric!r}, {unset!r})"
        )
