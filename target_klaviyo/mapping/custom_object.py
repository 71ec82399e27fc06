"""Custom objects: a record becomes one data source record (Klaviyo: custom objects,
https://developers.klaviyo.com/en/reference/custom_objects_api_overview).

Which columns form the record, as for a profile's custom properties: `fields` renames
(`{record_key: column}`), `properties` selects the other columns (`"all"`, the default: every
column not renamed, not excluded and not `_sdc_*`; a list: those columns; `[]`: the renamed
ones only), `exclude` drops columns. Values are made JSON-safe; a null stays a null (the record
is sent whole, as the row was).

The record's key (one record per key in a request, and what skip_unchanged compares) is the
stream's key properties; without them, the record's content.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from target_klaviyo.ledger.store import hash64
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.profile import PropertyPlan
from target_klaviyo.mapping.values import encode, to_json
from target_klaviyo.streams import StreamMapping

# Klaviyo: custom objects: "The maximum allowed payload size per-record is 512KB" (stricter
# decimal reading, measured on the record's row in the request).
MAX_RECORD_BYTES = 512_000


class CustomObjectMapper:
    def __init__(
        self,
        mapping: StreamMapping,
        schema_properties: Collection[str],
        key_properties: Sequence[str],
    ) -> None:
        self.key_properties = tuple(key_properties)
        self.plan = PropertyPlan(
            mapping.properties, schema_properties, (), mapping.exclude, mapping.fields
        )

    def map(self, record: dict[str, Any]) -> tuple[str, bytes]:
        """(key, the encoded row of the request). Raises Rejection."""
        content = {name: to_json(record[column]) for name, column in self.plan.plan(record)}
        if not content:
            raise Rejection("the record has no column to send (see fields / properties)")
        row = encode({"type": "data-source-record", "attributes": {"record": content}})
        if len(row) > MAX_RECORD_BYTES:
            raise Rejection(
                f"record is {len(row):,} bytes: over Klaviyo's 512 KB ({MAX_RECORD_BYTES:,} "
                "bytes) limit for one data source record"
            )
        if self.key_properties:
            key = "\x1f".join(str(to_json(record.get(column))) for column in self.key_properties)
        else:
            key = f"#{hash64(row):x}"
        return key, row
