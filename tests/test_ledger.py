"""Nothing lost: on hold and replay, the run summary, STATE after durability, crash-safe re-runs."""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    DATETIME,
    INTEGER,
    NUMBER,
    REPO,
    STRING,
    TargetRun,
    base_config,
    record_message,
    run_checked,
    run_target,
    schema_message,
    singer_lines,
    state_message,
    stream_messages,
)

CUSTOMER_SCHEMA = {"id": INTEGER, "email": STRING, "first_name": STRING, "tier": STRING}
ORDER_SCHEMA = {"order_id": STRING, "email": STRING, "total": NUMBER, "ordered_at": DATETIME}
STREAMS = {
    "customers": {"object": "profile", "fields": {"external_id": "id"}},
    "orders": {
        "object": "event",
        "event_name": "Placed Order",
        "time_field": "ordered_at",
        "value_field": "total",
    },
}


def customers(count: int, start: int = 1, tier: str = "gold") -> list[dict[str, Any]]:
    return [
        {"id": i, "email": f"c{i}@example.com", "first_name": f"Name{i}", "tier": tier}
        for i in range(start, start + count)
    ]


def orders(count: int) -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"O-{i}",
            "email": f"c{i % 50 + 1}@example.com",
            "total": 10 + i,
            "ordered_at": "2026-11-01T10:00:00Z",
        }
        for i in range(count)
    ]


def held_rows(state_dir: Path) -> int:
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        return int(db.execute("SELECT count(*) FROM held").fetchone()[0])


def emulator_profiles(emulator: Any) -> dict[str, dict[str, Any]]:
    emulator.wait_idle()
    return {
        p["attributes"]["email"]: {**p["attributes"], "properties": p["properties"]}
        for p in emulator.dump()["profiles"]
        if p["attributes"].get("email")
    }


def test_persistent_503_puts_records_on_hold_then_an_empty_run_loads_them(
    emulator: Any, tmp_path: Path
) -> None:
    state_dir = tmp_path / "state"
    config = base_config(emulator, state_dir, STREAMS, max_retries=1)
    emulator.add_fault("503", operation="bulk_import_profiles", count=None)
    first = run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(20), ["id"])),
        tmp_path,
    )
    assert first.exit_code == 0, first.stderr
    first.assert_accounted()
    assert first.stream("customers")["on_hold"] == 20
    assert first.stream("customers")["loaded"] == 0
    assert held_rows(state_dir) == 20
    assert emulator_profiles(emulator) == {}

    emulator.clear_faults()
    second = run_target(config, "", tmp_path)
    assert second.exit_code == 0, second.stderr
    second.assert_accounted()
    stats = second.stream("customers")
    assert stats["replayed"] == 20
    assert stats["loaded"] == 20
    assert stats["on_hold"] == 0
    assert held_rows(state_dir) == 0
    profiles = emulator_profiles(emulator)
    assert len(profiles) == 20
    assert profiles["c7@example.com"]["external_id"] == "7"
    assert profiles["c7@example.com"]["properties"]["tier"] == "gold"


def test_replay_uses_the_newest_mapping_and_newer_input_wins(emulator: Any, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = base_config(emulator, state_dir, STREAMS, max_retries=0)
    emulator.add_fault("503", operation="bulk_import_profiles", count=None)
    run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(5), ["id"])),
        tmp_path,
    )
    assert held_rows(state_dir) == 5
    emulator.clear_faults()
    # The mapping changed since: `tier` is no longer sent. And c1 arrives again, changed.
    config["streams"] = {"customers": {"object": "profile", "exclude": ["tier"]}}
    newer = customers(1, tier="platinum")
    newer[0]["first_name"] = "Renamed"
    second = run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, newer, ["id"])),
        tmp_path,
    )
    assert second.exit_code == 0, second.stderr
    second.assert_accounted()
    assert second.stream("customers")["replayed"] == 5
    profiles = emulator_profiles(emulator)
    assert len(profiles) == 5
    assert all("tier" not in (p.get("properties") or {}) for p in profiles.values())
    assert profiles["c1@example.com"]["first_name"] == "Renamed"


