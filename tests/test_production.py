"""Production as containers and orchestrators run it: the ledger in PostgreSQL while the
worker's disk is gone after every run, two runs meeting on one stream, two runs sharing one
account's rate budget."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ledger_places import KINDS, LedgerPlace, ledger_place
from tests.support import (
    INTEGER,
    STRING,
    Running,
    activate_version_message,
    base_config,
    record_message,
    run_target,
    schema_message,
    singer_lines,
    stream_messages,
)

CUSTOMERS = {"id": INTEGER, "email": STRING, "plan": STRING}
AUDIENCE = {"email": STRING}


@pytest.fixture
def postgres_ledger(tmp_path: Path) -> Iterator[LedgerPlace]:
    with ledger_place("postgresql", tmp_path) as place:
        yield place


def customers(count: int, plan: str = "basic") -> list[dict[str, Any]]:
    return [{"id": i, "email": f"c{i}@example.com", "plan": plan} for i in range(count)]


def full_sync(version: int, names: list[str]) -> list[dict[str, Any]]:
    return [
        schema_message("audience", AUDIENCE),
        activate_version_message("audience", version),
        *(record_message("audience", {"email": f"{n}@example.com"}, version) for n in names),
        activate_version_message("audience", version),
    ]


def members(emulator: Any, list_id: str) -> set[str]:
    state = emulator.dump()
    by_id = {profile["id"]: profile["attributes"]["email"] for profile in state["profiles"]}
    return {by_id[pid] for pid in state["lists"][list_id]["members"]}


@pytest.mark.postgres
def test_a_worker_that_loses_its_disk_keeps_every_promise(
    emulator: Any, tmp_path: Path, postgres_ledger: LedgerPlace
) -> None:
    list_id = str(emulator.store.create_list("VIP", None).id)
    streams = {
        "customers": {"object": "profile", "fields": {"external_id": "id"}},
        "audience": {
            "object": "list",
            "list_id": list_id,
            "behavior": "mirror",
            "mirror_max_removal_ratio": 1,
        },
        "orders": {"object": "event", "event_name": "Placed Order"},
    }
    ledger = {"ledger_url": postgres_ledger.url, "ledger_schema": postgres_ledger.schema}
    orders = stream_messages(
        "orders", {"id": INTEGER, "email": STRING}, [{"id": 1, "email": "c1@example.com"}], ["id"]
    )
    nobody = {"id": None, "email": None, "plan": "gold"}  # no identifier: rejected
    first_input = singer_lines(
        [
            *stream_messages("customers", CUSTOMERS, [*customers(20), nobody], ["id"]),
            *full_sync(1, ["ann", "bob", "cat"]),
            *orders,
        ]
    )
    worker = tmp_path / "worker"
    emulator.add_fault("503", operation="bulk_create_events", count=None)
    first = run_target(
        base_config(emulator, worker, streams, max_retries=0, **ledger), first_input, tmp_path
    )
    assert first.exit_code == 0, first.stderr
    assert first.stream("orders")["on_hold"] == 1
    emulator.clear_faults()
    shutil.rmtree(worker)  # the container is gone; the next run starts on a fresh disk

    second_input = singer_lines(
        [
            *stream_messages("customers", CUSTOMERS, customers(20), ["id"]),
            *full_sync(2, ["ann", "bob"]),
        ]
    )
    imports_before = sum(e.operation == "bulk_import_profiles" for e in emulator.request_log)
    second = run_target(base_config(emulator, worker, streams, **ledger), second_input, tmp_path)
    assert second.exit_code == 0, second.stderr
    second.assert_accounted()
    # Records on hold were replayed from the ledger.
    assert second.stream("orders")["replayed"] == 1
    assert second.stream("orders")["loaded"] == 1
    # skip_unchanged remembered what Klaviyo already has.
    assert second.stream("customers")["unchanged"] == 20
    assert sum(e.operation == "bulk_import_profiles" for e in emulator.request_log) == (
        imports_before
    )
    # The mirror pass removed the member the first run added and this pass did not see.
    assert emulator.wait_idle()
    assert members(emulator, list_id) == {"ann@example.com", "bob@example.com"}
    assert any("removed 1 members" in note for note in second.summary["notes"])
    # The rejects of the first run are in the ledger's rejects table too (README's query).
    import psycopg

    with psycopg.connect(postgres_ledger.url, autocommit=True) as db:
        rows = db.execute(
            f"SELECT stream, reason, record FROM {postgres_ledger.schema}.rejects"
            f" WHERE run_id = (SELECT max(run_id) FROM {postgres_ledger.schema}.rejects)"
        ).fetchall()
    assert [(stream, record["plan"]) for stream, _, record in rows] == [("customers", "gold")]
    assert "no usable identifier" in rows[0][1]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.emulator(job_latency_s=6)
def test_a_second_run_on_a_stream_being_loaded_refuses_then_waits(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    streams = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}
    text = singer_lines(stream_messages("customers", CUSTOMERS, customers(50), ["id"]))
    with ledger_place(kind, tmp_path) as place:
        ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
        config = base_config(emulator, place.state_dir, streams, **ledger)
        first = Running(config, tmp_path)
        first.feed(text)
        deadline = time.monotonic() + 30
        while not any(e.operation == "bulk_import_profiles" for e in emulator.request_log):
            assert time.monotonic() < deadline, "the first run never submitted its job"
            time.sleep(0.02)

        refused = run_target(config, text, tmp_path)  # lock_timeout_s: 0
        assert refused.exit_code == 1
        errors = [line for line in refused.stderr.splitlines() if "| ERROR" in line]
        assert len(errors) == 1, refused.stderr
        line = errors[0]
        assert "'customers'" in line and "pid" in line and "since" in line, line
        assert "Traceback" not in refused.stderr
        # It sent nothing for that stream: the one import is the first run's.
        assert sum(e.operation == "bulk_import_profiles" for e in emulator.request_log) == 1
        # And it took the first run's open job for none an interrupted run left behind.
        assert "was in flight when an earlier run stopped" not in refused.stderr
        assert not any(e.operation == "get_bulk_import_profiles_job" for e in emulator.request_log)

        waiting = run_target({**config, "lock_timeout_s": 60}, text, tmp_path)
        code, _, stderr = first.finish(timeout=120)
        assert code == 0, stderr
        assert waiting.exit_code == 0, waiting.stderr
        waiting.assert_accounted()
        assert waiting.stream("customers")["unchanged"] == 50  # it ran after the first
        assert "was in flight when an earlier run stopped" not in waiting.stderr


@pytest.mark.postgres
def test_two_runs_on_one_account_share_its_rate_budget(
    emulator: Any, tmp_path: Path, postgres_ledger: LedgerPlace
) -> None:
    """Two pipelines load two event streams of one account at once, at Klaviyo's real tiers:
    together they stay inside bulk_create_events' windows (10/s, 150/min), where each alone
    would take all of it."""
    requests_each = 80  # 160 together: the per-minute window binds
    ledger = {"ledger_url": postgres_ledger.url, "ledger_schema": postgres_ledger.schema}
    runs = []
    for name in ("web_orders", "store_orders"):
        rows = [
            {"id": i, "email": f"c{i % 500}@example.com", "total": 10}
            for i in range(requests_each * 1_000)
        ]
        text = singer_lines(
            stream_messages(name, {"id": INTEGER, "email": STRING, "total": INTEGER}, rows, ["id"])
        )
        streams = {name: {"object": "event", "event_name": f"Placed Order ({name})"}}
        config = base_config(emulator, tmp_path / name, streams, **ledger)
        runs.append(Running(config, tmp_path))
        runs[-1].feed(text)
    results = [run.finish(timeout=300) for run in runs]

    for code, _, stderr in results:
        assert code == 0, stderr[-3000:]
    events = [e for e in emulator.request_log if e.operation == "bulk_create_events"]
    assert len(events) == 2 * requests_each
    assert [e.status for e in events if e.status == 429] == []


@pytest.mark.parametrize("kind", KINDS)
def test_records_on_hold_wait_for_their_own_account_also_after_a_key_rotation(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    """Production's records on hold are not replayed into staging, whose loader shares the
    state_dir; production replays them, with the key it had or a rotated one, and a rotated
    key is the same account: nothing is forgotten."""
    from tests.emulator import Emulator

    other = Emulator(private_key="pk_staging_fedcba9876543210", public_key="StG456").start()
    rotated = "pk_rotated_0123456789abcdef"
    emulator.add_key(rotated, emulator.all_scopes)
    streams = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}

    def text(rows: list[dict[str, Any]]) -> str:
        return singer_lines(stream_messages("customers", CUSTOMERS, rows, ["id"]))

    try:
        with ledger_place(kind, tmp_path) as place:
            ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
            production = base_config(emulator, place.state_dir, streams, **ledger)
            staging = base_config(other, place.state_dir, streams, **ledger)
            for operation in ("bulk_import_profiles", "create_or_update_profile"):
                emulator.add_fault("503", operation=operation, count=None)
            # A first run on a new ledger: its records on hold are production's all the same.
            held = run_target({**production, "max_retries": 0}, text(customers(3)), tmp_path)
            assert held.stream("customers")["on_hold"] == 3, held.stderr
            emulator.clear_faults()

            stage = run_target(staging, text(customers(2, plan="trial")), tmp_path)
            assert stage.exit_code == 0, stage.stderr
            assert stage.stream("customers")["replayed"] == 0
            assert "3 records on hold were held by a run with another Klaviyo account" in (
                stage.stderr
            )
            assert len(other.dump()["profiles"]) == 2  # its own, none of production's

            back = run_target(production, text([]), tmp_path)
            assert back.exit_code == 0, back.stderr
            assert back.stream("customers")["replayed"] == 3
            assert "records on hold were held by a run" not in back.stderr

            rerun = run_target(
                {**production, "private_api_key": rotated}, text(customers(3)), tmp_path
            )
            assert rerun.exit_code == 0, rerun.stderr
            assert "another Klaviyo account" not in rerun.stderr
            assert rerun.stream("customers")["unchanged"] == 3  # its hashes were kept
        assert (
            sum(1 for p in emulator.dump()["profiles"] if p["attributes"].get("external_id")) == 3
        )
        if kind == "sqlite":  # asked once a key, where the ledger kept something
            assert sum(e.operation == "get_accounts" for e in emulator.request_log) == 2
    finally:
        other.stop()


def test_a_key_whose_account_klaviyo_does_not_tell_is_asked_again_next_run(
    emulator: Any, tmp_path: Path
) -> None:
    """GET /api/accounts failing (a 503, retries spent) is not taken for a key that may not
    read its account: the run goes on with a warning, and the next run asks again."""
    streams = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}
    config = base_config(emulator, tmp_path / "state", streams, max_retries=0)
    text = singer_lines(stream_messages("customers", CUSTOMERS, customers(3), ["id"]))
    assert run_target(config, text, tmp_path).exit_code == 0  # a new ledger: nothing asked
    emulator.add_fault("503", operation="get_accounts", count=None)
    unanswered = run_target(config, text, tmp_path)
    assert unanswered.exit_code == 0, unanswered.stderr
    assert "Klaviyo did not tell the key's account" in unanswered.stderr
    emulator.clear_faults()
    answered = run_target(config, text, tmp_path)
    assert answered.exit_code == 0, answered.stderr
    assert "another Klaviyo account" not in answered.stderr
    assert [e.status for e in emulator.request_log if e.operation == "get_accounts"] == [503, 200]
    assert run_target(config, text, tmp_path).stream("customers")["unchanged"] == 3


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.emulator(job_latency_s=6)
def test_a_run_leaves_records_on_hold_to_the_live_run_loading_their_stream(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    """One config maps every stream, as one Meltano loader serves several taps. Customers on
    hold are being replayed by the run loading customers; an orders run started meanwhile
    leaves them to it, rather than waiting for the stream's lock and failing."""
    streams = {
        "customers": {"object": "profile", "fields": {"external_id": "id"}},
        "orders": {"object": "event", "event_name": "Placed Order"},
    }
    with ledger_place(kind, tmp_path) as place:
        ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
        config = base_config(emulator, place.state_dir, streams, **ledger)
        emulator.add_fault("503", operation="bulk_import_profiles", count=None)
        held = run_target(
            {**config, "max_retries": 0},
            singer_lines(stream_messages("customers", CUSTOMERS, customers(20), ["id"])),
            tmp_path,
        )
        assert held.stream("customers")["on_hold"] == 20, held.stderr
        emulator.clear_faults()

        loading = Running(config, tmp_path)  # replays the 20, then waits 6 s for their job
        loading.feed("")
        deadline = time.monotonic() + 30
        while not any(
            e.operation == "bulk_import_profiles" and e.status == 202 for e in emulator.request_log
        ):
            assert time.monotonic() < deadline, "the replay never submitted its job"
            time.sleep(0.02)

        orders = [{"id": 1, "email": "ann@example.com", "total": 5}]
        other = run_target(
            config,
            singer_lines(
                stream_messages(
                    "orders", {"id": INTEGER, "email": STRING, "total": INTEGER}, orders, ["id"]
                )
            ),
            tmp_path,
        )
        assert other.exit_code == 0, other.stderr
        assert other.stream("orders")["loaded"] == 1
        assert "customers" not in other.summary["streams"]
        code, _, stderr = loading.finish(timeout=120)
        assert code == 0, stderr
    assert sum(1 for p in emulator.dump()["profiles"] if p["attributes"].get("external_id")) == 20


