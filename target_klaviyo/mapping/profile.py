"""Map a record to a Klaviyo profile resource (profile and list streams, and event profiles).

The column plan (which source column goes to which Klaviyo attribute, and which columns are
custom properties) is computed once per stream and record shape, and compiled to one function
per shape (`compiled.py`); :meth:`ProfileMapper.map` then only reads values.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from target_klaviyo.klaviyo.fields import (
    IDENTIFIER_FIELDS,
    NUMERIC_LOCATION_FIELDS,
    PROPERTIES_PREFIX,
    STANDARD_COLUMNS,
    property_renames,
)
from target_klaviyo.mapping.compiled import (
    MAX_PROFILE_BYTES,
    MapParts,
    ProfileParts,
    compile_shape,
    profile_too_large,
)
from target_klaviyo.mapping.identity import Identity, Rejection, resolve_identity
from target_klaviyo.mapping.values import (
    MAX_SAFE_INTEGER,
    decimal_to_json,
    encode_sorted_exact,
    format_datetime,
    to_json,
)
from target_klaviyo.records.item import Mapped, mapped
from target_klaviyo.shapes import SHAPES_KEPT, keep
from target_klaviyo.streams import StreamMapping

__all__ = [
    "MAX_ARRAY_ITEMS",
    "MAX_NESTING",
    "MAX_PROFILE_BYTES",
    "MAX_STRING_BYTES",
    "MappedProfile",
    "ProfileMapper",
    "ProfileParts",
    "PropertyPlan",
    "check_value",
    "is_metadata_column",
    "standard_columns",
]

# Klaviyo limits (the spec's operation descriptions), stricter decimal reading of "KB".
MAX_STRING_BYTES = 100_000
MAX_NESTING = 10
MAX_ARRAY_ITEMS = 4_000


def is_metadata_column(column: str) -> bool:
    """Singer metadata columns (``_sdc_*``) are never sent as properties."""
    return column.startswith("_sdc_")


def standard_columns(
    fields: Mapping[str, str], exclude: Collection[str], reserved: Collection[str] = ()
) -> dict[str, str]:
    """Klaviyo standard path -> source column, for the standard fields a stream sends.

    Explicit ``fields`` entries win. A column named like a standard field maps to it unless
    ``fields`` maps that Klaviyo field from another column, the column is excluded, or the column
    is already used by ``fields`` (or ``reserved``) for something else. Excluded source columns
    are never sent, even when listed in ``fields``.
    """
    plan = {
        path: column
        for path, column in fields.items()
        if not path.startswith(PROPERTIES_PREFIX) and column not in exclude
    }
    used = set(fields.values()) | set(reserved)
    for column, path in STANDARD_COLUMNS.items():
        if path in fields or column in exclude or column in used:
            continue
        plan[path] = column
    return plan


# A character is 1 to 4 UTF-8 bytes: strings this short can never be over the limit.
_SHORT = MAX_STRING_BYTES // 4


def _too_long(text: str) -> bool:
    length = len(text)
    if length <= _SHORT:
        return False
    return (
        length > MAX_STRING_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_STRING_BYTES
    )


def _check_string(text: str, what: str) -> None:
    """Klaviyo's 100 KB string limit; `what` names the string."""
    if _too_long(text):
        raise Rejection(f"{what} over Klaviyo's 100 KB ({MAX_STRING_BYTES:,} bytes) string limit")


def _check_nested(value: Any, column: str, depth: int) -> None:
    if depth > MAX_NESTING:
        raise Rejection(
            f"column {column!r} is nested deeper than Klaviyo's limit of {MAX_NESTING} levels"
        )
    if type(value) is dict:
        items: Iterable[Any] = value.values()
        for key in value:
            _check_string(key, f"column {column!r} has a key")
    else:
        if len(value) > MAX_ARRAY_ITEMS:
            raise Rejection(
                f"column {column!r} has an array of {len(value):,} items, over Klaviyo's limit "
                f"of {MAX_ARRAY_ITEMS:,} items per array"
            )
        items = value
    for item in items:
        kind = type(item)
        if kind is str:
            _check_string(item, f"column {column!r} holds a string")
        elif kind is dict or kind is list:
            _check_nested(item, column, depth + 1)


def check_value(value: Any, column: str) -> None:
    """Raise Rejection when a JSON-safe value breaks Klaviyo's string, nesting or array limits."""
    kind = type(value)
    if kind is str:
        _check_string(value, f"column {column!r} is a string")
    elif kind is dict or kind is list:
        _check_nested(value, column, 1)


