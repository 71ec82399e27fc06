"""Intake: what a record goes through before it is mapped.

For records that skip singer-sdk's per-record path (see `sdk.py`), the same steps: metadata
columns dropped, key properties checked, the record validated (a record that does not match
is rejected with the reason, the run goes on), date and time strings parsed as the schema says.
What depends only on a record's columns is worked out once per set of columns. A record kept
as its line of input (while it waits for Klaviyo) is rebuilt by the same steps.
"""

from __future__ import annotations

import logging
from typing import Any

from target_klaviyo.records.validation import RecordCheck, Verdicts
from target_klaviyo.sdk_records import (
    METADATA_COLUMNS,
    datelike_columns,
    decode_message,
    drop_metadata,
    missing_key_properties,
    parse_dates,
)
from target_klaviyo.shapes import keep

# Why a record failed validation, and a copy of it as received.
Failure = tuple[str, dict[str, Any]]


class Intake:
    def __init__(
        self,
        schema: dict[str, Any],
        key_properties: tuple[str, ...],
        validator: RecordCheck | None,
        logger: logging.Logger,
    ) -> None:
        self._required = key_properties
        self._dates = datelike_columns(schema)
        self._validator = validator
        self._logger = logger
        # Per set of columns a record arrives with: whether metadata columns are to go, and
        # the validator's verdicts for records with those columns.
        self._by_columns: dict[tuple[str, ...], tuple[bool, Verdicts | None]] = {}

    def check(self, record: dict[str, Any]) -> Failure | None:
        """A record read from the input: prepared in place, or why it fails validation.

        Raises MissingKeyPropertiesError, as singer-sdk does.
        """
        columns = tuple(record)
        known = self._by_columns.get(columns)
        if known is None:
            known = self._columns_checked(columns)
        drops_metadata, verdicts = known
        if drops_metadata:
            drop_metadata(record)
        validator = self._validator
        failure = None if validator is None else validator.check(record, verdicts)
        if failure is None and self._dates:
            parse_dates(record, self._dates, self._warn)
        return failure

    def rebuild(self, line: str) -> dict[str, Any]:
        """The record of a line of input, as `check` passed it on (it warned already)."""
        record: dict[str, Any] = decode_message(line)["record"]
        drop_metadata(record)
        parse_dates(record, self._dates, None)
        return record

    def _columns_checked(self, columns: tuple[str, ...]) -> tuple[bool, Verdicts | None]:
        drops_metadata = not METADATA_COLUMNS.isdisjoint(columns)
        kept = tuple(c for c in columns if c not in METADATA_COLUMNS) if drops_metadata else columns
        error = missing_key_properties(self._required, kept)
        if error is not None:
            raise error
        verdicts = None if self._validator is None else self._validator.verdicts_of(kept)
        return keep(self._by_columns, columns, (drops_metadata, verdicts))

    def _warn(self, column: str, kind: str) -> None:
        self._logger.warning("column %r is not a valid %s; taken as null", column, kind)