def test_a_429_storm_is_waited_out_and_everything_loads(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, max_retries=5)
    emulator.add_fault("429", operation="bulk_import_profiles", count=3, retry_after=1)
    run = run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(30), ["id"])),
        tmp_path,
    )
    assert run.exit_code == 0, run.stderr
    run.assert_accounted()
    assert run.stream("customers")["loaded"] == 30
    assert run.summary["rate_limit_wait_s"] >= 3
    log = [r for r in emulator.request_log if r.operation == "bulk_import_profiles"]
    assert [r.status for r in log] == [429, 429, 429, 202]
    assert not any(r.retry_after_violation for r in emulator.request_log)
    # Retry-After: 1 means no retry within a second of the 429.
    for previous, retry in itertools.pairwise(log):
        assert retry.started - previous.ended >= 0.95


def test_state_is_passed_on_only_after_the_records_before_it_are_in_klaviyo(
    emulator: Any, tmp_path: Path
) -> None:
    """Each STATE line, the moment it appears, covers only records Klaviyo already holds."""
    config = base_config(
        emulator, tmp_path / "state", STREAMS, batch_size_rows=500, max_jobs_in_flight=2
    )
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    messages: list[dict[str, Any]] = [schema_message("customers", CUSTOMER_SCHEMA, ["id"])]
    for record in customers(3000):
        messages.append(record_message("customers", record))
        if record["id"] % 250 == 0:
            messages.append(state_message({"bookmarks": {"customers": {"id": record["id"]}}}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_klaviyo", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(singer_lines(messages))
    proc.stdin.close()
    seen_bookmarks = []
    for line in proc.stdout:
        bookmark = json.loads(line)["bookmarks"]["customers"]["id"]
        held = {
            p["attributes"]["email"]
            for p in emulator.dump()["profiles"]
            if p["attributes"].get("email")
        }
        missing = [i for i in range(1, bookmark + 1) if f"c{i}@example.com" not in held]
        assert not missing, f"STATE {bookmark} passed on before records {missing[:5]} loaded"
        seen_bookmarks.append(bookmark)
    assert proc.wait(timeout=120) == 0
    assert seen_bookmarks[-1] == 3000
    # A long run checkpoints on the way rather than only at the very end.
    assert len(seen_bookmarks) >= 2


def normalised(emulator: Any) -> dict[str, Any]:
    """What a user sees in Klaviyo, without ids and timestamps."""
    emulator.wait_idle()
    dump = emulator.dump()
    profiles = {}
    emails = {}
    for p in dump["profiles"]:
        attributes = p["attributes"]
        emails[p["id"]] = attributes.get("email")
        profiles[attributes.get("email")] = (
            attributes.get("first_name"),
            attributes.get("external_id"),
            json.dumps(p["properties"], sort_keys=True),
        )
    events = sorted(
        (emails.get(e["profile_id"]), e["metric"], e["unique_id"], e.get("value"))
        for e in dump["events"]
    )
    return {"profiles": profiles, "events": events}


CRASH_INPUT_CUSTOMERS = 3000
CRASH_INPUT_ORDERS = 2000


def crash_input() -> str:
    messages: list[dict[str, Any]] = [
        schema_message("customers", CUSTOMER_SCHEMA, ["id"]),
        schema_message("orders", ORDER_SCHEMA, ["order_id"]),
    ]
    for index, record in enumerate(customers(CRASH_INPUT_CUSTOMERS)):
        messages.append(record_message("customers", record))
        if index < CRASH_INPUT_ORDERS:
            messages.append(record_message("orders", orders(CRASH_INPUT_ORDERS)[index]))
        if index % 500 == 499:
            messages.append(state_message({"bookmarks": {"customers": {"id": record["id"]}}}))
    return singer_lines(messages)


@pytest.mark.emulator(job_delay_s=0.3)
@pytest.mark.parametrize(
    "kill_after",
    [
        "bulk_import_profiles",  # a profile job submitted, not finished
        "bulk_create_events",  # events sent, profile jobs still running
        "get_bulk_import_profiles_jobs",  # while polling the open jobs
    ],
)
def test_sigkill_then_rerun_leaves_klaviyo_as_a_clean_run_would(
    emulator: Any, tmp_path: Path, kill_after: str
) -> None:
    text = crash_input()
    config = base_config(emulator, tmp_path / "state", STREAMS, batch_size_rows=1000)
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "target_klaviyo", "--config", str(config_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.stdin is not None
    proc.stdin.write(text)
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while not any(r.operation == kill_after for r in emulator.request_log):
        assert time.monotonic() < deadline, f"{kill_after} never happened"
        assert proc.poll() is None, "the run ended before the crash point"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)

    rerun = run_target(config, text, tmp_path)
    assert rerun.exit_code == 0, rerun.stderr
    rerun.assert_accounted()
    crashed_then_rerun = normalised(emulator)

    emulator.reset()
    clean = run_target(
        base_config(emulator, tmp_path / "clean-state", STREAMS, batch_size_rows=1000),
        text,
        tmp_path,
    )
    assert clean.exit_code == 0, clean.stderr
    clean_result = normalised(emulator)
    assert len(clean_result["profiles"]) == CRASH_INPUT_CUSTOMERS
    assert len(clean_result["events"]) == CRASH_INPUT_ORDERS
    assert crashed_then_rerun == clean_result


def test_files_are_private_and_hold_no_key(emulator: Any, tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    config = base_config(emulator, state_dir, STREAMS, max_retries=0)
    emulator.add_fault("503", operation="bulk_create_events", count=None)
    bad = [*customers(3), {"id": 99, "email": "broken@", "first_name": "x", "tier": None}]
    run = run_target(
        config,
        singer_lines(
            stream_messages("customers", CUSTOMER_SCHEMA, bad, ["id"])
            + stream_messages("orders", ORDER_SCHEMA, orders(5), ["order_id"])
        ),
        tmp_path,
    )
    assert run.exit_code == 0, run.stderr
    run.assert_accounted()
    assert run.stream("customers")["rejected"] == 1
    assert run.stream("orders")["on_hold"] == 5
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    files = [path for path in state_dir.iterdir() if path.is_file()]
    assert {p.name for p in files} >= {"ledger.sqlite3", "rejects.jsonl", "last_run.json"}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert emulator.private_key.encode() not in path.read_bytes(), path
    assert emulator.private_key not in run.stderr
    rejects = run.rejects()
    assert len(rejects) == 1
    assert rejects[0]["stream"] == "customers"
    assert "broken@" in rejects[0]["reason"]
    assert rejects[0]["record"]["id"] == 99


@pytest.mark.emulator(job_delay_s=2.5)
def test_progress_lines_on_long_runs(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, progress_interval_s=1)
    run = run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(50), ["id"])),
        tmp_path,
    )
    assert run.exit_code == 0, run.stderr
    progress = [line for line in run.stderr.splitlines() if "progress customers:" in line]
    assert progress, run.stderr
    assert "read 50" in progress[-1]
    assert "in jobs" in progress[-1]