class PropertyPlan:
    """Which columns of a record become custom properties, and under which names.

    ``properties`` is ``"all"`` (every column that is not in ``skip``, not excluded and not
    ``_sdc_*``; columns absent from the schema included), a list of columns, or ``[]``.
    ``renames`` (property name -> column) are always sent, after the others.
    """

    __slots__ = ("_all", "_listed", "_route", "_shapes", "_skip", "renames")

    _ROUTE_LIMIT = 10_000

    def __init__(
        self,
        properties: str | Collection[str],
        schema_properties: Iterable[str],
        skip: Collection[str],
        exclude: Collection[str],
        renames: Mapping[str, str],
    ) -> None:
        self.renames: tuple[tuple[str, str], ...] = tuple(
            (name, column) for name, column in renames.items() if column not in exclude
        )
        self._all = properties == "all"
        self._skip = frozenset(skip) | frozenset(exclude) | {c for _, c in self.renames}
        self._route: dict[str, bool] = {}
        self._shapes: dict[tuple[str, ...], tuple[tuple[str, str], ...]] = {}
        self._listed: tuple[str, ...] = ()
        if self._all:
            for column in schema_properties:
                self._route[column] = self._sendable(column)
        else:
            self._listed = tuple(
                dict.fromkeys(column for column in properties if column not in exclude)
            )

    def _sendable(self, column: str) -> bool:
        return column not in self._skip and not is_metadata_column(column)

    @property
    def columns(self) -> tuple[str, ...] | None:
        """The listed columns, or None in ``"all"`` mode."""
        return None if self._all else self._listed

    def _route_of(self, column: str) -> bool:
        send = self._sendable(column)
        if len(self._route) < self._ROUTE_LIMIT:
            self._route[column] = send
        return send

    def pairs(self, record: Mapping[str, Any]) -> list[tuple[str, str]]:
        """(property name, column) for the columns of ``record`` that become properties."""
        if self._all:
            route = self._route
            out = []
            for column in record:
                send = route.get(column)
                if send is None:
                    send = self._route_of(column)
                if send:
                    out.append((column, column))
        else:
            out = [(column, column) for column in self._listed if column in record]
        out.extend((name, column) for name, column in self.renames if column in record)
        return out

    def plan(self, record: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
        """`pairs` of a record, cached by its column tuple."""
        shape = tuple(record)
        plan = self._shapes.get(shape)
        if plan is None:
            plan = keep(self._shapes, shape, tuple(self.pairs(record)))
        return plan

    def collect(
        self,
        record: Mapping[str, Any],
        unset: bool,
        plan: tuple[tuple[str, str], ...] | None = None,
    ) -> tuple[dict[str, Any], list[str]]:
        """The custom properties of ``record`` (JSON-safe, limits checked), and the names of the
        null ones when ``unset`` (otherwise nulls are left out). Raises Rejection.

        The hot path of mapping: the common scalar types are handled inline. ``plan`` is
        `plan(record)`, when the caller has it already.
        """
        properties: dict[str, Any] = {}
        nulls: list[str] = []
        if plan is None:
            plan = self.plan(record)
        for name, column in plan:
            raw = record[column]
            kind = type(raw)
            if (
                (kind is str and len(raw) <= _SHORT)
                or kind is bool
                or (kind is int and -MAX_SAFE_INTEGER <= raw <= MAX_SAFE_INTEGER)
            ):
                properties[name] = raw
            else:
                property_value(properties, nulls, name, column, raw, unset)
        if nulls and properties:
            nulls = [name for name in nulls if name not in properties]
        return properties, nulls


def property_value(
    properties: dict[str, Any],
    nulls: list[str],
    name: str,
    column: str,
    raw: Any,
    unset: bool,
) -> None:
    """A custom property's value other than a short string, a bool or a safe int (JSON-safe,
    limits checked; a null is left out, and listed in `nulls` when `unset`). Raises Rejection."""
    kind = type(raw)
    if kind is str:
        check_value(raw, column)
        properties[name] = raw
        return
    # Numbers and times convert to values that cannot break a limit.
    if kind is Decimal:
        number = decimal_to_json(raw)
        if number is not None:
            properties[name] = number
            return
    elif kind is datetime:
        properties[name] = format_datetime(raw)
        return
    value = None if raw is None else to_json(raw)
    if value is None:
        if unset:
            nulls.append(name)
        properties.pop(name, None)
        return
    check_value(value, column)
    properties[name] = value


def standard_value(
    out: dict[str, Any], key: str, raw: Any, column: str, path: str, numeric: bool, unset: bool
) -> None:
    """A standard field's value other than a short string; a null clears the field only when
    `unset`. Raises Rejection."""
    value = None if raw is None else to_json(raw)
    if value is None:
        if unset:
            out[key] = None
    else:
        out[key] = _text(value, column, path, numeric)


def _standard_fields(
    plan: tuple[tuple[str, str, str, bool], ...],
    record: Mapping[str, Any],
    unset: bool,
    out: dict[str, Any],
) -> None:
    """Standard fields of `record` (all present in it) into `out`."""
    for key, column, path, numeric in plan:
        raw = record[column]
        if type(raw) is str and len(raw) <= _SHORT:
            out[key] = raw
        else:
            standard_value(out, key, raw, column, path, numeric, unset)


@dataclass(slots=True)
class MappedProfile:
    """A record mapped to a profile resource (one entry of a bulk import job)."""

    identity: Identity
    resource: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    size: int = 0
    # The resource as sent (keys sorted): encoded once, for its size, its hash and the body.
    encoded: bytes = b""


def _text(value: Any, column: str, attribute: str, numeric: bool = False) -> Any:
    """A standard attribute value: Klaviyo types them as strings (lat/long also as numbers)."""
    kind = type(value)
    if kind is str:
        _check_string(value, f"column {column!r} ({attribute}) is a string")
        return value
    if kind is bool:
        return "true" if value else "false"
    if kind is int or kind is float:
        return value if numeric else str(value)
    what = "an object" if kind is dict else "a list"
    raise Rejection(f"column {column!r} ({attribute}) must be a single value, not {what}")


# (standard fields present, location fields present, property pairs) of one record shape.
_FieldPlan = tuple[tuple[str, str, str, bool], ...]
_RecordPlan = tuple[_FieldPlan, _FieldPlan, tuple[tuple[str, str], ...]]


class ProfileMapper:
    """Maps records of one stream to Klaviyo profile resources."""

    def __init__(
        self,
        mapping: StreamMapping,
        schema_properties: Collection[str],
        default_region: str | None,
        *,
        reserved_columns: Collection[str] = (),
    ) -> None:
        """Precompute the column plan.

        ``reserved_columns`` are columns another part of the mapping uses (an event's time
        field, say): they are not mapped to standard fields by name nor sent as properties.
        """
        self.mapping = mapping
        self.default_region = default_region
        self._unset = mapping.nulls == "unset"
        exclude = mapping.exclude
        plan = standard_columns(mapping.fields, exclude, reserved_columns)
        self.email_column: str | None = plan.pop("email", None)
        self.phone_column: str | None = plan.pop("phone_number", None)
        self.external_id_column: str | None = plan.pop("external_id", None)
        # (key, column, Klaviyo path, numeric allowed) for top-level and location fields.
        self._top: tuple[tuple[str, str, str, bool], ...] = tuple(
            (path, column, path, False)
            for path, column in plan.items()
            if not path.startswith("location.")
        )
        self._location: tuple[tuple[str, str, str, bool], ...] = tuple(
            (path[9:], column, path, path[9:] in NUMERIC_LOCATION_FIELDS)
            for path, column in plan.items()
            if path.startswith("location.")
        )
        renames = property_renames(mapping.fields)
        identity_columns = [
            c for c in (self.email_column, self.phone_column, self.external_id_column) if c
        ]
        # Columns that never become properties in "all" mode: whatever feeds a standard field,
        # plus every column *named* like a standard field (one that `fields` overrides is
        # ambiguous: sending it as a custom property named e.g. "email" would mislead).
        skip = (
            set(plan.values())
            | set(identity_columns)
            | set(STANDARD_COLUMNS)
            | set(reserved_columns)
        )
        self.properties = PropertyPlan(
            mapping.properties, schema_properties, skip, exclude, renames
        )
        self._compiled: dict[tuple[str, ...], MapParts] = {}
        self._label = mapping.pattern
        #: Columns this mapper reads for identity, standard fields or properties (other than
        #: "all"-mode properties), plus every standard-named column.
        self.consumed_columns: frozenset[str] = frozenset(
            skip
            | {column for _, column in self.properties.renames}
            | set(self.properties.columns or ())
        )

    def identity(self, record: Mapping[str, Any]) -> tuple[Identity, list[str]]:
        """Resolve the record's identity; raises Rejection."""
        get = record.get
        return resolve_identity(
            get(self.email_column) if self.email_column else None,
            get(self.phone_column) if self.phone_column else None,
            get(self.external_id_column) if self.external_id_column else None,
            self.default_region,
        )

    def _plan(self, record: Mapping[str, Any]) -> _RecordPlan:
        """The standard fields and properties a record of this shape has (worked out when a
        shape is compiled, and per record beyond the shapes kept)."""
        return (
            tuple(entry for entry in self._top if entry[1] in record),
            tuple(entry for entry in self._location if entry[1] in record),
            self.properties.plan(record),
        )

    def attributes(
        self, record: Mapping[str, Any], identity: Identity
    ) -> tuple[dict[str, Any], list[str]]:
        """Profile attributes of a record and the custom properties to unset."""
        unset = self._unset
        top, location_plan, pairs = self._plan(record)
        attributes: dict[str, Any] = identity.as_attributes()
        if top:
            _standard_fields(top, record, unset, attributes)
        if location_plan:
            location: dict[str, Any] = {}
            _standard_fields(location_plan, record, unset, location)
            if location:
                attributes["location"] = location
        properties, to_unset = self.properties.collect(record, unset, pairs)
        if properties:
            attributes["properties"] = properties
        return attributes, to_unset

    def map(self, record: Mapping[str, Any]) -> MappedProfile:
        """Map one record; raises Rejection with a reason the user can act on."""
        identity, _, resource, encoded, warnings = self.map_parts(record)
        return MappedProfile(identity, resource, warnings, len(encoded), encoded)

    def map_parts(self, record: Mapping[str, Any]) -> ProfileParts:
        """`map` as a tuple: the sinks' hot path, by the function compiled for the record's
        shape."""
        shape = tuple(record)
        compiled = self._compiled.get(shape)
        if compiled is None:
            if len(self._compiled) >= SHAPES_KEPT:
                return self.map_generic(record)
            compiled = keep(self._compiled, shape, self._compile(record))
        return compiled(record)

    def _compile(self, record: Mapping[str, Any]) -> MapParts:
        top, location, pairs = self._plan(record)
        return compile_shape(
            identity_columns=(
                self.email_column if self.email_column in record else None,
                self.phone_column if self.phone_column in record else None,
                self.external_id_column if self.external_id_column in record else None,
            ),
            top=top,
            location=location,
            properties=pairs,
            unset=self._unset,
            default_region=self.default_region,
            short=_SHORT,
            standard_value=standard_value,
            property_value=property_value,
            label=self._label,
        )

    def map_generic(self, record: Mapping[str, Any]) -> ProfileParts:
        """`map_parts` by the plan, for any shape (and the reference the compiled one meets)."""
        identity, warnings = self.identity(record)
        attributes, to_unset = self.attributes(record, identity)
        resource: dict[str, Any] = {"type": "profile", "attributes": attributes}
        if to_unset:
            resource["meta"] = {"patch_properties": {"unset": sorted(set(to_unset))}}
        encoded = encode_sorted_exact(resource)
        if len(encoded) > MAX_PROFILE_BYTES:
            raise profile_too_large(len(encoded))
        return ProfileParts(identity, identity.as_attributes(), resource, encoded, warnings)


def cleared_fields(resource: Mapping[str, Any]) -> dict[str, Any] | None:
    """The profile-import resource that clears a profile's standard fields sent as null, or
    None when there are none. (A bulk import leaves a field sent as null as it is: Klaviyo's
    Bulk Import Profiles guide; profile-import clears it.)"""
    attributes = resource["attributes"]
    nulls: dict[str, Any] = {name: None for name, value in attributes.items() if value is None}
    location = attributes.get("location")
    if isinstance(location, dict):
        cleared = {name: None for name, value in location.items() if value is None}
        if cleared:
            nulls["location"] = cleared
    if not nulls:
        return None
    identifiers = {name: attributes[name] for name in IDENTIFIER_FIELDS if name in attributes}
    return {"type": "profile", "attributes": {**identifiers, **nulls}}


class ProfileRecords:
    """A profile stream's records mapped for an import job (`ProfileUpsertSink.map_record`).
    Pickled as its settings, so that a second process maps as this one does
    (records/offload.py); it lives here, away from the sinks and singer-sdk, so that process
    imports only the mapping."""

    def __init__(
        self, mapping: StreamMapping, columns: tuple[str, ...], default_region: str | None
    ) -> None:
        self._settings = (mapping, columns, default_region)
        self.mapper = ProfileMapper(mapping, list(columns), default_region)
        self.clears_nulls = mapping.nulls == "unset"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ProfileRecords, self._settings)

    def __call__(self, record: dict[str, Any]) -> Mapped:
        identity, identifiers, resource, encoded, warnings = self.mapper.map_parts(record)
        # Sent as encoded: the resource is not kept while the record waits in a job; only
        # what a bulk import cannot clear (`nulls: unset`) is, as the payload.
        clears = cleared_fields(resource) if self.clears_nulls else None
        return mapped((identity.key(), identifiers, clears, len(encoded), warnings, encoded))
