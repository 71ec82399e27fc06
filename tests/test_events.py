"""Event streams through the CLI against the emulator: exactly-once delivery, conversions,
request filling (1,000 events / 5 MB), limits and in-request de-duplication."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    DATETIME,
    INTEGER,
    NUMBER,
    STRING,
    TargetRun,
    base_config,
    run_checked,
    stream_messages,
)

STREAM = "orders"
PROPERTIES = {
    "order_id": INTEGER,
    "email": STRING,
    "event": STRING,
    "placed_at": DATETIME,
    "total": NUMBER,
    "currency": STRING,
    "sku": STRING,
    "notes": STRING,
}
KEYS = ["order_id"]
MAPPING: dict[str, Any] = {
    "object": "event",
    "event_name": "Placed Order",
    "time_field": "placed_at",
}


def load(
    emulator: Any,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    *,
    mapping: dict[str, Any] | None = None,
    streams: dict[str, tuple[dict[str, Any], list[dict[str, Any]], list[str]]] | None = None,
    properties: dict[str, Any] | None = None,
    state: str = "state",
    **settings: Any,
) -> TargetRun:
    """One CLI run; exit 0, every record accounted for, all queued events applied.

    ``streams``: name -> (mapping, rows, key properties), instead of one `orders` stream.
    """
    groups = streams if streams is not None else {STREAM: (mapping or MAPPING, rows, KEYS)}
    config = base_config(
        emulator, tmp_path / state, {name: spec[0] for name, spec in groups.items()}, **settings
    )
    messages = [
        message
        for name, (_, items, keys) in groups.items()
        for message in stream_messages(name, properties or PROPERTIES, items, keys)
    ]
    return run_checked(emulator, config, messages, tmp_path)


def order(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "order_id": i,
        "email": f"buyer{i % 50}@example.com",
        "placed_at": f"2024-05-01T12:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "total": 10 + i % 7,
        "sku": f"SKU-{i % 13}",
        **extra,
    }


def events(emulator: Any) -> list[dict[str, Any]]:
    return list(emulator.dump()["events"])


def bulk_requests(emulator: Any) -> list[Any]:
    return [e for e in emulator.request_log if e.operation == "bulk_create_events"]


def capture_bodies(emulator: Any, path: str) -> list[dict[str, Any]]:
    """Keep the parsed JSON of every request the emulator receives at ``path``."""
    bodies: list[dict[str, Any]] = []
    handle = emulator.handle_api

    def spy(method: str, url_path: str, query: str, headers: Any, body: bytes) -> Any:
        if url_path.rstrip("/") == path and body:
            bodies.append(json.loads(body))
        return handle(method, url_path, query, headers, body)

    emulator.handle_api = spy
    return bodies


def sent_events(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Event attributes of captured bulk bodies, each with its profile attributes."""
    return [
        {**event["attributes"], "profile": entry["attributes"]["profile"]["data"]["attributes"]}
        for body in bodies
        for entry in body["data"]["attributes"]["events-bulk-create"]["data"]
        for event in entry["attributes"]["events"]["data"]
    ]


def test_two_runs_leave_the_event_count_unchanged(emulator: Any, tmp_path: Path) -> None:
    """Stream `orders` has a key (unique_id = order_id); stream `clicks` has none (unique_id =
    a hash of the record). Replays change nothing in Klaviyo, with or without skip_unchanged."""
    streams = {
        STREAM: (MAPPING, [order(i) for i in range(60)], KEYS),
        "clicks": ({**MAPPING, "event_name": "Clicked"}, [order(i) for i in range(20)], []),
    }
    first = load(emulator, tmp_path, [], streams=streams)
    assert (first.stream(STREAM)["loaded"], first.stream("clicks")["loaded"]) == (60, 20)
    landed = events(emulator)
    assert len(landed) == 80
    ids = {
        metric: {e["unique_id"] for e in landed if e["metric"] == metric}
        for metric in ("Placed Order", "Clicked")
    }
    assert ids["Placed Order"] == {str(i) for i in range(60)}
    assert len(ids["Clicked"]) == 20
    assert all(len(unique_id) == 64 for unique_id in ids["Clicked"])

    # skip_unchanged (default): the replay is recognised locally, nothing is sent.
    second = load(emulator, tmp_path, [], streams=streams)
    assert (second.stream(STREAM)["unchanged"], second.stream("clicks")["unchanged"]) == (60, 20)
    assert len(bulk_requests(emulator)) == 2
    assert len(events(emulator)) == 80

    # skip_unchanged off: sent again, Klaviyo keeps the first event per unique_id.
    third = load(emulator, tmp_path, [], streams=streams, skip_unchanged=False)
    assert (third.stream(STREAM)["loaded"], third.stream("clicks")["loaded"]) == (60, 20)
    assert len(bulk_requests(emulator)) == 4
    assert len(events(emulator)) == 80
    assert len(emulator.dump()["duplicate_events"]) == 80


