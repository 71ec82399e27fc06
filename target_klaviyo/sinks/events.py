"""Events: bulk insert through event-bulk-create-jobs, exactly once.

Up to 1,000 events / 5 MB a request, grouped by profile as the API expects
(https://developers.klaviyo.com/en/reference/bulk_create_events). Every event carries a
deterministic unique_id, and Klaviyo keeps the first event per (profile, metric, unique_id), so
a replay never double-counts. A repeat of that triple inside one request would fail the whole
request, so repeats are sent once and counted unchanged. Events whose profiles differ by key
but share an identifier (one phone number, two emails) may be one Klaviyo profile: when they
also share metric and unique_id, they go in separate requests, where first-write-wins settles
them.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.klaviyo.fields import IDENTIFIER_FIELDS
from target_klaviyo.mapping.event import EventMapper
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.values import encode
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.protocol import join_body
from target_klaviyo.sinks.base import KlaviyoSink

# What wrapping one event in its own profile entry adds to a request body. Counted in each
# event's size so that a chunk filled to the byte limit still fits once grouped (events that
# share a profile share one entry, so this is an upper bound).
ENTRY_OVERHEAD = len(
    encode(
        {
            "type": "event-bulk-create",
            "attributes": {"profile": {"data": None}, "events": {"data": []}},
        }
    )
) - len(b"null")

# The request around its entries: an event whose own entry does not fit beside it cannot be
# sent at all.
REQUEST_ENVELOPE = len(
    encode(
        {
            "data": {
                "type": "event-bulk-create-job",
                "attributes": {"events-bulk-create": {"data": []}},
            }
        }
    )
)

EVENTS_HEAD = (
    b'{"data":{"type":"event-bulk-create-job","attributes":{"events-bulk-create":{"data":['
)

# Pointer of one event inside the grouped body (the spec's EventsBulkCreateJob shape).
EVENT_POINTER = re.compile(
    r"^/data/attributes/events-bulk-create/data/(\d+)(?:/attributes/events/data/(\d+))?(?:/|$)"
)


class EventInsertSink(KlaviyoSink):
    """`object: event` — insert only; the event's profile is created or updated with it."""

    OBJECT: ClassVar[str] = "event"
    BEHAVIOR: ClassVar[str] = "insert"
    MAX_ITEMS: ClassVar[int] = 1_000  # events per event-bulk-create-jobs request
    ORDERED: ClassVar[bool] = False  # first write wins per unique_id: order cannot matter
    UNCHANGED_BY_KEY: ClassVar[bool] = True  # Klaviyo never updates an event

    def prepare(self) -> None:
        self.mapper = EventMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            list(self.key_properties),
            self.run.settings.default_phone_region,
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        (
            identity,
            profile_identifiers,
            metric_name,
            unique_id,
            size,
            warnings,
            profile_encoded,
            event_encoded,
        ) = self.mapper.map_parts(record)
        size += ENTRY_OVERHEAD
        if size + REQUEST_ENVELOPE > self.MAX_BYTES:
            raise Rejection(
                f"event is {size:,} bytes with its profile: a request holding it would be over "
                f"Klaviyo's 5 MB ({self.MAX_BYTES:,} bytes) limit"
            )
        identifiers = {**profile_identifiers, "metric": metric_name, "unique_id": unique_id}
        # Sent as encoded; the record itself is kept for hold and rejects.
        return mapped(
            (
                f"{identity.key()}\x1f{metric_name}\x1f{unique_id}",
                identifiers,
                None,
                size,
                warnings,
                (profile_encoded, event_encoded),
            )
        )

    def superseded(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """Repeats of (profile, metric, unique_id) in one request: the first is sent (Klaviyo
        keeps the first event anyway)."""
        first: dict[str, Item] = {}
        repeats = []
        for item in items:
            if item.key in first:
                repeats.append(item)
            else:
                first[item.key] = item
        return (list(first.values()), repeats) if repeats else (items, [])

    def events_request(self, items: list[Item]) -> Request:
        """Group events by profile; remember where each item sits for error pointers.

        The body is joined from the profiles and events as the mapping encoded them.
        """
        groups: dict[bytes, list[int]] = {}  # profile -> indexes of its events
        for index, item in enumerate(items):
            members = groups.get(item.encoded[0])
            if members is None:
                groups[item.encoded[0]] = [index]
            else:
                members.append(index)
        entry_bodies = [
            b'{"type":"event-bulk-create","attributes":{"profile":{"data":'
            + profile
            + b'},"events":{"data":['
            + b",".join([items[index].encoded[1] for index in members])
            + b"]}}}"
            for profile, members in groups.items()
        ]
        body = join_body(EVENTS_HEAD, entry_bodies, b"]}}}}")
        entries = list(groups.values())  # entry position -> indexes of its events

        def locate(pointer: str) -> list[int]:
            match = EVENT_POINTER.match(pointer)
            if not match or int(match.group(1)) >= len(entries):
                return []
            members = entries[int(match.group(1))]
            if match.group(2) is not None:
                position = int(match.group(2))
                return [members[position]] if position < len(members) else []
            # A pointer at the entry's profile names every event of that profile.
            return list(members)

        def restore(index: int) -> Any:
            # As the mapping made it before (a resend is rare: its events are mapped again).
            return self.map_record(self.record_of(items[index])).encoded

        return Request(body, locate, restore=restore)

    def send(self, items: list[Item]) -> None:
        for part in self.rounds(items):
            self.protocol.send("bulk_create_events", part, self.events_request, self.accepted)

    @staticmethod
    def rounds(items: list[Item]) -> list[list[Item]]:
        """Split a chunk so that no request can hold one profile's (metric, unique_id) twice.

        Klaviyo treats profile entries that share any identifier as one profile. Within each
        request, identifiers are joined into components (union-find); an event goes into the
        first request whose component(s) it touches do not already hold its metric and
        unique_id. Nearly always that is the first: one request, as before.
        """
        pairs = {(item.identifiers["metric"], item.identifiers["unique_id"]) for item in items}
        if len(pairs) == len(items):
            return [items]  # no (metric, unique_id) twice: whatever the profiles, one request
        parts: list[list[Item]] = []
        states: list[tuple[dict[Any, Any], dict[Any, set[tuple[str, str]]]]] = []
        for item in items:
            ids = [
                (name, item.identifiers[name])
                for name in IDENTIFIER_FIELDS
                if item.identifiers.get(name) is not None
            ]
            event = (str(item.identifiers["metric"]), str(item.identifiers["unique_id"]))
            for part, (parent, events) in zip(parts, states, strict=True):
                if _try_add(parent, events, ids, event):
                    part.append(item)
                    break
            else:
                parent, events = {}, {}
                _try_add(parent, events, ids, event)
                parts.append([item])
                states.append((parent, events))
        return parts

    def accepted(self, items: list[Item], result: ApiResult) -> None:
        # 202: validated and queued; Klaviyo gives no job to poll.
        self.outcomes.mark_loaded(items)


def _find(parent: dict[Any, Any], node: Any) -> Any:
    while parent[node] != node:
        parent[node] = parent[parent[node]]
        node = parent[node]
    return node


def _try_add(
    parent: dict[Any, Any],
    events: dict[Any, set[tuple[str, str]]],
    ids: list[tuple[str, Any]],
    event: tuple[str, str],
) -> bool:
    """Join ``ids`` into one component holding ``event``; False if one already holds it."""
    if not ids:  # every mapped event has an identifier; nothing to join without one
        return True
    roots = {_find(parent, node) for node in ids if node in parent}
    if any(event in events[root] for root in roots):
        return False
    if roots:
        # The smaller components join the largest, so one profile's many events stay cheap.
        root = max(roots, key=lambda node: len(events[node]))
        merged = events[root]
        for other in roots - {root}:
            merged |= events.pop(other)
            parent[other] = root
    else:
        root = ids[0]
        merged = events[root] = set()
    merged.add(event)
    for node in ids:
        parent.setdefault(node, root)
    return True
