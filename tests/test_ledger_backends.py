"""The ledger's two backends (SQLite under state_dir, PostgreSQL with ledger_url) keep the same
promises through the same `Ledger` API; PostgreSQL's schema is versioned and migrated; bad
settings fail with one line and never show the password."""

from __future__ import annotations

import json
import random
import re
import sqlite3
import stat
import sys
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import pytest

from target_klaviyo.ledger.errors import redact_url, scrub, url_secrets
from target_klaviyo.ledger.postgres import SCHEMA_VERSION
from target_klaviyo.ledger.store import (
    HeldRecord,
    Ledger,
    LedgerError,
    hash64,
    new_run_id,
    open_ledger,
    sent_keys,
)
from tests.ledger_places import KINDS, LedgerPlace, ledger_place
from tests.postgres import PostgresSettings, require_postgres, schema_exists


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerPlace]:
    with ledger_place(request.param, tmp_path) as where:
        yield where


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[LedgerPlace]:
    with ledger_place("postgresql", tmp_path) as where:
        yield where


def random_pairs(count: int, seed: int = 7) -> dict[int, int]:
    rng = random.Random(seed)
    pairs = {rng.getrandbits(64) - 2**63: rng.getrandbits(64) - 2**63 for _ in range(count)}
    pairs[-(2**63)] = 2**63 - 1  # the ends of the signed 64-bit range
    pairs[2**63 - 1] = -(2**63)
    return pairs


# -- the same behaviour on both backends ---------------------------------------------------


def test_records_on_hold_keep_their_first_order_and_the_newest_version(
    place: LedgerPlace,
) -> None:
    ledger = place.open()
    # More rows than one statement takes on either backend, with a key repeated in between.
    entries = [(f"k{i:05d}", {"id": i, "name": f"n{i}"}, "503", 0) for i in range(4_000)]
    entries.append(("k00007", {"id": 7, "name": "newer"}, "429", 2))
    ledger.hold("customers", "profile", "fp-1", entries)
    ledger.hold("orders", "event", "fp-2", [("o1", {"order": "o1"}, "timeout", 0)])
    ledger.close()

    ledger = place.open()
    try:
        assert ledger.held_streams() == ["customers", "orders"]
        assert ledger.held_count() == 4_001
        assert ledger.held_count("customers") == 4_000
        held = list(ledger.held_records("customers", batch=700))
        assert [r.key for r in held] == [f"k{i:05d}" for i in range(4_000)]
        seventh = held[7]
        assert (seventh.record, seventh.reason, seventh.attempts) == (
            {"id": 7, "name": "newer"},
            "429",
            3,
        )
        assert held[8].attempts == 1
        ledger.release(r.id for r in held[:3_990])
        assert [r.key for r in ledger.held_records("customers")] == [
            f"k{i:05d}" for i in range(3_990, 4_000)
        ]
        (order,) = ledger.held_records("orders")
        assert order == HeldRecord(order.id, "orders", "o1", {"order": "o1"}, 1, "timeout")
    finally:
        ledger.close()


def test_a_record_held_again_is_updated_in_place_and_awkward_text_comes_back_intact(
    place: LedgerPlace,
) -> None:
    """Backslashes, tabs, NUL, a lone surrogate and quotes survive the bulk write (PostgreSQL
    copies rows in COPY's text format); a key held again keeps its place, with the newer
    record and one attempt more."""
    awkward = {
        "path": "C:\\temp\\new\tline\nend",
        "nul": "a\x00b",
        "lone": "\ud800",
        "quote": 'say "hi"',
        "big": 2**60,
    }
    ledger = place.open()
    try:
        ledger.hold("s", "profile", "fp", [("a", awkward, "503", 0), ("b", {"id": 2}, "503", 0)])
        ledger.hold("s", "profile", "fp", [("a", {**awkward, "big": 1}, "429", 1)])
        held = list(ledger.held_records("s"))
        assert [(r.key, r.attempts, r.reason) for r in held] == [("a", 2, "429"), ("b", 1, "503")]
        assert held[0].record == {**awkward, "big": 1}
    finally:
        ledger.close()


