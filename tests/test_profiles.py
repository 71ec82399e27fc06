"""Profile streams through the CLI against the emulator: bulk import jobs, identities, nulls,
limits, import errors, the 400-pointer resend, and the small-batch profile-import path."""

from __future__ import annotations

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

STREAM = "customers"
PROPERTIES = {
    "id": INTEGER,
    "email": STRING,
    "phone": STRING,
    "first_name": STRING,
    "last_name": STRING,
    "organization": STRING,
    "city": STRING,
    "country": STRING,
    "zip": STRING,
    "latitude": NUMBER,
    "longitude": NUMBER,
    "plan": STRING,
    "lifetime_value": NUMBER,
    "signed_up_at": DATETIME,
    "notes": STRING,
}
MAPPING: dict[str, Any] = {
    "object": "profile",
    "fields": {"external_id": "id", "phone_number": "phone"},
}


def load(
    emulator: Any,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    *,
    mapping: dict[str, Any] | None = None,
    streams: dict[str, list[dict[str, Any]]] | None = None,
    state: str = "state",
    **settings: Any,
) -> TargetRun:
    """One CLI run; exit 0, every record accounted for, no phone silently dropped by Klaviyo."""
    groups = streams if streams is not None else {STREAM: rows}
    config = base_config(
        emulator,
        tmp_path / state,
        {name: dict(mapping or MAPPING) for name in groups},
        **settings,
    )
    messages = [
        m for name, items in groups.items() for m in stream_messages(name, PROPERTIES, items)
    ]
    return run_checked(emulator, config, messages, tmp_path)


def customer(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "id": i,
        "email": f"customer{i}@example.com",
        "first_name": f"First{i}",
        "last_name": f"Last{i}",
        "plan": "gold" if i % 2 else "silver",
        **extra,
    }


def profiles_by_email(emulator: Any) -> dict[str, dict[str, Any]]:
    return {p["attributes"]["email"]: p for p in emulator.dump()["profiles"]}


def calls(emulator: Any, operation: str) -> list[Any]:
    return [entry for entry in emulator.request_log if entry.operation == operation]


# US numbers written the ways warehouses hold them; every one is valid with region US.
PHONE_FORMATS = (
    "({area}) 555-{n:04d}",
    "{area}.555.{n:04d}",
    "+1 {area} 555 {n:04d}",
    "1-{area}-555-{n:04d}",
    "{area}555{n:04d}",
)


def phone_for(i: int) -> str:
    area = 415 if i < 10_000 else 212
    return PHONE_FORMATS[i % len(PHONE_FORMATS)].format(area=area, n=i % 10_000)


def e164_for(i: int) -> str:
    return f"+1{415 if i < 10_000 else 212}555{i % 10_000:04d}"