def test_summary_file_matches_the_table(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS)
    run: TargetRun = run_target(
        config,
        singer_lines(stream_messages("orders", ORDER_SCHEMA, orders(12), ["order_id"])),
        tmp_path,
    )
    assert run.exit_code == 0, run.stderr
    summary = run.summary
    assert summary["streams"]["orders"] == {
        "object": "event",
        "read": 12,
        "loaded": 12,
        "unchanged": 0,
        "rejected": 0,
        "on_hold": 0,
        "replayed": 0,
        "warnings": 0,
    }
    assert summary["api_calls"]["bulk_create_events"] == 1
    assert "Run summary" in run.stderr
    assert "orders" in run.stderr


def test_a_malformed_line_stops_the_run_after_loading_what_came_before(
    emulator: Any, tmp_path: Path
) -> None:
    good = stream_messages("customers", CUSTOMER_SCHEMA, customers(5), ["id"])
    good.append(state_message({"bookmarks": {"customers": {"id": 5}}}))
    text = singer_lines(good) + '{"type": "RECORD", "stream": "customers", "record": {\n'
    text += singer_lines([record_message("customers", customers(1, start=6)[0])])
    run = run_target(base_config(emulator, tmp_path / "state", STREAMS), text, tmp_path)
    assert run.exit_code == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "input line 8" in errors[0], run.stderr
    assert "Traceback" not in run.stderr
    # The five records before the bad line are in Klaviyo, and their STATE was passed on.
    assert len(emulator_profiles(emulator)) == 5
    assert run.states == [{"bookmarks": {"customers": {"id": 5}}}]
    run.assert_accounted()
    assert run.stream("customers")["loaded"] == 5


