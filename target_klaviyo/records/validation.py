"""Record validation that rejects a bad record instead of ending the run.

singer-sdk's default validator (jsonschema) is slow, and an invalid record either stops the
run or is logged with its contents and loaded anyway. Here the stream's schema is compiled
with fastjsonschema (several times faster), and a record that does not match is remembered
so that its sink rejects it, with the reason, like any other record Klaviyo could not take.

Most schemas only say which JSON types each column may hold. For those, whether a record
matches depends only on its columns and the Python type of each value (plus date and time
strings that must parse): that verdict is worked out once per record shape and then looked
up. Whatever the shortcut cannot vouch for goes to fastjsonschema, which also gives the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from decimal import Decimal
from typing import Any

import fastjsonschema

from target_klaviyo.sdk_records import DATE_PARSERS
from target_klaviyo.shapes import SHAPES_KEPT

LOGGER = logging.getLogger("target-klaviyo")


def _parses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return check


# A date or time string its parser cannot read makes the record invalid here, so it is
# rejected with the reason (singer-sdk would null it).
DATE_FORMATS = {name: _parses(parse) for name, parse in DATE_PARSERS.items()}


def _checked_formats_only(schema: Any) -> Any:
    """Other string formats (email, uri, ...) are not validated, as in singer-sdk."""
    if isinstance(schema, dict):
        return {
            k: _checked_formats_only(v)
            for k, v in schema.items()
            if k != "format" or v in DATE_FORMATS
        }
    if isinstance(schema, list):
        return [_checked_formats_only(v) for v in schema]
    return schema


# Python types of decoded JSON (numbers with a fraction arrive as Decimal) per JSON type.
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),  # type(True) is bool, never int: booleans are not integers
    "number": (int, float, Decimal),
    "boolean": (bool,),
    "null": (type(None),),
    "object": (dict,),
    "array": (list,),
}
# Keywords that say nothing about validity here (formats other than date and time are not
# checked, as in singer-sdk).
_ANNOTATIONS = frozenset(
    {
        "title",
        "description",
        "default",
        "examples",
        "$comment",
        "format",
        "readOnly",
        "writeOnly",
        "deprecated",
    }
)
_TOP_LEVEL = _ANNOTATIONS | {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "$schema",
    "$id",
    "definitions",
    "$defs",
}
_ANY_TYPE = object  # a column whose schema allows every value
# (column, parser) of the date and time strings a record of a shape holds: valid if they parse.
_FormatChecks = tuple[tuple[str, Callable[[str], Any]], ...]
# Verdicts of the records with one set of columns, by the types of their values.
Verdicts = dict[tuple[type, ...], "_FormatChecks | None"]
_NOT_KEPT: Verdicts = {}  # stands for column sets beyond those kept: never written to


class _Column:
    """What a column's schema allows, when it constrains only the type (and a date format)."""

    __slots__ = ("parse_format", "types")

    def __init__(self, types: Collection[type], parse_format: Callable[[str], Any] | None):
        self.types = frozenset(types)
        self.parse_format = parse_format  # raises ValueError when a string is not of the format


def _simple_column(schema: Any) -> _Column | None:
    """The column's allowed types, or None if its schema says more than types."""
    if not isinstance(schema, dict) or not set(schema) <= _ANNOTATIONS | {"type"}:
        return None
    kinds = schema.get("type")
    if kinds is None:
        return _Column((_ANY_TYPE,), None)
    kinds = [kinds] if isinstance(kinds, str) else kinds
    if not isinstance(kinds, list) or not all(kind in _JSON_TYPES for kind in kinds):
        return None
    types = [t for kind in kinds for t in _JSON_TYPES[kind]]
    fmt = schema.get("format")
    return _Column(types, DATE_PARSERS.get(fmt) if "string" in kinds and fmt else None)


