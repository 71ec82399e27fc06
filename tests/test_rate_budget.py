"""One rate budget per account (SPEC §3.16): with the ledger in PostgreSQL, every process
pacing the same account shares each operation's burst and steady windows, kept in the
database (target_klaviyo/ledger/budget.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from target_klaviyo.klaviyo.operations import Operation, Tier
from target_klaviyo.ledger.budget import SharedPacer
from target_klaviyo.ledger.store import Ledger, open_ledger
from tests.emulator import Emulator
from tests.ledger_places import LedgerPlace, ledger_place
from tests.support import (
    REPO,
    STRING,
    Running,
    base_config,
    record_message,
    schema_message,
    singer_lines,
)

pytestmark = pytest.mark.postgres

TIER = Tier("test", 2, 6)  # 2 a second, 6 a minute: small enough to meet both limits
OP = Operation("test_op", "POST", "/api/test", TIER, ())
OTHER_OP = Operation("other_op", "POST", "/api/other", TIER, ())
SCALE = 0.02  # windows of 20 ms and 1.2 s

# A client in miniature: `count` requests of `operation`, each sent between acquire and
# release; prints (acquired, answered) wall-clock times once every request is answered.
HELPER = """
import json, random, sys, time
from target_klaviyo.klaviyo.operations import Operation, Tier
from target_klaviyo.ledger.store import open_ledger

state_dir, url, schema, account, count, scale, burst, steady = sys.argv[1:9]
ledger = open_ledger(state_dir, url=url, schema=schema)
pacer = ledger.rate_budget(account, window_scale=float(scale))
operation = Operation("test_op", "POST", "/api/test", Tier("test", int(burst), int(steady)), ())
sys.stdin.readline()  # start together
times = []
for _ in range(int(count)):
    pacer.acquire(operation)
    acquired = time.time()
    time.sleep(random.uniform(0, 0.01))  # the request
    answered = time.time()
    pacer.release(operation)
    times.append((acquired, answered))
