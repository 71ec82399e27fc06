"""Custom objects: records of a Klaviyo data source through data-source-record-bulk-create-jobs.

Up to 500 records / 4 MB a request, 512 KB a record, and the slowest tier the target uses
(3/s, 15/min: https://developers.klaviyo.com/en/reference/bulk_create_data_source_records), so
requests are filled to the limits. Klaviyo answers 204 and ingests the records asynchronously,
with no job to follow and no outcome per record: what it refuses, it refuses in the request
(a 400 whose pointers name rows: those rows are rejected with Klaviyo's detail, the rest
resent once).
"""

from __future__ import annotations

from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.mapping.custom_object import CustomObjectMapper
from target_klaviyo.mapping.values import encode
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.protocol import join_body, row_locator
from target_klaviyo.sinks.base import KlaviyoSink

ROWS_POINTER = "/data/attributes/data-source-records/data"
HEAD = (
    b'{"data":{"type":"data-source-record-bulk-create-job",'
    b'"attributes":{"data-source-records":{"data":['
)


class CustomObjectUpsertSink(KlaviyoSink):
    """`object: custom_object` — records into the data source of the mapping."""

    OBJECT: ClassVar[str] = "custom_object"
    BEHAVIOR: ClassVar[str] = "upsert"
    MAX_ITEMS: ClassVar[int] = 500  # records per request
    MAX_BYTES: ClassVar[int] = 4_000_000  # Klaviyo's 4 MB (decimal reading)

    def prepare(self) -> None:
        self.mapper = CustomObjectMapper(
            self.mapping, list(self.schema.get("properties", {})), list(self.key_properties)
        )
        mapping = self.mapping
        # Resolved at start-up (klaviyo/startup.py); a dry run shows the name it would resolve.
        self.data_source_id = (
            self.run.resolved_ids.get(mapping.pattern)
            or mapping.data_source_id
            or f"<{mapping.data_source_name}>"
        )
        self.tail = (
            b']}},"relationships":{"data-source":{"data":'
            + encode({"type": "data-source", "id": self.data_source_id})
            + b"}}}}"
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        key, row = self.mapper.map(record)
        return mapped((key, {}, None, len(row), (), row))

    def request(self, items: list[Item]) -> Request:
        body = join_body(HEAD, [item.encoded for item in items], self.tail)
        return Request(body, row_locator(ROWS_POINTER, len(items)))

    def send(self, items: list[Item]) -> None:
        self.protocol.send("bulk_create_data_source_records", items, self.request, self.accepted)

    def accepted(self, items: list[Item], result: ApiResult) -> None:
        # 204: Klaviyo queued the records; it reports no outcome per record afterwards.
        self.outcomes.mark_loaded(items)
