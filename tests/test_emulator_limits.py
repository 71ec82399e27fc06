"""Every documented Klaviyo size and count limit, at its value and just past it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client, encode

# Limits are about payloads, not pacing: no rate limiting, jobs applied at once.
pytestmark = pytest.mark.emulator(throttle=False, job_delay_s=0)

ROWS = "/data/attributes/profiles/data"
EVENTS = "/data/attributes/events-bulk-create/data"


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def pointers(response: Any) -> list[str]:
    return [e["source"].get("pointer") for e in response.json()["errors"]]


def padded(build: Any, target: int, measure: Any = lambda b: len(encode(b))) -> Any:
    """build(n) makes a body whose size grows by one byte per unit of n; hit ``target``."""
    base = measure(build(0))
    body = build(target - base)
    assert measure(body) == target
    return body


def expect_rejection(
    emulator: Emulator, response: Any, status: int, pointer: str | None = None
) -> None:
    assert response.status_code == status, response.text[:500]
    if pointer is not None:
        assert pointers(response) == [pointer]
    assert len(emulator.violations) == 1


def rows(count: int) -> list[dict[str, Any]]:
    return [kl.profile({"email": f"u{i}@example.com"}) for i in range(count)]


# -- bulk profile import (Klaviyo: bulk profile import) --------------------------------------------


def test_bulk_import_10000_profiles_but_not_10001(emulator: Emulator, api: Client) -> None:
    assert (
        api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows(10_000))).status_code == 202
    )
    emulator.expect_violations(1)
    over = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows(10_001)))
    expect_rejection(emulator, over, 400, ROWS)


def sized_import(total: int, count: int = 52) -> dict[str, Any]:
    def build(extra: int) -> dict[str, Any]:
        share, remainder = divmod(extra, count)
        return kl.bulk_import(
            [
                kl.profile({"email": f"u{i}@example.com",
                            "properties": {"blob": "x" * (share + (i < remainder))}})
                for i in range(count)
            ]
        )  # fmt: skip

    return padded(build, total)


def test_bulk_import_body_of_5000000_bytes_but_not_5000001(emulator: Emulator, api: Client) -> None:
    at_limit = encode(sized_import(5_000_000))
    assert len(at_limit) == 5_000_000
    assert api.post("/api/profile-bulk-import-jobs", raw=at_limit).status_code == 202
    emulator.expect_violations(1)
    over = api.post("/api/profile-bulk-import-jobs", raw=encode(sized_import(5_000_001)))
    expect_rejection(emulator, over, 413)


def one_big_row(size: int) -> dict[str, Any]:
    """A bulk body whose row 1 measures ``size`` bytes as ``json.dumps(row)``."""

    def build(extra: int) -> dict[str, Any]:
        return kl.profile({"email": "big@example.com", "properties": {"blob": "x" * extra}})

    row = padded(build, size, measure=lambda r: len(json.dumps(r)))
    return kl.bulk_import([kl.profile({"email": "small@example.com"}), row])


def test_bulk_import_profile_of_100000_bytes_but_not_100001(
    emulator: Emulator, api: Client
) -> None:
    # The emulator measures a row as Python's default json.dumps of the row object.
    assert api.post("/api/profile-bulk-import-jobs", one_big_row(100_000)).status_code == 202
    emulator.expect_violations(1)
    over = api.post("/api/profile-bulk-import-jobs", one_big_row(100_001))
    expect_rejection(emulator, over, 400, f"{ROWS}/1")


def test_bulk_import_row_size_counts_escaped_non_ascii(emulator: Emulator, api: Client) -> None:
    # 20,000 "é" are 40,000 bytes of UTF-8 but 120,000 bytes as \\u00e9 escapes.
    body = kl.bulk_import([kl.profile({"email": "a@example.com", "first_name": "é" * 20_000})])
    emulator.expect_violations(1)
    expect_rejection(emulator, api.post("/api/profile-bulk-import-jobs", body), 400, f"{ROWS}/0")


# -- profile-import (Klaviyo: profiles API) -------------------------------------------------------


def sized_profile(total: int) -> dict[str, Any]:
    return padded(
        lambda n: kl.profile_import({"email": "a@example.com", "properties": {"b": "x" * n}}),
        total,
    )


def test_profile_import_body_of_100000_bytes_but_not_100001(
    emulator: Emulator, api: Client
) -> None:
    assert api.post("/api/profile-import", sized_profile(100_000)).status_code == 201
    emulator.expect_violations(1)
    expect_rejection(emulator, api.post("/api/profile-import", sized_profile(100_001)), 413)


# -- list membership (Klaviyo: lists and subscriptions) --------------------------------------------


def test_list_add_and_remove_1000_ids_but_not_1001(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("Big")).json()["data"]["id"]
    assert api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows(1001))).status_code == 202
    assert emulator.wait_idle(20)
    ids = [p["id"] for p in emulator.dump()["profiles"]]
    path = f"/api/lists/{list_id}/relationships/profiles"
    assert api.post(path, kl.members(ids[:1000])).status_code == 204
    assert api.delete(path, kl.members(ids[:1000])).status_code == 204
    emulator.expect_violations(2)
    assert pointers(api.post(path, kl.members(ids))) == ["/data"]
    assert pointers(api.delete(path, kl.members(ids))) == ["/data"]
    assert emulator.dump()["lists"][list_id]["members"] == []


# -- events (Klaviyo: events API) -----------------------------------------------------------------


def events_across_profiles(total: int, per_profile: int = 2, **attributes: Any) -> dict[str, Any]:
    entries = []
    for start in range(0, total, per_profile):
        count = min(per_profile, total - start)
        entries.append(
            ({"email": f"u{start}@example.com"},
             [kl.event(unique_id=f"e{start + k}", **attributes) for k in range(count)])
        )  # fmt: skip
    return kl.bulk_events(entries)


def test_bulk_events_1000_but_not_1001_counted_across_profiles(
    emulator: Emulator, api: Client
) -> None:
    response = api.post("/api/event-bulk-create-jobs", events_across_profiles(1000))
    assert response.status_code == 202
    assert emulator.wait_idle(20)
    assert len(emulator.dump()["events"]) == 1000
    emulator.expect_violations(1)
    over = api.post("/api/event-bulk-create-jobs", events_across_profiles(1001))
    expect_rejection(emulator, over, 400, EVENTS)


def sized_events(total: int) -> dict[str, Any]:
    def build(extra: int) -> dict[str, Any]:
        share, remainder = divmod(extra, 1000)
        entries = [
            ({"email": f"u{i}@example.com"},
             [kl.event(unique_id=f"e{i}", properties={"p": "y" * (share + (i < remainder))})])
            for i in range(1000)
        ]  # fmt: skip
        return kl.bulk_events(entries)

    return padded(build, total)


def test_bulk_events_body_of_5000000_bytes_but_not_5000001(emulator: Emulator, api: Client) -> None:
    assert api.post("/api/event-bulk-create-jobs", sized_events(5_000_000)).status_code == 202
    emulator.expect_violations(1)
    over = api.post("/api/event-bulk-create-jobs", sized_events(5_000_001))
    expect_rejection(emulator, over, 413)


def one_event(**attributes: Any) -> dict[str, Any]:
    return kl.bulk_events([({"email": "a@example.com"}, [kl.event(**attributes)])])


FIRST = f"{EVENTS}/0/attributes/events/data/0/attributes"


@pytest.mark.parametrize(
    ("value", "ok"),
    [("x" * 100_000, True), ("x" * 100_001, False), ("é" * 50_000, True), ("é" * 50_001, False)],
)
def test_event_strings_up_to_100000_bytes(
    emulator: Emulator, api: Client, value: str, ok: bool
) -> None:
    response = api.post("/api/event-bulk-create-jobs", one_event(properties={"text": value}))
    if ok:
        assert response.status_code == 202
    else:
        emulator.expect_violations(1)
        expect_rejection(emulator, response, 400, f"{FIRST}/properties/text")


def test_profile_strings_in_event_requests_are_limited_too(emulator: Emulator, api: Client) -> None:
    body = kl.bulk_events([({"email": "a@example.com", "first_name": "x" * 100_001},
                            [kl.event()])])  # fmt: skip
    emulator.expect_violations(1)
    expect_rejection(
        emulator,
        api.post("/api/event-bulk-create-jobs", body),
        400,
        f"{EVENTS}/0/attributes/profile/data/attributes/first_name",
    )


@pytest.mark.parametrize(("count", "ok"), [(400, True), (401, False)])
def test_event_properties_up_to_400(emulator: Emulator, api: Client, count: int, ok: bool) -> None:
    properties = {f"p{i}": i for i in range(count)}
    response = api.post("/api/event-bulk-create-jobs", one_event(properties=properties))
    if ok:
        assert response.status_code == 202
    else:
        emulator.expect_violations(1)
        expect_rejection(emulator, response, 400, f"{FIRST}/properties")


@pytest.mark.parametrize(("length", "ok"), [(127, True), (128, False)])
def test_metric_name_shorter_than_128(
    emulator: Emulator, api: Client, length: int, ok: bool
) -> None:
    response = api.post("/api/event-bulk-create-jobs", kl.bulk_events(
        [({"email": "a@example.com"}, [kl.event("m" * length)])]))  # fmt: skip
    single = api.post("/api/events", kl.single_event({"email": "a@example.com"}, "m" * length))
    if ok:
        assert (response.status_code, single.status_code) == (202, 202)
    else:
        emulator.expect_violations(2)
        assert pointers(response) == [f"{FIRST}/metric/data/attributes/name"]
        assert pointers(single) == ["/data/attributes/metric/data/attributes/name"]


def nested(depth: int) -> dict[str, Any]:
    node: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        node = {"n": node}
    return node


@pytest.mark.parametrize(
    ("properties", "ok"),
    [
        (nested(10), True),
        (nested(11), False),
        ({"items": list(range(4000))}, True),
        ({"items": list(range(4001))}, False),
    ],
)
def test_event_property_nesting_and_array_length(
    emulator: Emulator, api: Client, properties: dict[str, Any], ok: bool
) -> None:
    response = api.post("/api/event-bulk-create-jobs", one_event(properties=properties))
    if ok:
        assert response.status_code == 202
    else:
        emulator.expect_violations(1)
        assert response.status_code == 400


# -- subscriptions (Klaviyo: lists and subscriptions) ----------------------------------------------


def consent_rows(count: int, consent: str = "SUBSCRIBED") -> list[dict[str, Any]]:
    return [kl.consent_row(f"u{i}@example.com", consent=consent) for i in range(count)]


def test_subscribe_1000_but_not_1001(emulator: Emulator, api: Client) -> None:
    path = "/api/profile-subscription-bulk-create-jobs"
    assert api.post(path, kl.subscribe(consent_rows(1000))).status_code == 202
    emulator.expect_violations(1)
    expect_rejection(emulator, api.post(path, kl.subscribe(consent_rows(1001))), 400, ROWS)


def test_unsubscribe_100_but_not_101(emulator: Emulator, api: Client) -> None:
    path = "/api/profile-subscription-bulk-delete-jobs"
    assert api.post(path, kl.unsubscribe(consent_rows(100, "UNSUBSCRIBED"))).status_code == 202
    emulator.expect_violations(1)
    over = api.post(path, kl.unsubscribe(consent_rows(101, "UNSUBSCRIBED")))
    expect_rejection(emulator, over, 400, ROWS)


# -- page sizes (spec page[size] bounds) --------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "maximum"),
    [
        ("/api/profiles", 100),
        ("/api/lists", 10),
        ("/api/lists/{list}/relationships/profiles", 100),
        ("/api/profile-bulk-import-jobs/{job}/import-errors", 100),
    ],
)
def test_page_size_maximum_and_one_past(
    emulator: Emulator, api: Client, path: str, maximum: int
) -> None:
    list_id = api.post("/api/lists", kl.create_list("L")).json()["data"]["id"]
    job_id = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows(1))).json()["data"]["id"]
    url = path.format(list=list_id, job=job_id)
    assert api.get(url, **{"page[size]": str(maximum)}).status_code == 200
    emulator.expect_violations(1)
    over = api.get(url, **{"page[size]": str(maximum + 1)})
    assert over.status_code == 400
    assert over.json()["errors"][0]["source"] == {"parameter": "page[size]"}
