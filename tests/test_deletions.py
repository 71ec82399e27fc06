"""Privacy deletion streams through the CLI against the emulator: one request per profile,
decided at the end of the stream, guarded, never requested twice."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from target_klaviyo.klaviyo.operations import OPERATIONS, S
from tests.emulator import Emulator
from tests.ledger_places import KINDS, ledger_place
from tests.support import (
    DATETIME,
    NUMBER,
    STRING,
    TargetRun,
    base_config,
    record_message,
    run_checked,
    run_target,
    singer_lines,
    state_message,
    stream_messages,
)
from tests.test_signals import Running, assert_adds_up, seen, stop_line, wait_for

STREAM = "forget_me"
PROPERTIES = {"email": STRING, "phone": STRING, "customer_id": STRING, "klaviyo_id": STRING}
MAPPING = {
    "object": "deletion",
    "irreversible": True,
    "fields": {"phone_number": "phone", "external_id": "customer_id", "id": "klaviyo_id"},
}
SCHEMAS = Path(__file__).parent / "emulator" / "klaviyo_schemas.json"
CUSTOMERS = [
    {"email": "ann@example.com", "phone": "+15005550006", "customer_id": "c-1"},
    {"email": "bob@example.com", "phone": "+15005550007", "customer_id": "c-2"},
    {"email": "cy@example.com", "phone": "+15005550008", "customer_id": "c-3"},
    {"email": "dee@example.com", "phone": "+15005550009", "customer_id": "c-4"},
    {"email": "eve@example.com", "phone": "+15005550010", "customer_id": "c-5"},
]


def seed(emulator: Emulator, tmp_path: Path) -> None:
    """Profiles with events, a list membership and email consent, loaded by the target."""
    emulator.store.create_list("Newsletter", None)
    streams = {
        "customers": {
            "object": "profile",
            "fields": {"phone_number": "phone", "external_id": "customer_id"},
        },
        "orders": {"object": "event", "event_name": "Placed Order", "time_field": "at"},
        "newsletter": {"object": "list", "list_name": "Newsletter"},
        "consents": {"object": "subscription"},
    }
    customer_schema = {"email": STRING, "phone": STRING, "customer_id": STRING}
    orders = [
        {"email": c["email"], "id": f"o-{i}", "total": 10, "at": "2026-01-01T00:00:00Z"}
        for i, c in enumerate(CUSTOMERS)
    ]
    messages = (
        stream_messages("customers", customer_schema, CUSTOMERS)
        + stream_messages(
            "orders", {"email": STRING, "id": STRING, "total": NUMBER, "at": DATETIME}, orders
        )
        + stream_messages(
            "newsletter", {"email": STRING}, [{"email": c["email"]} for c in CUSTOMERS]
        )
        + stream_messages("consents", {"email": STRING}, [{"email": c["email"]} for c in CUSTOMERS])
    )
    config = base_config(emulator, tmp_path / "seed-state", streams)
    run_checked(emulator, config, messages, tmp_path)
    assert len(emulator.dump()["events"]) == len(CUSTOMERS)


def forget(
    emulator: Emulator,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    mapping: dict[str, Any] | None = None,
    **settings: Any,
) -> TargetRun:
    config = base_config(emulator, tmp_path / "state", {STREAM: mapping or MAPPING}, **settings)
    result = run_target(config, singer_lines(stream_messages(STREAM, PROPERTIES, rows)), tmp_path)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert emulator.wait_idle()
    if not settings.get("dry_run"):
        result.assert_accounted()
    return result


def emails(emulator: Emulator) -> set[str]:
    return {p["attributes"]["email"] for p in emulator.dump()["profiles"]}


def deletion_requests(emulator: Emulator) -> list[Any]:
    return [e for e in emulator.request_log if e.operation == "request_profile_deletion"]


def profile_id(emulator: Emulator, email: str) -> str:
    (found,) = [p["id"] for p in emulator.dump()["profiles"] if p["attributes"]["email"] == email]
    return str(found)


def test_the_operation_has_the_spec_tier_and_scope() -> None:
    spec = json.loads(SCHEMAS.read_text())["operations"]["request_profile_deletion"]
    operation = OPERATIONS["request_profile_deletion"]
    assert (operation.method, operation.path) == (spec["method"], spec["path"])
    assert operation.tier == S and spec["rate_limit"] == {"burst": 3, "steady": 60}
    assert operation.scopes == tuple(spec["scopes"]) == ("data-privacy:write",)


def test_a_deletion_mapping_without_irreversible_stops_at_start_up(
    emulator: Emulator, tmp_path: Path
) -> None:
    mapping = {"object": "deletion"}
    config = base_config(emulator, tmp_path / "state", {STREAM: mapping})
    rows = [{"email": "ann@example.com"}]

    result = run_target(config, singer_lines(stream_messages(STREAM, PROPERTIES, rows)), tmp_path)

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    (line,) = [line for line in errors if STREAM in line]
    assert f"streams.{STREAM}.irreversible" in line and "set irreversible: true" in line
    assert emulator.request_log == []


@pytest.mark.emulator(window_scale=0.01)
def test_deletes_profiles_by_email_phone_id_and_external_id_with_everything_about_them(
    emulator: Emulator, tmp_path: Path
) -> None:
    seed(emulator, tmp_path)
    cy = profile_id(emulator, "cy@example.com")
    rows = [
        {"email": " Ann@Example.com "},
        {"phone": "+15005550007"},
        {"klaviyo_id": cy},
        {"customer_id": "c-4"},
        {"email": "stranger@example.com"},  # unknown to Klaviyo: unchanged
        {"email": "not-an-email"},  # rejected with the reason
        {},  # no identifier at all
    ]

    result = forget(emulator, tmp_path, rows)

    stats = result.stream(STREAM)
    assert (stats["object"], stats["read"], stats["loaded"], stats["unchanged"]) == (
        "deletion",
        7,
        4,
        1,
    )
    assert sorted(r["reason"] for r in result.rejects()) == [
        "email 'not-an-email' is not a valid address",
        "no usable identifier (id, email, phone_number or external_id)",
    ]
    assert emails(emulator) == {"eve@example.com"}
    dump = emulator.dump()
    (eve,) = dump["profiles"]
    # The deleted profiles' events, list memberships and consent went with them.
    assert {event["profile_id"] for event in dump["events"]} == {eve["id"]}
    (newsletter,) = dump["lists"].values()
    assert newsletter["members"] == [eve["id"]]
    # One request per profile, each naming it by one identifier; external_id became the id.
    identifiers = sorted(json.dumps(d["identifier"]) for d in dump["deletions"])
    dee = [d for d in dump["deletions"] if "id" in d["identifier"] and d["identifier"]["id"] != cy]
    assert len(identifiers) == 4 and len(dee) == 1
    assert {"email": "ann@example.com"} in [d["identifier"] for d in dump["deletions"]]
    assert {"phone_number": "+15005550007"} in [d["identifier"] for d in dump["deletions"]]
    assert len(deletion_requests(emulator)) == 4
    (note,) = [n for n in result.summary["notes"] if STREAM in n]
    assert "4 deletions requested" in note and "1 profiles Klaviyo does not know" in note


def test_a_run_over_max_deletions_per_run_requests_none_and_says_why(
    emulator: Emulator, tmp_path: Path
) -> None:
    seed(emulator, tmp_path)
    mapping = {**MAPPING, "max_deletions_per_run": 2}
    rows = [{"email": c["email"]} for c in CUSTOMERS[:3]]

    result = forget(emulator, tmp_path, rows, mapping)

    assert deletion_requests(emulator) == []
    assert len(emails(emulator)) == len(CUSTOMERS)
    stats = result.stream(STREAM)
    assert (stats["read"], stats["rejected"], stats["loaded"]) == (3, 3, 0)
    (note,) = [n for n in result.summary["notes"] if STREAM in n]
    assert "more than max_deletions_per_run 2 deletions to request (3 records)" in note
    assert "none requested" in note
    assert all("max_deletions_per_run 2" in r["reason"] for r in result.rejects())
    assert len(result.rejects()) == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.emulator(window_scale=0.01)
def test_a_deletion_klaviyo_accepted_is_never_requested_again(
    emulator: Emulator, tmp_path: Path, kind: str
) -> None:
    with ledger_place(kind, tmp_path) as place:
        ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
        rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
        emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
        emulator.store.upsert({"email": "bob@example.com"}, stamp="2026-01-01T00:00:00Z")

        first = forget(emulator, tmp_path, rows, **ledger).stream(STREAM)
        # The profile comes back (a new sign-up with the same email): the request was made.
        emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-02-01T00:00:00Z")
        again = forget(emulator, tmp_path, rows + rows, **ledger)

        assert first["loaded"] == 2
        assert (again.stream(STREAM)["read"], again.stream(STREAM)["unchanged"]) == (4, 4)
        assert len(deletion_requests(emulator)) == 2


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.emulator(window_scale=0.01)
def test_a_deletion_klaviyo_kept_refusing_waits_on_hold_and_is_replayed(
    emulator: Emulator, tmp_path: Path, kind: str
) -> None:
    with ledger_place(kind, tmp_path) as place:
        ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
        emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
        emulator.add_fault("503", "request_profile_deletion", count=None)

        rows = [{"email": "ann@example.com"}]
        first = forget(emulator, tmp_path, rows, max_retries=0, **ledger)

        assert first.stream(STREAM)["on_hold"] == 1
        assert emails(emulator) == {"ann@example.com"}
        emulator.clear_faults()
        second = forget(emulator, tmp_path, [], **ledger)
        stats = second.stream(STREAM)
        assert (stats["replayed"], stats["loaded"], stats["on_hold"]) == (1, 1, 0)
        assert emails(emulator) == set()


def test_dry_run_lists_exactly_the_requests_it_would_make(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [{"email": "ann@example.com"}, {"phone": "+15005550007"}, {"customer_id": "c-4"}]

    result = forget(emulator, tmp_path, rows, dry_run=True)

    assert emulator.request_log == []
    plan_file = tmp_path / "state" / "dry_run.jsonl"
    planned = [json.loads(line) for line in plan_file.read_text().splitlines()]
    assert [p["operation"] for p in planned] == ["request_profile_deletion"] * 3
    profiles = [p["body"]["data"]["attributes"]["profile"]["data"] for p in planned]
    assert profiles == [
        {"type": "profile", "attributes": {"email": "ann@example.com"}},
        {"type": "profile", "attributes": {"phone_number": "+15005550007"}},
        {"type": "profile", "attributes": {}, "id": "external_id:c-4"},
    ]
    assert "3 deletions requested (dry run" in result.stderr


def test_dry_run_respects_the_guard(emulator: Emulator, tmp_path: Path) -> None:
    mapping = {**MAPPING, "max_deletions_per_run": 1}
    rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]

    result = forget(emulator, tmp_path, rows, mapping, dry_run=True)

    assert (tmp_path / "state" / "dry_run.jsonl").read_text() == ""
    assert "more than max_deletions_per_run 1 deletions to request" in result.stderr
    assert "none requested" in result.stderr


def test_a_key_without_data_privacy_write_stops_the_run_naming_it_and_holds_the_records(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.add_key("pk_read_only_3333", {"profiles:read"})
    emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
    config = base_config(
        emulator, tmp_path / "state", {STREAM: MAPPING}, private_api_key="pk_read_only_3333"
    )
    rows = [{"email": "ann@example.com"}]

    result = run_target(config, singer_lines(stream_messages(STREAM, PROPERTIES, rows)), tmp_path)

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "data-privacy:write" in errors[0], result.stderr
    assert emails(emulator) == {"ann@example.com"}
    result.assert_accounted()
    assert result.stream(STREAM)["on_hold"] == 1


def test_the_default_guard_counts_the_whole_stream_across_requests(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [{"email": f"user{i}@example.com"} for i in range(1_001)]
    rows += [{"email": "user0@example.com"}]  # a repeat is one deletion, not two

    result = forget(emulator, tmp_path, rows, {"object": "deletion", "irreversible": True})

    assert deletion_requests(emulator) == []
    assert [e.operation for e in emulator.request_log] == ["get_profiles"]  # the start-up check
    stats = result.stream(STREAM)
    assert (stats["read"], stats["rejected"]) == (1_002, 1_002)
    (note,) = [n for n in result.summary["notes"] if STREAM in n]
    assert "more than max_deletions_per_run 1000 deletions to request (1002 records)" in note


def test_sigterm_before_the_end_of_the_stream_requests_nothing_and_holds_the_records(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
    config = base_config(emulator, tmp_path / "state", {STREAM: MAPPING}, batch_size_rows=1)
    run = Running(config, tmp_path)
    rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}, {"phone": "+15005550006"}]
    run.write(singer_lines(stream_messages(STREAM, PROPERTIES, rows)))
    wait_for(seen(emulator, "get_profiles"), "the start-up check")
    time.sleep(0.5)  # the records are read (the tap then stays silent)

    run.signal(signal.SIGTERM)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    stop_line(stderr, "SIGTERM")
    assert deletion_requests(emulator) == []
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"][STREAM]["on_hold"] == summary["streams"][STREAM]["read"]
    assert emails(emulator) == {"ann@example.com"}


@pytest.mark.emulator(window_scale=0.01)
def test_sigint_while_deletions_are_requested_holds_the_rest_for_the_next_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
    emulator.store.upsert({"email": "bob@example.com"}, stamp="2026-01-01T00:00:00Z")
    emulator.add_fault("429", "request_profile_deletion", count=None, retry_after=120)
    config = base_config(emulator, tmp_path / "state", {STREAM: MAPPING})
    run = Running(config, tmp_path)
    rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    run.write(singer_lines(stream_messages(STREAM, PROPERTIES, rows)))
    run.close_input()
    wait_for(seen(emulator, "request_profile_deletion"), "the first deletion request")

    run.signal(signal.SIGINT)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGINT, stderr[-3000:]
    stop_line(stderr, "SIGINT")
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"][STREAM]["on_hold"] == 2
    emulator.clear_faults()
    again = forget(emulator, tmp_path, [])
    assert (again.stream(STREAM)["replayed"], again.stream(STREAM)["loaded"]) == (2, 2)
    assert emails(emulator) == set()


def test_test_connection_says_what_it_cannot_check(emulator: Emulator, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", {STREAM: MAPPING})

    result = run_target(config, "", tmp_path, args=("--test-connection",))

    assert result.exit_code == 0, result.stderr
    assert "data-privacy:write cannot be checked without requesting a deletion" in result.stderr
    assert deletion_requests(emulator) == []


def test_state_is_passed_on_once_the_deletions_before_it_are_settled(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.store.upsert({"email": "ann@example.com"}, stamp="2026-01-01T00:00:00Z")
    messages = [
        *stream_messages(STREAM, PROPERTIES, [{"email": "ann@example.com"}]),
        state_message({"forget_me": 1}),
        record_message(STREAM, {"email": "bob@example.com"}),
        state_message({"forget_me": 2}),
    ]
    config = base_config(emulator, tmp_path / "state", {STREAM: MAPPING})

    result = run_target(config, singer_lines(messages), tmp_path)

    assert result.exit_code == 0, result.stderr
    assert result.states and result.states[-1] == {"forget_me": 2}
    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["unchanged"]) == (1, 1)
