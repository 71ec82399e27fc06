"""Records of a stream without stream maps go straight to their sink; with stream maps they take
singer-sdk's per-record path. Both give Klaviyo the same profiles, and the settings that shape
batches apply on both."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import (
    DATETIME,
    INTEGER,
    NUMBER,
    STRING,
    base_config,
    run_checked,
    run_target,
    singer_lines,
    stream_messages,
)

SCHEMA = {
    "id": INTEGER,
    "email": STRING,
    "phone": STRING,
    "first_name": STRING,
    "lifetime_value": NUMBER,
    "signed_up_at": DATETIME,
}
MAPPING = {"object": "profile", "fields": {"external_id": "id", "phone_number": "phone"}}


def rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "email": f"Person{i}@Example.com ",
            "phone": f"(415) 555-{i:04d}",
            "first_name": f"First{i}",
            "lifetime_value": i + 0.5,
            "signed_up_at": "2024-03-01T10:00:00+02:00",
        }
        for i in range(count)
    ]


def profiles(emulator: Any) -> dict[str, dict[str, Any]]:
    return {p["attributes"]["email"]: p for p in emulator.dump()["profiles"]}


def comparable(profile: dict[str, Any]) -> tuple[Any, ...]:
    attributes = profile["attributes"]
    return (
        attributes["email"],
        attributes["phone_number"],
        attributes["external_id"],
        attributes["first_name"],
        profile["properties"],
    )


def test_stream_maps_take_the_sdk_path_with_the_same_result(emulator: Any, tmp_path: Path) -> None:
    data = rows(20)
    direct = run_checked(
        emulator,
        base_config(emulator, tmp_path / "a", {"customers": MAPPING}, default_phone_region="US"),
        stream_messages("customers", SCHEMA, data, ["id"]),
        tmp_path,
    )
    assert direct.stream("customers")["loaded"] == 20
    first = {email: comparable(p) for email, p in profiles(emulator).items()}
    assert first["person3@example.com"][-1] == {
        "lifetime_value": 3.5,
        "signed_up_at": "2024-03-01T08:00:00+00:00",
    }

    emulator.reset()
    # A stream map that adds a column: the records must go through singer-sdk's mapper.
    mapped = run_checked(
        emulator,
        base_config(
            emulator,
            tmp_path / "b",
            {"customers": MAPPING},
            default_phone_region="US",
            stream_maps={"customers": {"source": "'warehouse'"}},
        ),
        stream_messages("customers", SCHEMA, data, ["id"]),
        tmp_path,
    )
    assert mapped.stream("customers")["loaded"] == 20
    second = {email: comparable(p) for email, p in profiles(emulator).items()}
    assert set(second) == set(first)
    for email, (*identity, properties) in second.items():
        assert properties.pop("source") == "warehouse"
        assert (*identity, properties) == first[email]


def test_batch_size_rows_cuts_requests_on_the_direct_path(emulator: Any, tmp_path: Path) -> None:
    run = run_checked(
        emulator,
        base_config(
            emulator,
            tmp_path / "state",
            {"customers": MAPPING},
            default_phone_region="US",
            batch_size_rows=4,
        ),
        stream_messages("customers", SCHEMA, rows(12), ["id"]),
        tmp_path,
    )
    assert run.stream("customers")["loaded"] == 12
    imports = [e for e in emulator.request_log if e.operation == "bulk_import_profiles"]
    assert [entry.items for entry in imports] == [4, 4, 4]


def test_singer_sdk_record_count_metric_counts_direct_records(
    emulator: Any, tmp_path: Path
) -> None:
    run = run_checked(
        emulator,
        base_config(
            emulator, tmp_path / "state", {"customers": MAPPING}, default_phone_region="US"
        ),
        stream_messages("customers", SCHEMA, rows(7), ["id"]),
        tmp_path,
    )
    metrics = [line for line in run.stderr.splitlines() if '"metric":"record_count"' in line]
    assert metrics and '"value":7' in metrics[-1]


def test_metadata_columns_are_dropped_before_validation(emulator: Any, tmp_path: Path) -> None:
    """Singer metadata columns (`_sdc_*`) are not part of the record: a schema without them
    that forbids other columns still accepts the record, and Klaviyo never sees them."""
    schema = {
        "type": "object",
        "properties": {"id": INTEGER, "email": STRING, "tier": STRING},
        "additionalProperties": False,
    }
    data = [
        {"id": i, "email": f"p{i}@example.com", "tier": "gold", "_sdc_extracted_at": "2026-01-01"}
        for i in range(5)
    ]
    messages = [
        {"type": "SCHEMA", "stream": "customers", "schema": schema, "key_properties": ["id"]},
        *({"type": "RECORD", "stream": "customers", "record": row} for row in data),
    ]
    run = run_checked(
        emulator,
        base_config(emulator, tmp_path / "state", {"customers": MAPPING}, validate_records=True),
        messages,
        tmp_path,
    )
    assert run.stream("customers")["loaded"] == 5
    assert run.rejects() == []
    assert all(p["properties"] == {"tier": "gold"} for p in profiles(emulator).values())


def test_records_of_one_stream_with_and_without_metadata_columns(
    emulator: Any, tmp_path: Path
) -> None:
    """What depends on a record's columns is worked out per set of columns: records with and
    without `_sdc_*` columns interleave, and a record without its key property still fails."""
    schema = {
        "type": "object",
        "properties": {"id": INTEGER, "email": STRING, "tier": STRING},
        "additionalProperties": False,
    }
    data: list[dict[str, Any]] = [
        {"id": i, "email": f"p{i}@example.com", "tier": "gold"} for i in range(6)
    ]
    for row in data[1::2]:
        row["_sdc_sequence"] = 1
    messages = [
        {"type": "SCHEMA", "stream": "customers", "schema": schema, "key_properties": ["id"]},
        *({"type": "RECORD", "stream": "customers", "record": row} for row in data),
    ]
    config = base_config(emulator, tmp_path / "a", {"customers": MAPPING}, validate_records=True)
    run = run_checked(emulator, config, messages, tmp_path)
    assert run.stream("customers")["loaded"] == 6
    assert all(p["properties"] == {"tier": "gold"} for p in profiles(emulator).values())

    keyless = {"type": "RECORD", "stream": "customers", "record": {"email": "x@example.com"}}
    config = base_config(emulator, tmp_path / "b", {"customers": MAPPING})
    failed = run_target(config, singer_lines([*messages, keyless]), tmp_path)
    assert failed.exit_code != 0
    assert "key_properties" in failed.stderr


def test_records_rejected_or_held_after_the_direct_path_are_the_records_as_taken(
    emulator: Any, tmp_path: Path
) -> None:
    """On the direct path a record waiting for Klaviyo is kept as its line of input and rebuilt
    when it is rejected or put on hold: metadata columns dropped, date-times parsed, numbers
    exact — the same record the other outcomes see."""
    data = rows(4)
    for row in data:
        row["_sdc_extracted_at"] = "2026-01-01T00:00:00Z"
    data[2]["phone"] = "+55 11 98765-4321"  # valid, but Klaviyo refuses the region
    data[2]["lifetime_value"] = 2.25
    expected = {k: v for k, v in data[2].items() if not k.startswith("_sdc_")}
    expected["signed_up_at"] = "2024-03-01T08:00:00+00:00"
    config = base_config(
        emulator, tmp_path / "a", {"customers": MAPPING}, default_phone_region="US"
    )
    run = run_checked(
        emulator, config, stream_messages("customers", SCHEMA, data, ["id"]), tmp_path
    )
    assert (run.stream("customers")["loaded"], run.stream("customers")["rejected"]) == (3, 1)
    [reject] = run.rejects()
    assert reject["record"] == expected
    assert reject["reason"].startswith("Klaviyo: Phone number is valid but is not in a supported")

    emulator.reset()
    held = base_config(
        emulator, tmp_path / "b", {"customers": MAPPING}, default_phone_region="US", max_retries=0
    )
    emulator.add_fault("503", operation="bulk_import_profiles", count=None)
    first = run_checked(
        emulator, held, stream_messages("customers", SCHEMA, rows(4), ["id"]), tmp_path
    )
    assert first.stream("customers")["on_hold"] == 4
    emulator.clear_faults()
    second = run_checked(emulator, held, [], tmp_path)
    assert (second.stream("customers")["replayed"], second.stream("customers")["loaded"]) == (4, 4)
    replayed = {email: comparable(p) for email, p in profiles(emulator).items()}
    assert replayed["person3@example.com"] == (
        "person3@example.com",
        "+14155550003",
        "3",
        "First3",
        {"lifetime_value": 3.5, "signed_up_at": "2024-03-01T08:00:00+00:00"},
    )
