"""The ledger: the one place that makes the target's promises durable.

It lives in SQLite under `state_dir` (directory 0700, files 0600, WAL mode), or in PostgreSQL
when `ledger_url` is set (schema `ledger_schema`), for workers whose disk does not outlive the
run; `open_ledger` picks. One transaction per change, so a crash at any instant leaves it
consistent. It keeps:

- records on hold (retries exhausted), replayed at the start of the next run;
- the schema of each stream that has records on hold, so they can be replayed before input;
- bulk jobs in flight, so a job interrupted by a crash is looked at on the next run;
- a hash of the last payload Klaviyo accepted per (stream, object, identity) for skip_unchanged
  (64-bit XXH3 hashes as signed integers, written in batches in key order);
- list members this target added, for mirror passes;
- privacy deletions Klaviyo accepted (hashed), so that none is requested twice;
- PostgreSQL only: rejected records (`record_reject`), and the account's rate budget.

It also hands out stream locks (one run per stream, `lock_stream`). `Ledger` holds the logic;
what differs between the databases is in `backend.py`, `sqlite.py` and `postgres.py`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
import xxhash

from target_klaviyo.ledger.backend import Backend, SqlType
from target_klaviyo.ledger.errors import LedgerError, LedgerUrlError, redact_url
from target_klaviyo.ledger.locks import Holder, StreamLock, StreamLocked, unheld_lock
from target_klaviyo.ledger.pending import PendingHashes, WrittenKeys
from target_klaviyo.ledger.sqlite import HASHES_VERSION, SCHEMA, SqliteBackend, private_dir

if TYPE_CHECKING:
    from target_klaviyo.ledger.budget import SharedPacer

__all__ = [
    "HASHES_VERSION",
    "SCHEMA",
    "HeldRecord",
    "Holder",
    "JobInFlight",
    "Ledger",
    "LedgerError",
    "LedgerUrlError",
    "StreamLock",
    "StreamLocked",
    "hash64",
    "hash_seed",
    "new_run_id",
    "open_ledger",
    "private_dir",
    "sent_keys",
]

LOGGER = logging.getLogger("target-klaviyo")

DEFAULT_SCHEMA = "target_klaviyo"
REJECTS_BATCH = 1_000  # rejects written to PostgreSQL this many at a time


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


def new_run_id() -> str:
    """An id for one run: its start time (UTC, sortable) and 8 random hex digits."""
    return f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{secrets.token_hex(4)}"


def _without_nul(value: Any) -> Any:
    """PostgreSQL's jsonb holds no NUL character: each becomes U+FFFD."""
    if isinstance(value, str):
        return value.replace("\0", "\ufffd") if "\0" in value else value
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


_encode_json = msgspec.json.Encoder().encode


def record_text(record: dict[str, Any]) -> str:
    """A record on hold as the ledger keeps it (JSON). msgspec writes it several times faster
    than `json.dumps` (a SIGTERM can put a few hundred thousand records on hold at once); a
    string json can carry and UTF-8 cannot (a lone surrogate) takes `json.dumps`' escapes."""
    try:
        return _encode_json(record).decode()
    except (UnicodeEncodeError, TypeError, OverflowError):
        return json.dumps(record)


