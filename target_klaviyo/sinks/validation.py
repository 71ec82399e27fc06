"""Record validation that rejects a bad record instead of ending the run.

singer-sdk's default validator (jsonschema) is slow, and an invalid record either stops the
run or is logged with its contents and loaded anyway. Here the stream's schema is compiled
with fastjsonschema (several times faster), and a record that does not match is remembered
so that its sink rejects it, with the reason, like any other record Klaviyo could not take.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable
from typing import Any

import fastjsonschema
from singer_sdk.sinks.core import BaseJSONSchemaValidator, JSONSchemaValidator

LOGGER = logging.getLogger("target-klaviyo")


def _parses(parse: Callable[[str], Any]) -> Callable[[str], bool]:
    def check(value: str) -> bool:
        try:
            parse(value)
        except ValueError:
            return False
        return True

    return check


# The parsers singer-sdk applies to string columns of these formats (after validation).
DATE_PARSERS: dict[str, Callable[[str], Any]] = {
    "date-time": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
}
# A value they cannot parse makes the record invalid here, so it is rejected with the reason.
DATE_FORMATS = {name: _parses(parse) for name, parse in DATE_PARSERS.items()}


def _date_format(schema: Any) -> str | None:
    if not isinstance(schema, dict):
        return None
    kinds = schema.get("type", [])
    if "string" in kinds and schema.get("format") in DATE_PARSERS:
        return str(schema["format"])
    for option in schema.get("anyOf", ()):
        if (
            isinstance(option, dict)
            and "string" in option.get("type", [])
            and option.get("format") in DATE_PARSERS
        ):
            return str(option["format"])
    return None


def datelike_columns(schema: dict[str, Any]) -> tuple[tuple[str, str, Callable[[str], Any]], ...]:
    """(column, format, parser) for the top-level columns singer-sdk parses into date, time
    or datetime values (the same rule as its per-record path, decided once per schema)."""
    columns = []
    for column, property_schema in (schema.get("properties") or {}).items():
        kind = _date_format(property_schema)
        if kind is not None:
            columns.append((column, kind, DATE_PARSERS[kind]))
    return tuple(columns)


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


class RecordValidator(BaseJSONSchemaValidator):
    """Validates each record; a failure is kept for the sink instead of raised."""

    def __init__(self, schema: dict[str, Any]) -> None:
        super().__init__(schema)
        self.failure: tuple[int, str, dict[str, Any]] | None = None
        self._fast: Any = None
        self._fallback: JSONSchemaValidator | None = None
        try:
            self._fast = fastjsonschema.compile(
                _checked_formats_only(schema), formats=DATE_FORMATS, use_default=False
            )
        except (fastjsonschema.JsonSchemaDefinitionException, ValueError, TypeError) as exc:
            LOGGER.debug("schema not compilable by fastjsonschema (%s); using jsonschema", exc)
            self._fallback = JSONSchemaValidator(schema)

    def check(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Why `record` does not match the schema and a copy as received, or None."""
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

    def validate(self, record: dict[str, Any]) -> None:
        """singer-sdk's per-record path: the failure is kept for the sink."""
        failure = self.check(record)
        if failure is not None:
            self.failure = (id(record), *failure)

    def take_failure(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Why `record` failed validation and the record as received, if it did."""
        failure, self.failure = self.failure, None
        if failure is not None and failure[0] == id(record):
            return failure[1], failure[2]
        return None
