"""What every Klaviyo sink shares: request-sized chunks, background submission, accounting.

Records are mapped as they arrive and gathered into chunks that fit one Klaviyo request
(item and byte limits). A full chunk is handed to a worker thread while reading goes on;
the sink waits only where durability needs it (the gate before STATE, and the end).
Every record ends in exactly one outcome, reported here to the run's ledger and counters.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.exceptions import MissingKeyPropertiesError
from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum
from singer_sdk.sinks import BatchSink
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_klaviyo.klaviyo.client import ApiResult, KlaviyoAuthError
from target_klaviyo.ledger.store import HeldRecord, hash64, sent_keys
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.values import encode_sorted, to_json
from target_klaviyo.reader import decode_message
from target_klaviyo.sinks.validation import RecordValidator, Verdicts, datelike_columns

if TYPE_CHECKING:
    from target_klaviyo.run import Run
    from target_klaviyo.settings import StreamMapping

# Sets of columns whose checks are remembered (a stream's records nearly all share one).
COLUMN_SETS_KEPT = 256
# The columns singer-sdk removes from records when add_record_metadata is off.
_METADATA_COLUMNS = frozenset(
    {
        "_sdc_extracted_at",
        "_sdc_received_at",
        "_sdc_batched_at",
        "_sdc_deleted_at",
        "_sdc_sequence",
        "_sdc_table_version",
        "_sdc_sync_started_at",
    }
)

# Room left in each request for the JSON:API envelope around the items.
ENVELOPE_BYTES = 4_096
RECORDS_PER_JOB = 10_000  # a full profile import job: the unit of max_jobs_in_flight
MAX_WORKERS = 16  # request threads per stream


@dataclass(slots=True)
class Item:
    """One mapped record on its way to Klaviyo."""

    seq: int
    # The record, or the line of input it was read from: a line takes a fraction of the
    # memory of its decoded record, and the record is needed again only to reject or hold it.
    source: dict[str, Any] | str
    key: str
    identifiers: dict[str, Any]
    payload: Any
    size: int
    digest: int | None  # skip_unchanged: the payload's hash
    held: HeldRecord | None = None
    encoded: Any = None  # the payload as sent, when the mapping encoded it already
    settled: bool = False  # has its outcome (loaded, unchanged, rejected or on hold)
    sent: int | None = None  # skip_unchanged: the ledger key, once computed

    @property
    def attempts(self) -> int:
        return self.held.attempts if self.held else 0


@dataclass(slots=True)
class Request:
    """An encoded request body and how to find the item a Klaviyo error pointer names."""

    body: bytes
    locate: Callable[[str], list[int]]


def join_body(head: bytes, parts: list[bytes], tail: bytes) -> bytes:
    """`head`, the comma-separated `parts` and `tail` in one join: a body is up to 5 MB, and
    each concatenation of the whole would copy it. `parts` is changed."""
    parts = parts or [b""]
    parts[0] = head + parts[0]
    parts[-1] += tail
    return b",".join(parts)


def row_locator(prefix: str, count: int) -> Callable[[str], list[int]]:
    """For bodies whose items sit in one array: `<prefix>/<i>/...` names item i."""
    pattern = re.compile(re.escape(prefix) + r"/(\d+)(?:/|$)")

    def locate(pointer: str) -> list[int]:
        match = pattern.match(pointer)
        if match and int(match.group(1)) < count:
            return [int(match.group(1))]
        return []

    return locate


# What a sink's `map_record` returns, a plain tuple (one is made per record): the key, the
# identifiers, the payload, its size, warnings, and the payload already encoded (bytes, or a
# sink's own form; None when it is not).
Mapped = tuple[str, dict[str, Any], Any, int, Sequence[str], Any]


class KlaviyoSink(BatchSink):
    """Base of the profile, list, event and subscription sinks."""

    OBJECT: ClassVar[str]
    MAX_ITEMS: ClassVar[int]  # per request (Klaviyo's item limit)
    MAX_BYTES: ClassVar[int] = 5_000_000  # per request body (klaviyo-api.md §7.4, decimal MB)
    ORDERED: ClassVar[bool] = True  # keep one key's writes in input order across requests
    MAX_SIZE_DEFAULT = 10_000  # records per SDK drain; requests are cut by MAX_ITEMS/MAX_BYTES

    def __init__(
        self,
        target: Any,
        stream_name: str,
        schema: dict,
        key_properties: Sequence[str] | None,
    ) -> None:
        self.run: Run = target.run
        super().__init__(target, stream_name, schema, key_properties)

    # -- set-up -------------------------------------------------------------------------

    def setup(self) -> None:
        mapping = self.run.mappings.resolve(self.stream_name)
        if mapping is None:  # the target checks this at SCHEMA time; keep the sink honest
            raise ValueError(f"stream {self.stream_name!r} has no mapping")
        self.mapping: StreamMapping = mapping
        # Computed once: the property serialises the whole mapping on every access.
        self.fingerprint = mapping.fingerprint
        # The mapping's fingerprint seeds the payload hashes: a new mapping sends everything.
        self._digest_seed = int(self.fingerprint[:16], 16)
        self._lock = threading.Condition()
        self._seq = 0
        self._tokens = itertools.count(1)
        self._outstanding: dict[int, int] = {}  # token -> lowest record seq it holds
        self._inflight_keys: set[str] = set()  # keys of the chunks on their way
        self._futures: dict[Future[None], int] = {}  # request -> records it carries
        self._records_in_flight = 0
        self._unpublished_read = self._unpublished_replayed = self._unpublished_warnings = 0
        self._replayed = 0  # records replayed from hold (they are read before any input)
        self._direct_read = 0  # records taken straight from the reader, for singer-sdk's metric
        self._batch_fill = 0
        self._batch_rows = max(1, self.max_size)
        self._required_keys = tuple(self.key_properties or ())
        self._datelike = datelike_columns(self.schema)
        validator = self._validator
        self._checker = validator if isinstance(validator, RecordValidator) else None
        # Per set of columns a record arrives with: whether metadata columns are to go, and
        # the validator's verdicts for records with those columns.
        self._columns_checked: dict[tuple[str, ...], tuple[bool, Verdicts | None]] = {}
        self._chunk: list[Item] = []
        self._chunk_bytes = 0
        self._chunk_byte_limit = self.MAX_BYTES - ENVELOPE_BYTES
        self._chunk_token = 0
        self.skip_unchanged = bool(self.config.get("skip_unchanged", True))
        # Memory is bounded by records, not requests: a stream may have the records of
        # `max_jobs_in_flight` full profile jobs outstanding, so that a stream of small requests
        # (events: 1,000 a request) can queue many while one operation waits for its window.
        jobs = max(1, int(self.config.get("max_jobs_in_flight", 4)))
        self.max_records_in_flight = jobs * RECORDS_PER_JOB
        self.prepare()
        self.sent_key_of = self.sent_keys()
        # Its own workers: a stream waiting for its rate-limit window never holds up another.
        self.executor = ThreadPoolExecutor(
            max_workers=min(MAX_WORKERS, max(1, self.max_records_in_flight // self.MAX_ITEMS)),
            thread_name_prefix=f"klaviyo-{self.stream_name}",
        )
        self.run.register(self)
        self.run.stats.add(self.stream_name, self.OBJECT)
        if self.run.ledger is not None:
            self.run.ledger.save_stream(self.stream_name, self.original_schema, self.key_properties)

    def prepare(self) -> None:
        """Build the record mapper (called once per sink)."""

    def map_record(self, record: dict[str, Any]) -> Mapped:  # pragma: no cover - abstract
        raise NotImplementedError

    def send(self, items: list[Item]) -> None:  # pragma: no cover - abstract
        """Send one request-sized chunk and report every item's outcome (worker thread)."""
        raise NotImplementedError

    def digest(self, key: str, payload: Any, encoded: Any) -> int:
        """What skip_unchanged compares: the outgoing payload and the mapping that made it."""
        if type(encoded) is not bytes:
            encoded = encode_sorted(payload)
        return hash64(encoded, self._digest_seed)

    def sent_keys(self) -> Callable[[str], int]:
        """The skip_unchanged key of an item's key (one namespace per stream and object)."""
        return sent_keys(self.stream_name, self.OBJECT)

    def send_rows(
        self,
        operation: str,
        items: list[Item],
        encode_request: Callable[[list[Item]], Request],
        accepted: Callable[[list[Item], ApiResult], None],
        *,
        path_params: dict[str, str] | None = None,
        resend_allowed: bool = True,
    ) -> None:
        """POST one bulk request and give every item an outcome.

        Retries exhausted -> on hold. A 400 whose pointers name rows -> those rows rejected
        with Klaviyo's detail and the rest resent once (klaviyo-api.md §3.1: one bad row fails
        the whole request). 413 -> split in two. Other 4xx -> all rejected with the detail.
        """
        request = encode_request(items)
        if len(request.body) > self.MAX_BYTES and len(items) > 1:
            self._split(operation, items, encode_request, accepted, path_params, resend_allowed)
            return
        result = self.run.client.request(operation, body=request.body, path_params=path_params)
        if result.exhausted:
            self.hold(items, result.describe())
            return
        if result.status == 400 and resend_allowed:
            bad: dict[int, str] = {}
            for error in result.errors:
                detail = error.detail or error.title
                for index in request.locate(error.pointer or ""):
                    bad[index] = f"{bad[index]}; {detail}" if index in bad else detail
            if bad:
                for index, detail in bad.items():
                    self.rejected(items[index], f"Klaviyo: {detail}")
                rest = [item for index, item in enumerate(items) if index not in bad]
                self.logger.warning(
                    "%s refused %d of %d rows; resending the other %d once",
                    operation,
                    len(bad),
                    len(items),
                    len(rest),
                )
                if rest:
                    self.send_rows(
                        operation,
                        rest,
                        encode_request,
                        accepted,
                        path_params=path_params,
                        resend_allowed=False,
                    )
                return
        if result.status == 413 and len(items) > 1:
            self._split(operation, items, encode_request, accepted, path_params, resend_allowed)
            return
        if not result.ok:
            self.reject_all(items, result)
            return
        # Klaviyo has the payloads: they are not needed again (rejects and holds take the
        # records), and a job may run for minutes with its records waiting.
        del request
        for item in items:
            item.encoded = None
        accepted(items, result)

    def _split(
        self,
        operation: str,
        items: list[Item],
        encode_request: Callable[[list[Item]], Request],
        accepted: Callable[[list[Item], ApiResult], None],
        path_params: dict[str, str] | None,
        resend_allowed: bool,
    ) -> None:
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            self.send_rows(
                operation,
                part,
                encode_request,
                accepted,
                path_params=path_params,
                resend_allowed=resend_allowed,
            )

    # -- the gate's view ------------------------------------------------------------------

    def records_seen(self) -> int:
        with self._lock:
            return self._seq

    def accounted_through(self) -> int:
        with self._lock:
            if self._outstanding:
                return min(self._outstanding.values()) - 1
            return self._seq

    # -- reading --------------------------------------------------------------------------

    @property
    def datetime_error_treatment(self) -> DatetimeErrorTreatmentEnum:
        # The validator rejects a record whose timestamp cannot be parsed; never end the run.
        return DatetimeErrorTreatmentEnum.NULL

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        if not self.validate_schema:
            return None
        return RecordValidator(self.schema)

    def process_record(self, record: dict, context: dict) -> None:
        """A record through singer-sdk's per-record path (streams with stream maps)."""
        validator = self._validator
        failure = validator.take_failure(record) if isinstance(validator, RecordValidator) else None
        self.received(record, failure)

    def take(self, record: dict[str, Any], line: str | None = None) -> None:
        """A record straight from the reader (streams without stream maps), and the line of
        input it was decoded from.

        Does what singer-sdk's per-record path does that matters here — metadata columns
        removed, the key properties check, validation, date and time strings parsed as the
        schema says — without its per-record cost (schema lookups per field, stream maps,
        metrics per record).
        """
        columns = tuple(record)
        known = self._columns_checked.get(columns)
        if known is None:
            known = self._check_columns(columns)
        drops_metadata, verdicts = known
        if drops_metadata:
            self._drop_metadata(record)
        failure = None if self._checker is None else self._checker.check(record, verdicts)
        self._direct_read += 1
        if failure is None:
            self._parse_dates(record, warn=True)
            self.accept(record, None, line)
        else:
            self.received(record, failure)
        # batch_size_rows, as singer-sdk's drain would apply it (requests are cut by
        # MAX_ITEMS and MAX_BYTES anyway).
        self._batch_fill += 1
        if self._batch_fill >= self._batch_rows:
            self.flush_chunk()

    def _check_columns(self, columns: tuple[str, ...]) -> tuple[bool, Verdicts | None]:
        """What depends only on which columns a record has, worked out once per set of columns:
        whether singer-sdk's metadata columns are to go; the key properties must be there
        once they are gone; where validation keeps its verdicts for records with them."""
        drops_metadata = not _METADATA_COLUMNS.isdisjoint(columns)
        kept = (
            tuple(c for c in columns if c not in _METADATA_COLUMNS) if drops_metadata else columns
        )
        for key in self._required_keys:
            if key not in kept:
                raise MissingKeyPropertiesError(
                    f"Record is missing one or more key_properties. Key Properties: "
                    f"{self._required_keys}, Record Keys: {list(kept)}"
                )
        known = (drops_metadata, None if self._checker is None else self._checker.verdicts_of(kept))
        if len(self._columns_checked) < COLUMN_SETS_KEPT:
            self._columns_checked[columns] = known
        return known

    @staticmethod
    def _drop_metadata(record: dict[str, Any]) -> None:
        for column in _METADATA_COLUMNS:  # as singer-sdk does without add_record_metadata
            record.pop(column, None)

    def _parse_dates(self, record: dict[str, Any], *, warn: bool) -> None:
        """Date and time strings parsed as the schema says; what does not parse is null."""
        for column, kind, parse in self._datelike:
            value = record.get(column)
            if value is not None:
                try:
                    record[column] = parse(value)
                except (ValueError, TypeError):
                    if warn:
                        self.logger.warning(
                            "column %r is not a valid %s; taken as null", column, kind
                        )
                    record[column] = None

    def record_of(self, item: Item) -> dict[str, Any]:
        """The record of an item, as `take` passed it on (rebuilt from its line if need be)."""
        source = item.source
        if isinstance(source, dict):
            return source
        record: dict[str, Any] = decode_message(source)["record"]
        self._drop_metadata(record)
        self._parse_dates(record, warn=False)  # `take` warned about it already
        return record

    def received(self, record: dict[str, Any], failure: tuple[str, dict[str, Any]] | None) -> None:
        """A record of the input: rejected when it failed validation, else accepted."""
        if failure is not None:
            self._count_read(None)
            reason, as_received = failure
            self._reject_unsent(as_received, reason, None)
            return
        self.accept(record)

    def _count_read(self, held: HeldRecord | None) -> int:
        """A record taken in: its sequence number. The counts reach the run's figures per
        chunk (publish_counts), not per record."""
        self.run.raise_if_failed()
        # Only the reading thread writes _seq; the gate reads it (an int, so no lock needed).
        self._seq = seq = self._seq + 1
        self._unpublished_read += 1
        if held is not None:
            self._unpublished_replayed += 1
            self._replayed += 1
        return seq

    def publish_counts(self) -> None:
        """Move the reading thread's counts into the run's figures."""
        read, replayed, warnings = (
            self._unpublished_read,
            self._unpublished_replayed,
            self._unpublished_warnings,
        )
        if self._direct_read:
            self.record_counter_metric.increment(self._direct_read)
            self._direct_read = 0
        if read or warnings:
            self._unpublished_read = self._unpublished_replayed = self._unpublished_warnings = 0
            self.run.stats.add(
                self.stream_name, self.OBJECT, read=read, replayed=replayed, warnings=warnings
            )

    def accept(
        self, record: dict[str, Any], held: HeldRecord | None = None, line: str | None = None
    ) -> None:
        """Map one record and add it to the current chunk (or account for it at once).

        `line`: the line of input the record was decoded from (kept instead of the record).
        """
        seq = self._count_read(held)
        try:
            key, identifiers, payload, size, warnings, encoded = self.map_record(record)
        except Rejection as rejection:
            self._reject_unsent(record, rejection.reason, held)
            return
        if warnings:
            self._unpublished_warnings += len(warnings)
            for warning in warnings:
                self.logger.debug("record %d: %s", seq, warning)
        item = Item(
            seq,
            record if line is None else line,
            key,
            identifiers,
            payload,
            size,
            self.digest(key, payload, encoded) if self.skip_unchanged else None,
            held,
            encoded,
        )
        chunk = self._chunk
        if chunk and (
            len(chunk) >= self.MAX_ITEMS or self._chunk_bytes + size + 1 > self._chunk_byte_limit
        ):
            self.flush_chunk()
            chunk = self._chunk
        if not chunk:
            with self._lock:
                self._chunk_token = next(self._tokens)
                self._outstanding[self._chunk_token] = seq
        chunk.append(item)
        self._chunk_bytes += size + 1

    def process_batch(self, context: dict) -> None:
        self.flush_chunk()

    def flush_chunk(self) -> None:
        """Hand the current chunk to a worker (after de-duplication and skip_unchanged)."""
        self._batch_fill = 0
        self.publish_counts()
        self.run.raise_if_failed()
        items, token = self._chunk, self._chunk_token
        self._chunk, self._chunk_bytes, self._chunk_token = [], 0, 0
        if not items:
            return
        items = self.drop_unchanged(self.drop_superseded(items))
        if not items:
            self._finish(token, ())
            return
        keys = [item.key for item in items] if self.ORDERED else []
        with self._lock:
            # Bounded memory: at most max_records_in_flight records outstanding per stream;
            # and a key already on its way waits, so that Klaviyo applies one key's writes in
            # order.
            while self._no_room_for(len(items), keys):
                self._lock.wait(timeout=1.0)
                self.run.raise_if_failed()
            # One chunk's keys are distinct (drop_superseded), and a chunk waits above while
            # any of its keys is on its way: a key is in at most one chunk in flight.
            self._inflight_keys.update(keys)
            self._records_in_flight += len(items)
        self.run.stats.add(self.stream_name, self.OBJECT, in_jobs=len(items))
        future = self.executor.submit(self._send_chunk, token, items, keys)
        with self._lock:
            self._futures[future] = len(items)
        future.add_done_callback(self._forget_future)

    def _no_room_for(self, records: int, keys: Iterable[str]) -> bool:
        """Whether a chunk must wait for requests in flight (called holding the lock)."""
        return bool(
            self._futures and self._records_in_flight + records > self.max_records_in_flight
        ) or not self._inflight_keys.isdisjoint(keys)

    def must_wait_for_room(self) -> bool:
        """Whether handing over the current chunk would first wait for requests in flight
        (the wait in `flush_chunk`, before de-duplication)."""
        with self._lock:
            keys = [item.key for item in self._chunk] if self.ORDERED else []
            return self._no_room_for(len(self._chunk), keys)

    def _forget_future(self, future: Future[None]) -> None:
        with self._lock:
            self._records_in_flight -= self._futures.pop(future, 0)
            self._lock.notify_all()

    def drop_superseded(self, items: list[Item]) -> list[Item]:
        """Two records with one key in a request: the later one wins (README)."""
        latest: dict[str, Item] = {}
        superseded = []
        for item in items:
            previous = latest.get(item.key)
            if previous is not None:
                superseded.append(previous)
            latest[item.key] = item
        if superseded:
            self.unchanged(superseded)
            return list(latest.values())
        return items

    def drop_unchanged(self, items: list[Item]) -> list[Item]:
        """skip_unchanged: leave out what Klaviyo already accepted, byte for byte."""
        ledger = self.run.ledger
        if not self.skip_unchanged or ledger is None:
            return items
        pairs = [(self._sent_key(item), item.digest or 0) for item in items]
        same = ledger.unchanged(pairs)
        if not same:
            return items
        kept: list[Item] = []
        skipped: list[Item] = []
        for item, (key, _) in zip(items, pairs, strict=True):
            (skipped if key in same else kept).append(item)
        self.unchanged(skipped)
        return kept

    def _sent_key(self, item: Item) -> int:
        key = item.sent
        if key is None:
            key = item.sent = self.sent_key_of(item.key)
        return key

    def _send_chunk(self, token: int, items: list[Item], keys: list[str]) -> None:
        try:
            self.send(items)
        except KlaviyoAuthError as exc:
            self.hold([item for item in items if not item.settled], str(exc))
            self.run.fail(exc)
        except Exception as exc:
            # Nothing is lost: the records wait on hold while the run stops with the error.
            unsettled = [item for item in items if not item.settled]
            self.hold(unsettled, f"internal error: {type(exc).__name__}")
            self.run.fail(exc)
        finally:
            with self._lock:
                self._inflight_keys.difference_update(keys)
            self._finish(token, items)

    def _finish(self, token: int, items: Sequence[Item]) -> None:
        count = len(items)
        if count:
            self.run.stats.add(self.stream_name, self.OBJECT, in_jobs=-count)
        with self._lock:
            self._outstanding.pop(token, None)
            self._lock.notify_all()
        self.run.gate.check()

    def hold_unsent(self, reason: str) -> None:
        """The run is stopping with an error: records read but not sent wait on hold."""
        self.publish_counts()
        items, token = self._chunk, self._chunk_token
        self._chunk, self._chunk_bytes, self._chunk_token = [], 0, 0
        if items:
            self.hold(items, reason)
            self._finish(token, ())

    def wait_idle(self) -> None:
        """Flush and wait until every request of this stream has come back."""
        self.flush_chunk()
        with self._lock:
            while self._futures:
                self._lock.wait(timeout=1.0)
        self.run.raise_if_failed()

    def clean_up(self) -> None:
        try:
            self.wait_idle()
            self.finish_stream()
        finally:
            super().clean_up()

    def finish_stream(self) -> None:
        """End of the stream's input (after every request came back)."""

    # -- outcomes -------------------------------------------------------------------------

    def _release(self, items: Iterable[Item]) -> None:
        """Outcome reached: settled, and no longer on hold if it came from there."""
        ids = []
        for item in items:
            item.settled = True
            if item.held is not None:
                ids.append(item.held.id)
        if ids and self.run.ledger is not None:
            self.run.ledger.release(ids)

    def loaded(self, items: Sequence[Item]) -> None:
        if not items:
            return
        ledger = self.run.ledger
        if ledger is not None and self.skip_unchanged:
            # Every item passed drop_unchanged, which computed its key.
            ledger.remember_sent(
                [
                    (item.sent if item.sent is not None else self._sent_key(item), item.digest)
                    for item in items
                    if item.digest is not None
                ]
            )
        self._release(items)
        self.run.stats.add(self.stream_name, self.OBJECT, loaded=len(items))

    def unchanged(self, items: Sequence[Item]) -> None:
        if not items:
            return
        self._release(items)
        self.run.stats.add(self.stream_name, self.OBJECT, unchanged=len(items))

    def rejected(self, item: Item, reason: str) -> None:
        self.run.reject(
            self.stream_name, self.OBJECT, item.identifiers, reason, self.record_of(item)
        )
        self._release([item])
        if self.run.ledger is not None and item.digest is not None and self.skip_unchanged:
            # A rejected payload must be sent again next time, not skipped as unchanged.
            self.run.ledger.forget_sent([self._sent_key(item)])
        self.run.stats.add(self.stream_name, self.OBJECT, rejected=1)

    def _reject_unsent(self, record: dict[str, Any], reason: str, held: HeldRecord | None) -> None:
        self.run.reject(self.stream_name, self.OBJECT, {}, reason, record)
        if held is not None and self.run.ledger is not None:
            self.run.ledger.release([held.id])
        self.run.stats.add(self.stream_name, self.OBJECT, rejected=1)

    def hold(self, items: Sequence[Item], reason: str) -> None:
        """Klaviyo kept refusing (retries exhausted): keep the records for the next run."""
        if not items:
            return
        for item in items:
            item.settled = True
        ledger = self.run.ledger
        if ledger is not None:
            ledger.hold(
                self.stream_name,
                self.OBJECT,
                self.fingerprint,
                (
                    (item.key, to_json(self.record_of(item)), reason, item.attempts)
                    for item in items
                ),
            )
        self.run.stats.add(self.stream_name, self.OBJECT, on_hold=len(items))
        self.logger.warning("%d records on hold: %s", len(items), reason)

    def reject_all(self, items: Sequence[Item], result: ApiResult) -> None:
        reason = result.describe()
        for item in items:
            self.rejected(item, reason)
        self.logger.warning("%d records rejected: %s", len(items), reason)
