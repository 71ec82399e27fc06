"""Privacy deletions: one `POST /api/data-privacy-deletion-jobs` per profile (S tier: 3/s,
60/min), by email, phone number or Klaviyo id. Klaviyo's docs: "Request a deletion for the
profiles corresponding to one of the following identifiers: email, phone_number, or id. If
multiple identifiers are provided, we will return an error", and the deletion "occurs
asynchronously". It cannot be undone, so:

- nothing is requested before the stream has ended: its records are collected on disk (the
  run's spool) as they are read, and decided on together at the end of the stream (or when
  the run stops: then they wait on hold);
- `max_deletions_per_run` (default 1,000): a stream that would request more deletions requests
  none; its records are rejected with the reason (never replayed on their own) and the summary
  says why, as the mirror guard does. Counted before profiles are looked up;
- a deletion Klaviyo accepted is kept in the ledger (hashed: `Ledger.deletion_key`) and never
  requested again: a later record for it is `unchanged`;
- a profile Klaviyo does not know is `unchanged` (the profiles are looked up first, 100
  identifiers a `GET /api/profiles?filter=any(...)`); an `external_id` is resolved to the
  profile's Klaviyo id the same way, since the deletion endpoint does not take it;
- a request Klaviyo kept refusing (429 / 5xx beyond `max_retries`) goes on hold and is
  replayed by the next run; one it refused (4xx) is rejected with Klaviyo's reason.

A record names its profile by the first of id, email, phone number and external id it has.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from target_klaviyo.klaviyo.list_members import profile_ids_by
from target_klaviyo.ledger.store import Ledger
from target_klaviyo.mapping.identity import NO_IDENTIFIER as NO_PROFILE_IDENTIFIER
from target_klaviyo.mapping.identity import Rejection, blank, resolve_identity, show
from target_klaviyo.mapping.profile import standard_columns
from target_klaviyo.mapping.values import encode
from target_klaviyo.records.dispatch import Chunk
from target_klaviyo.records.item import Item, Mapped, mapped
from target_klaviyo.records.spool import SubmittedRows
from target_klaviyo.sdk import StopReading
from target_klaviyo.sinks.base import KlaviyoSink

OPERATION = "request_profile_deletion"
JOB_TYPE = "data-privacy-deletion-job"
# An identity key's prefix (mapping.identity.Identity.key, and "id:" for Klaviyo ids) -> the
# profile field it names.
KEY_FIELDS = {"id": "id", "email": "email", "phone": "phone_number", "external_id": "external_id"}
NO_IDENTIFIER = "no usable identifier (id, email, phone_number or external_id)"


def key_field(key: str) -> tuple[str, str]:
    """(profile field, value) an identity key names."""
    prefix, _, value = key.partition(":")
    return KEY_FIELDS[prefix], value


class _Deciding:
    """The collected chunks of a stream while they are decided on: which records were rebuilt
    from the spool (and may have no outcome yet), so that an interruption holds each record
    exactly once."""

    def __init__(self, collected: list[tuple[Chunk, SubmittedRows]]) -> None:
        self.collected = collected
        self.wanted: list[Item] = []  # to request, at most max_deletions_per_run
        self._current: list[Item] = []  # the chunk being settled
        self._next = 0  # the first chunk not rebuilt yet

    def each(self) -> Iterator[SubmittedRows]:
        for index, (_, rows) in enumerate(self.collected):
            self._next = index
            yield rows
        self._current = []

    def rebuilt(self, items: list[Item]) -> list[Item]:
        """The items of the chunk `each` gave last, rebuilt from the spool."""
        self._current = items
        self._next += 1
        return items

    def open_items(self) -> list[Item]:
        return [item for item in (*self.wanted, *self._current) if not item.settled]

    def untouched(self) -> Iterator[SubmittedRows]:
        for _, rows in self.collected[self._next :]:
            yield rows


class DeletionSink(KlaviyoSink):
    """`object: deletion`, `behavior: delete` — privacy deletion requests."""

    OBJECT: ClassVar[str] = "deletion"
    BEHAVIOR: ClassVar[str] = "delete"
    MAX_ITEMS: ClassVar[int] = 1_000  # records collected on disk at a time
    # Collected chunks end only at the end of the stream: a key waiting for an earlier chunk
    # would wait for ever. Duplicates are settled when the stream ends instead.
    ORDERED: ClassVar[bool] = False
    # The ledger keeps what Klaviyo accepted (deletions_requested), not payload hashes.
    SKIPS_UNCHANGED: ClassVar[bool] = False

    def spooled_identifiers(self, key: str) -> dict[str, Any]:
        field, value = key_field(key)
        return {field: value}

    def prepare(self) -> None:
        plan = standard_columns(self.mapping.fields, self.mapping.exclude)
        self.id_column: str | None = plan.get("id")
        self.email_column: str | None = plan.get("email")
        self.phone_column: str | None = plan.get("phone_number")
        self.external_id_column: str | None = plan.get("external_id")
        self._collected: list[tuple[Chunk, SubmittedRows]] = []
        self._collected_lock = threading.Lock()
        self._stopped: str | None = None  # the run stopped: why (nothing is collected then)

    def map_record(self, record: dict[str, Any]) -> Mapped:
        profile_id = record.get(self.id_column) if self.id_column else None
        if not blank(profile_id):
            if not isinstance(profile_id, str):
                raise Rejection(f"id {show(profile_id)} is not a Klaviyo profile id")
            text = profile_id.strip()
            return mapped(("id:" + text, {"id": text}, None, len(text) + 16, (), None))
        get = record.get
        try:
            identity, warnings = resolve_identity(
                get(self.email_column) if self.email_column else None,
                get(self.phone_column) if self.phone_column else None,
                get(self.external_id_column) if self.external_id_column else None,
                self.run.settings.default_phone_region,
            )
        except Rejection as rejection:
            if rejection.reason == NO_PROFILE_IDENTIFIER:  # a deletion may also name an id
                raise Rejection(NO_IDENTIFIER) from None
            raise
        key = identity.key()
        field, value = key_field(key)
        return mapped((key, {field: value}, None, len(key) + 16, warnings, None))

    # -- collecting ----------------------------------------------------------------------

    def send_chunk(self, chunk: Chunk) -> bool:
        """A chunk is not sent: its records wait on disk for the end of the stream, and the
        chunk stays open (STATE is not passed on past it) until they are settled."""
        with self._collected_lock:
            if self._stopped is not None:  # too late to collect: it waits on hold
                self.outcomes.hold(chunk.items, self._stopped)
                return True
            rows = self.run.spool.write(chunk.items, unchanged=False)
            self._collected.append((chunk, rows))
        chunk.items = []
        return False

    def _take_collected(self, stopped: str | None = None) -> list[tuple[Chunk, SubmittedRows]]:
        with self._collected_lock:
            collected, self._collected = self._collected, []
            if stopped is not None:
                self._stopped = stopped
        return collected

    def hold_unsent(self, reason: str) -> None:
        super().hold_unsent(reason)
        for chunk, rows in self._take_collected(stopped=reason):
            self.outcomes.hold(self.spooled_items(rows), reason)
            self.dispatch.end(chunk)

    # -- the end of the stream -----------------------------------------------------------

    def finish_stream(self) -> None:
        super().finish_stream()
        collected = self._take_collected()
        if not collected:
            return
        deciding = _Deciding(collected)
        try:
            self.decide(deciding)
        except BaseException as exc:
            # Nothing is lost: what has no outcome yet waits on hold for the next run.
            why = "the run was stopped" if isinstance(exc, StopReading) else str(exc)[:300]
            reason = f"not sent: {why}"
            self.outcomes.hold(deciding.open_items(), reason)
            for rows in deciding.untouched():
                self.outcomes.hold(self.spooled_items(rows), reason)
            raise
        finally:
            for chunk, _ in collected:
                self.dispatch.end(chunk)

    def _ledger_keys(self, keys: Iterable[str]) -> dict[str, str]:
        account = self.run.account
        return {key: Ledger.deletion_key(account, key) for key in keys}

    def _accepted_before(self, keys: Sequence[str]) -> set[str]:
        """The keys whose deletion Klaviyo accepted in an earlier run (or earlier here)."""
        ledger = self.run.ledger
        if ledger is None or not keys:
            return set()
        hashed = self._ledger_keys(keys)
        done = ledger.deletions_requested(list(hashed.values()))
        return {key for key, value in hashed.items() if value in done}

    def decide(self, deciding: _Deciding) -> None:
        limit = self.mapping.max_deletions_per_run
        # First pass, keys only: whether this stream would request more than `limit` deletions
        # (it stops counting there: memory holds at most `limit` keys).
        seen: set[str] = set()
        for _, rows in deciding.collected:
            keys = [key for _, key in self.run.spool.rows(rows)]
            done = self._accepted_before(keys)
            seen.update(key for key in keys if key not in done)
            if len(seen) > limit:
                break
        over = len(seen) > limit
        seen.clear()
        if over:
            records = sum(rows.count for _, rows in deciding.collected)
            message = (
                f"deletion stream {self.stream_name!r}: more than max_deletions_per_run {limit} "
                f"deletions to request ({records} records); none requested (its records are "
                "rejected)"
            )
            self.logger.warning("%s", message)
            self.run.stats.note(message)
            reason = f"not requested: {message}"
            for rows in deciding.each():
                items = deciding.rebuilt(self.spooled_items(rows))
                done = self._accepted_before([item.key for item in items])
                self.outcomes.mark_unchanged([item for item in items if item.key in done])
                for item in items:
                    self.outcomes.reject(item, reason)
            return
        # Second pass: settle repeats, keep the rest (at most `limit` of them) to request.
        wanted = deciding.wanted
        repeats = 0
        for rows in deciding.each():
            items = deciding.rebuilt(self.spooled_items(rows))
            done = self._accepted_before([item.key for item in items])
            for item in items:
                if item.key in done or item.key in seen:
                    repeats += 1
                    self.outcomes.mark_unchanged([item])
                else:
                    seen.add(item.key)
                    wanted.append(item)
        self.request_all(wanted, repeats)

    def request_all(self, items: list[Item], repeats: int) -> None:
        dry_run = self.run.settings.dry_run
        targets = self.plan_targets(items) if not dry_run else {}
        unknown = 0
        requested = 0
        for item in items:
            if item.settled:  # a failed lookup held it
                continue
            field, value = key_field(item.key)
            if dry_run:
                # No lookups without the network: a real run sends the profile's Klaviyo id
                # where the plan shows "external_id:<value>".
                target = ("id", item.key) if field == "external_id" else (field, value)
            else:
                found = targets.get(item.key)
                if found is None:
                    unknown += 1
                    self.outcomes.mark_unchanged([item])
                    continue
                target = found
            # A stop (signal) or a request thread's error ends the requests here; what has
            # no outcome yet goes on hold (finish_stream).
            self.run.raise_if_failed()
            if self.request_one(item, target):
                requested += 1
        message = f"deletion stream {self.stream_name!r}: {requested} deletions requested"
        if dry_run:
            message += " (dry run: planned, profiles not looked up)"
        if unknown:
            message += f"; {unknown} profiles Klaviyo does not know"
        if repeats:
            message += f"; {repeats} requested before (or repeated in the input)"
        self.logger.info("%s", message)
        self.run.stats.note(message)

    def plan_targets(self, items: list[Item]) -> dict[str, tuple[str, str]]:
        """key -> (field, value) to send, for the profiles Klaviyo knows; items whose lookup
        failed go on hold."""
        by_field: dict[str, list[Item]] = {}
        for item in items:
            by_field.setdefault(key_field(item.key)[0], []).append(item)
        targets: dict[str, tuple[str, str]] = {}
        for field, group in by_field.items():
            values = list(dict.fromkeys(key_field(item.key)[1] for item in group))
            found, failure = profile_ids_by(self.run.client, field, values)
            if failure is not None:
                if failure.exhausted:
                    self.outcomes.hold(group, failure.describe())
                else:
                    self.outcomes.reject_all(group, failure)
                continue
            for item in group:
                value = key_field(item.key)[1]
                profile_id = found.get(value.lower() if field == "email" else value)
                if profile_id is None:
                    continue
                # The deletion endpoint takes id, email or phone_number, not external_id.
                targets[item.key] = ("id", profile_id) if field == "external_id" else (field, value)
        return targets

    def request_one(self, item: Item, target: tuple[str, str]) -> bool:
        """Request one deletion; True when Klaviyo accepted it."""
        field, value = target
        profile: dict[str, Any] = {"type": "profile", "attributes": {}}
        if field == "id":
            profile["id"] = value
        else:
            profile["attributes"][field] = value
        body = encode({"data": {"type": JOB_TYPE, "attributes": {"profile": {"data": profile}}}})
        result = self.run.client.request(OPERATION, body=body)
        if result.exhausted:
            self.outcomes.hold([item], result.describe())
            return False
        if not result.ok:
            self.outcomes.reject(item, result.describe())
            return False
        ledger = self.run.ledger
        if ledger is not None:
            ledger.deletion_requested(
                self.stream_name, Ledger.deletion_key(self.run.account, item.key)
            )
        self.outcomes.mark_loaded([item])
        return True
