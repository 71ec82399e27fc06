"""Send only what changed (skip_unchanged) and preview without sending (dry_run)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.support import (
    DATETIME,
    INTEGER,
    NUMBER,
    STRING,
    base_config,
    run_target,
    singer_lines,
    stream_messages,
)

CUSTOMERS = {"id": INTEGER, "email": STRING, "phone": STRING, "first_name": STRING, "tier": STRING}
ORDERS = {"order_id": STRING, "email": STRING, "total": NUMBER, "ordered_at": DATETIME}
STREAMS = {
    "customers": {"object": "profile", "fields": {"external_id": "id", "phone_number": "phone"}},
    "orders": {
        "object": "event",
        "event_name": "Placed Order",
        "time_field": "ordered_at",
        "value_field": "total",
    },
}
WRITES = {
    "bulk_import_profiles",
    "create_or_update_profile",
    "bulk_create_events",
    "create_event",
    "add_profiles_to_list",
    "remove_profiles_from_list",
    "bulk_subscribe_profiles",
    "bulk_unsubscribe_profiles",
}


def customer_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "id": i,
            "email": f"c{i}@example.com",
            "phone": f"+1415555{i:04d}",
            "first_name": f"Name{i}",
            "tier": "gold" if i % 2 else "silver",
        }
        for i in range(1, count + 1)
    ]


def order_rows(count: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"O-{i}",
            "email": f"c{i % 40 + 1}@example.com",
            "total": 5 + i,
            "ordered_at": "2026-11-01T10:00:00Z",
        }
        for i in range(count)
    ]


def extract(customers: list[dict[str, Any]], orders: list[dict[str, Any]]) -> str:
    return singer_lines(
        stream_messages("customers", CUSTOMERS, customers, ["id"])
        + stream_messages("orders", ORDERS, orders, ["order_id"])
    )


def writes(emulator: Any, since: int = 0) -> list[Any]:
    return [r for r in emulator.request_log[since:] if r.operation in WRITES]


def test_the_same_extract_twice_sends_nothing_the_second_time(
    emulator: Any, tmp_path: Path
) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS)
    text = extract(customer_rows(120), order_rows(80))
    first = run_target(config, text, tmp_path)
    assert first.exit_code == 0, first.stderr
    assert first.stream("customers")["loaded"] == 120
    assert first.stream("orders")["loaded"] == 80
    before = len(emulator.request_log)

    second = run_target(config, text, tmp_path)
    assert second.exit_code == 0, second.stderr
    second.assert_accounted()
    assert writes(emulator, before) == []
    assert second.stream("customers") | {"unchanged": 0} == first.stream("customers") | {
        "loaded": 0,
        "unchanged": 0,
    }
    assert second.stream("customers")["unchanged"] == 120
    assert second.stream("orders")["unchanged"] == 80
    assert not any(key.startswith("bulk") for key in second.summary["api_calls"])


def test_one_changed_row_sends_one_profile(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS)
    rows = customer_rows(50)
    assert run_target(config, extract(rows, []), tmp_path).exit_code == 0
    before = len(emulator.request_log)
    rows[17]["tier"] = "platinum"
    run = run_target(config, extract(rows, []), tmp_path)
    assert run.exit_code == 0, run.stderr
    run.assert_accounted()
    assert run.stream("customers")["loaded"] == 1
    assert run.stream("customers")["unchanged"] == 49
    sent = writes(emulator, before)
    assert len(sent) == 1
    assert sent[0].items == 1
    emulator.wait_idle()
    changed = [p for p in emulator.dump()["profiles"] if p["attributes"]["external_id"] == "18"]
    assert changed[0]["properties"]["tier"] == "platinum"


def test_a_mapping_change_resends_everything(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS)
    rows = customer_rows(30)
    assert run_target(config, extract(rows, []), tmp_path).exit_code == 0
    config["streams"] = {**STREAMS, "customers": {**STREAMS["customers"], "exclude": ["tier"]}}
    run = run_target(config, extract(rows, []), tmp_path)
    assert run.exit_code == 0, run.stderr
    assert run.stream("customers")["loaded"] == 30


def test_skip_unchanged_false_sends_everything(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, skip_unchanged=False)
    text = extract(customer_rows(40), order_rows(20))
    assert run_target(config, text, tmp_path).exit_code == 0
    before = len(emulator.request_log)
    run = run_target(config, text, tmp_path)
    assert run.exit_code == 0, run.stderr
    assert run.stream("customers")["loaded"] == 40
    assert run.stream("orders")["loaded"] == 20
    assert {r.operation for r in writes(emulator, before)} == {
        "bulk_import_profiles",
        "bulk_create_events",
    }
    emulator.wait_idle()
    # Klaviyo keeps the first event per unique_id: the resend does not double-count.
    assert len(emulator.dump()["events"]) == 20


def plan(state_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (state_dir / "dry_run.jsonl").read_text().splitlines()]


def test_dry_run_sends_nothing_and_plans_what_a_real_run_sends(
    emulator: Any, tmp_path: Path
) -> None:
    text = extract(customer_rows(60), order_rows(1500))
    state_dir = tmp_path / "state"
    dry = run_target(base_config(emulator, state_dir, STREAMS, dry_run=True), text, tmp_path)
    assert dry.exit_code == 0, dry.stderr
    assert emulator.request_log == []
    assert "Run summary" in dry.stderr
    assert not (state_dir / "ledger.sqlite3").exists()
    assert not (state_dir / "last_run.json").exists()
    planned = plan(state_dir)
    assert all(set(entry) >= {"operation", "items", "bytes", "body"} for entry in planned)
    assert sorted((p["operation"], p["items"]) for p in planned) == [
        ("bulk_create_events", 500),
        ("bulk_create_events", 1000),
        ("bulk_import_profiles", 60),
    ]

    real = run_target(base_config(emulator, state_dir, STREAMS), text, tmp_path)
    assert real.exit_code == 0, real.stderr
    sent = sorted((r.operation, r.items, r.bytes) for r in writes(emulator))
    assert sent == sorted((p["operation"], p["items"], p["bytes"]) for p in planned)

    # After the real run, a dry run plans nothing: everything is unchanged.
    again = run_target(base_config(emulator, state_dir, STREAMS, dry_run=True), text, tmp_path)
    assert again.exit_code == 0, again.stderr
    assert plan(state_dir) == []
