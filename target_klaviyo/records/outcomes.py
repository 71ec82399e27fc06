"""Outcomes: every record read ends loaded, unchanged, rejected or on hold — here.

Each outcome goes to the ledger (a record on hold is kept; one that reaches another outcome
leaves hold; skip_unchanged hashes), the run's figures and, for rejects, the rejects file.
A sink may watch every settled item (`on_settled`: the mirror uses it to see its members).
Records read are counted by the reading thread (the dispatcher's sequence numbers) and
published in bulk, per chunk.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.ledger.store import HeldRecord
from target_klaviyo.mapping.values import to_json
from target_klaviyo.records.item import Item
from target_klaviyo.records.spool import SubmittedRows
from target_klaviyo.records.unchanged import UnchangedFilter

if TYPE_CHECKING:
    from target_klaviyo.run.context import Run


class Outcomes:
    def __init__(
        self,
        run: Run,
        stream: str,
        obj: str,
        fingerprint: str,
        unchanged: UnchangedFilter,
        record_of: Callable[[Item], dict[str, Any]],
        identifiers_of: Callable[[Item], dict[str, Any]],
        logger: logging.Logger,
    ) -> None:
        self.run = run
        self.stream = stream
        self.object = obj
        self.fingerprint = fingerprint
        self.unchanged = unchanged
        self.record_of = record_of
        self.identifiers_of = identifiers_of
        self.logger = logger
        self.on_settled: Callable[[Sequence[Item]], None] | None = None
        self.replayed = 0  # records replayed from hold (they are read before any input)
        self._published = [0, 0, 0]  # read, replayed, warnings in the run's figures
        self._warnings = 0
        self._claims = threading.Lock()
        self._publishing = threading.Lock()  # the reading thread, and progress lines

    # -- the reading thread's counts --------------------------------------------------------

    def count_replayed(self) -> None:
        self.replayed += 1

    def count_warnings(self, count: int) -> None:
        self._warnings += count

    def publish(self, read: int) -> None:
        """Move the reading thread's counts (`read` records so far) into the run's figures."""
        with self._publishing:
            self._publish(read)

    def _publish(self, read: int) -> None:
        counts = [read, self.replayed, self._warnings]
        if counts != self._published:
            before = self._published
            read, replayed, warnings = (counts[i] - before[i] for i in range(3))
            self._published = counts
            self.run.stats.add(
                self.stream, self.object, read=read, replayed=replayed, warnings=warnings
            )

    # -- outcomes ---------------------------------------------------------------------------

    def _claim(self, items: Sequence[Item]) -> list[Item]:
        """The items that had no outcome yet, which now have one. A record gets exactly one:
        when a stopping run put a request's records on hold, its late answer settles none."""
        with self._claims:
            fresh = [item for item in items if not item.settled]
            for item in fresh:
                item.settled = True
        return fresh

    def _settle(self, items: Sequence[Item]) -> None:
        """Outcome reached: no longer on hold if it came from there."""
        self._release(item.held.id for item in items if item.held is not None)

    def _release(self, held_ids: Iterable[int]) -> None:
        held_ids = list(held_ids)
        if held_ids and self.run.ledger is not None:
            self.run.ledger.release(held_ids)

    def _watch(self, items: Sequence[Item]) -> None:
        if self.on_settled is not None and items:
            self.on_settled(items)

    def mark_loaded(self, items: Sequence[Item]) -> None:
        items = self._claim(items)
        if not items:
            return
        self.unchanged.remember(items)
        self._settle(items)
        self.run.stats.add(self.stream, self.object, loaded=len(items))
        self._watch(items)

    def mark_rows_loaded(self, rows: SubmittedRows, but: Collection[int] = ()) -> None:
        """The rows of a bulk job were loaded (the job ended without errors), `but` those
        (rows whose outcome waits for another request)."""
        ledger = self.run.ledger
        if self.unchanged.enabled and rows.hashed and ledger is not None:
            pairs = zip(*self.run.spool.hashes(rows), strict=True)
            if but:
                pairs = (pair for row, pair in enumerate(pairs) if row not in but)  # type: ignore[assignment]
            ledger.remember_sent(pairs, rows.count)
        self._release(held.id for row, held in rows.held.items() if row not in but)
        self.run.stats.add(self.stream, self.object, loaded=rows.count - len(but))

    def mark_unchanged(self, items: Sequence[Item]) -> None:
        items = self._claim(items)
        if not items:
            return
        self._settle(items)
        self.run.stats.add(self.stream, self.object, unchanged=len(items))
        self._watch(items)

    def reject(self, item: Item, reason: str) -> None:
        if not self._claim([item]):
            return
        self.run.write_reject(
            self.stream,
            self.object,
            item.key,
            self.identifiers_of(item),
            reason,
            self.record_of(item),
        )
        self._settle([item])
        self.unchanged.forget([item])
        self.run.stats.add(self.stream, self.object, rejected=1)
        self._watch([item])

    def reject_all(self, items: Sequence[Item], result: ApiResult) -> None:
        reason = result.describe()
        items = [item for item in items if not item.settled]
        for item in items:
            self.reject(item, reason)
        self.logger.warning("%d records rejected: %s", len(items), reason)

    def reject_unmapped(
        self, record: Mapping[str, Any], reason: str, held: HeldRecord | None
    ) -> None:
        """A record rejected before it was mapped (invalid, or the mapping refused it)."""
        self.run.write_reject(self.stream, self.object, None, {}, reason, record)
        if held is not None:
            self._release([held.id])
        self.run.stats.add(self.stream, self.object, rejected=1)

    def hold(self, items: Sequence[Item], reason: str) -> None:
        """Klaviyo kept refusing (or the run stopped): keep the records for the next run."""
        items = self._claim(items)
        if not items:
            return
        ledger = self.run.ledger
        if ledger is not None:
            ledger.hold(
                self.stream,
                self.object,
                self.fingerprint,
                (
                    (item.key, to_json(self.record_of(item)), reason, item.attempts)
                    for item in items
                ),
            )
        self.run.stats.add(self.stream, self.object, on_hold=len(items))
        self.logger.warning("%d records on hold: %s", len(items), reason)
        self._watch(items)