def test_blank_lines_are_skipped_and_a_line_that_is_not_an_object_is_named(
    emulator: Any, tmp_path: Path
) -> None:
    lines = singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(3), ["id"]))
    text = "\n".join(f"{line}\n  \t" for line in lines.splitlines()) + "\n\n"
    run = run_target(base_config(emulator, tmp_path / "state", STREAMS), text, tmp_path)
    assert run.exit_code == 0, run.stderr
    assert run.stream("customers")["loaded"] == 3

    run = run_target(
        base_config(emulator, tmp_path / "state-2", STREAMS), lines + "[1, 2]\n", tmp_path
    )
    assert run.exit_code == 1
    errors = [line for line in run.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "input line 5: not a JSON object" in errors[0], run.stderr


def test_a_key_without_write_scope_stops_the_run_and_keeps_the_records(
    emulator: Any, tmp_path: Path
) -> None:
    read_only_key = "pk_read_only_0000000000000000"
    emulator.add_key(read_only_key, {"profiles:read", "lists:read"})
    state_dir = tmp_path / "state"
    config = base_config(emulator, state_dir, STREAMS, private_api_key=read_only_key)
    run = run_target(
        config,
        singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, customers(25), ["id"])),
        tmp_path,
    )
    assert run.exit_code == 1
    assert "profiles:write" in run.stderr
    assert "Traceback" not in run.stderr
    assert read_only_key not in run.stderr
    run.assert_accounted()
    assert run.stream("customers")["on_hold"] == 25
    assert run.states == []

    # With the right key, the next run replays them.
    config["private_api_key"] = emulator.private_key
    second = run_target(config, "", tmp_path)
    assert second.exit_code == 0, second.stderr
    assert second.stream("customers")["replayed"] == 25
    assert len(emulator_profiles(emulator)) == 25


def _listen_while_requests_fail(
    emulator: Any,
    tmp_path: Path,
    streams: dict[str, Any],
    rows: list[dict[str, Any]],
    failure: Any,
) -> Any:
    """A run whose requests go through `failure(operation)` first (an exception it returns
    is raised in the request's place); the run stops with that exception. Its stats."""
    import io

    from target_klaviyo.target import TargetKlaviyo

    target = TargetKlaviyo(config=base_config(emulator, tmp_path / "state", streams))
    real_request = target.run.client.request
    raised: list[BaseException] = []

    def request(operation: str, **kwargs: Any) -> Any:
        error = failure(operation)
        if error is not None:
            raised.append(error)
            raise error
        return real_request(operation, **kwargs)

    target.run.client.request = request  # type: ignore[method-assign]
    text = singer_lines(stream_messages("customers", CUSTOMER_SCHEMA, rows, ["id"]))
    with pytest.raises(BaseException) as stopped:
        target.listen(io.StringIO(text))
    assert raised and stopped.value is raised[0]
    target.lifecycle.finish()
    return target.run.stats.snapshot()["customers"]


