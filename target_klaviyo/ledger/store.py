"""The ledger: the one place that makes the target's promises durable.

SQLite under `state_dir` (directory 0700, files 0600), WAL mode, one transaction per change,
so a crash at any instant leaves it consistent. It keeps:

- records on hold (retries exhausted), replayed at the start of the next run;
- the schema of each stream that has records on hold, so they can be replayed before input;
- bulk jobs in flight, so a job interrupted by a crash is looked at on the next run;
- a hash of the last payload Klaviyo accepted per (stream, object, identity) for skip_unchanged
  (64-bit XXH3 hashes as integers: SQLite's fastest table, written in sorted batches);
- list members this target added, for mirror passes.
"""

from __future__ import annotations

import functools
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import xxhash

LOGGER = logging.getLogger("target-klaviyo")

SCHEMA = """
CREATE TABLE IF NOT EXISTS held (
    id INTEGER PRIMARY KEY,
    stream TEXT NOT NULL,
    key TEXT NOT NULL,
    object TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    record TEXT NOT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    UNIQUE (stream, key)
);
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
"""

_SQLITE_VARS = 500  # stay well under SQLite's bound-parameter limit
_SENT_ROWS_PER_INSERT = _SQLITE_VARS // 2
# PRAGMA user_version of a ledger whose skip_unchanged hashes are XXH3-64 (earlier: BLAKE2b).
HASHES_VERSION = 2


@dataclass(frozen=True)
class HeldRecord:
    id: int
    stream: str
    key: str
    record: dict[str, Any]
    attempts: int
    reason: str


@dataclass(frozen=True)
class JobInFlight:
    id: str
    operation: str
    stream: str
    records: int
    submitted_at: float


_xxh3 = xxhash.xxh3_64_intdigest
_SIGN_BIT = 1 << 63
_WRAP = 1 << 64


def hash64(data: bytes, seed: int = 0) -> int:
    """XXH3-64 of `data` as the signed 64-bit integer SQLite stores natively.

    skip_unchanged needs a stable hash, not a secret one: a collision makes at most one
    changed record look unchanged, and needs about 2**32 payloads of one key to become likely.
    """
    value = _xxh3(data, seed)
    return value - _WRAP if value >= _SIGN_BIT else value


def hash_seed(text: str) -> int:
    """A seed for `hash64` that gives `text` its own family of hashes."""
    return _xxh3(text.encode())


def sent_keys(stream: str, obj: str) -> Callable[[str], int]:
    """The skip_unchanged key of each identity of (stream, object): a 64-bit hash, so one row
    per key keeps the table small."""
    seed = hash_seed(f"{stream}\0{obj}\0")

    def key_of(key: str) -> int:
        value = _xxh3(key.encode(), seed)
        return value - _WRAP if value >= _SIGN_BIT else value

    return key_of


def _private_file(path: Path) -> None:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


@functools.lru_cache(maxsize=8)
def _sent_insert(rows: int) -> str:
    """One statement writing `rows` skip_unchanged hashes."""
    return "INSERT OR REPLACE INTO sent_hashes (key, digest) VALUES " + ",".join(["(?, ?)"] * rows)


