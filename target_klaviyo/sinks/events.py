"""Events: bulk insert through event-bulk-create-jobs, exactly once.

Up to 1,000 events / 5 MB a request, grouped by profile as the API expects
(klaviyo-api.md §5.2). Every event carries a deterministic unique_id, and Klaviyo keeps the
first event per (profile, metric, unique_id), so a replay never double-counts. A repeat of
that triple inside one request would fail the whole request, so repeats are sent once and
counted unchanged.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.mapping.event import EventMapper
from target_klaviyo.mapping.values import encode, payload_hash
from target_klaviyo.sinks.base import Item, KlaviyoSink, Mapped, Request

# Pointer of one event inside the grouped body (klaviyo-api.md §5.2 shape).
EVENT_POINTER = re.compile(
    r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?(?:/|$)"
)


class EventSink(KlaviyoSink):
    """`object: event` — insert only; the event's profile is created or updated with it."""

    OBJECT: ClassVar[str] = "event"
    MAX_ITEMS: ClassVar[int] = 1_000  # klaviyo-api.md §5.2
    ORDERED: ClassVar[bool] = False  # first write wins per unique_id: order cannot matter

    def prepare(self) -> None:
        self.mapper = EventMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            list(self.key_properties),
            self.config.get("default_phone_region"),
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        event = self.mapper.map(record)
        return Mapped(
            "\x1f".join(event.dedupe_key),
            {
                **event.identity.as_attributes(),
                "metric": event.metric_name,
                "unique_id": event.unique_id,
            },
            (event.profile, event.event),
            event.size,
            event.warnings,
        )

    def digest(self, mapped: Mapped) -> bytes:
        # Klaviyo never updates an event: once its key was accepted, any later copy is a repeat.
        return payload_hash(mapped.key)

    def drop_superseded(self, items: list[Item]) -> list[Item]:
        """Repeats of (profile, metric, unique_id) in one request: the first is sent."""
        first: dict[str, Item] = {}
        repeats = []
        for item in items:
            if item.key in first:
                repeats.append(item)
            else:
                first[item.key] = item
        if repeats:
            self.unchanged(repeats)
            return list(first.values())
        return items

    def events_request(self, items: list[Item]) -> Request:
        """Group events by profile; remember where each item sits for error pointers."""
        groups: dict[bytes, tuple[int, dict[str, Any], list[dict[str, Any]]]] = {}
        where: dict[tuple[int, int], int] = {}
        for index, item in enumerate(items):
            profile, event = item.payload
            group_key = encode(profile)
            group = groups.get(group_key)
            if group is None:
                group = groups[group_key] = (len(groups), profile, [])
            where[(group[0], len(group[2]))] = index
            group[2].append(event)
        entries = [
            {
                "type": "event-bulk-create",
                "attributes": {"profile": {"data": profile}, "events": {"data": events}},
            }
            for _, profile, events in groups.values()
        ]
        body = encode(
            {
                "data": {
                    "type": "event-bulk-create-job",
                    "attributes": {"events-bulk-create": {"data": entries}},
                }
            }
        )
        group_sizes = {position: len(events) for position, _, events in groups.values()}

        def locate(pointer: str) -> list[int]:
            match = EVENT_POINTER.match(pointer)
            if not match:
                return []
            group = int(match.group(1))
            if match.group(2) is not None:
                found = where.get((group, int(match.group(2))))
                return [] if found is None else [found]
            # A pointer at the group's profile names every event of that profile.
            return [where[(group, i)] for i in range(group_sizes.get(group, 0))]

        return Request(body, locate)

    def send(self, items: list[Item]) -> None:
        self.send_rows("bulk_create_events", items, self.events_request, self.accepted)

    def accepted(self, items: list[Item], result: ApiResult) -> None:
        # 202: validated and queued (klaviyo-api.md §5.2: no job to poll).
        self.loaded(items)