class TypeShapes:
    """Decides, per record shape (its columns and the type of each value), whether records of
    that shape match a schema that constrains only types. Built only for such schemas."""

    def __init__(self, columns: dict[str, _Column], required: frozenset[str], closed: bool):
        self._columns = columns
        self._required = required
        self._closed = closed  # additionalProperties: false
        self._by_columns: dict[tuple[str, ...], Verdicts] = {}
        self._room = SHAPES_KEPT  # verdicts in all, whatever the column sets

    @classmethod
    def of(cls, schema: Any) -> TypeShapes | None:
        if not isinstance(schema, dict) or not set(schema) <= _TOP_LEVEL:
            return None
        kinds = schema.get("type", "object")
        if kinds not in ("object", ["object"]):
            return None
        extra = schema.get("additionalProperties", True)
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(extra, bool) or not isinstance(properties, dict):
            return None
        if not isinstance(required, list):
            return None
        columns = {}
        for name, column_schema in properties.items():
            column = _simple_column(column_schema)
            if column is None:
                return None
            columns[name] = column
        return cls(columns, frozenset(required), not extra)

    def verdicts_of(self, columns: tuple[str, ...]) -> Verdicts:
        """Where verdicts for records with these columns are kept. A caller that already
        tracks column sets keeps it, and a lookup then costs only the value types' hash."""
        verdicts = self._by_columns.get(columns)
        if verdicts is None:
            if len(self._by_columns) >= SHAPES_KEPT:
                return _NOT_KEPT
            verdicts = self._by_columns[columns] = {}
        return verdicts

    def verdict(
        self, record: dict[str, Any], verdicts: Verdicts | None = None
    ) -> _FormatChecks | None:
        """None: records of this shape may not match (ask the full validator). Otherwise they
        match if the strings of these columns pass their date or time format's check.

        `verdicts`: ``verdicts_of(tuple(record))``, when the caller has it already."""
        if verdicts is None:
            verdicts = self.verdicts_of(tuple(record))
        types = tuple(map(type, record.values()))
        try:
            return verdicts[types]
        except KeyError:
            pass
        result = self._decide(record)
        if verdicts is not _NOT_KEPT and self._room > 0:
            self._room -= 1
            verdicts[types] = result
        return result

    def _decide(self, record: dict[str, Any]) -> _FormatChecks | None:
        if not self._required <= record.keys():
            return None
        formatted = []
        for name, value in record.items():
            column = self._columns.get(name)
            if column is None:
                if self._closed:
                    return None
                continue
            kind = type(value)
            if kind not in column.types and _ANY_TYPE not in column.types:
                return None
            if kind is str and column.parse_format is not None:
                formatted.append((name, column.parse_format))
        return tuple(formatted)


class RecordCheck:
    """Checks records against a stream's schema: `check` says why one does not match. Free
    of singer-sdk's import (the mapping process checks records with it); `sdk.RecordValidator`
    is singer-sdk's validator hook around it."""

    def __init__(self, schema: dict[str, Any]) -> None:
        self.schema = schema
        self._fast: Any = None
        self._fallback: Any = None  # singer-sdk's JSONSchemaValidator
        self._shapes = TypeShapes.of(schema)
        try:
            self._fast = fastjsonschema.compile(
                _checked_formats_only(schema), formats=DATE_FORMATS, use_default=False
            )
        except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
            LOGGER.debug("schema not compilable by fastjsonschema (%s); using jsonschema", exc)
            from singer_sdk.sinks.core import JSONSchemaValidator

            self._fallback = JSONSchemaValidator(schema)

    def verdicts_of(self, columns: tuple[str, ...]) -> Verdicts | None:
        """What `check` may be given for records with these columns (see TypeShapes)."""
        return None if self._shapes is None else self._shapes.verdicts_of(columns)

    def check(
        self, record: dict[str, Any], verdicts: Verdicts | None = None
    ) -> tuple[str, dict[str, Any]] | None:
        """Why `record` does not match the schema and a copy as received, or None.

        `verdicts`: ``verdicts_of(tuple(record))``, when the caller keeps it per column set."""
        if self._shapes is not None:
            checks = self._shapes.verdict(record, verdicts)
            if checks is not None:
                try:
                    for name, parse in checks:
                        parse(record[name])
                except ValueError:
                    pass  # the full validator gives the reason
                else:
                    return None
        try:
            if self._fast is not None:
                self._fast(record)
            elif self._fallback is not None:
                self._fallback.validate(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            message = exc.message
        except Exception as exc:  # singer-sdk's InvalidRecord from the fallback validator
            message = str(exc)
        else:
            return None
        # A copy as received: date and time strings are parsed next and may be nulled.
        return f"does not match the stream's schema: {message}", dict(record)