def test_an_error_after_some_outcomes_holds_only_the_rest(emulator: Any, tmp_path: Path) -> None:
    """Each record gets exactly one outcome even when a request fails half-way through a
    chunk: here the first import names a bad row (rejected), then the resend meets a key
    that lost its write scope. The bad row stays rejected; only the others go on hold."""
    from target_klaviyo.klaviyo.client import KlaviyoAuthError

    rows = customers(12)
    rows[4]["email"] = "someone@example.c0m"  # our check passes it; Klaviyo refuses it
    imports = []

    def failure(operation: str) -> BaseException | None:
        if operation == "bulk_import_profiles":
            imports.append(operation)
            if len(imports) == 2:
                return KlaviyoAuthError("the private API key lacks a scope (403)")
        return None

    emulator.expect_violations(1)
    stats = _listen_while_requests_fail(emulator, tmp_path, STREAMS, rows, failure)
    assert (stats.read, stats.rejected, stats.on_hold, stats.loaded) == (12, 1, 11, 0)
    assert held_rows(tmp_path / "state") == 11


def test_an_internal_error_while_settling_a_job_holds_only_rows_without_an_outcome(
    emulator: Any, tmp_path: Path
) -> None:
    """A bug met while an import job's rows get their outcomes (here: clearing the fields
    three records sent as null, after the bulk import loaded the other five) stops the run
    with the three on hold; the five stay loaded, counted once."""
    rows = customers(8)
    for row in rows[2:5]:
        row["first_name"] = None
    streams = {"customers": {**STREAMS["customers"], "nulls": "unset"}}

    def failure(operation: str) -> BaseException | None:
        return RuntimeError("a bug") if operation == "create_or_update_profile" else None

    stats = _listen_while_requests_fail(emulator, tmp_path, streams, rows, failure)
    assert (stats.read, stats.loaded, stats.on_hold, stats.rejected) == (8, 5, 3, 0)
    assert held_rows(tmp_path / "state") == 3


@pytest.mark.parametrize("earlier_table", ["sent", "sent_hashes"])
def test_hashes_of_an_earlier_version_are_discarded_once(
    emulator: Any, tmp_path: Path, earlier_table: str
) -> None:
    """Earlier versions hashed payloads with BLAKE2b (16-byte blobs in `sent`, later 8-byte
    integers in `sent_hashes`). Their hashes can never match: after the upgrade every record is
    sent once more, with one warning, and skipped again from the run after."""
    state_dir = tmp_path / "state"
    config = base_config(emulator, state_dir, STREAMS)
    messages = stream_messages("customers", CUSTOMER_SCHEMA, customers(30), ["id"])
    first = run_target(config, singer_lines(messages), tmp_path)
    assert first.exit_code == 0, first.stderr

    # Rewrite the ledger as the earlier version left it.
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        rows = db.execute("SELECT key, digest FROM sent_hashes").fetchall()
        assert len(rows) == 30
        if earlier_table == "sent":
            db.execute(
                "CREATE TABLE sent (key BLOB PRIMARY KEY, digest BLOB NOT NULL) WITHOUT ROWID"
            )
            db.executemany(
                "INSERT INTO sent VALUES (?, ?)",
                [(os.urandom(16), os.urandom(16)) for _ in rows],
            )
            db.execute("DROP TABLE sent_hashes")
        db.execute("PRAGMA user_version = 0")

    second = run_target(config, singer_lines(messages), tmp_path)
    assert second.exit_code == 0, second.stderr
    assert (second.stream("customers")["loaded"], second.stream("customers")["unchanged"]) == (
        30,
        0,
    )
    assert second.stderr.count("hashes were made by an earlier version") == 1
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "sent" not in tables and "sent_hashes" in tables

    third = run_target(config, singer_lines(messages), tmp_path)
    assert third.exit_code == 0, third.stderr
    assert third.stream("customers")["unchanged"] == 30
    assert "earlier version" not in third.stderr