def test_records_on_hold_are_kept_per_account(place: LedgerPlace) -> None:
    """Records on hold are replayed by a run of the account that held them; those held for
    no known account become the next known account's, the later of two records of one key
    winning."""
    ledger = place.open()
    try:
        ledger.hold_for("account-A")
        ledger.hold("customers", "profile", "fp", [("k1", {"v": "A1"}, "503", 0)])
        ledger.hold("customers", "profile", "fp", [("k2", {"v": "A2"}, "503", 0)])
        ledger.hold_for("account-B")
        ledger.hold("customers", "profile", "fp", [("k1", {"v": "B1"}, "503", 0)])
        assert [r.record for r in ledger.held_records("customers")] == [{"v": "B1"}]
        assert ledger.held_elsewhere() == [("account-A", 2)]
        ledger.hold_for("")  # a key that may not read its account: sees only its own
        ledger.hold("customers", "profile", "fp", [("k2", {"v": "any2"}, "503", 0)])
        assert ledger.held_count() == 1
        ledger.hold_for("account-A")  # the untagged record of k2 is later: it wins
        records = {r.key: r.record for r in ledger.held_records("customers")}
        assert records == {"k1": {"v": "A1"}, "k2": {"v": "any2"}}
        assert ledger.held_count() == 2 and ledger.held_elsewhere() == [("account-B", 1)]
    finally:
        ledger.close()


def test_stream_schemas_and_jobs_in_flight(place: LedgerPlace) -> None:
    ledger = place.open()
    try:
        assert ledger.stream_schema("customers") is None
        ledger.save_stream("customers", {"type": "object", "properties": {}}, ["id"])
        ledger.save_stream("customers", {"type": "object"}, ["id", "region"])
        assert ledger.stream_schema("customers") == ({"type": "object"}, ["id", "region"])

        ledger.job_started("job-1", "bulk_import_profiles", "customers", 10)
        ledger.job_started("job-2", "bulk_create_events", "orders", 3)
        ledger.job_started("job-1", "bulk_import_profiles", "customers", 12)
        jobs = ledger.jobs_in_flight()
        assert [(j.id, j.stream, j.records) for j in jobs] == [
            ("job-2", "orders", 3),
            ("job-1", "customers", 12),
        ]
        ledger.job_finished("job-2")
        assert [j.id for j in ledger.jobs_in_flight()] == ["job-1"]
    finally:
        ledger.close()


def test_skip_unchanged_hashes_are_found_again_pending_or_stored(place: LedgerPlace) -> None:
    pairs = random_pairs(25_003)
    ledger = place.open()
    ledger.SENT_BATCH = 10_000  # type: ignore[misc]  # written three times on the way
    items = list(pairs.items())
    for start in range(0, len(items), 1_000):
        ledger.remember_sent(items[start : start + 1_000])
    # Some still in memory, most written: either way they are found.
    assert ledger.unchanged(items) == set(pairs)
    ledger.close()

    ledger = place.open()
    try:
        assert ledger.unchanged(items) == set(pairs)
        changed = [(key, digest ^ 1) for key, digest in items]
        assert ledger.unchanged(changed) == set()
        # A newer digest replaces the stored one.
        newer = dict(changed[:500])
        ledger.remember_sent(newer.items())
        ledger.flush_sent()
        assert ledger.unchanged(changed[:600]) == set(newer)
        forgotten = [key for key, _ in items[500:700]]
        ledger.remember_sent([(forgotten[0], 1)])  # pending and stored: both forgotten
        ledger.forget_sent(forgotten)
        assert ledger.unchanged(items[500:800]) == {key for key, _ in items[700:800]}
    finally:
        ledger.close()