def _chunks(values: Sequence[Any], size: int = _SQLITE_VARS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Ledger:
    """Thread-safe access to the ledger database."""

    FILENAME = "ledger.sqlite3"

    def __init__(self, state_dir: str | os.PathLike[str], *, read_only: bool = False) -> None:
        self.read_only = read_only
        self.state_dir = Path(state_dir)
        path = self.state_dir / self.FILENAME
        if read_only:
            # A dry run reads what earlier runs stored (skip_unchanged) and writes nothing.
            if path.exists():
                uri = f"file:{path}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                self._db = sqlite3.connect(":memory:", check_same_thread=False)
                self._db.executescript(SCHEMA)
        else:
            private_dir(self.state_dir)
            _private_file(path)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._migrate()
        self._lock = threading.Lock()
        # skip_unchanged hashes wait here and are written in sorted batches: one insert at a
        # time would touch a random page of the table each.
        self._sent_pending: dict[int, int] = {}

    def _migrate(self) -> None:
        """Ledgers of earlier versions kept each job's keys (only their count is needed), and
        skip_unchanged hashes of another kind, which are discarded: every record is sent once
        more (upserts make that safe) and skipped again from the next run on."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "keys" in columns:
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

    def close(self) -> None:
        self.flush_sent()
        with self._lock:
            self._db.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.read_only:
            return
        with self._lock, self._db:
            self._db.executemany(sql, rows)

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- records on hold ------------------------------------------------------------------

    def hold(
        self,
        stream: str,
        obj: str,
        fingerprint: str,
        entries: Iterable[tuple[str, dict[str, Any], str, int]],
    ) -> None:
        """Put records on hold: (key, record, reason, attempts so far). A newer record with
        the same key replaces the older one (the later record wins, as within a batch)."""
        now = time.time()
        self._write(
            "INSERT INTO held (stream, key, object, fingerprint, record, reason, attempts,"
            " first_seen, last_seen) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (stream, key) DO UPDATE SET object=excluded.object,"
            " fingerprint=excluded.fingerprint, record=excluded.record, reason=excluded.reason,"
            " attempts=excluded.attempts, last_seen=excluded.last_seen",
            (
                (stream, key, obj, fingerprint, json.dumps(record), reason, attempts + 1, now, now)
                for key, record, reason, attempts in entries
            ),
        )

    def release(self, held_ids: Iterable[int]) -> None:
        """Records that left hold: loaded, unchanged or rejected."""
        self._write("DELETE FROM held WHERE id = ?", ((held_id,) for held_id in held_ids))

    def held_streams(self) -> list[str]:
        return [row[0] for row in self._query("SELECT DISTINCT stream FROM held ORDER BY stream")]

    def held_count(self, stream: str | None = None) -> int:
        if stream is None:
            return int(self._query("SELECT count(*) FROM held")[0][0])
        return int(self._query("SELECT count(*) FROM held WHERE stream = ?", (stream,))[0][0])

    def held_records(self, stream: str, batch: int = 1000) -> Iterator[HeldRecord]:
        """Held records of a stream in the order they were first held, read in batches."""
        last_id = 0
        while True:
            rows = self._query(
                "SELECT id, key, record, attempts, reason FROM held"
                " WHERE stream = ? AND id > ? ORDER BY id LIMIT ?",
                (stream, last_id, batch),
            )
            if not rows:
                return
            for held_id, key, record, attempts, reason in rows:
                yield HeldRecord(held_id, stream, key, json.loads(record), attempts, reason)
            last_id = rows[-1][0]

    # -- stream schemas (for replay) ------------------------------------------------------

    def save_stream(
        self, stream: str, schema: dict[str, Any], key_properties: Sequence[str]
    ) -> None:
        self._write(
            "INSERT INTO streams (stream, schema, key_properties) VALUES (?, ?, ?)"
            " ON CONFLICT (stream) DO UPDATE SET schema=excluded.schema,"
            " key_properties=excluded.key_properties",
            [(stream, json.dumps(schema, sort_keys=True), json.dumps(list(key_properties)))],
        )

    def stream_schema(self, stream: str) -> tuple[dict[str, Any], list[str]] | None:
        rows = self._query("SELECT schema, key_properties FROM streams WHERE stream = ?", (stream,))
        if not rows:
            return None
        return json.loads(rows[0][0]), json.loads(rows[0][1])

    # -- jobs in flight -------------------------------------------------------------------

    def job_started(self, job_id: str, operation: str, stream: str, records: int) -> None:
        self._write(
            "INSERT OR REPLACE INTO jobs (id, operation, stream, records, submitted_at)"
            " VALUES (?, ?, ?, ?, ?)",
            [(job_id, operation, stream, records, time.time())],
        )

    def job_finished(self, job_id: str) -> None:
        self._write("DELETE FROM jobs WHERE id = ?", [(job_id,)])

    def jobs_in_flight(self) -> list[JobInFlight]:
        return [
            JobInFlight(job_id, operation, stream, records, submitted_at)
            for job_id, operation, stream, records, submitted_at in self._query(
                "SELECT id, operation, stream, records, submitted_at FROM jobs"
                " ORDER BY submitted_at"
            )
        ]

    # -- skip_unchanged -------------------------------------------------------------------

    SENT_BATCH = 100_000

    def unchanged(self, pairs: Sequence[tuple[int, int]]) -> set[int]:
        """Of (sent key, digest) pairs, the keys whose last accepted payload had this digest."""
        wanted = dict(pairs)
        same: set[int] = set()
        with self._lock:
            pending = self._sent_pending
            asked = []
            for key, digest in wanted.items():
                if key in pending:
                    if pending[key] == digest:
                        same.add(key)
                else:
                    asked.append(key)
        for chunk in _chunks(asked):
            marks = ",".join("?" * len(chunk))
            for key, digest in self._query(
                f"SELECT key, digest FROM sent_hashes WHERE key IN ({marks})", chunk
            ):
                if wanted[key] == digest:
                    same.add(key)
        return same

    def remember_sent(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Klaviyo accepted these payloads. Written in batches (and by flush_sent): a crash
        loses at most the latest, which are then sent again once — never skipped wrongly."""
        if self.read_only:
            return
        with self._lock:
            self._sent_pending.update(pairs)
            full = len(self._sent_pending) >= self.SENT_BATCH
        if full:
            self.flush_sent()

    def flush_sent(self) -> None:
        """Write the skip_unchanged hashes that wait in memory."""
        with self._lock:
            if not self._sent_pending or self.read_only:
                return
            pending, self._sent_pending = self._sent_pending, {}
            keys = sorted(pending)
            # key, digest, key, digest, ... built by slices (C loops, no tuple per row).
            values: list[int] = [0] * (2 * len(keys))
            values[0::2] = keys
            digests = operator.itemgetter(*keys)(pending)  # one key: the digest alone
            values[1::2] = digests if len(keys) > 1 else [digests]
            # Many rows per statement: binding and stepping one statement per row is most of
            # the cost of writing them.
            step = _SENT_ROWS_PER_INSERT * 2
            full = len(values) - len(values) % step
            with self._db:
                self._db.executemany(
                    _sent_insert(_SENT_ROWS_PER_INSERT),
                    (values[start : start + step] for start in range(0, full, step)),
                )
                if full < len(values):
                    self._db.execute(_sent_insert((len(values) - full) // 2), values[full:])

    def forget_sent(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        with self._lock:
            for key in keys:
                self._sent_pending.pop(key, None)
        self._write("DELETE FROM sent_hashes WHERE key = ?", ((key,) for key in keys))

    # -- list membership for mirror -------------------------------------------------------

    def current_pass(self, list_id: str) -> int:
        rows = self._query("SELECT pass FROM passes WHERE list_id = ?", (list_id,))
        return int(rows[0][0]) if rows else 1

    def next_pass(self, list_id: str) -> None:
        self._write(
            "INSERT INTO passes (list_id, pass) VALUES (?, 2)"
            " ON CONFLICT (list_id) DO UPDATE SET pass = pass + 1",
            [(list_id,)],
        )

    def track_members(
        self, list_id: str, pass_no: int, members: Iterable[tuple[str, dict[str, Any]]]
    ) -> None:
        """Members seen in this pass: (identity key, identifiers)."""
        self._write(
            "INSERT INTO members (list_id, key, identity, last_pass) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (list_id, key) DO UPDATE SET identity=excluded.identity,"
            " last_pass=excluded.last_pass",
            ((list_id, key, json.dumps(identity), pass_no) for key, identity in members),
        )

    def untrack_members(self, list_id: str, keys: Iterable[str]) -> None:
        self._write(
            "DELETE FROM members WHERE list_id = ? AND key = ?", ((list_id, k) for k in keys)
        )

    def member_count(self, list_id: str) -> int:
        return int(self._query("SELECT count(*) FROM members WHERE list_id = ?", (list_id,))[0][0])

    def count_not_seen(self, list_id: str, pass_no: int) -> int:
        return int(
            self._query(
                "SELECT count(*) FROM members WHERE list_id = ? AND last_pass <> ?",
                (list_id, pass_no),
            )[0][0]
        )

    def members_not_seen(
        self, list_id: str, pass_no: int, *, after: str = "", limit: int = 1000
    ) -> list[tuple[str, dict[str, Any]]]:
        """Tracked members the pass did not see, a page at a time in key order."""
        return [
            (key, json.loads(identity))
            for key, identity in self._query(
                "SELECT key, identity FROM members WHERE list_id = ? AND last_pass <> ?"
                " AND key > ? ORDER BY key LIMIT ?",
                (list_id, pass_no, after, limit),
            )
        ]