def test_name_time_value_and_currency_conversions(emulator: Any, tmp_path: Path) -> None:
    bodies = capture_bodies(emulator, "/api/event-bulk-create-jobs")
    orders = [
        order(
            1,
            event="Placed Order",
            placed_at="2024-05-01T14:30:45.678+02:00",
            total=19.99,
            currency="eur",
        ),
        order(
            2,
            event="Ordered Product",
            placed_at="2024-05-01T23:59:59.999-05:00",
            total=1234567.891,
            currency=" usd ",
        ),
        order(3, event="Placed Order", placed_at="2024-05-02T00:00:00Z", total=0, currency=None),
    ]
    refunds = [order(10, placed_at="2024-06-01T08:00:00.5+00:00", total=5.5)]
    streams = {
        STREAM: (
            {
                "object": "event",
                "event_name_field": "event",
                "time_field": "placed_at",
                "value_field": "total",
                "value_currency_field": "currency",
            },
            orders,
            KEYS,
        ),
        "refunds": (
            {
                "object": "event",
                "event_name": "Refunded Order",
                "time_field": "placed_at",
                "value_field": "total",
                "value_currency": "usd",
            },
            refunds,
            KEYS,
        ),
    }
    run = load(emulator, tmp_path, [], streams=streams)
    assert run.stream(STREAM)["loaded"] == 3
    assert run.stream("refunds")["loaded"] == 1

    sent = {
        (e["metric"]["data"]["attributes"]["name"], e["unique_id"]): e for e in sent_events(bodies)
    }
    expected = {
        ("Placed Order", "1"): ("2024-05-01T12:30:45+00:00", 19.99, "EUR"),
        ("Ordered Product", "2"): ("2024-05-02T04:59:59+00:00", 1234567.891, "USD"),
        ("Placed Order", "3"): ("2024-05-02T00:00:00+00:00", 0, None),
        ("Refunded Order", "10"): ("2024-06-01T08:00:00+00:00", 5.5, "USD"),
    }
    assert set(sent) == set(expected)
    for key, (moment, value, currency) in expected.items():
        event = sent[key]
        assert event["time"] == moment  # UTC, whole seconds, on the wire
        assert event["value"] == value
        assert type(event["value"]) is type(value)
        assert event.get("value_currency") == currency
        # Columns used for the name, time, value and currency are not event properties.
        assert set(event["properties"]) == {"order_id", "sku"}

    landed = {(e["metric"], e["unique_id"]): e for e in events(emulator)}
    assert set(landed) == set(expected)
    for key, (moment, value, currency) in expected.items():
        assert (landed[key]["time"], landed[key]["value"], landed[key]["value_currency"]) == (
            moment,
            value,
            currency,
        )


@pytest.mark.parametrize(("count", "requests"), [(1_000, 1), (1_001, 2)])
def test_one_thousand_events_per_request(
    emulator: Any, tmp_path: Path, count: int, requests: int
) -> None:
    rows = [order(i) for i in range(count)]
    run = load(emulator, tmp_path, rows, validate_records=False)
    assert run.stream(STREAM)["loaded"] == count
    sent = bulk_requests(emulator)
    assert len(sent) == requests
    assert sum(e.items for e in sent) == count
    assert all(e.status == 202 and e.items <= 1_000 for e in sent)
    assert len(events(emulator)) == count


@pytest.mark.parametrize(("count", "notes"), [(120, 95_000), (2_100, 4_700)])
def test_requests_are_cut_at_five_megabytes(
    emulator: Any, tmp_path: Path, count: int, notes: int
) -> None:
    """Large events (~95 KB) and many ~5 KB events of distinct profiles (where the per-profile
    wrapping adds most): requests are filled close to, and never over, 5,000,000 bytes."""
    rows = [order(i, notes=f"{i:05d}" + "n" * notes) for i in range(count)]
    for i, row in enumerate(rows):
        row["email"] = f"buyer{i}@example.com"  # one profile per event: the most overhead
    run = load(emulator, tmp_path, rows, validate_records=False)
    assert run.stream(STREAM)["loaded"] == count

    sent = bulk_requests(emulator)
    sizes = [e.bytes for e in sent]
    assert all(size <= 5_000_000 for size in sizes), sizes
    assert all(e.status == 202 for e in sent)
    assert sum(e.items for e in sent) == count
    # Filled: no more requests than the bytes need.
    assert len(sent) == math.ceil(sum(sizes) / 5_000_000), sizes
    assert len(events(emulator)) == count