def test_skip_unchanged_a_key_sent_again_in_one_run_keeps_its_latest_digest(
    place: LedgerPlace,
) -> None:
    """Several hashes of one key wait together: the latest counts, before and after they are
    written, and a key forgotten while waiting (its record rejected) is not skipped unless
    it was accepted again since."""
    ledger = place.open()
    try:
        ledger.remember_sent([(1, 10), (2, 20), (3, 30)])
        ledger.remember_sent([(1, 11), (2, 21)])
        ledger.forget_sent([2, 3])
        ledger.remember_sent([(3, 31)])
        for _ in ("waiting", "written"):
            assert ledger.unchanged([(1, 10), (2, 20), (3, 30)]) == set()
            assert ledger.unchanged([(1, 11), (2, 21), (3, 31)]) == {1, 3}
            ledger.flush_sent()
    finally:
        ledger.close()
    ledger = place.open()
    try:
        assert ledger.unchanged([(1, 11), (2, 21), (3, 31)]) == {1, 3}
    finally:
        ledger.close()


def test_mirror_membership_pages_in_byte_order(place: LedgerPlace) -> None:
    ledger = place.open()
    try:
        assert ledger.current_pass("L1") == 1
        ledger.next_pass("L1")
        ledger.next_pass("L1")
        assert ledger.current_pass("L1") == 3
        assert ledger.current_pass("L2") == 1
        # Keys whose order differs between byte order and a locale's collation.
        keys = [
            "email:b",
            "email:B",
            "email:a",
            "email:é",
            "email:Z",
            "email:_",
            *map(str, range(1500)),
        ]
        ledger.track_members("L1", 2, [(k, {"email": k}) for k in keys])
        ledger.track_members("L1", 3, [("email:a", {"email": "A"}), ("email:a", {"email": "a"})])
        ledger.track_members("L2", 3, [("email:b", {"email": "b"})])
        assert ledger.member_count("L1") == len(keys)
        assert ledger.count_not_seen("L1", 3) == len(keys) - 1
        pages: list[str] = []
        after = ""
        while page := ledger.members_not_seen("L1", 3, after=after, limit=400):
            pages += [key for key, _ in page]
            after = page[-1][0]
        assert pages == sorted(k for k in keys if k != "email:a")  # Python sorts by code point
        ledger.untrack_members("L1", pages[:1000])
        assert ledger.member_count("L1") == len(keys) - 1000
        assert ledger.members_not_seen("L1", 2) == [("email:a", {"email": "a"})]
        assert ledger.member_count("L2") == 1
    finally:
        ledger.close()


def test_a_read_only_ledger_reads_and_writes_nothing(place: LedgerPlace) -> None:
    ledger = place.open()
    ledger.hold("customers", "profile", "fp", [("k1", {"id": 1}, "503", 0)])
    ledger.remember_sent([(1, 11)])
    ledger.close()

    dry = place.open(read_only=True)
    try:
        assert dry.read_only
        assert dry.held_count() == 1
        assert dry.unchanged([(1, 11)]) == {1}
        dry.hold("customers", "profile", "fp", [("k2", {"id": 2}, "503", 0)])
        dry.release([r.id for r in dry.held_records("customers")])
        dry.remember_sent([(2, 22)])
        dry.save_stream("customers", {}, [])
        dry.job_started("job-9", "op", "customers", 1)
        dry.next_pass("L1")
        dry.track_members("L1", 1, [("k", {})])
        dry.record_reject(new_run_id(), "customers", "k", "bad", {"id": 3})
        assert dry.lock_stream("account", "customers", 0).held
        assert dry.rate_budget("account") is None
    finally:
        dry.close()

    ledger = place.open()
    try:
        assert [r.key for r in ledger.held_records("customers")] == ["k1"]
        assert ledger.unchanged([(1, 11), (2, 22)]) == {1}
        assert ledger.stream_schema("customers") is None
        assert ledger.jobs_in_flight() == []
        assert ledger.current_pass("L1") == 1
        assert ledger.member_count("L1") == 0
    finally:
        ledger.close()


def test_threads_share_one_ledger(place: LedgerPlace) -> None:
    ledger = place.open()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        try:
            for batch in range(20):
                base = worker * 1_000 + batch * 10
                ledger.hold(
                    "s", "profile", "fp", [(f"{base + i}", {}, "503", 0) for i in range(10)]
                )
                ledger.remember_sent([(base + i, i) for i in range(10)])
                ledger.track_members("L", 1, [(f"{base + i}", {}) for i in range(10)])
                assert len(ledger.unchanged([(base + i, i) for i in range(10)])) == 10
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ledger.close()
    assert errors == []
    ledger = place.open()
    try:
        assert ledger.held_count() == 6 * 200
        assert ledger.member_count("L") == 6 * 200
        assert (
            len(ledger.unchanged([(w * 1000 + i, i % 10) for w in range(6) for i in range(200)]))
            == 1200
        )
    finally:
        ledger.close()