def test_two_jobs_land_every_field_and_count_requests(emulator: Any, tmp_path: Path) -> None:
    """10,500 customers: a 10,000-profile job and a 500-profile job, every field landing."""
    rows = [
        customer(
            i,
            phone=phone_for(i),
            organization="Acme",
            city="Lyon",
            country="France",
            zip="69001",
            latitude=45.764,
            longitude=4.8357,
            lifetime_value=i + 0.25,
            signed_up_at="2024-03-01T10:00:00+02:00",
        )
        for i in range(10_500)
    ]
    # SDK record validation is covered elsewhere; here it would only slow the volume down.
    run = load(emulator, tmp_path, rows, default_phone_region="US", validate_records=False)

    stats = run.stream(STREAM)
    assert stats["loaded"] == 10_500
    assert stats["rejected"] == stats["on_hold"] == stats["warnings"] == 0
    imports = calls(emulator, "bulk_import_profiles")
    assert sorted(entry.items for entry in imports) == [500, 10_000]
    assert all(entry.status == 202 and entry.bytes <= 5_000_000 for entry in imports)
    assert run.summary["api_calls"]["bulk_import_profiles"] == 2

    found = profiles_by_email(emulator)
    assert len(found) == 10_500
    for i in (0, 1, 9_999, 10_000, 10_499):
        profile = found[f"customer{i}@example.com"]
        attributes = profile["attributes"]
        assert attributes["external_id"] == str(i)
        assert attributes["phone_number"] == e164_for(i)
        assert attributes["first_name"] == f"First{i}"
        assert attributes["last_name"] == f"Last{i}"
        assert attributes["organization"] == "Acme"
        location = attributes["location"]
        assert (location["city"], location["country"], location["zip"]) == (
            "Lyon",
            "France",
            "69001",
        )
        assert (location["latitude"], location["longitude"]) == (45.764, 4.8357)
        assert profile["properties"] == {
            "plan": "gold" if i % 2 else "silver",
            "lifetime_value": i + 0.25,
            "signed_up_at": "2024-03-01T08:00:00+00:00",
        }

    # Both open jobs are followed by polls of the job list (one request for all of them), not
    # one poll per job; and no import-error pages: nothing failed.
    polls = calls(emulator, "get_bulk_import_profiles_jobs")
    assert calls(emulator, "get_bulk_import_profiles_job") == []
    assert calls(emulator, "get_errors_for_bulk_import_profiles_job") == []
    print(f"requests for 10,500 profiles: 2 imports + {len(polls)} polls of the job list")
    assert 1 <= len(polls) <= 7


def test_mixed_phone_formats_arrive_as_e164(emulator: Any, tmp_path: Path) -> None:
    rows = [
        customer(1, phone="(415) 555-0132"),
        customer(2, phone="415.555.0133"),
        customer(3, phone="+1 415 555 0134"),
        customer(4, phone="0044 20 7946 0958"),
        customer(5, phone="+44 20 7946 0959"),
        customer(6, phone="1-212-555-0100 "),
        customer(7, phone="+49 30 901820"),
        # Not a number in any region: dropped from the record (the email remains), a warning.
        customer(8, phone="555-PIZZA"),
    ]
    run = load(emulator, tmp_path, rows, default_phone_region="US")

    phones = {
        email: profile["attributes"]["phone_number"]
        for email, profile in profiles_by_email(emulator).items()
    }
    assert phones == {
        "customer1@example.com": "+14155550132",
        "customer2@example.com": "+14155550133",
        "customer3@example.com": "+14155550134",
        "customer4@example.com": "+442079460958",
        "customer5@example.com": "+442079460959",
        "customer6@example.com": "+12125550100",
        "customer7@example.com": "+4930901820",
        "customer8@example.com": None,
    }
    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"], stats["warnings"]) == (8, 0, 1)


@pytest.mark.parametrize("nulls", ["ignore", "unset"])
def test_nulls_modes_on_a_second_run(emulator: Any, tmp_path: Path, nulls: str) -> None:
    """Run twice; the second input nulls values. Both the bulk path (stream `customers`, 5
    profiles) and the profile-import path (stream `vip`, 2 profiles) are covered."""
    mapping = {**MAPPING, "nulls": nulls}
    first = {
        "customers": [customer(i, city="Paris", zip="75001", notes="likes tea") for i in range(5)],
        "vip": [customer(i, city="Paris", zip="75001", notes="likes tea") for i in (100, 101)],
    }
    load(emulator, tmp_path, [], mapping=mapping, streams=first)

    def nulled(row: dict[str, Any]) -> dict[str, Any]:
        return {**row, "first_name": None, "city": None, "notes": None, "plan": "platinum"}

    second = {name: [nulled(row) for row in rows] for name, rows in first.items()}
    run = load(emulator, tmp_path, [], mapping=mapping, streams=second)
    for name, rows in second.items():
        assert run.stream(name)["loaded"] == len(rows)
    assert len(calls(emulator, "bulk_import_profiles")) == 2
    # vip's 2 profiles go through profile-import on both runs; with `unset` the 5 bulk-imported
    # profiles that sent nulls also go through it once more, to clear their standard fields.
    cleared = 5 if nulls == "unset" else 0
    assert len(calls(emulator, "create_or_update_profile")) == 4 + cleared

    for i in (0, 4, 100, 101):
        profile = profiles_by_email(emulator)[f"customer{i}@example.com"]
        attributes, properties = profile["attributes"], profile["properties"]
        assert properties["plan"] == "platinum"
        assert attributes["last_name"] == f"Last{i}"
        assert attributes["location"]["zip"] == "75001"
        if nulls == "ignore":
            assert attributes["first_name"] == f"First{i}"
            assert attributes["location"]["city"] == "Paris"
            assert properties["notes"] == "likes tea"
        else:
            assert attributes["first_name"] is None
            assert attributes["location"]["city"] is None
            assert "notes" not in properties


