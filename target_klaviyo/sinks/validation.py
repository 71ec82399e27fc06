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


# The parsers singer-sdk applies to these formats right after validation: a value they cannot
# parse makes the record invalid here, so it is rejected with the reason.
DATE_FORMATS = {
    "date-time": _parses(datetime.datetime.fromisoformat),
    "date": _parses(datetime.date.fromisoformat),
    "time": _parses(datetime.time.fromisoformat),
}


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

    def validate(self, record: dict[str, Any]) -> None:
        try:
            if self._fast is not None:
                self._fast(record)
            elif self._fallback is not None:
                self._fallback.validate(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            self._fail(record, exc.message)
        except Exception as exc:  # singer-sdk's InvalidRecord from the fallback validator
            self._fail(record, str(exc))

    def _fail(self, record: dict[str, Any], message: str) -> None:
        # A copy as received: singer-sdk's timestamp parsing runs next and may null values.
        reason = f"does not match the stream's schema: {message}"
        self.failure = (id(record), reason, dict(record))

    def take_failure(self, record: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """Why `record` failed validation and the record as received, if it did."""
        failure, self.failure = self.failure, None
        if failure is not None and failure[0] == id(record):
            return failure[1], failure[2]
        return None