def test_records_over_a_limit_are_rejected_with_the_limit_named(
    emulator: Any, tmp_path: Path
) -> None:
    wide = {f"p{i}": STRING for i in range(401)}
    properties = {**PROPERTIES, **wide}
    rows = [order(i, event="Placed Order") for i in range(6)]
    rows[1] = order(1, event="Placed Order", **{f"p{i}": "v" for i in range(401)})
    rows[2] = order(2, event="N" * 128)
    rows[3] = order(3, event="Placed Order", placed_at="1989-12-31T23:59:59Z")
    rows[4] = order(4, event="N" * 127)  # just under the limit: loaded
    mapping = {"object": "event", "event_name_field": "event", "time_field": "placed_at"}
    run = load(emulator, tmp_path, rows, mapping=mapping, properties=properties)

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (3, 3)
    reasons = {r["record"]["order_id"]: r["reason"] for r in run.rejects()}
    assert set(reasons) == {1, 2, 3}
    assert "properties, over Klaviyo's limit of 400" in reasons[1]
    assert "128 characters" in reasons[2]
    assert "under 128" in reasons[2]
    assert "1990" in reasons[3]
    assert len(bulk_requests(emulator)) == 1
    assert {e["unique_id"] for e in events(emulator)} == {"0", "4", "5"}


def test_events_klaviyo_refuses_are_rejected_and_the_rest_resent_once(
    emulator: Any, tmp_path: Path
) -> None:
    """A phone number in a region the account cannot use fails the whole request with a
    pointer at that profile: its events are rejected with Klaviyo's detail and the other
    events go again in exactly one more request."""
    properties = {**PROPERTIES, "phone_number": STRING}
    rows = [order(i) for i in range(8)]
    rows[2] = order(2, email=None, phone_number="+55 11 98765-4321")
    rows[5] = order(5, email=None, phone_number="+55 11 98765-4321")  # the same profile
    emulator.expect_violations(1)
    run = load(emulator, tmp_path, rows, properties=properties)

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (6, 2)
    rejects = {r["record"]["order_id"]: r for r in run.rejects()}
    assert set(rejects) == {2, 5}
    for reject in rejects.values():
        assert reject["reason"] == (
            "Klaviyo: Phone number is valid but is not in a supported region for this account."
        )
        assert reject["identifiers"]["phone_number"] == "+5511987654321"
    assert [(e.status, e.items) for e in bulk_requests(emulator)] == [(400, 8), (202, 6)]
    assert sorted(int(e["unique_id"]) for e in events(emulator)) == [0, 1, 3, 4, 6, 7]


def test_a_request_too_large_for_klaviyo_is_sent_again_in_halves(
    emulator: Any, tmp_path: Path
) -> None:
    """A 413 that our own size check let through: the same events go again in two requests,
    each event exactly as first sent (a request out keeps no copy of its events: those sent
    again are mapped again from their records)."""
    rows = [order(i) for i in range(8)]
    emulator.add_fault("413", operation="bulk_create_events")
    bodies = capture_bodies(emulator, "/api/event-bulk-create-jobs")
    run = load(emulator, tmp_path, rows)

    assert run.stream(STREAM)["loaded"] == 8
    assert [(e.status, e.items) for e in bulk_requests(emulator)] == [(413, 8), (202, 4), (202, 4)]
    first, *halves = bodies
    assert sent_events([first]) == sent_events(halves)
    assert sorted(int(e["unique_id"]) for e in events(emulator)) == list(range(8))