class Ledger:
    """Thread-safe access to the ledger database (one lock around one connection).

    `Ledger(state_dir)` is the SQLite ledger under `state_dir`; `open_ledger` also opens the
    PostgreSQL one. Read-only (a dry run): reads what is stored, writes nothing.
    """

    FILENAME = SqliteBackend.FILENAME

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        *,
        read_only: bool = False,
        backend: Backend | None = None,
    ) -> None:
        self.read_only = read_only
        self.state_dir = Path(state_dir)
        self._db = (
            backend
            if backend is not None
            else SqliteBackend.open(self.state_dir, read_only=read_only)
        )
        self._lock = threading.Lock()
        # skip_unchanged hashes wait here and are written in batches in key order: one
        # insert at a time would touch a random page of the table each.
        self._sent_pending = PendingHashes(self.SENT_BATCH)
        # Whether the table held hashes before this run wrote any: while it holds none (a
        # first run, a new state_dir) a chunk's lookup is one EXISTS, not a search for each
        # of its keys; once this run writes, only the keys it may have written are searched.
        self._hashes_stored = False
        self._written: WrittenKeys | None = None
        self._rejects_pending: list[tuple[str, str, str | None, str, str, datetime]] = []
        self._closed = False
        self._stream_locks: list[StreamLock] = []  # released by close, if not before
        # The account records are held under and replayed for ('': any; `hold_for`).
        self.account = ""

    @property
    def kind(self) -> str:
        """ "sqlite" or "postgresql"."""
        return self._db.kind

    @property
    def location(self) -> str:
        """Where the ledger is, safe to print: its file, or its URL with the password hidden."""
        return self._db.location

    def __repr__(self) -> str:
        return f"<Ledger {self.kind} {self.location}>"

    def flush(self) -> None:
        """Write everything that waits in memory: skip_unchanged hashes and rejects."""
        self.flush_sent()
        self.flush_rejects()

    def close(self) -> None:
        """Write what waits in memory, release this ledger's stream locks and disconnect."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            with self._lock:
                self._closed = True
                locks, self._stream_locks = self._stream_locks, []
            try:
                for lock in locks:
                    lock.release()
            finally:
                with self._lock:
                    self._db.close()

    def _write(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        if self.read_only:
            return
        rows = list(rows)
        if not rows:
            return
        with self._lock, self._db.transaction():
            self._db.executemany(sql, rows)

    def _upsert(
        self,
        table: str,
        columns: tuple[str, ...],
        conflict: tuple[str, ...],
        update: tuple[str, ...],
        rows: Iterable[Sequence[Any]],
    ) -> None:
        """Write rows many to a statement, in one transaction."""
        if self.read_only:
            return
        rows = list(rows)
        if not rows:
            return
        with self._lock, self._db.transaction():
            self._db.upsert(table, columns, conflict, update, rows)

    def _delete_in(
        self,
        table: str,
        where: str,
        params: Sequence[Any],
        column: str,
        values: Iterable[Any],
        sql_type: SqlType,
    ) -> None:
        """Delete the rows matching `where` whose `column` is one of `values`, in one
        transaction and as few statements as the database allows."""
        if self.read_only:
            return
        values = list(values)
        if not values:
            return
        with self._lock, self._db.transaction():
            for condition, chunk in self._db.in_list(column, values, sql_type):
                self._db.execute(f"DELETE FROM {table} WHERE {where}{condition}", [*params, *chunk])

    def _query(self, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._db.query(sql, args)

    # -- the account it serves ------------------------------------------------------------

    def swap_account(self, account: str) -> str | None:
        """Record that a run of `account` (`account-<id>`, or `key-<hash>` where the key's
        account is not known) uses this ledger; the one recorded before, when another."""
        before = self.meta("account")
        if before != account:
            self.set_meta("account", account)
        return before if before is not None and before != account else None

    def meta(self, name: str) -> str | None:
        rows = self._query("SELECT value FROM ledger_meta WHERE name = ?", (name,))
        return str(rows[0][0]) if rows else None

    def set_meta(self, name: str, value: str) -> None:
        self._upsert("ledger_meta", ("name", "value"), ("name",), ("value",), [(name, value)])

    def keeps_anything(self) -> bool:
        """Whether the ledger holds records on hold or skip_unchanged hashes: what a run of
        another account must not be given."""
        sql = "SELECT EXISTS (SELECT 1 FROM held) OR EXISTS (SELECT 1 FROM sent_hashes)"
        return bool(self._query(sql)[0][0])

    def forget_account_facts(self) -> None:
        """Forget what holds for one account only: skip_unchanged hashes (kept, another
        account's records would be skipped as unchanged though it never received them) and
        catalog ids known to exist. The next run sends every record once."""
        if self.read_only:
            return
        with self._lock:
            self._sent_pending = PendingHashes(self.SENT_BATCH)
            self._hashes_stored = False
            self._written = None
            with self._db.transaction():
                self._db.execute("DELETE FROM sent_hashes", ())
                if self._db.has_table("catalog_ids"):
                    self._db.execute("DELETE FROM catalog_ids", ())

    # -- records on hold ------------------------------------------------------------------
    # Each is kept under the account of the run that held it (`hold_for`) and replayed by a
    # run of that account only; '' (the account's id was not known): by any.

    def hold_for(self, account: str) -> None:
        """This run holds records for `account` (an account's id, '' where not known) and
        replays that account's; those held for no known account become its own."""
        self.account = account
        if account:
            self.move_held("", account)

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
        account = self.account
        self._upsert(
            "held",
            (
                "account",
                "stream",
                "key",
                "object",
                "fingerprint",
                "record",
                "reason",
                "attempts",
                "first_seen",
                "last_seen",
            ),
            ("account", "stream", "key"),
            ("object", "fingerprint", "record", "reason", "attempts", "last_seen"),
            (
                (
                    account,
                    stream,
                    key,
                    obj,
                    fingerprint,
                    record_text(record),
                    reason,
                    attempts + 1,
                    now,
                    now,
                )
                for key, record, reason, attempts in entries
            ),
        )

    def release(self, held_ids: Iterable[int]) -> None:
        """Records that left hold: loaded, unchanged or rejected."""
        self._delete_in("held", "", (), "id", held_ids, "int8")

    def held_streams(self) -> list[str]:
        return [
            row[0]
            for row in self._query(
                "SELECT DISTINCT stream FROM held WHERE account IN ('', ?) ORDER BY stream",
                (self.account,),
            )
        ]

    def held_count(self, stream: str | None = None) -> int:
        """Records on hold of this run's account (of one stream, or all)."""
        sql = "SELECT count(*) FROM held WHERE account IN ('', ?)"
        if stream is None:
            return int(self._query(sql, (self.account,))[0][0])
        return int(self._query(sql + " AND stream = ?", (self.account, stream))[0][0])

    def held_elsewhere(self) -> list[tuple[str, int]]:
        """(account, records) on hold for runs of other accounts."""
        rows = self._query(
            "SELECT account, count(*) FROM held WHERE account NOT IN ('', ?)"
            " GROUP BY account ORDER BY account",
            (self.account,),
        )
        return [(str(account), int(count)) for account, count in rows]

    def move_held(self, before: str, after: str) -> None:
        """Records held under `before` are `after`'s. Where both hold a record of one key,
        the one held last is kept."""
        if self.read_only or before == after:
            return
        same_key = "same.stream = held.stream AND same.key = held.key"
        with self._lock, self._db.transaction():
            self._db.execute(
                f"DELETE FROM held WHERE account = ? AND EXISTS (SELECT 1 FROM held AS same"
                f" WHERE same.account = ? AND {same_key} AND same.last_seen >= held.last_seen)",
                (after, before),
            )
            self._db.execute(
                f"UPDATE held SET account = ? WHERE account = ? AND NOT EXISTS"
                f" (SELECT 1 FROM held AS same WHERE same.account = ? AND {same_key})",
                (after, before, after),
            )
            self._db.execute("DELETE FROM held WHERE account = ?", (before,))

    def held_records(self, stream: str, batch: int = 1000) -> Iterator[HeldRecord]:
        """Held records of a stream in the order they were first held, read in batches."""
        if not self.read_only:
            with self._lock:
                self._db.refresh_statistics("held")  # read page by page, in `id` order
        last_id = 0
        while True:
            rows = self._query(
                "SELECT id, key, record, attempts, reason FROM held"
                " WHERE account IN ('', ?) AND stream = ? AND id > ? ORDER BY id LIMIT ?",
                (self.account, stream, last_id, batch),
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
        self._upsert(
            "streams",
            ("stream", "schema", "key_properties"),
            ("stream",),
            ("schema", "key_properties"),
            [(stream, json.dumps(schema, sort_keys=True), json.dumps(list(key_properties)))],
        )

    def stream_schema(self, stream: str) -> tuple[dict[str, Any], list[str]] | None:
        rows = self._query("SELECT schema, key_properties FROM streams WHERE stream = ?", (stream,))
        if not rows:
            return None
        return json.loads(rows[0][0]), json.loads(rows[0][1])

    # -- jobs in flight -------------------------------------------------------------------

    def job_started(self, job_id: str, operation: str, stream: str, records: int) -> None:
        self._upsert(
            "jobs",
            ("id", "operation", "stream", "records", "submitted_at"),
            ("id",),
            ("operation", "stream", "records", "submitted_at"),
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

    # Large batches: the hashes of a batch land on random pages of the table, and each write
    # rewrites every page it touches. Re-running 1,000,000 keys over a ledger that holds them
    # wrote 340 MB in batches of 100,000 and 3.2 GB in batches of 10,000.
    SENT_BATCH = 100_000

    def unchanged(self, pairs: Sequence[tuple[int, int]]) -> set[int]:
        """Of (sent key, digest) pairs, the keys whose last accepted payload had this digest."""
        wanted = dict(pairs)
        with self._lock:
            same, asked = self._sent_pending.split(wanted)
        if asked:
            written = self._written
            if written is not None:
                # Outside the lock: a key whose bit a concurrent write sets only now is sent
                # again, never skipped wrongly.
                asked = written.maybe(asked)
            with self._lock:
                if written is None and self._written is not None:
                    asked = self._written.maybe(asked)  # this run's first write came between
                elif written is None and not self._hashes_stored:
                    self._hashes_stored = self._any_hashes_stored()
                ask = self._written is not None or self._hashes_stored
                found = self._db.lookup_hashes(asked) if ask and asked else []
            for key, digest in found:
                if wanted[key] == digest:
                    same.add(key)
        return same

    def remember_sent(self, pairs: Iterable[tuple[int, int]], count: int | None = None) -> None:
        """Klaviyo accepted these payloads (`count`: at most how many, when `pairs` is an
        iterator). Written in batches (and by flush_sent): a crash loses at most the latest,
        which are then sent again once — never skipped wrongly."""
        if self.read_only:
            return
        with self._lock:
            self._sent_pending.update(pairs, count)
            full = len(self._sent_pending) >= self.SENT_BATCH
        if full:
            self.flush_sent()

    def flush_sent(self) -> None:
        """Write the skip_unchanged hashes that wait in memory."""
        with self._lock:
            if not self._sent_pending or self.read_only:
                return
            keys, digests = self._sent_pending.take()
            if self._written is None and not self._hashes_stored:
                self._hashes_stored = self._any_hashes_stored()
                if not self._hashes_stored:
                    self._written = WrittenKeys()
            if self._written is not None:
                self._written.add(keys)  # before the write: a written key is always asked
            with self._db.transaction():
                self._db.put_hashes(keys, digests)

    def _any_hashes_stored(self) -> bool:
        return bool(self._db.query("SELECT EXISTS (SELECT 1 FROM sent_hashes)")[0][0])

    def forget_sent(self, keys: Iterable[int]) -> None:
        keys = list(keys)
        with self._lock:
            self._sent_pending.forget(keys)
        self._delete_in("sent_hashes", "", (), "key", keys, "int8")

    # -- list membership for mirror -------------------------------------------------------

    def current_pass(self, list_id: str) -> int:
        rows = self._query("SELECT pass FROM passes WHERE list_id = ?", (list_id,))
        return int(rows[0][0]) if rows else 1

    def next_pass(self, list_id: str) -> None:
        self._write(
            "INSERT INTO passes (list_id, pass) VALUES (?, 2)"
            " ON CONFLICT (list_id) DO UPDATE SET pass = passes.pass + 1",
            [(list_id,)],
        )

    def track_members(
        self, list_id: str, pass_no: int, members: Iterable[tuple[str, dict[str, Any]]]
    ) -> None:
        """Members seen in this pass: (identity key, identifiers)."""
        self._upsert(
            "members",
            ("list_id", "key", "identity", "last_pass"),
            ("list_id", "key"),
            ("identity", "last_pass"),
            ((list_id, key, json.dumps(identity), pass_no) for key, identity in members),
        )

    def untrack_members(self, list_id: str, keys: Iterable[str]) -> None:
        self._delete_in("members", "list_id = ? AND ", (list_id,), "key", keys, "text")

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

    # -- privacy deletions Klaviyo accepted ------------------------------------------------

    @staticmethod
    def deletion_key(account: str, key: str) -> str:
        """How an accepted deletion is kept: a hash of the account and the profile's identity
        (`email:...`, `phone:...`, `id:...`), so the ledger never holds the email or phone
        number of someone who asked to be forgotten, and one account's requests never stand
        for another's."""
        return hashlib.blake2b(f"{account}\0{key}".encode(), digest_size=16).hexdigest()

    def deletions_requested(self, keys: Sequence[str]) -> set[str]:
        """Of these deletion keys (`deletion_key`), those whose request Klaviyo accepted."""
        if not keys or not self._has_table("deletions_requested"):
            return set()
        found: set[str] = set()
        with self._lock:
            for condition, chunk in self._db.in_list("key", list(keys), "text"):
                found.update(
                    row[0]
                    for row in self._db.query(
                        f"SELECT key FROM deletions_requested WHERE {condition}", chunk
                    )
                )
        return found

    def deletion_requested(self, stream: str, key: str) -> None:
        """Klaviyo accepted the deletion request of `key` (`deletion_key`): never sent again."""
        self._upsert(
            "deletions_requested",
            ("key", "stream", "requested_at"),
            ("key",),
            (),
            [(key, stream, time.time())],
        )

    def _has_table(self, name: str) -> bool:
        """Whether the ledger has a table a newer version added: a read-only ledger (a dry run)
        written by an older version does not, and is not migrated."""
        with self._lock:
            return self._db.has_table(name)

    # -- catalog ids known to exist ---------------------------------------------------------

    def catalog_known(self, kind: str, ids: Sequence[str]) -> set[str]:
        """Which of these catalog ids (of `kind`: item, variant, category) Klaviyo is known to
        hold: created or seen by an earlier request of this target."""
        found: set[str] = set()
        if not ids or not self._has_table("catalog_ids"):
            return found
        with self._lock:
            for condition, chunk in self._db.in_list("id", list(ids), "text"):
                rows = self._db.query(
                    f"SELECT id FROM catalog_ids WHERE kind = ? AND {condition}", [kind, *chunk]
                )
                found.update(str(row[0]) for row in rows)
        return found

    def catalog_remember(self, kind: str, ids: Iterable[str]) -> None:
        self._upsert("catalog_ids", ("kind", "id"), ("kind", "id"), (), ((kind, i) for i in ids))

    def catalog_forget(self, kind: str, ids: Iterable[str]) -> None:
        self._delete_in("catalog_ids", "kind = ? AND ", (kind,), "id", ids, "text")

    # -- rejects (PostgreSQL) -------------------------------------------------------------

    def record_reject(
        self,
        run_id: str,
        stream: str,
        key: str | None,
        reason: str,
        record: dict[str, Any],
        at: datetime | None = None,
    ) -> None:
        """Keep a rejected record in the ledger's `rejects` table (PostgreSQL; a no-op in
        SQLite, where `rejects.jsonl` is the place). Written in batches, by `flush` and by
        `close`. `record` should already be JSON-ready (`mapping.values.to_json`); anything
        else is written as its string."""
        if self.read_only or not self._db.keeps_rejects:
            return
        text = json.dumps(_without_nul(record), ensure_ascii=False, default=str)
        row = (run_id, stream, key, reason, text, at or datetime.now(timezone.utc))
        with self._lock:
            self._rejects_pending.append(row)
            full = len(self._rejects_pending) >= REJECTS_BATCH
        if full:
            self.flush_rejects()

    def flush_rejects(self) -> None:
        with self._lock:
            if not self._rejects_pending:
                return
            pending, self._rejects_pending = self._rejects_pending, []
            with self._db.transaction():
                self._db.put_rejects(pending)

    # -- one run per stream (SPEC §3.15) --------------------------------------------------

    def lock_stream(self, account: str, stream: str, timeout_s: float) -> StreamLock:
        """Hold (account, stream) until the lock is released, the ledger closed or this
        process ends. While another live run holds it, try again for up to `timeout_s`
        seconds (0: once), then raise `StreamLocked` naming the holder. A lock left by a
        dead run is taken over (and a warning names that run).

        `account` names the Klaviyo account (its id, or a hash of the key: never the key
        itself, which would be stored). A read-only ledger (a dry run, which sends nothing)
        hands out a lock that holds nothing."""
        if self.read_only:
            return unheld_lock(account, stream)
        lock = self._db.lock_stream(account, stream, timeout_s)
        with self._lock:
            self._stream_locks = [kept for kept in self._stream_locks if kept.held]
            self._stream_locks.append(lock)
        if lock.took_over is not None:
            LOGGER.warning(
                "stream %r: took over the lock of a run that ended without releasing it (%s)",
                stream,
                lock.took_over.describe(),
            )
        return lock

    # -- one rate budget per account (SPEC §3.16) -----------------------------------------

    def rate_budget(
        self,
        account: str,
        *,
        window_scale: float = 1.0,
        in_flight_timeout_s: float | None = None,
    ) -> SharedPacer | None:
        """A pacer (as `klaviyo.pacing.Pacer`) whose windows every process on this ledger
        shares for `account`; None where the ledger cannot share one (SQLite, or read-only:
        each process paces alone). Closed with the ledger."""
        if self.read_only:
            return None
        from target_klaviyo.ledger.budget import DEFAULT_IN_FLIGHT_TIMEOUT_S

        return self._db.rate_budget(
            account,
            window_scale=window_scale,
            in_flight_timeout_s=in_flight_timeout_s or DEFAULT_IN_FLIGHT_TIMEOUT_S,
        )


def open_ledger(
    state_dir: str | os.PathLike[str],
    *,
    url: str | None = None,
    schema: str = DEFAULT_SCHEMA,
    read_only: bool = False,
) -> Ledger:
    """The ledger the settings name: SQLite under `state_dir` when `url` (`ledger_url`) is
    None, else PostgreSQL at `url` in `schema` (`ledger_schema`).

    Raises `LedgerUrlError` (a ValueError) for a URL or schema it cannot use, and
    `LedgerError` when psycopg is missing or the database cannot be reached or migrated;
    their messages are one line and never show the password.
    """
    if url is None:
        return Ledger(state_dir, read_only=read_only)
    from target_klaviyo.ledger.postgres import PostgresBackend, is_postgres_url

    if not is_postgres_url(url):
        raise LedgerUrlError(
            f"ledger_url must be a postgresql:// URL (postgresql://user[:password]@host[:port]/db),"
            f" not {redact_url(url)!r}"
        )
    backend = PostgresBackend.open(url, schema, read_only=read_only)
    return Ledger(state_dir, read_only=read_only, backend=backend)