def test_a_job_in_flight_of_the_earlier_format_is_still_reported(tmp_path: Path) -> None:
    """Earlier versions stored each job's keys; the ledger now keeps their count."""
    from target_klaviyo.ledger.store import Ledger

    state_dir = tmp_path / "state"
    state_dir.mkdir()
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        db.execute(
            "CREATE TABLE jobs (id TEXT PRIMARY KEY, operation TEXT NOT NULL,"
            " stream TEXT NOT NULL, keys TEXT NOT NULL, submitted_at REAL NOT NULL)"
        )
        db.execute(
            "INSERT INTO jobs VALUES (?, ?, ?, ?, ?)",
            ("job-1", "bulk_import_profiles", "customers", json.dumps(["email:a", "email:b"]), 1.0),
        )
    ledger = Ledger(state_dir)
    try:
        (job,) = ledger.jobs_in_flight()
        assert (job.id, job.stream, job.records) == ("job-1", "customers", 2)
        ledger.job_finished("job-1")
        assert ledger.jobs_in_flight() == []
    finally:
        ledger.close()


def test_skip_unchanged_hashes_survive_a_reopen(tmp_path: Path) -> None:
    """Hashes are written many to a statement: every one of them, the last partial statement
    included, is found again after the ledger is closed and opened."""
    import random

    from target_klaviyo.ledger.store import Ledger

    rng = random.Random(3)
    pairs = {rng.getrandbits(63) - 2**62: rng.getrandbits(63) for _ in range(1_003)}
    ledger = Ledger(tmp_path / "state")
    ledger.remember_sent(pairs.items())
    ledger.close()

    ledger = Ledger(tmp_path / "state")
    assert ledger.unchanged(list(pairs.items())) == set(pairs)
    changed = [(key, digest + 1) for key, digest in pairs.items()]
    assert ledger.unchanged(changed) == set()
    ledger.close()