def test_records_over_a_limit_or_without_identity_are_rejected_locally(
    emulator: Any, tmp_path: Path
) -> None:
    # Four 30,000-character values: each string is under the 100 KB string limit, the
    # profile as a whole is not.
    big = customer(3, notes="x" * 30_000, plan="y" * 30_000, last_name="z" * 30_000)
    big["organization"] = "w" * 30_000
    rows = [customer(i) for i in range(8)]
    rows[3] = big
    rows[5] = {"first_name": "Nobody"}
    rows[6] = customer(6, email="not an email")
    run = load(emulator, tmp_path, rows)

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (5, 3)
    oversize, nobody, bad_email = run.rejects()
    assert oversize["record"]["email"] == "customer3@example.com"
    assert "100 KB" in oversize["reason"]
    assert "100,000 bytes" in oversize["reason"]
    assert "per-profile" in oversize["reason"]
    assert nobody["record"] == {"first_name": "Nobody"}
    assert "no usable identifier" in nobody["reason"]
    assert bad_email["record"] == rows[6]
    assert "not a valid address" in bad_email["reason"]
    for reject in (oversize, nobody, bad_email):
        assert set(reject) == {"stream", "object", "identifiers", "reason", "record"}
        assert (reject["stream"], reject["object"]) == (STREAM, "profile")
    assert (tmp_path / "state" / "rejects.jsonl").stat().st_mode & 0o777 == 0o600

    assert set(profiles_by_email(emulator)) == {f"customer{i}@example.com" for i in (0, 1, 2, 4, 7)}
    [request] = calls(emulator, "bulk_import_profiles")
    assert request.items == 5


def test_import_errors_are_mapped_back_to_their_records(emulator: Any, tmp_path: Path) -> None:
    """Rows Klaviyo accepts at validation but fails while the job runs: a phone in a region the
    account cannot use, and identifiers that belong to two different profiles."""
    with emulator.store.lock:
        owner, _, _ = emulator.store.upsert({"email": "taken@example.com"})
        other, _, _ = emulator.store.upsert({"phone_number": "+14155550199"})
    rows = [customer(i) for i in range(10)]
    rows[2] = customer(2, phone="+55 11 98765-4321")  # Brazil: valid, not supported
    rows[7] = {"email": "taken@example.com", "phone": "(415) 555-0199", "first_name": "Two"}
    run = load(emulator, tmp_path, rows, default_phone_region="US")

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (8, 2)
    rejects = {r["record"].get("email"): r for r in run.rejects()}
    assert set(rejects) == {"customer2@example.com", "taken@example.com"}
    region = rejects["customer2@example.com"]
    assert region["reason"] == (
        "Klaviyo: Phone number is valid but is not in a supported region for this account."
    )
    assert region["identifiers"]["phone_number"] == "+5511987654321"
    assert region["record"] == rows[2]
    conflict = rejects["taken@example.com"]
    assert "already exists" in conflict["reason"]
    assert conflict["record"]["phone"] == "(415) 555-0199"

    found = profiles_by_email(emulator)
    assert "customer2@example.com" not in found
    assert all(f"customer{i}@example.com" in found for i in (0, 1, 3, 4, 5, 6, 8, 9))
    # The conflicting row changed neither profile.
    assert found["taken@example.com"]["attributes"]["first_name"] is None
    assert found["taken@example.com"]["id"] == owner.id
    assert len(calls(emulator, "bulk_import_profiles")) == 1
    assert len(calls(emulator, "get_errors_for_bulk_import_profiles_job")) == 1
    assert other.fields["phone_number"] == "+14155550199"