print(json.dumps(times), flush=True)
ledger.close()
"""


def most_in_any_window(requests: list[tuple[float, float]], window_s: float) -> int:
    """The most requests Klaviyo could count in one window of `window_s`, each request
    arriving anywhere between its acquire and its answer.

    Request j can fall in [t, t + window) when acquired_j < t + window and answered_j >= t;
    the count is highest at some t = answered_i."""
    return max(
        sum(1 for acquired, answered in requests if acquired < t + window_s and answered >= t)
        for _, t in requests
    )


def test_the_window_check_sees_a_burst_over_the_limit() -> None:
    spaced = [(0.0, 0.1), (0.3, 0.4), (1.5, 1.6), (1.7, 1.8)]
    assert most_in_any_window(spaced, 1.0) == 2
    # A request answered late may still have arrived with the next ones.
    assert most_in_any_window([(0.0, 0.9), (1.5, 1.6), (1.7, 1.8)], 1.0) == 3
    assert most_in_any_window([(0.0, 0.1), (1.2, 1.3)], 1.0) == 1


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[LedgerPlace]:
    with ledger_place("postgresql", tmp_path) as where:
        where.open().close()  # created once, before processes race
        yield where


@pytest.fixture
def ledger(pg: LedgerPlace) -> Iterator[Ledger]:
    opened = pg.open()
    yield opened
    opened.close()


def test_two_processes_together_stay_within_both_windows(pg: LedgerPlace) -> None:
    per_process = 8
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                HELPER,
                *pg.args(),
                "account-1",
                str(per_process),
                str(SCALE),
                str(TIER.burst_per_s),
                str(TIER.steady_per_min),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for _ in range(2)
    ]
    outputs = []
    try:
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            outputs.append(json.loads(out))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    requests = [tuple(pair) for output in outputs for pair in output]
    assert len(requests) == 2 * per_process
    # Klaviyo's windows, without the pacer's 1 % margin.
    assert most_in_any_window(requests, 1.0 * SCALE) <= TIER.burst_per_s  # type: ignore[arg-type]
    steady = most_in_any_window(requests, 60.0 * SCALE)  # type: ignore[arg-type]
    # Used to the full, never beyond (apart, each process would have sent 8 within 1.2 s).
    assert steady == TIER.steady_per_min


class WouldWaitError(Exception):
    pass


def refuse_to_wait(seconds: float) -> None:
    raise WouldWaitError(seconds)


def test_operations_and_accounts_have_budgets_of_their_own(
    ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = ledger.rate_budget("account-1")
    same_account = ledger.rate_budget("account-1")
    other_account = ledger.rate_budget("account-2")
    assert first is not None and same_account is not None and other_account is not None
    for pacer in (first, same_account, other_account):
        monkeypatch.setattr(pacer, "_sleep", refuse_to_wait)

    assert [first.acquire(OP) for _ in range(TIER.burst_per_s)] == [0.0, 0.0]
    # Both slots are in flight: another process of the account must wait for an answer.
    with pytest.raises(WouldWaitError):
        same_account.acquire(OP)
    assert same_account.acquire(OTHER_OP) == 0.0
    assert other_account.acquire(OP) == 0.0
    # An answer starts its burst window: the next request waits for it to pass.
    first.release(OP)
    with pytest.raises(WouldWaitError) as wait:
        same_account.acquire(OP)
    assert 0 < wait.value.args[0] <= 1.01


def test_slots_of_a_dead_process_are_freed_after_the_in_flight_timeout(
    pg: LedgerPlace, ledger: Ledger
) -> None:
    dead = pg.open()
    pacer = dead.rate_budget("account-1")
    assert pacer is not None
    for _ in range(TIER.burst_per_s):
        pacer.acquire(OP)
    dead.close()  # no release: as if the process had been killed mid-request

    survivor = ledger.rate_budget("account-1", in_flight_timeout_s=0.5)
    assert survivor is not None
    waited: list[float] = []
    thread = threading.Thread(target=lambda: waited.append(survivor.acquire(OP)))
    thread.start()
    thread.join(timeout=60)
    assert not thread.is_alive(), "the dead process's slots were never freed"
    assert waited[0] > 0
    assert _in_flight(pg) == 1  # the survivor's; the dead ones are gone


def test_an_answer_after_the_in_flight_timeout_still_counts(
    pg: LedgerPlace, ledger: Ledger
) -> None:
    slow = ledger.rate_budget("account-1", in_flight_timeout_s=0.2)
    other = ledger.rate_budget("account-1", in_flight_timeout_s=0.2)
    assert slow is not None and other is not None
    slow.acquire(OP)
    time.sleep(0.3)
    other.acquire(OP)  # finds the slow request's slot stale and frees it
    assert _in_flight(pg) == 1
    slow.release(OP)
    other.release(OP)
    assert _answered(pg) == 2


def test_no_shared_budget_in_sqlite_or_in_a_dry_run(pg: LedgerPlace, tmp_path: Path) -> None:
    sqlite = open_ledger(tmp_path / "sqlite-state")
    dry = pg.open(read_only=True)
    try:
        assert sqlite.rate_budget("account-1") is None
        assert dry.rate_budget("account-1") is None
    finally:
        sqlite.close()
        dry.close()


def test_a_shared_pacer_needs_positive_windows(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        ledger.rate_budget("account-1", window_scale=0)
    assert isinstance(ledger.rate_budget("account-1"), SharedPacer)


def _count(pg: LedgerPlace, condition: str) -> int:
    import psycopg
    from psycopg import sql

    from tests.postgres import PostgresSettings

    with psycopg.connect(**PostgresSettings.from_env().conninfo()) as conn:
        query = sql.SQL("select count(*) from {}.rate_slots where ").format(
            sql.Identifier(pg.schema)
        ) + sql.SQL(condition)  # type: ignore[arg-type]
        row = conn.execute(query).fetchone()
    assert row is not None
    return int(row[0])


def _in_flight(pg: LedgerPlace) -> int:
    return _count(pg, "answered_at is null")


def _answered(pg: LedgerPlace) -> int:
    return _count(pg, "answered_at is not null")


def test_two_runs_of_one_key_started_together_pace_their_start_up_checks_together(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Two pipelines of one account started in the same second (one cron minute): each looks
    up its account (`GET /api/accounts`, 1 a second) before it knows which budget to share.
    Runs of one key share the key's budget until then, so Klaviyo answers no 429."""
    with ledger_place("postgresql", tmp_path) as place:
        runs = []
        for name in ("web_customers", "store_customers"):
            config = base_config(
                emulator,
                tmp_path / name,
                {name: {"object": "profile"}},
                ledger_url=place.url,
                ledger_schema=place.schema,
            )
            runs.append(Running(config, tmp_path))
        for run, name in zip(runs, ("web_customers", "store_customers"), strict=True):
            run.feed(
                singer_lines(
                    [
                        schema_message(name, {"email": STRING}),
                        record_message(name, {"email": f"ann.{name}@example.com"}),
                    ]
                )
            )
        for run in runs:
            code, _, stderr = run.finish()
            assert code == 0, stderr
    lookups = [entry.status for entry in emulator.request_log if entry.operation == "get_accounts"]
    assert lookups == [200, 200]
    assert [entry for entry in emulator.request_log if entry.status == 429] == []
