"""What the ledger needs from a database, and the parts both databases share.

`Ledger` (target_klaviyo/ledger/store.py) holds the logic and writes its SQL once, with `?`
placeholders and syntax both SQLite and PostgreSQL accept (`INSERT ... ON CONFLICT ... DO
UPDATE`); a backend runs it and supplies what differs: transactions, how many parameters a
statement may bind, how to match a list of values, and the bulk path for skip_unchanged
hashes. Callers serialise access (one lock around one connection, in `Ledger`).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from target_klaviyo.ledger.locks import StreamLock

if TYPE_CHECKING:
    from target_klaviyo.ledger.budget import SharedPacer

SqlType = Literal["int8", "text"]
Row = Sequence[Any]


@functools.lru_cache(maxsize=64)
def upsert_sql(
    table: str,
    columns: tuple[str, ...],
    conflict: tuple[str, ...],
    update: tuple[str, ...],
    rows: int,
) -> str:
    """One statement writing `rows` rows; a row whose `conflict` columns exist is updated."""
    one = "(" + ", ".join("?" * len(columns)) + ")"
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * rows)}"
        f" {on_conflict(conflict, update)}"
    )


def on_conflict(conflict: tuple[str, ...], update: tuple[str, ...]) -> str:
    """An upsert's ON CONFLICT clause: the `update` columns take the new row's values."""
    action = (
        "DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in update)
        if update
        else "DO NOTHING"
    )
    return f"ON CONFLICT ({', '.join(conflict)}) {action}"


def latest_rows(
    columns: tuple[str, ...], conflict: tuple[str, ...], rows: Sequence[Row]
) -> list[Row]:
    """`rows` with one row for each set of `conflict` values: the last one."""
    positions = [columns.index(c) for c in conflict]
    latest: dict[tuple[Any, ...], Row] = {}
    for row in rows:
        latest[tuple(row[p] for p in positions)] = row
    return list(latest.values())


class Backend(ABC):
    """One connection to one ledger database."""

    kind: str  # "sqlite" or "postgresql"
    location: str  # the file, or the URL with its password hidden: safe to print
    max_params: int  # parameters one statement may bind
    keeps_rejects = False  # whether record_reject stores anything

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Any]:
        """Statements run inside commit together, or not at all."""

    @abstractmethod
    def execute(self, sql: str, params: Row = ()) -> None: ...

    @abstractmethod
    def executemany(self, sql: str, rows: Sequence[Row]) -> None: ...

    @abstractmethod
    def query(self, sql: str, params: Row = ()) -> list[tuple[Any, ...]]: ...

    @abstractmethod
    def in_list(
        self, column: str, values: Sequence[Any], sql_type: SqlType
    ) -> Iterator[tuple[str, list[Any]]]:
        """Conditions `column` is one of `values`, with their parameters: as few as the
        database's limits allow."""

    @abstractmethod
    def refresh_statistics(self, table: str) -> None:
        """Bring the query planner's view of `table` up to date, where it would otherwise
        lag behind a bulk write."""

    @abstractmethod
    def has_table(self, name: str) -> bool:
        """Whether the ledger has table `name` (a read-only ledger written by an earlier
        version may lack tables added since)."""

    @abstractmethod
    def lookup_hashes(self, keys: Sequence[int]) -> list[tuple[int, int]]:
        """(key, digest) of the stored skip_unchanged hashes among `keys`."""

    @abstractmethod
    def put_hashes(self, keys: Sequence[int], digests: Sequence[int]) -> None:
        """Store skip_unchanged hashes, `keys` sorted and distinct (inside a transaction)."""

    def put_rejects(self, rows: Sequence[tuple[str, str, str | None, str, str, datetime]]) -> None:
        """Store (run_id, stream, key, reason, record as JSON, at) rows; only where
        `keeps_rejects`."""
        raise NotImplementedError(f"the {self.kind} ledger keeps no rejects")

    @abstractmethod
    def lock_stream(self, account: str, stream: str, timeout_s: float) -> StreamLock: ...

    def rate_budget(
        self, account: str, *, window_scale: float, in_flight_timeout_s: float
    ) -> SharedPacer | None:
        """The account's rate budget shared by every process, where the database can hold
        one; None where each process paces alone."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    def upsert(
        self,
        table: str,
        columns: tuple[str, ...],
        conflict: tuple[str, ...],
        update: tuple[str, ...],
        rows: Sequence[Row],
    ) -> None:
        """Write `rows` many to a statement (inside a transaction). Rows with the same
        `conflict` values are written once, the last one winning, as one statement at a time
        would leave them (PostgreSQL refuses one statement that updates a row twice)."""
        unique = latest_rows(columns, conflict, rows)
        per_statement = max(1, self.max_params // len(columns))
        full = len(unique) - len(unique) % per_statement
        if full:
            self.executemany(
                upsert_sql(table, columns, conflict, update, per_statement),
                [
                    [value for row in unique[start : start + per_statement] for value in row]
                    for start in range(0, full, per_statement)
                ],
            )
        if full < len(unique):
            rest = unique[full:]
            self.execute(
                upsert_sql(table, columns, conflict, update, len(rest)),
                [value for row in rest for value in row],
            )
