"""What singer-sdk does to a record, copied (the seams are listed in `sdk.py`), without
importing singer-sdk: the mapping process (`records/offload.py`) checks and maps records with
these and starts in a tenth of a second, where singer-sdk's import alone takes a quarter.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from singer_sdk.exceptions import MissingKeyPropertiesError

# A line of input as the reader decodes it (numbers with a fraction as Decimal, as
# singer-sdk's readers give them): the decoder's own method, once a line, no call around it.
decode_message: Callable[[str | bytes], Any] = msgspec.json.Decoder(float_hook=Decimal).decode


# -- a record's columns -------------------------------------------------------------------

METADATA_COLUMNS = frozenset(
    {
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    }
)


def drop_metadata(record: dict[str, Any]) -> None:
    """The metadata columns singer-sdk removes when add_record_metadata is off."""
    for column in METADATA_COLUMNS:
        record.pop(column, None)


def missing_key_properties(
    required: Sequence[str], columns: Sequence[str]
) -> MissingKeyPropertiesError | None:
    """singer-sdk's error for a record without one of its stream's key properties."""
    if all(key in columns for key in required):
        return None
    from singer_sdk.exceptions import MissingKeyPropertiesError  # once a set of columns

    return MissingKeyPropertiesError(
        "Record is missing one or more key_properties. "
        f"Key Properties: {tuple(required)}, Record Keys: {list(columns)}"
    )


# The parsers singer-sdk applies to string columns of these formats.
DATE_PARSERS: dict[str, Callable[[str], Any]] = {
    "date-time": datetime.datetime.fromisoformat,
    "date": datetime.date.fromisoformat,
    "time": datetime.time.fromisoformat,
}
DateColumns = tuple[tuple[str, str, Callable[[str], Any]], ...]


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


def datelike_columns(schema: dict[str, Any]) -> DateColumns:
    """(column, format, parser) for the top-level columns singer-sdk parses into date, time
    or datetime values (its rule, decided once per schema rather than per record)."""
    columns = []
    for column, property_schema in (schema.get("properties") or {}).items():
        kind = _date_format(property_schema)
        if kind is not None:
            columns.append((column, kind, DATE_PARSERS[kind]))
    return tuple(columns)


def parse_dates(
    record: dict[str, Any],
    columns: DateColumns,
    warn: Callable[[str, str], None] | None,
) -> None:
    """Date and time strings parsed as the schema says; what does not parse is null
    (singer-sdk's `DatetimeErrorTreatmentEnum.NULL`), with `warn(column, format)`."""
    for column, kind, parse in columns:
        value = record.get(column)
        if value is not None:
            try:
                record[column] = parse(value)
            except (ValueError, TypeError):
                if warn is not None:
                    warn(column, kind)
                record[column] = None