@pytest.mark.parametrize("kind", KINDS)
def test_a_ledger_used_for_another_account_says_so(
    emulator: Any, tmp_path: Path, kind: str
) -> None:
    """Staging and production loaders of one project left on the default state_dir: a run
    on a ledger whose last run was of another account warns, and sends every record rather
    than skip what the other account received; runs of one account say nothing."""
    from tests.emulator import Emulator

    other = Emulator(private_key="pk_staging_fedcba9876543210", public_key="StG456").start()
    try:
        text = singer_lines(stream_messages("customers", CUSTOMERS, customers(3), ["id"]))
        streams = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}
        warning = "was last used with another Klaviyo account or key"
        with ledger_place(kind, tmp_path) as place:
            ledger = {"ledger_url": place.url, "ledger_schema": place.schema} if place.url else {}
            runs, unchanged = [], []
            for klaviyo in (emulator, emulator, other, emulator):
                config = base_config(klaviyo, place.state_dir, streams, **ledger)
                runs.append(run_target(config, text, tmp_path))
                assert runs[-1].exit_code == 0, runs[-1].stderr
                unchanged.append(runs[-1].stream("customers")["unchanged"])  # before the next
        assert [warning in run.stderr for run in runs] == [False, False, True, True]
        assert "pk_" not in runs[2].stderr + runs[3].stderr  # the keys themselves never
        # The other account receives every record, none skipped for what the first account
        # had; back on the first account, what the other's run left is not trusted either.
        assert unchanged == [0, 3, 0, 0]
        assert len(other.dump()["profiles"]) == 3
    finally:
        other.stop()
