"""Generate a Singer input file: profiles, events (orders) and list members.

Profiles carry phone numbers in mixed formats (E.164, national, dotted, "00" prefix, integers,
about 1 % invalid next to a valid email) and five custom properties. Events reference the
profiles' emails. List members are a subset of the profiles. Records of the three streams are
interleaved in blocks, the way a tap that reads several tables at once writes them, so every
Klaviyo operation can be busy from the start. A STATE message follows every
``state_every`` records.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import msgspec

PROFILES_STREAM = "customers"
EVENTS_STREAM = "orders"
MEMBERS_STREAM = "newsletter"
LIST_NAME = "Benchmark newsletter"

STRING = {"type": ["string", "null"]}
INTEGER = {"type": ["integer", "null"]}
NUMBER = {"type": ["number", "null"]}
BOOLEAN = {"type": ["boolean", "null"]}
DATETIME = {"type": ["string", "null"], "format": "date-time"}

PROFILE_PROPERTIES = {
    "id": {"type": "integer"},
    "email": STRING,
    "phone": STRING,
    "first_name": STRING,
    "last_name": STRING,
    "city": STRING,
    "country": STRING,
    # five custom properties
    "loyalty_tier": STRING,
    "lifetime_orders": INTEGER,
    "lifetime_value": NUMBER,
    "accepts_sms": BOOLEAN,
    "signed_up_at": DATETIME,
}
EVENT_PROPERTIES = {
    "order_id": {"type": "integer"},
    "customer_email": STRING,
    "ordered_at": DATETIME,
    "total": NUMBER,
    "currency": STRING,
    "items": INTEGER,
    "channel": STRING,
}
MEMBER_PROPERTIES = {"id": {"type": "integer"}, "email": STRING}

# Area codes that phonenumbers knows as valid US numbers.
AREA_CODES = ("212", "415", "617", "312", "206", "303", "512", "646", "702", "919")
FIRST = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Linus", "Margaret", "Katherine")
LAST = ("Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Hamilton", "Johnson")
CITIES = ("Boston", "Berlin", "Lagos", "Lima", "Osaka", "Pune", "Oslo", "Austin")
TIERS = ("bronze", "silver", "gold", "platinum")
CHANNELS = ("web", "app", "store")
BLOCK = 500  # records of one stream written together when interleaving
# Part of an input file's name: a new value when the generated records change, so that a kept
# --workdir writes new inputs.
RECORDS_FORMAT = 2

# Klaviyo's batch maxima (the spec's bulk_import_profiles and bulk_create_events).
PROFILES_PER_JOB = 10_000
EVENTS_PER_REQUEST = 1_000


def config_streams() -> dict[str, Any]:
    """The `streams` mapping for the generated input."""
    return {
        PROFILES_STREAM: {
            "object": "profile",
            "fields": {"phone_number": "phone", "external_id": "id"},
        },
        EVENTS_STREAM: {
            "object": "event",
            "event_name": "Placed Order",
            "fields": {"email": "customer_email"},
            "time_field": "ordered_at",
            "value_field": "total",
            "value_currency_field": "currency",
        },
        MEMBERS_STREAM: {
            "object": "list",
            "list_name": LIST_NAME,
            "create_list": True,
            "properties": [],
            "exclude": ["id"],
        },
    }


def email(i: int) -> str:
    return f"{FIRST[i % len(FIRST)].lower()}.{LAST[i % len(LAST)].lower()}{i}@example.com"


def phone(i: int) -> Any:
    """A unique US number for i < 80,000,000, written in one of several formats. Exchanges vary
    from row to row, as in a customers table: 80,000 first seven digits, each a new answer to
    look up for a target that checks numbers by exchange."""
    area = AREA_CODES[i % len(AREA_CODES)]
    rest = i // len(AREA_CODES)
    exchange = 200 + rest % 800
    line = (rest // 800 * 7919) % 10_000  # 7919 is prime to 10,000: lines stay unique
    kind = i % 100
    if kind == 99:
        return f"12-{line:04d}"  # invalid: dropped with a warning, the email remains
    kind %= 6
    if kind == 0:
        return f"+1{area}{exchange}{line:04d}"
    if kind == 1:
        return f"({area}) {exchange}-{line:04d}"
    if kind == 2:
        return f"{area}.{exchange}.{line:04d}"
    if kind == 3:
        return f"+1 {area}-{exchange}-{line:04d}"
    if kind == 4:
        return f"001 {area} {exchange} {line:04d}"
    return f"1{area}{exchange}{line:04d}"


@dataclass(frozen=True)
class Workload:
    profiles: int
    events: int
    members: int

    @property
    def records(self) -> int:
        return self.profiles + self.events + self.members

    def describe(self) -> str:
        return (
            f"{self.profiles:,} profiles, {self.events:,} events, {self.members:,} list members"
            f" ({self.records:,} records)"
        )


def _schema(stream: str, properties: dict[str, Any], keys: list[str]) -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": properties},
        "key_properties": keys,
    }


def write_input(
    path: Path, workload: Workload, *, seed: int = 42, state_every: int = 10_000, variant: int = 0
) -> Path:
    """Write the Singer file for ``workload``; ``variant`` changes every profile's properties."""
    rng = random.Random(seed)
    encoder = msgspec.json.Encoder()
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    people = max(1, workload.profiles)

    def profile(i: int) -> dict[str, Any]:
        return {
            "id": i,
            "email": email(i) if i % 50 else f"  {email(i).upper()} ",
            "phone": phone(i),
            "first_name": FIRST[i % len(FIRST)],
            "last_name": LAST[i % len(LAST)],
            "city": CITIES[i % len(CITIES)],
            "country": "US",
            "loyalty_tier": TIERS[(i + variant) % len(TIERS)],
            "lifetime_orders": rng.randint(0, 500) + variant,
            "lifetime_value": round(rng.uniform(0, 5000), 2),
            "accepts_sms": i % 3 == 0,
            "signed_up_at": (base - timedelta(minutes=i)).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def event(i: int) -> dict[str, Any]:
        return {
            "order_id": i,
            "customer_email": email(rng.randrange(people)),
            "ordered_at": (base + timedelta(seconds=i * 7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "total": round(rng.uniform(5, 500), 2),
            "currency": "USD" if i % 5 else "EUR",
            "items": rng.randint(1, 9),
            "channel": CHANNELS[i % len(CHANNELS)],
        }

    def member(i: int) -> dict[str, Any]:
        # Every k-th profile joins the list.
        step = max(1, people // max(1, workload.members))
        j = (i * step) % people if workload.profiles else i
        return {"id": j, "email": email(j)}

    streams = [
        (PROFILES_STREAM, PROFILE_PROPERTIES, ["id"], workload.profiles, profile),
        (EVENTS_STREAM, EVENT_PROPERTIES, ["order_id"], workload.events, event),
        (MEMBERS_STREAM, MEMBER_PROPERTIES, ["id"], workload.members, member),
    ]
    total = workload.records
    written = 0
    with path.open("wb") as out:
        for name, properties, keys, count, _ in streams:
            if count:
                out.write(encoder.encode(_schema(name, properties, keys)) + b"\n")
        done = [0, 0, 0]
        while written < total:
            # Interleave in proportion to each stream's size: the stream furthest behind its
            # share writes the next block.
            index = min(
                (k for k in range(3) if done[k] < streams[k][3]),
                key=lambda k: done[k] / streams[k][3],
            )
            name, _, _, count, make = streams[index]
            for _ in range(min(BLOCK, count - done[index])):
                line = {"type": "RECORD", "stream": name, "record": make(done[index])}
                out.write(encoder.encode(line) + b"\n")
                done[index] += 1
                written += 1
                if state_every and written % state_every == 0:
                    positions = zip((stream[0] for stream in streams), done, strict=True)
                    state = {"bookmarks": {n: {"position": d} for n, d in positions}}
                    out.write(encoder.encode({"type": "STATE", "value": state}) + b"\n")
    return path


# -- a product catalog ----------------------------------------------------------------------------

PRODUCTS_STREAM = "products"
CATALOG_ITEMS_PER_JOB = 100  # Klaviyo's bulk catalog job maximum
PRODUCT_PROPERTIES = {
    "sku": {"type": "string"},
    "name": STRING,
    "description": STRING,
    "url": STRING,
    "image_url": STRING,
    "price": NUMBER,
    "published": BOOLEAN,
    "brand": STRING,
    "color": STRING,
}
BRANDS = ("Acme", "Globex", "Initech", "Umbrella", "Hooli")
COLORS = ("red", "green", "blue", "black", "white")


def catalog_streams() -> dict[str, Any]:
    """The `streams` mapping for a products input."""
    return {
        PRODUCTS_STREAM: {
            "object": "catalog_item",
            "fields": {"external_id": "sku", "title": "name", "image_full_url": "image_url"},
        }
    }


def write_products(path: Path, items: int, *, state_every: int = 10_000) -> Path:
    """A products table of ``items`` catalog items (brand and color go to custom_metadata)."""
    encoder = msgspec.json.Encoder()
    with path.open("wb") as out:
        out.write(encoder.encode(_schema(PRODUCTS_STREAM, PRODUCT_PROPERTIES, ["sku"])) + b"\n")
        for i in range(items):
            record = {
                "sku": f"SKU-{i:07d}",
                "name": f"{COLORS[i % len(COLORS)].title()} widget no. {i}",
                "description": f"A {COLORS[i % len(COLORS)]} widget by {BRANDS[i % len(BRANDS)]}.",
                "url": f"https://shop.example.com/products/{i}",
                "image_url": f"https://cdn.example.com/products/{i}.jpg",
                "price": round(5 + (i % 400) * 0.25, 2),
                "published": i % 17 != 0,
                "brand": BRANDS[i % len(BRANDS)],
                "color": COLORS[i % len(COLORS)],
            }
            out.write(
                encoder.encode({"type": "RECORD", "stream": PRODUCTS_STREAM, "record": record})
            )
            out.write(b"\n")
            if state_every and (i + 1) % state_every == 0:
                state = {"bookmarks": {PRODUCTS_STREAM: {"position": i + 1}}}
                out.write(encoder.encode({"type": "STATE", "value": state}) + b"\n")
    return path


def write_events(path: Path, stream: str, count: int, *, people: int = 10_000) -> Path:
    """A Singer file of `count` orders in one stream named `stream` (mapped as EVENTS_STREAM
    is), made by `people` customers."""
    encoder = msgspec.json.Encoder()
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("wb") as out:
        out.write(encoder.encode(_schema(stream, EVENT_PROPERTIES, ["order_id"])) + b"\n")
        for i in range(count):
            record = {
                "order_id": i,
                "customer_email": email(i % people),
                "ordered_at": (base + timedelta(seconds=i * 7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "total": 10 + i % 90,
                "currency": "USD",
                "items": 1 + i % 9,
                "channel": CHANNELS[i % len(CHANNELS)],
            }
            out.write(encoder.encode({"type": "RECORD", "stream": stream, "record": record}))
            out.write(b"\n")
    return path


LINE_ITEM = {
    "type": "object",
    "properties": {
        "sku": STRING,
        "name": STRING,
        "quantity": INTEGER,
        "price": NUMBER,
        "category": STRING,
        "image_url": STRING,
    },
}
WIDE_ORDER_PROPERTIES = {
    **EVENT_PROPERTIES,
    "shipping_address": STRING,
    "notes": STRING,
    "line_items": {"type": ["array", "null"], "items": LINE_ITEM},
}
WIDE_LINE_ITEMS = 12  # about 3 KB an order


def write_wide_orders(path: Path, count: int, *, people: int = 50_000) -> Path:
    """A Singer file of `count` orders of about 3 KB each, in EVENTS_STREAM (mapped as in
    `config_streams`): each with its line items, an address and a note, as order tables carry
    them (the line items go to Klaviyo as an event property)."""
    encoder = msgspec.json.Encoder()
    rng = random.Random(7)
    base = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with path.open("wb") as out:
        schema = _schema(EVENTS_STREAM, WIDE_ORDER_PROPERTIES, ["order_id"])
        out.write(encoder.encode(schema) + b"\n")
        for i in range(count):
            items: list[dict[str, Any]] = [
                {
                    "sku": f"SKU-{rng.randrange(10**6):06d}",
                    "name": f"Product {rng.randrange(10**5)}, a long catalog title",
                    "quantity": rng.randint(1, 4),
                    "price": round(rng.uniform(1, 100), 2),
                    "category": "Home & Garden / Kitchen / Cookware",
                    "image_url": f"https://cdn.example.com/products/{rng.randrange(10**8)}.jpg",
                }
                for _ in range(WIDE_LINE_ITEMS)
            ]
            record = {
                "order_id": i,
                "customer_email": email(i % people),
                "ordered_at": (base + timedelta(seconds=i * 7)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "total": round(sum(item["price"] * item["quantity"] for item in items), 2),
                "currency": "USD",
                "items": len(items),
                "channel": CHANNELS[i % len(CHANNELS)],
                "shipping_address": f"{100 + i % 9000} Long Street Name, Apartment {i % 90}, "
                "Springfield, IL 62704, United States",
                "notes": "Leave the parcel at the front door, please. " * 2,
                "line_items": items,
            }
            out.write(encoder.encode({"type": "RECORD", "stream": EVENTS_STREAM, "record": record}))
            out.write(b"\n")
            if i % 10_000 == 9_999:
                state = {"bookmarks": {EVENTS_STREAM: {"order_id": i}}}
                out.write(encoder.encode({"type": "STATE", "value": state}) + b"\n")
    return path
