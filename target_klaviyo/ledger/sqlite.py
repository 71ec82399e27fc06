"""The SQLite ledger: `<state_dir>/ledger.sqlite3` (directory 0700, files 0600), WAL mode.

Schema history (`PRAGMA user_version`):
- 0: skip_unchanged hashes were BLAKE2b (a `sent` table of blobs, later `sent_hashes` of
  integers), and `jobs` kept each job's keys (a `keys` column);
- 2 (`HASHES_VERSION`): hashes are XXH3-64; `jobs` keeps the count of records.
Tables added later (`catalog_ids`) are created where missing when the ledger is opened
(`CREATE TABLE IF NOT EXISTS`): nothing to migrate, the version stays.
Opening an older ledger migrates it in place (`SqliteBackend._migrate`); records on hold,
stream schemas, jobs and list members carry over unchanged. Records on hold gained the id
of the account that held them (`held.account`, '' for those held before): the table is
rebuilt, once, when a ledger without the column is opened for writing.
Tables added later (`deletions_requested`: privacy deletions Klaviyo accepted) are created
by `SCHEMA`'s `CREATE TABLE IF NOT EXISTS` when a ledger is opened for writing; a read-only
ledger that predates one reads it as empty (`has_table`).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from target_klaviyo.ledger.backend import Backend, Row, SqlType
from target_klaviyo.ledger.locks import FileLocks, StreamLock, wait_for_lock

LOGGER = logging.getLogger("target-klaviyo")

# Records on hold, by the id of the account that held them: '' where it was not known.
_HELD = """
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY,
    account TEXT NOT NULL DEFAULT '',
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    object TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    record TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (account, stream, key)
);
"""
_HELD_COLUMNS = (
    "id, stream, key, object, fingerprint, record, reason, attempts, first_seen, last_seen"
)

SCHEMA = (
    _HELD
    + """