def test_an_import_error_is_matched_to_its_own_row_when_rows_share_a_phone(
    emulator: Any, tmp_path: Path
) -> None:
    """Row 1 and row 4 share a phone number; only row 4 fails (its external_id belongs to
    another profile). The error must reject row 4, not the first row holding that phone."""
    with emulator.store.lock:
        emulator.store.upsert({"email": "zoe@example.com", "external_id": "991"})
    rows = [customer(i) for i in range(6)]
    rows[1] = customer(1, phone="+1 415 555 0177")
    rows[4] = {"id": 991, "phone": "+1 415 555 0177", "first_name": "Who"}
    run = load(emulator, tmp_path, rows, mapping={**MAPPING, "properties": []})

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (5, 1)
    [reject] = run.rejects()
    assert reject["record"] == rows[4]
    assert "already exists" in reject["reason"]
    found = profiles_by_email(emulator)
    assert found["customer1@example.com"]["attributes"]["phone_number"] == "+14155550177"
    assert found["zoe@example.com"]["attributes"]["first_name"] is None


def test_rows_refused_at_validation_are_rejected_and_the_rest_resent(
    emulator: Any, tmp_path: Path
) -> None:
    """A 400 naming rows: those rows are rejected with Klaviyo's detail, the others go again in
    exactly one more request. Two rows our mapping passes and the emulator refuses: an address
    whose top-level domain is not alphabetic, and a profile whose non-ASCII text is under
    100 KB as UTF-8 but over it as Klaviyo's emulator measures (ASCII-escaped JSON)."""
    rows = [customer(i) for i in range(12)]
    rows[4] = customer(4, email="someone@example.c0m")
    rows[9] = customer(9, notes="é" * 16_000, plan="é" * 16_000)
    emulator.expect_violations(2)
    run = load(emulator, tmp_path, rows)

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (10, 2)
    rejects = {r["record"]["id"]: r for r in run.rejects()}
    assert set(rejects) == {4, 9}
    assert rejects[4]["reason"] == "Klaviyo: Invalid email address: 'someone@example.c0m'."
    assert rejects[9]["reason"].startswith("Klaviyo: Profile payload is ")
    assert "maximum is 100000 bytes" in rejects[9]["reason"]
    # What the rejects file names them by: their identifiers, as they were sent.
    assert rejects[4]["identifiers"]["email"] == "someone@example.c0m"
    assert rejects[9]["identifiers"]["email"] == rows[9]["email"].lower()
    imports = calls(emulator, "bulk_import_profiles")
    assert [(entry.status, entry.items) for entry in imports] == [(400, 12), (202, 10)]
    # The rows sent again are the records' own (cut back out of the first request's body).
    assert_loaded_as_read(emulator, [row for i, row in enumerate(rows) if i not in (4, 9)])


def assert_loaded_as_read(emulator: Any, rows: list[dict[str, Any]]) -> None:
    found = profiles_by_email(emulator)
    assert set(found) == {row["email"] for row in rows}
    for row in rows:
        attributes = found[row["email"]]["attributes"]
        assert (attributes["external_id"], attributes["first_name"], attributes["last_name"]) == (
            str(row["id"]),
            row["first_name"],
            row["last_name"],
        )