def test_catalog_ids_known_to_exist_by_kind(place: LedgerPlace) -> None:
    ledger = place.open()
    ids = [f"SKU-{i}" for i in range(1_200)] + ['o\'brien "quoted"']
    ledger.catalog_remember("item", ids)
    ledger.catalog_remember("item", ids[:10])  # again: no error, no duplicate
    ledger.catalog_remember("variant", ["SKU-1"])
    ledger.close()

    ledger = place.open()
    try:
        asked = [*ids[1_100:], "SKU-X"]
        assert ledger.catalog_known("item", asked) == set(ids[1_100:])
        assert ledger.catalog_known("variant", ["SKU-1", "SKU-2"]) == {"SKU-1"}
        assert ledger.catalog_known("category", ["SKU-1"]) == set()
        ledger.catalog_forget("item", ids[1_100:1_150])
        assert ledger.catalog_known("item", asked) == set(ids[1_150:])
    finally:
        ledger.close()


def test_hash_helpers_are_stable_signed_64_bit() -> None:
    assert hash64(b"payload") == hash64(b"payload")
    assert -(2**63) <= hash64(b"payload") < 2**63
    key_of = sent_keys("customers", "profile")
    assert key_of("email:a@example.com") != sent_keys("customers", "list")("email:a@example.com")
    # The values earlier versions stored must keep meaning the same: pinned.
    assert hash64(b"") == 3244421341483603138
    assert key_of("email:a@example.com") == sent_keys("customers", "profile")("email:a@example.com")