@pytest.fixture
def lookups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of keys in each look-up of skip_unchanged hashes the SQLite ledger makes."""
    from target_klaviyo.ledger.sqlite import SqliteBackend

    asked: list[int] = []
    lookup = SqliteBackend.lookup_hashes
    monkeypatch.setattr(
        SqliteBackend,
        "lookup_hashes",
        lambda self, keys: asked.append(len(keys)) or lookup(self, keys),
    )
    return asked


def test_skip_unchanged_asks_no_key_of_an_empty_ledger_and_sees_hashes_written_since(
    tmp_path: Path, lookups: list[int]
) -> None:
    """A first run asks nothing key by key while the ledger holds no hashes; hashes another
    run on the same ledger writes in the meantime are found from then on."""
    from target_klaviyo.ledger.store import Ledger

    pairs = [(key, key * 3) for key in range(1, 501)]
    first = Ledger(tmp_path / "state")
    other = Ledger(tmp_path / "state")
    try:
        assert first.unchanged(pairs) == set()
        assert lookups == []
        other.remember_sent(pairs[:200])
        other.flush_sent()
        assert first.unchanged(pairs) == {key for key, _ in pairs[:200]}
        assert lookups == [500]
    finally:
        first.close()
        other.close()


def test_a_first_sync_asks_the_database_only_for_keys_it_wrote(
    tmp_path: Path, lookups: list[int]
) -> None:
    """Once a first sync has written hashes, a chunk's keys it never wrote are not looked up
    (a long first sync with quick jobs looked up every key); the ones it wrote still match.
    A run on a ledger that held hashes before looks up every key."""
    import random

    from target_klaviyo.ledger.store import Ledger

    rng = random.Random(7)
    written = [(rng.getrandbits(64) - 2**63, rng.getrandbits(63)) for _ in range(2_000)]
    new = [(rng.getrandbits(64) - 2**63, 1) for _ in range(2_000)]
    first = Ledger(tmp_path / "state")
    try:
        assert first.unchanged(written) == set()
        first.remember_sent(written)
        first.flush_sent()
        changed = [(key, digest + 1) for key, digest in written[:500]]
        assert first.unchanged(written[500:] + changed + new) == {k for k, _ in written[500:]}
        assert len(lookups) == 1 and 2_000 <= lookups[0] < 2_020  # the 2,000 written, few more
    finally:
        first.close()
    lookups.clear()
    second = Ledger(tmp_path / "state")
    try:
        assert second.unchanged(written + new) == {key for key, _ in written}
        assert lookups == [4_000]
    finally:
        second.close()


def test_skip_unchanged_hashes_waiting_in_memory_match_what_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hashes waiting for the next batch write answer as the database would: the latest
    digest of a key wins, a forgotten key matches nothing until accepted again, and keys that
    lie close together (one run of slots in the table in memory) or outgrow its first size all
    come through, then are written and found after a reopen."""
    import random

    from target_klaviyo.ledger.store import Ledger

    rng = random.Random(5)
    crowded = [n << 40 for n in range(-300, 300)]  # close together: long probe chains
    spread = [rng.getrandbits(64) - 2**63 for _ in range(5_000)]
    expected: dict[int, int] = {}
    monkeypatch.setattr(Ledger, "SENT_BATCH", 1_000)  # the table in memory starts small
    ledger = Ledger(tmp_path / "state")
    ledger.SENT_BATCH = 10**9  # everything waits in memory until the explicit flush
    try:
        for keys in (crowded, spread, crowded[::3], spread[::7]):
            pairs = [(key, rng.getrandbits(63)) for key in keys]
            ledger.remember_sent(pairs)
            expected.update(pairs)
        forgotten = crowded[::5] + spread[::11]
        ledger.forget_sent(forgotten)
        before = {key: expected.pop(key) for key in forgotten}
        again = [(key, 7) for key in forgotten[::2]]
        ledger.remember_sent(again)
        expected.update(again)
        for stage in ("waiting", "written"):
            asked = [(key, expected.get(key, before.get(key, 0))) for key in crowded + spread]
            assert ledger.unchanged(asked) == set(expected), stage
            assert ledger.unchanged([(key, digest + 1) for key, digest in asked]) == set()
            ledger.flush_sent()
    finally:
        ledger.close()
    ledger = Ledger(tmp_path / "state")
    try:
        assert ledger.unchanged(list(expected.items())) == set(expected)
    finally:
        ledger.close()


@pytest.mark.emulator(job_delay_s=1)
def test_a_stream_waiting_for_its_jobs_does_not_hold_back_another_streams_last_request(
    emulator: Any, tmp_path: Path
) -> None:
    # customers 1-5 make an import job that takes a while; customers 1-4 again must wait for it
    # (one key's writes are applied in order). The orders at the end need not wait for it.
    messages = [
        schema_message("customers", CUSTOMER_SCHEMA, ["id"]),
        schema_message("orders", ORDER_SCHEMA, ["order_id"]),
        *(record_message("customers", record) for record in customers(5)),
        *(record_message("customers", record) for record in customers(4, tier="silver")),
        *(record_message("orders", record) for record in orders(2)),
    ]
    config = base_config(emulator, tmp_path / "state", STREAMS, batch_size_rows=5)
    run = run_checked(emulator, config, messages, tmp_path)
    assert run.stream("customers")["loaded"] == 9
    log = emulator.request_log
    imports = [r for r in log if r.operation == "bulk_import_profiles"]
    (events,) = [r for r in log if r.operation == "bulk_create_events"]
    assert len(imports) == 2, [r.operation for r in log]
    assert events.started < imports[1].started