def test_a_job_too_large_for_klaviyo_is_sent_again_in_halves(emulator: Any, tmp_path: Path) -> None:
    """A 413 for an import job that our own size check let through: the same records go
    again in two jobs, each with its own rows (a row Klaviyo then refuses is its record's)."""
    rows = [customer(i) for i in range(9)]
    rows[6] = customer(6, email="someone@example.c0m")
    emulator.add_fault("413", operation="bulk_import_profiles")
    emulator.expect_violations(1)
    run = load(emulator, tmp_path, rows)

    assert (run.stream(STREAM)["loaded"], run.stream(STREAM)["rejected"]) == (8, 1)
    [reject] = run.rejects()
    assert reject["record"] == rows[6]
    imports = calls(emulator, "bulk_import_profiles")
    assert [(entry.status, entry.items) for entry in imports] == [
        (413, 9),
        (202, 4),
        (400, 5),
        (202, 4),
    ]
    assert_loaded_as_read(emulator, rows[:6] + rows[7:])


@pytest.mark.parametrize("batch_size_rows", [None, 4])
def test_same_email_twice_the_later_record_wins(
    emulator: Any, tmp_path: Path, batch_size_rows: int | None
) -> None:
    """README: two records with one identifier in a batch, the later wins (the earlier counts
    unchanged); across batches, one identity's writes reach Klaviyo in input order."""
    rows = [
        customer(1, email="Dana@Example.com", first_name="Old", plan="bronze"),
        *(customer(i) for i in range(2, 8)),
        customer(99, email=" dana@example.com ", first_name="New", plan="gold"),
    ]
    settings = {"batch_size_rows": batch_size_rows} if batch_size_rows else {}
    run = load(emulator, tmp_path, rows, **settings)

    dana = profiles_by_email(emulator)["dana@example.com"]
    assert dana["attributes"]["first_name"] == "New"
    assert dana["attributes"]["external_id"] == "99"
    assert dana["properties"]["plan"] == "gold"
    stats = run.stream(STREAM)
    if batch_size_rows is None:
        assert (stats["loaded"], stats["unchanged"]) == (7, 1)
        assert [e.items for e in calls(emulator, "bulk_import_profiles")] == [7]
    else:
        assert (stats["loaded"], stats["unchanged"]) == (8, 0)
        assert [e.items for e in calls(emulator, "bulk_import_profiles")] == [4, 4]


@pytest.mark.parametrize("others", [1, 5], ids=["profile-import", "bulk-import"])
def test_an_identifier_conflict_is_rejected_alike_in_a_small_and_a_large_batch(
    emulator: Any, tmp_path: Path, others: int
) -> None:
    """The email names one Klaviyo profile, the phone number another. Whether the record goes
    through profile-import (a batch of up to three) or a bulk import job, Klaviyo refuses it
    and it is rejected with Klaviyo's reason; neither profile is written."""
    with emulator.store.lock:
        owner, _, _ = emulator.store.upsert({"email": "sam@example.com", "first_name": "Old"})
        other, _, _ = emulator.store.upsert({"phone_number": "+14155550142"})
    conflicting = {"email": "sam@example.com", "phone": "415-555-0142", "first_name": "Sam"}
    rows = [conflicting] + [customer(i, phone=f"415-555-01{50 + i}") for i in range(others)]
    run = load(emulator, tmp_path, rows, default_phone_region="US")

    stats = run.stream(STREAM)
    assert (stats["loaded"], stats["rejected"], stats["warnings"]) == (others, 1, 0)
    bulk = calls(emulator, "bulk_import_profiles")
    assert len(bulk) == (1 if others > 2 else 0)
    [reject] = run.rejects()
    assert reject["reason"] == "Klaviyo: A profile already exists with one of these identifiers."
    found = profiles_by_email(emulator)
    sam = found["sam@example.com"]
    assert sam["id"] == owner.id
    assert sam["attributes"]["first_name"] == "Old"
    assert sam["attributes"]["phone_number"] is None
    assert other.fields.get("phone_number") == "+14155550142"
    assert found["customer0@example.com"]["attributes"]["phone_number"] == "+14155550150"