def test_run_ids_sort_by_time_and_differ() -> None:
    ids = {new_run_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{8}", run_id) for run_id in ids)


# -- SQLite --------------------------------------------------------------------------------

# The schema and version as the ledger was written before PostgreSQL existed (store.py at
# fee8a7f): a ledger left by that version must open and keep its contents.
EARLIER_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY, stream TEXT NOT NULL, key TEXT NOT NULL, object TEXT NOT NULL,
    fingerprint TEXT NOT NULL, record TEXT NOT NULL, reason TEXT NOT NULL,
    attempts INTEGER NOT NULL, first_seen REAL NOT NULL, last_seen REAL NOT NULL,
    UNIQUE (stream, key)
);
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY, schema TEXT NOT NULL, key_properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, operation TEXT NOT NULL, stream TEXT NOT NULL,
    records INTEGER NOT NULL, submitted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_hashes (key INTEGER PRIMARY KEY, digest INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS members (
    list_id TEXT NOT NULL, key TEXT NOT NULL, identity TEXT NOT NULL,
    last_pass INTEGER NOT NULL, PRIMARY KEY (list_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS passes (list_id TEXT PRIMARY KEY, pass INTEGER NOT NULL);
PRAGMA user_version = 2;
"""


def test_a_sqlite_ledger_of_the_previous_version_keeps_working(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    key_of = sent_keys("customers", "profile")
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        db.executescript(EARLIER_SQLITE_SCHEMA)
        db.execute(
            "INSERT INTO held VALUES (5, 'customers', 'email:a', 'profile', 'fp',"
            " '{\"id\": 1}', '503', 2, 1.0, 2.0)"
        )
        db.execute("INSERT INTO sent_hashes VALUES (?, ?)", (key_of("email:b"), hash64(b"{}")))
        db.execute("INSERT INTO streams VALUES ('customers', '{\"type\": \"object\"}', '[\"id\"]')")
        db.execute("INSERT INTO jobs VALUES ('job-1', 'bulk_import_profiles', 'customers', 4, 1.0)")
        db.execute("INSERT INTO members VALUES ('L1', 'email:a', '{\"email\": \"a\"}', 3)")
        db.execute("INSERT INTO passes VALUES ('L1', 3)")

    ledger = open_ledger(state_dir)
    try:
        ledger.hold_for("account-A")  # held before accounts were recorded: any run's
        assert list(ledger.held_records("customers")) == [
            HeldRecord(5, "customers", "email:a", {"id": 1}, 2, "503")
        ]
        assert ledger.unchanged([(key_of("email:b"), hash64(b"{}"))]) == {key_of("email:b")}
        assert ledger.stream_schema("customers") == ({"type": "object"}, ["id"])
        assert [(j.id, j.records) for j in ledger.jobs_in_flight()] == [("job-1", 4)]
        assert ledger.current_pass("L1") == 3
        assert ledger.members_not_seen("L1", 4) == [("email:a", {"email": "a"})]
        ledger.hold("customers", "profile", "fp", [("email:c", {"id": 3}, "503", 0)])
        assert ledger.held_count() == 2
        ledger.hold_for("account-B")  # the first account's, its own now, are not B's
        assert ledger.held_count() == 0 and ledger.held_elsewhere() == [("account-A", 2)]
    finally:
        ledger.close()
    assert "earlier version" not in caplog.text  # the hashes were kept, not discarded
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2


def test_the_sqlite_ledger_is_private_and_keeps_no_rejects(tmp_path: Path) -> None:
    state_dir = tmp_path / "state"
    ledger = open_ledger(state_dir)
    assert isinstance(ledger, Ledger) and ledger.kind == "sqlite"
    ledger.record_reject(new_run_id(), "customers", "k", "bad", {"id": 1})
    ledger.close()
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    for path in state_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    assert "rejects" not in tables


def test_a_dry_run_without_a_sqlite_ledger_creates_nothing(tmp_path: Path) -> None:
    ledger = open_ledger(tmp_path / "state", read_only=True)
    assert ledger.held_count() == 0
    ledger.close()
    assert not (tmp_path / "state").exists()


# -- PostgreSQL ----------------------------------------------------------------------------


def _drop_version_2_tables(pg: LedgerPlace) -> None:
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(**PostgresSettings.from_env().conninfo(), autocommit=True) as conn:
        for table in ("catalog_ids", "deletions_requested"):
            conn.execute(
                pgsql.SQL("drop table {}.{}").format(
                    pgsql.Identifier(pg.schema), pgsql.Identifier(table)
                )
            )


def _pg_rows(pg: LedgerPlace, sql: str) -> list[tuple[object, ...]]:
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(**PostgresSettings.from_env().conninfo(), autocommit=True) as conn:
        conn.execute(pgsql.SQL("set search_path to {}").format(pgsql.Identifier(pg.schema)))
        return conn.execute(sql.encode()).fetchall()


def test_postgres_creates_its_schema_and_records_the_version(pg: LedgerPlace) -> None:
    settings = PostgresSettings.from_env()
    assert not schema_exists(settings, pg.schema)
    ledger = pg.open()
    try:
        assert ledger.kind == "postgresql"
        assert ledger.location == settings.url()  # trust auth here: no password to hide
    finally:
        ledger.close()
    assert schema_exists(settings, pg.schema)
    assert _pg_rows(pg, "select name, value from ledger_meta") == [
        ("schema_version", str(SCHEMA_VERSION))
    ]
    tables = {
        row[0]
        for row in _pg_rows(
            pg, "select tablename from pg_tables where schemaname = current_schema()"
        )
    }
    assert tables >= {
        "held",
        "streams",
        "jobs",
        "sent_hashes",
        "members",
        "passes",
        "rejects",
        "stream_locks",
        "rate_slots",
        "deletions_requested",
        "catalog_ids",
    }
    # Opening again finds the version current and changes nothing.
    pg.open().close()
    assert _pg_rows(pg, "select count(*) from ledger_meta") == [(1,)]


def test_a_postgres_ledger_of_version_1_gains_the_catalog_table(pg: LedgerPlace) -> None:
    pg.open().close()
    # As version 1 left it: none of version 2's tables.
    _drop_version_2_tables(pg)
    _pg_rows(pg, "update ledger_meta set value = '1' where name = 'schema_version' returning 1")
    ledger = pg.open()
    try:
        ledger.catalog_remember("item", ["A"])
        assert ledger.catalog_known("item", ["A", "B"]) == {"A"}
    finally:
        ledger.close()
    assert _pg_rows(pg, "select value from ledger_meta") == [(str(SCHEMA_VERSION),)]


def test_postgres_start_ups_at_once_create_the_ledger_once(pg: LedgerPlace) -> None:
    ledgers: list[Ledger] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def start() -> None:
        barrier.wait()
        try:
            ledgers.append(pg.open())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for ledger in ledgers:
        ledger.close()
    assert errors == []
    assert len(ledgers) == 4


def test_a_postgres_ledger_of_a_newer_version_is_refused(pg: LedgerPlace) -> None:
    pg.open().close()
    _pg_rows(pg, "update ledger_meta set value = '99' where name = 'schema_version' returning 1")
    for read_only in (False, True):
        with pytest.raises(LedgerError) as refused:
            pg.open(read_only=read_only)
        message = str(refused.value)
        assert "\n" not in message
        assert "schema version 99" in message and "newer target-klaviyo" in message


def test_a_postgres_dry_run_reads_a_missing_ledger_as_empty_and_creates_nothing(
    pg: LedgerPlace,
) -> None:
    dry = pg.open(read_only=True)
    try:
        assert dry.kind == "postgresql" and pg.schema in dry.location
        assert dry.held_count() == 0
        assert dry.unchanged([(1, 1)]) == set()
        assert dry.jobs_in_flight() == []
        dry.remember_sent([(1, 1)])
    finally:
        dry.close()
    assert not schema_exists(PostgresSettings.from_env(), pg.schema)


def test_postgres_keeps_rejects_in_batches_and_loses_none_on_close(pg: LedgerPlace) -> None:
    from target_klaviyo.ledger import store

    run_id = new_run_id()
    at = datetime(2026, 1, 15, 10, 11, 12, tzinfo=timezone.utc)
    ledger = pg.open()
    count = store.REJECTS_BATCH + 5  # one full batch on the way, the rest at close
    for i in range(count):
        ledger.record_reject(
            run_id, "customers", f"email:{i}", "invalid email", {"id": i, "note": "a\0b"}, at=at
        )
    assert _pg_rows(pg, "select count(*) from rejects") == [(store.REJECTS_BATCH,)]
    ledger.record_reject(run_id, "orders", None, "no identifier", {"total": 1.5})
    ledger.close()
    rows = _pg_rows(pg, "select run_id, stream, key, reason, record, at from rejects order by id")
    assert len(rows) == count + 1
    assert rows[3] == (
        run_id,
        "customers",
        "email:3",
        "invalid email",
        {"id": 3, "note": "a\ufffdb"},
        at,
    )
    assert rows[-1][:5] == (run_id, "orders", None, "no identifier", {"total": 1.5})


def test_a_url_that_is_not_postgresql_is_refused_naming_ledger_url(tmp_path: Path) -> None:
    for url in ("mysql://ledger:s3cret@db.example.com/ledger", "sqlite:///tmp/x.db", "ledger.db"):
        with pytest.raises(ValueError) as refused:
            open_ledger(tmp_path, url=url)
        message = str(refused.value)
        assert message.startswith("ledger_url ") and "\n" not in message
        assert "s3cret" not in message
    with pytest.raises(ValueError, match=re.escape("mysql://ledger:***@db.example.com/ledger")):
        open_ledger(tmp_path, url="mysql://ledger:s3cret@db.example.com/ledger")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ledger:pa@ss-w0rd@127.0.0.1:5432/test",  # '@' not percent-encoded
        "postgresql://ledger:pa/ss-w0rd@127.0.0.1:5432/test",
        "postgresql://ledger:pa?ss-w0rd@127.0.0.1:5432/test",
    ],
)
def test_a_url_with_an_unencoded_character_in_the_password_is_refused_unprinted(
    tmp_path: Path, url: str
) -> None:
    with pytest.raises(ValueError) as refused:
        open_ledger(tmp_path, url=url)
    assert str(refused.value) == (
        "ledger_url: write '@', '/', '?', '#' and ':' inside the user name or password"
        " percent-encoded (%40, %2F, %3F, %23, %3A)"
    )


def test_a_bad_schema_name_is_one_line(tmp_path: Path) -> None:
    pytest.importorskip("psycopg")
    for schema in ("", "x" * 64):
        with pytest.raises(ValueError, match=r"^ledger_schema must be 1 to 63 bytes"):
            open_ledger(tmp_path, url="postgresql://127.0.0.1/test", schema=schema)


def test_without_psycopg_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now fails
    with pytest.raises(LedgerError) as missing:
        open_ledger(tmp_path, url="postgresql://ledger:s3cret@127.0.0.1/test")
    assert str(missing.value) == "ledger_url needs psycopg: pip install 'target-klaviyo[postgres]'"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
        ("postgres://u@h/db", "postgres://u@h/db"),
        (
            "postgresql://h/db?sslmode=require&password=s3cret",
            "postgresql://h/db?sslmode=require&password=***",
        ),
        ("postgresql://u:pa/ss@h/db", "postgresql://u:***@h/db"),
        ("postgresql://u:s3cr3t@[::1/db", "postgresql://u:***@[::1/db"),
        ("u:s3cret@host", "***"),
    ],
)
def test_redacted_urls_hide_every_password(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_scrub_removes_passwords_as_written_decoded_and_from_pgpassword(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PGPASSWORD", "env-secret")
    secrets = url_secrets("postgresql://u:p%zzs%40s@h/db?password=q-secret")
    text = 'bad token "p%zzs%40s", "p%zzs@s", q-secret\n\tand env-secret'
    assert scrub(text, secrets) == 'bad token "***", "***", *** and ***'


def test_connection_errors_name_the_ledger_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = PostgresSettings.from_env()
    require_postgres(settings)
    monkeypatch.setenv("PGPASSWORD", "env-s3cret")
    user, server = settings.user, f"{settings.host}:{settings.port}"
    cases = {
        # The server says the database is missing; libpq quotes the bad percent-escape and
        # the unclosed IPv6 address (with the whole URL).
        f"postgresql://{user}:url-s3cret@{server}/tk_no_such_db": "does not exist",
        f"postgresql://{user}:url-s3cret%zz@{server}/test": "percent-encoded",
        f"postgresql://{user}:url-s3cret@[::1/test": "IPv6",
        f"postgresql://{user}:url-s3cret@{settings.host}:1/test": "port 1",
    }
    for url, expected in cases.items():
        with pytest.raises(LedgerError) as failed:
            open_ledger(tmp_path, url=url)
        message = str(failed.value)
        assert expected in message, message
        assert "s3cret" not in message and "\n" not in message, message
        assert message.startswith(("ledger at postgresql://", "ledger_url ")), message
        # Nothing chained to a traceback shows psycopg's own text.
        assert failed.value.__cause__ is None and failed.value.__suppress_context__


def test_a_postgres_ledger_prints_no_password(pg: LedgerPlace) -> None:
    settings = PostgresSettings.from_env()
    secret_url = pg.url.replace(f"//{settings.user}@", f"//{settings.user}:trust-ignores-it@")  # type: ignore[union-attr]
    ledger = open_ledger(pg.state_dir, url=secret_url, schema=pg.schema)
    try:
        for text in (repr(ledger), ledger.location, repr(ledger._db), repr(ledger._db._connector)):  # type: ignore[attr-defined]
            assert "trust-ignores-it" not in text
        assert ledger.location.startswith(f"postgresql://{settings.user}:***@")
    finally:
        ledger.close()


def test_postgres_replays_records_just_put_on_hold_page_by_page(pg: LedgerPlace) -> None:
    """A SIGTERM puts many records on hold at once and the next run often starts before
    autovacuum has looked at them: replay still reads each page through the index, rather
    than sorting every held record again for each page (which made 200,000 take 30 s)."""
    ledger = pg.open()
    try:
        count = 50_000
        ledger.hold("s", "profile", "fp", [(f"k{i}", {"id": i}, "503", 0) for i in range(count)])
        held = ledger.held_records("s", batch=1000)
        first = next(held)
        plan = "\n".join(
            str(row[0])
            for row in _pg_rows(
                pg,
                "EXPLAIN SELECT id, key, record, attempts, reason FROM held WHERE account IN"
                f" ('', 'a') AND stream = 's' AND id > {first.id + count // 2}"
                " ORDER BY id LIMIT 1000",
            )
        )
        assert "Sort" not in plan, plan
        assert sum(1 for _ in held) == count - 1
    finally:
        ledger.close()


def test_postgres_stores_json_as_written(pg: LedgerPlace) -> None:
    ledger = pg.open()
    try:
        record = {"b": 1, "a": [1.5, None, "é"], "nested": {"z": True, "y": "x"}}
        ledger.hold("s", "profile", "fp", [("k", record, "503", 0)])
        (held,) = ledger.held_records("s")
        assert json.dumps(held.record) == json.dumps(record)  # key order kept for replay
    finally:
        ledger.close()


# -- privacy deletions Klaviyo accepted -----------------------------------------------------


def test_accepted_deletions_are_kept_hashed_per_account(place: LedgerPlace) -> None:
    ann = Ledger.deletion_key("acct-1", "email:ann@example.com")
    bob = Ledger.deletion_key("acct-1", "email:bob@example.com")
    other_account = Ledger.deletion_key("acct-2", "email:ann@example.com")
    assert len({ann, bob, other_account}) == 3
    assert "ann" not in ann
    ledger = place.open()
    try:
        assert ledger.deletions_requested([ann, bob]) == set()
        ledger.deletion_requested("forget_me", ann)
        ledger.deletion_requested("forget_me", ann)  # twice: kept once
    finally:
        ledger.close()
    again = place.open(read_only=True)
    try:
        assert again.deletions_requested([ann, bob, other_account]) == {ann}
        again.deletion_requested("forget_me", bob)  # read-only: writes nothing
    finally:
        again.close()
    assert place.open().deletions_requested([bob]) == set()


def test_a_sqlite_ledger_from_before_deletions_and_catalogs_gains_the_tables(
    tmp_path: Path,
) -> None:
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        db.executescript(EARLIER_SQLITE_SCHEMA)
    key = Ledger.deletion_key("acct", "id:01ABC")
    dry = open_ledger(state_dir, read_only=True)  # a dry run reads the missing tables as empty
    try:
        assert dry.deletions_requested([key]) == set()
        assert dry.catalog_known("item", ["TEA-001"]) == set()
    finally:
        dry.close()
    ledger = open_ledger(state_dir)
    try:
        ledger.deletion_requested("forget_me", key)
        assert ledger.deletions_requested([key]) == {key}
        ledger.catalog_remember("item", ["TEA-001"])
        assert ledger.catalog_known("item", ["TEA-001", "TEA-002"]) == {"TEA-001"}
    finally:
        ledger.close()


def test_a_postgres_ledger_of_version_1_is_migrated_keeping_its_records(pg: LedgerPlace) -> None:
    from target_klaviyo.ledger.postgres import MIGRATIONS

    settings = PostgresSettings.from_env()
    import psycopg
    from psycopg import sql as pgsql

    with psycopg.connect(**settings.conninfo(), autocommit=True) as conn:
        conn.execute(pgsql.SQL("create schema {}").format(pgsql.Identifier(pg.schema)))
        conn.execute(pgsql.SQL("set search_path to {}").format(pgsql.Identifier(pg.schema)))
        conn.execute("create table ledger_meta (name text primary key, value text not null)")
        conn.execute(MIGRATIONS[1].encode())
        conn.execute("insert into ledger_meta values ('schema_version', '1')")
        conn.execute("insert into passes values ('L1', 3)")
    ledger = pg.open()
    try:
        assert ledger.current_pass("L1") == 3
        key = Ledger.deletion_key("acct", "email:ann@example.com")
        ledger.deletion_requested("forget_me", key)
        assert ledger.deletions_requested([key]) == {key}
    finally:
        ledger.close()
    assert _pg_rows(pg, "select value from ledger_meta") == [(str(SCHEMA_VERSION),)]