CREATE TABLE IF NOT EXISTS streams (
    stream TEXT PRIMARY KEY,
    schema TEXT NOT NULL,
    key_properties TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    stream TEXT NOT NULL,
    records INTEGER NOT NULL,
    submitted_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_hashes (
    key INTEGER PRIMARY KEY,
    digest INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS members (
    list_id TEXT NOT NULL,
    key TEXT NOT NULL,
    identity TEXT NOT NULL,
    last_pass INTEGER NOT NULL,
    PRIMARY KEY (list_id, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS passes (
    list_id TEXT PRIMARY KEY,
    pass INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deletions_requested (
    key TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    requested_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_ids (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    PRIMARY KEY (kind, id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_meta (
    name TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""
)

# PRAGMA user_version of a ledger whose skip_unchanged hashes are XXH3-64 (earlier: BLAKE2b).
HASHES_VERSION = 2
_SQLITE_VARS = 500  # stay well under SQLite's bound-parameter limit
_SENT_ROWS_PER_INSERT = _SQLITE_VARS // 2


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def _interleaved(keys: Sequence[int], digests: Sequence[int]) -> list[int]:
    """key, digest, key, digest, ..."""
    values: list[int] = [0] * (2 * len(keys))
    values[0::2] = keys
    values[1::2] = digests
    return values


@functools.lru_cache(maxsize=8)
def _sent_insert(rows: int) -> str:
    """One statement writing `rows` skip_unchanged hashes."""
    return "INSERT OR REPLACE INTO sent_hashes (key, digest) VALUES " + ",".join(["(?, ?)"] * rows)


class SqliteBackend(Backend):
    kind = "sqlite"
    max_params = _SQLITE_VARS
    FILENAME = "ledger.sqlite3"

    def __init__(self, db: sqlite3.Connection, location: str, locks: FileLocks | None) -> None:
        self._db = db
        self.location = location
        self._locks = locks

    @classmethod
    def open(cls, state_dir: Path, *, read_only: bool = False) -> SqliteBackend:
        """The ledger under `state_dir`, created or migrated as needed; read-only: as it is
        (empty if there is none), nothing written."""
        path = state_dir / cls.FILENAME
        if read_only:
            # A dry run reads what earlier runs stored (skip_unchanged) and writes nothing.
            if not path.exists():
                return cls.empty(str(path))
            db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
            return cls(db, str(path), None)
        private_dir(state_dir)
        _private_file(path)
        db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(SCHEMA)
        backend = cls(db, str(path), FileLocks(state_dir / "locks"))
        backend._migrate()
        return backend

    @classmethod
    def empty(cls, location: str, kind: str = "sqlite") -> SqliteBackend:
        """An empty ledger in memory: what a dry run reads where no ledger exists yet. It
        stands in for the `kind` ledger at `location` (as messages name it)."""
        db = sqlite3.connect(":memory:", check_same_thread=False)
        db.executescript(SCHEMA)
        backend = cls(db, location, None)
        backend.kind = kind
        return backend

    def _migrate(self) -> None:
        """Ledgers of earlier versions kept each job's keys (only their count is needed), and
        skip_unchanged hashes of another kind, which are discarded: every record is sent once
        more (upserts make that safe) and skipped again from the next run on."""
        if "keys" in self._columns("jobs"):
            with self._db:
                jobs = self._db.execute(
                    "SELECT id, operation, stream, keys, submitted_at FROM jobs"
                ).fetchall()
                self._db.execute("DROP TABLE jobs")
            self._db.executescript(SCHEMA)
            with self._db:
                self._db.executemany(
                    "INSERT INTO jobs (id, operation, stream, records, submitted_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    [(i, o, st, len(json.loads(k)), at) for i, o, st, k, at in jobs],
                )
        self._migrate_held()
        if self._db.execute("PRAGMA user_version").fetchone()[0] >= HASHES_VERSION:
            return
        earlier = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sent')"
            " OR EXISTS (SELECT 1 FROM sent_hashes)"
        ).fetchone()[0]
        with self._db:
            self._db.execute("DROP TABLE IF EXISTS sent")
            self._db.execute("DELETE FROM sent_hashes")
            self._db.execute(f"PRAGMA user_version = {HASHES_VERSION}")
        if earlier:
            LOGGER.warning(
                "skip_unchanged: the ledger's hashes were made by an earlier version of "
                "target-klaviyo; this run sends every record once more"
            )

    def _migrate_held(self) -> None:
        """Records on hold gain the id of the account that held them ('' for those held
        before): the table is rebuilt, since its unique key changes."""
        if "account" in self._columns("held"):
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")  # another run opening the ledger waits, then finds it done
        try:
            if "account" not in self._columns("held"):
                db.execute("ALTER TABLE held RENAME TO held_before_accounts")
                db.execute(_HELD)
                db.execute(
                    f"INSERT INTO held ({_HELD_COLUMNS})"
                    f" SELECT {_HELD_COLUMNS} FROM held_before_accounts"
                )
                db.execute("DROP TABLE held_before_accounts")
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def transaction(self) -> sqlite3.Connection:
        return self._db

    def execute(self, sql: str, params: Row = ()) -> None:
        self._db.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Row]) -> None:
        self._db.executemany(sql, rows)

    def query(self, sql: str, params: Row = ()) -> list[tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def in_list(
        self, column: str, values: Sequence[Any], sql_type: SqlType
    ) -> Iterator[tuple[str, list[Any]]]:
        for start in range(0, len(values), _SQLITE_VARS):
            chunk = list(values[start : start + _SQLITE_VARS])
            yield f"{column} IN ({','.join('?' * len(chunk))})", chunk

    def refresh_statistics(self, table: str) -> None:
        """Nothing to do: the ledger's queries take the same plan whatever the statistics."""

    def has_table(self, name: str) -> bool:
        row = self._db.execute(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?)",
            (name,),
        ).fetchone()
        return bool(row[0])

    def lookup_hashes(self, keys: Sequence[int]) -> list[tuple[int, int]]:
        found: list[tuple[int, int]] = []
        for condition, chunk in self.in_list("key", keys, "int8"):
            found += self._db.execute(
                f"SELECT key, digest FROM sent_hashes WHERE {condition}", chunk
            ).fetchall()
        return found

    def put_hashes(self, keys: Sequence[int], digests: Sequence[int]) -> None:
        # Many rows per statement: binding and stepping one statement per row is most of
        # the cost of writing them. Each statement's values (key, digest, key, digest, ...)
        # are built by slices (C loops, no tuple per row) as it is bound: a batch is 100,000
        # rows.
        step = _SENT_ROWS_PER_INSERT
        full = len(keys) - len(keys) % step
        self._db.executemany(
            _sent_insert(step),
            (
                _interleaved(keys[start : start + step], digests[start : start + step])
                for start in range(0, full, step)
            ),
        )
        if full < len(keys):
            self._db.execute(
                _sent_insert(len(keys) - full), _interleaved(keys[full:], digests[full:])
            )

    def lock_stream(self, account: str, stream: str, timeout_s: float) -> StreamLock:
        locks = self._locks
        if locks is None:
            raise RuntimeError("a read-only ledger takes no stream locks")
        return wait_for_lock(
            stream,
            timeout_s,
            lambda: locks.try_lock(account, stream),
            lambda: locks.holder(account, stream),
        )

    def close(self) -> None:
        self._db.close()