def test_an_event_too_large_for_any_request_is_rejected(emulator: Any, tmp_path: Path) -> None:
    """The 5,000,000-byte boundary for one event: first measure the body of a ~5 MB event,
    then send one padded to exactly 5,000,000 bytes (loaded) and one a byte over (rejected
    with the limit named; never sent)."""
    wide = {f"p{i}": STRING for i in range(60)}
    properties = {**PROPERTIES, **wide}

    def big(order_id: int, extra: int) -> dict[str, Any]:
        padding = {f"p{i}": "h" * (83_000 + extra // 60) for i in range(60)}
        padding["p0"] += "h" * (extra % 60)
        return order(order_id, email="big@example.com", **padding)

    load(emulator, tmp_path, [big(1, 0)], properties=properties, validate_records=False)
    [probe] = bulk_requests(emulator)
    room = 5_000_000 - probe.bytes
    assert 0 < room < 30_000
    run = load(
        emulator,
        tmp_path,
        [big(2, room), big(3, room + 1)],
        properties=properties,
        validate_records=False,
    )
    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (1, 1)
    assert [e.bytes for e in bulk_requests(emulator)] == [probe.bytes, 5_000_000]
    [reject] = run.rejects()
    assert reject["record"]["order_id"] == 3
    assert "5 MB (5,000,000 bytes)" in reject["reason"]


def test_repeats_within_one_request_are_sent_once(emulator: Any, tmp_path: Path) -> None:
    bodies = capture_bodies(emulator, "/api/event-bulk-create-jobs")
    rows = [
        order(7, email="ann@example.com", sku="first"),
        order(7, email=" Ann@Example.com ", sku="second"),  # the same profile after trimming
        order(7, email="ann@example.com", sku="third"),
        order(8, email="bob@example.com"),
        order(8, email="cat@example.com"),  # same unique_id, another profile: its own event
    ]
    run = load(emulator, tmp_path, rows)

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["unchanged"]) == (3, 2)
    assert len(bulk_requests(emulator)) == 1
    assert len(sent_events(bodies)) == 3
    landed = {(e["unique_id"], e["properties"]["sku"]) for e in events(emulator)}
    assert landed == {("7", "first"), ("8", "SKU-8")}
    assert len(events(emulator)) == 3


def test_one_unique_id_for_profiles_sharing_a_phone_never_shares_a_request(
    emulator: Any, tmp_path: Path
) -> None:
    """Two rows with different emails and one phone number may be one Klaviyo profile: with
    the same metric and unique_id they go in separate requests (Klaviyo would refuse the whole
    request), and first-write-wins keeps one event."""
    properties = {**PROPERTIES, "phone_number": STRING}
    rows = [
        order(1, email="ann@example.com", phone_number="+14155550100"),
        order(1, email="bob@example.com", phone_number="+14155550100"),
        order(2, email="cat@example.com", phone_number="+14155550100"),
        order(3),
    ]
    run = load(emulator, tmp_path, rows, properties=properties)
    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (4, 0)
    assert [(e.status, e.items) for e in bulk_requests(emulator)] == [(202, 3), (202, 1)]
    assert sorted(e["unique_id"] for e in events(emulator)) == ["1", "2", "3"]
    assert len(emulator.dump()["duplicate_events"]) == 1


def test_same_second_events_of_one_profile_both_land(emulator: Any, tmp_path: Path) -> None:
    same = {"email": "dee@example.com", "placed_at": "2024-05-01T12:00:00Z"}
    keyed = [order(1, **same), order(2, **same)]
    unkeyed = [order(3, **same, sku="A"), order(3, **same, sku="B")]
    streams = {
        STREAM: (MAPPING, keyed, KEYS),
        "clicks": ({**MAPPING, "event_name": "Clicked"}, unkeyed, []),
    }
    run = load(emulator, tmp_path, [], streams=streams)
    assert run.stream(STREAM)["loaded"] == 2
    assert run.stream("clicks")["loaded"] == 2
    landed = events(emulator)
    assert len(landed) == 4
    assert len({e["profile_id"] for e in landed}) == 1
    assert {e["time"] for e in landed} == {"2024-05-01T12:00:00+00:00"}
    assert len({(e["metric"], e["unique_id"]) for e in landed}) == 4


def test_requests_per_ten_thousand_events(emulator: Any, tmp_path: Path) -> None:
    rows = [order(i) for i in range(10_000)]
    run = load(emulator, tmp_path, rows, validate_records=False)
    assert run.stream(STREAM)["loaded"] == 10_000
    sent = bulk_requests(emulator)
    assert [e.items for e in sent] == [1_000] * 10
    assert run.summary["api_calls"]["bulk_create_events"] == 10
    print(f"requests per 10,000 events: {len(sent)} bulk; all requests: {run.summary['api_calls']}")
    assert len(events(emulator)) == 10_000
