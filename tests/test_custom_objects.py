"""Custom objects through the CLI against the emulator: records into a data source (resolved,
or created, at start-up), which columns form a record, limits, 400 pointers as rejects,
skip_unchanged, the start-up errors and dry run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator.client import Client
from tests.support import (
    INTEGER,
    NUMBER,
    STRING,
    TargetRun,
    base_config,
    run_checked,
    run_target,
    singer_lines,
    stream_messages,
)

STREAM = "vehicles"
SCHEMA = {"vin": STRING, "owner_email": STRING, "make": STRING, "year": INTEGER, "km": NUMBER}
FAST = pytest.mark.emulator(window_scale=0.01)


def vehicle(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "vin": f"VIN{i:05d}",
        "owner_email": f"owner{i}@example.com",
        "make": "Volvo",
        "year": 2000 + i % 20,
        "km": 1000.5 * i,
        **extra,
    }


def create_source(api: Client, title: str) -> str:
    response = api.post(
        "/api/data-sources", {"data": {"type": "data-source", "attributes": {"title": title}}}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["data"]["id"])


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def load(
    emulator: Emulator,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    mapping: dict[str, Any],
    *,
    key_properties: tuple[str, ...] = ("vin",),
    **settings: Any,
) -> TargetRun:
    config = base_config(emulator, tmp_path / "state", {STREAM: mapping}, **settings)
    return run_checked(
        emulator, config, stream_messages(STREAM, SCHEMA, rows, key_properties), tmp_path
    )


def records(emulator: Emulator, source_id: str) -> list[dict[str, Any]]:
    return list(emulator.dump()["data_sources"][source_id]["records"])


@FAST
def test_records_go_to_the_named_data_source_in_requests_of_500(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    source = create_source(api, "Vehicles")
    rows = [vehicle(i) for i in range(1_200)]

    result = load(
        emulator, tmp_path, rows, {"object": "custom_object", "data_source_name": "Vehicles"}
    )

    stats = result.stream(STREAM)
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (1_200, 1_200, 0)
    stored = records(emulator, source)
    assert len(stored) == 1_200
    # properties: all — every column, under its own name (requests go out side by side).
    assert next(r for r in stored if r["vin"] == "VIN00003") == vehicle(3)
    sizes = [
        e.items for e in emulator.request_log if e.operation == "bulk_create_data_source_records"
    ]
    assert sorted(sizes) == [200, 500, 500]


@FAST
def test_fields_rename_and_properties_select_the_record_keys(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    source = create_source(api, "Vehicles")
    mapping = {
        "object": "custom_object",
        "data_source_id": source,
        "fields": {"vehicle_id": "vin", "email": "owner_email"},
        "properties": ["make"],
    }
    load(emulator, tmp_path, [vehicle(1)], mapping)
    assert records(emulator, source) == [
        {"make": "Volvo", "vehicle_id": "VIN00001", "email": "owner1@example.com"}
    ]

    excluded = {"object": "custom_object", "data_source_id": source, "exclude": ["km", "year"]}
    load(emulator, tmp_path, [vehicle(2)], excluded)
    assert records(emulator, source)[-1] == {
        "vin": "VIN00002",
        "owner_email": "owner2@example.com",
        "make": "Volvo",
    }


@FAST
def test_create_data_source_and_second_run_sends_only_changes(
    emulator: Emulator, tmp_path: Path
) -> None:
    mapping = {
        "object": "custom_object",
        "data_source_name": "Fleet",
        "create_data_source": True,
    }
    rows = [vehicle(i) for i in range(10)]
    load(emulator, tmp_path, rows, mapping)
    sources = emulator.dump()["data_sources"]
    ((source_id, source),) = sources.items()
    assert source["title"] == "Fleet"
    assert len(source["records"]) == 10

    changed = [vehicle(i, km=1.0) if i < 3 else vehicle(i) for i in range(10)]
    again = load(emulator, tmp_path, changed, mapping)
    stats = again.stream(STREAM)
    assert (stats["loaded"], stats["unchanged"]) == (3, 7)
    assert len(records(emulator, source_id)) == 13
    assert len(emulator.dump()["data_sources"]) == 1  # found by name, not created twice


@FAST
def test_a_record_over_512_kb_is_rejected_and_the_rest_load(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    source = create_source(api, "Vehicles")
    rows = [vehicle(1), vehicle(2, make="x" * 520_000), vehicle(3)]
    result = load(emulator, tmp_path, rows, {"object": "custom_object", "data_source_id": source})
    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (2, 1)
    (reject,) = result.rejects()
    assert "512 KB" in reject["reason"] and reject["record"]["vin"] == "VIN00002"
    assert [r["vin"] for r in records(emulator, source)] == ["VIN00001", "VIN00003"]


@FAST
def test_missing_data_source_is_one_clear_line(emulator: Emulator, tmp_path: Path) -> None:
    config = base_config(
        emulator,
        tmp_path / "state",
        {STREAM: {"object": "custom_object", "data_source_name": "Nope"}},
    )
    text = singer_lines(stream_messages(STREAM, SCHEMA, [vehicle(1)], ("vin",)))
    result = run_target(config, text, tmp_path)
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "data_source_name" in result.stderr and "create_data_source" in result.stderr

    missing_id = base_config(
        emulator,
        tmp_path / "state",
        {STREAM: {"object": "custom_object", "data_source_id": "01NOPE"}},
    )
    result = run_target(missing_id, text, tmp_path)
    assert result.exit_code == 1
    assert "01NOPE" in result.stderr and "Traceback" not in result.stderr


@FAST
def test_dry_run_plans_the_records_and_creates_nothing(emulator: Emulator, tmp_path: Path) -> None:
    mapping = {"object": "custom_object", "data_source_name": "Fleet", "create_data_source": True}
    config = base_config(emulator, tmp_path / "state", {STREAM: mapping}, dry_run=True)
    text = singer_lines(stream_messages(STREAM, SCHEMA, [vehicle(i) for i in range(700)]))
    result = run_target(config, text, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert emulator.dump()["data_sources"] == {}
    plan = [
        json.loads(line) for line in (tmp_path / "state" / "dry_run.jsonl").read_text().splitlines()
    ]
    assert [(p["operation"], p["items"]) for p in plan] == [
        ("bulk_create_data_source_records", 500),
        ("bulk_create_data_source_records", 200),
    ]
    relationship = plan[0]["body"]["data"]["relationships"]["data-source"]["data"]
    assert relationship["id"] == "<Fleet>"


@FAST
def test_test_connection_resolves_the_data_source_and_names_a_missing_scope(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    create_source(api, "Vehicles")
    mapping = {"object": "custom_object", "data_source_name": "Vehicles"}
    ok = run_target(
        base_config(emulator, tmp_path / "state", {STREAM: mapping}),
        "",
        tmp_path,
        args=("--test-connection",),
    )
    assert ok.exit_code == 0, ok.stderr
    assert "get_data_sources" in {e.operation for e in emulator.request_log}

    emulator.add_key("pk_profiles_only_3333", {"profiles:write"})
    config = base_config(
        emulator, tmp_path / "state", {STREAM: mapping}, private_api_key="pk_profiles_only_3333"
    )
    result = run_target(config, "", tmp_path, args=("--test-connection",))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    assert "custom-objects:read" in result.stderr
