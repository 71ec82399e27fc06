"""What every sink shares: singer-sdk's `BatchSink` adapted, and a record's route wired up.

A sink is one stream loading into one Klaviyo object with one behaviour. It keeps what belongs
to its object — how a record maps (`map_record`), how a chunk is sent (`send`), and Klaviyo's
limits as class constants — and hands the rest to the rooms of `target_klaviyo/records/`:
intake, dispatch, the bulk request protocol and outcomes.

A record's life, one verb per step: it is **received** (from the reader, or through singer-sdk's
`process_record` for streams with stream maps, or **replayed** from hold), **enqueued** (mapped
and added to a chunk), **sent**, and settled by an outcome.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from singer_sdk.helpers.conform import DatetimeErrorTreatmentEnum
from singer_sdk.sinks import BatchSink
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_klaviyo.ledger.store import HeldRecord
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.records import offload
from target_klaviyo.records.dispatch import Chunk, ChunkJobs, Dispatcher
from target_klaviyo.records.intake import Failure, Intake
from target_klaviyo.records.item import IDENTIFIERS_NOT_KEPT, Item, Mapped
from target_klaviyo.records.jobs import JobEnd, JobKind
from target_klaviyo.records.outcomes import Outcomes
from target_klaviyo.records.protocol import BulkProtocol
from target_klaviyo.records.spool import SubmittedRows
from target_klaviyo.records.unchanged import UnchangedFilter
from target_klaviyo.sdk import RecordValidator, count_records, record_line_prefixes

if TYPE_CHECKING:
    from target_klaviyo.run.context import Run
    from target_klaviyo.streams import StreamMapping


class KlaviyoSink(BatchSink):
    """Base of every sink; subclasses set the class constants and implement `map_record` and
    `send`."""

    OBJECT: ClassVar[str]
    BEHAVIOR: ClassVar[str]
    MAX_ITEMS: ClassVar[int]  # per request (Klaviyo's item limit)
    MAX_BYTES: ClassVar[int] = 5_000_000  # per request body (Klaviyo's 5 MB, decimal reading)
    ORDERED: ClassVar[bool] = True  # keep one key's writes in input order across requests
    # Its chunks go out as Klaviyo jobs it follows (`max_jobs_in_flight` bounds them).
    OPENS_JOBS: ClassVar[bool] = False
    SKIPS_UNCHANGED: ClassVar[bool] = True  # whether skip_unchanged applies
    # skip_unchanged compares the key alone: Klaviyo never updates what was accepted once.
    UNCHANGED_BY_KEY: ClassVar[bool] = False
    # Whether a record on its way keeps its identifiers. Without them (profiles: a few hundred
    # bytes a record, tens of thousands of records on their way) a reject maps its record
    # again for them: rejects are rare, records on their way are not.
    KEEPS_IDENTIFIERS: ClassVar[bool] = True
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
        settings = self.run.settings
        self._batch_fill = 0
        self._batch_rows = max(1, self.max_size)
        self._direct_read = 0  # records that skipped singer-sdk's path, for its metric
        validator = self._validator
        self.intake = Intake(
            self.schema,
            tuple(self.key_properties or ()),
            validator if isinstance(validator, RecordValidator) else None,
            self.logger,
        )
        self.prepare()
        self.unchanged = UnchangedFilter(
            self.run.ledger,
            self.unchanged_namespace(),
            self.OBJECT,
            self.fingerprint,
            enabled=settings.skip_unchanged and self.SKIPS_UNCHANGED,
            of_key=self.UNCHANGED_BY_KEY,
        )
        self.outcomes = Outcomes(
            self.run,
            self.stream_name,
            self.OBJECT,
            self.fingerprint,
            self.unchanged,
            self.record_of,
            self.identifiers_of,
            self.logger,
        )
        self.protocol = BulkProtocol(self.run.client, self.outcomes, self.MAX_BYTES, self.logger)
        self.dispatch = Dispatcher(
            name=self.stream_name,
            max_items=self.MAX_ITEMS,
            max_bytes=self.MAX_BYTES,
            ordered=self.ORDERED,
            max_open_jobs=settings.max_jobs_in_flight if self.OPENS_JOBS else None,
            prepare=self.prepare_chunk,
            send=self.send_chunk,
            outcomes=self.outcomes,
            run=self.run,
        )
        # Mapping in a second process (records/offload.py): considered once the stream has
        # read OFFLOAD_AFTER records here, then checked on every OFFLOAD_POLL until it runs.
        self.offload: offload.Offload | None = None
        self.line_prefixes = record_line_prefixes(self.stream_name)  # for the reader
        self._offload_in = offload.OFFLOAD_AFTER
        self.run.register(self)
        self.run.stats.add(self.stream_name, self.OBJECT)
        if self.run.ledger is not None:
            self.run.ledger.save_stream(self.stream_name, self.original_schema, self.key_properties)

    # -- what each object defines ---------------------------------------------------------

    def prepare(self) -> None:
        """Build the record mapper (called once per sink, before the rooms are wired)."""

    def map_record(self, record: dict[str, Any]) -> Mapped:  # pragma: no cover - abstract
        """Map one record (build the result with `records.item.mapped`); raise Rejection."""
        raise NotImplementedError

    def record_mapper(self) -> Callable[[dict[str, Any]], Mapped] | None:
        """`map_record` as a picklable callable, for a sink whose records may be mapped in a
        second process (records/offload.py); None keeps them here."""
        return None

    def send(self, items: list[Item]) -> None:  # pragma: no cover - abstract
        """Send one request-sized chunk and give every item an outcome (request thread)."""
        raise NotImplementedError

    def send_chunk(self, chunk: Chunk) -> bool:
        """Send a chunk; True when every record has its outcome, False when a bulk job holds
        them (the sink then calls `dispatch.end(chunk)` once the job ended)."""
        self.send(chunk.items)
        return True

    def unchanged_namespace(self) -> str:
        """Where skip_unchanged keeps this sink's hashes (one namespace per stream)."""
        return self.stream_name

    def superseded(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """Two records with one key in a request: the later one wins (README). Returns
        (kept, superseded)."""
        latest: dict[str, Item] = {}
        dropped = []
        for item in items:
            previous = latest.get(item.key)
            if previous is not None:
                dropped.append(previous)
            latest[item.key] = item
        return (list(latest.values()), dropped) if dropped else (items, [])

    def finish_stream(self) -> None:
        """End of the stream's input (after every request came back)."""

    # -- singer-sdk's Sink ----------------------------------------------------------------

    @property
    def datetime_error_treatment(self) -> DatetimeErrorTreatmentEnum:
        # The validator rejects a record whose timestamp cannot be parsed; never end the run.
        return DatetimeErrorTreatmentEnum.NULL

    def get_validator(self) -> BaseJSONSchemaValidator | None:
        if not self.validate_schema:
            return None
        return RecordValidator(self.schema)

    def process_record(self, record: dict, context: dict) -> None:
        """A record received through singer-sdk's per-record path (streams with stream maps),
        which validated it already."""
        validator = self._validator
        failure = validator.take_failure(record) if isinstance(validator, RecordValidator) else None
        if failure is None:
            self.enqueue(record)
        else:
            self.refuse(failure)

    def process_batch(self, context: dict) -> None:
        self.flush()

    def activate_version(self, new_version: int) -> None:
        # Only a mirror list acts on it (a full pass ended); for the others it means nothing.
        self.logger.debug("ACTIVATE_VERSION %s: nothing to do for this stream", new_version)

    def clean_up(self) -> None:
        try:
            self.wait_idle()
            self.finish_stream()
        finally:
            self.end_offload()
            super().clean_up()

    def drain_offload(self) -> None:
        """Every line sent to the mapping process is back and added to its chunk."""
        if self.offload is not None:
            self.offload.drain()

    def end_offload(self) -> None:
        """The stream reads no more lines: its mapping process ends (and its CPU is free for
        another stream's)."""
        self.run.offloaded.pop(self.stream_name, None)
        if self.offload is not None and not self.offload.closed:
            self.offload.close()
            self.run.mapping_processes -= 1

    # -- a record's life ------------------------------------------------------------------

    def receive(self, record: dict[str, Any], line: str | None = None) -> None:
        """A record straight from the reader (streams without stream maps), and the line of
        input it was decoded from (kept, rather than the record, while it waits)."""
        failure = self.intake.check(record)
        self._direct_read += 1
        if failure is None:
            self.enqueue(record, None, line)
        else:
            self.refuse(failure)
        # batch_size_rows, as singer-sdk's drain would apply it (requests are cut by
        # MAX_ITEMS and MAX_BYTES anyway).
        self._batch_fill += 1
        if self._batch_fill >= self._batch_rows:
            self.flush()
        self._offload_in -= 1
        if not self._offload_in:
            self._consider_offload()

    def receive_line(self, line: str, number: int) -> None:
        """A record's line of input, read while the stream is mapped in a second process."""
        work = self.offload
        assert work is not None
        work.add(line, number)
        if work.failed:  # the stream is read here again, after the lines it holds
            self.run.offloaded.pop(self.stream_name, None)
            work.drain()

    def _consider_offload(self) -> None:
        """Start the mapping process, or route the stream's lines to it once it is ready."""
        self._offload_in = offload.OFFLOAD_POLL
        work = self.offload
        if work is None:
            mapper = self.record_mapper()
            if mapper is None or self.run.mapping_processes >= offload.spare_cpus():
                self._offload_in = -1
                return
            self.run.mapping_processes += 1
            self.offload = work = offload.Offload(
                offload.Recipe(
                    self.stream_name,
                    self.schema,
                    tuple(self.key_properties or ()),
                    isinstance(self._validator, RecordValidator),
                    mapper,
                    self.KEEPS_IDENTIFIERS,
                ),
                self._take_offloaded,
                self.logger,
                self.run.client.writes_waiting,
            )
            work.start()
            self.dispatch.reading_ahead = work.pending
        elif work.poll_ready():
            self.logger.info("mapping the stream's records in a second process")
            self.run.offloaded[self.stream_name] = self
            self._offload_in = -1
        if work.failed:
            self._offload_in = -1

    def _take_offloaded(self, line: str, number: int, result: offload.Result) -> None:
        """A line back from the mapping process, in input order: mapped there, or not."""
        if result is None:
            self.run.read_line_here(line, number)
            return
        if self.run.failure is not None:
            raise self.run.failure
        key, identifiers, payload, size, warnings, encoded = result
        self._direct_read += 1
        self._add_mapped(
            self.dispatch.next_seq(),
            line,
            key,
            IDENTIFIERS_NOT_KEPT if identifiers is None else identifiers,
            payload,
            size,
            warnings,
            encoded,
            None,
        )
        self._batch_fill += 1
        if self._batch_fill >= self._batch_rows:
            self.flush()

    def replay(self, held: HeldRecord) -> None:
        """A record held by an earlier run, sent again with the current mapping."""
        self.enqueue(held.record, held)

    def refuse(self, failure: Failure) -> None:
        """A record read that failed validation: rejected with the reason."""
        self.run.raise_if_failed()
        self.dispatch.next_seq()
        reason, as_received = failure
        self.outcomes.reject_unmapped(as_received, reason, None)

    def enqueue(
        self, record: dict[str, Any], held: HeldRecord | None = None, line: str | None = None
    ) -> None:
        """Map one record and add it to the current chunk (or reject it at once)."""
        if self.run.failure is not None:
            raise self.run.failure
        seq = self.dispatch.next_seq()
        if held is not None:
            self.outcomes.count_replayed()
        try:
            key, identifiers, payload, size, warnings, encoded = self.map_record(record)
        except Rejection as rejection:
            self.outcomes.reject_unmapped(record, rejection.reason, held)
            return
        self._add_mapped(
            seq,
            record if line is None else line,
            key,
            identifiers if self.KEEPS_IDENTIFIERS else IDENTIFIERS_NOT_KEPT,
            payload,
            size,
            warnings,
            encoded,
            held,
        )

    def _add_mapped(
        self,
        seq: int,
        source: dict[str, Any] | str,
        key: str,
        identifiers: dict[str, Any],
        payload: Any,
        size: int,
        warnings: Sequence[str],
        encoded: Any,
        held: HeldRecord | None,
    ) -> None:
        if warnings:
            self.outcomes.count_warnings(len(warnings))
            for warning in warnings:
                self.logger.debug("record %d: %s", seq, warning)
        self.dispatch.add(
            Item(
                seq,
                source,
                key,
                identifiers,
                payload,
                size,
                self.unchanged.digest(key, payload, encoded) if self.unchanged.enabled else None,
                held,
                encoded,
            )
        )

    def prepare_chunk(self, items: list[Item]) -> list[Item]:
        """A full chunk before it is sent: superseded records and what Klaviyo has already
        are settled as unchanged; the rest is sent."""
        items, dropped = self.superseded(items)
        self.outcomes.mark_unchanged(dropped)
        items, same = self.unchanged.split(items)
        self.outcomes.mark_unchanged(same)
        return items

    def spooled_identifiers(self, key: str) -> dict[str, Any]:
        """What a record back from the spool unmapped is known by, from its key alone (for
        rejects and holds); none unless the sink's key names an identifier."""
        return {}

    def spooled_items(
        self, rows: SubmittedRows, *, remap: bool = False, only: Collection[int] | None = None
    ) -> list[Item]:
        """The items of a job's rows (`only` those, when given), back from the spool: kept as
        their lines (to hold them), or, `remap`, taken in and mapped again (to match Klaviyo's
        errors to them, clear their fields, or send them once more)."""
        sent, digests = self.run.spool.hashes(rows)
        items = []
        for row, (line, key) in enumerate(self.run.spool.rows(rows)):
            if only is not None and row not in only:
                continue
            source: dict[str, Any] | str = line
            identifiers, payload, size = self.spooled_identifiers(key), None, 0
            if remap:
                source = self.intake.rebuild(line)
                _, identifiers, payload, size, *_ = self.map_record(source)
            item = Item(
                0,
                source,
                key,
                identifiers,
                payload,
                size,
                digests[row] if rows.hashed else None,
                rows.held.get(row),
            )
            item.sent = sent[row] if rows.hashed else None
            items.append(item)
        return items

    def follow_job(
        self,
        submitting: ChunkJobs,
        kind: JobKind,
        data: dict[str, Any],
        items: list[Item],
        settle: Callable[[JobRows, dict[str, Any]], None],
    ) -> None:
        """Klaviyo accepted a job of these items (`data`: the job it answered with). Their
        records wait on disk while the job is followed with the run's other open jobs, and the
        ledger records it until Klaviyo reports its end (a run stopped before then leaves it
        for the next run to ask about). When it ends, `settle` gives its rows their outcomes
        from its final attributes; a job that could not be followed, or that Klaviyo
        cancelled, holds them. The chunk ends with the last of its jobs."""
        job_id = str(data["id"])
        rows = self.run.spool.write(items, unchanged=self.unchanged.enabled)
        submitting.opened(self.dispatch)
        ledger = self.run.ledger
        if ledger is not None:
            ledger.job_started(job_id, kind.get_operation, self.stream_name, rows.count)

        def settle_final(job: JobRows, end: JobEnd) -> None:
            attributes = end.attributes
            if attributes is None:
                job.hold(str(end.failure))
            elif attributes.get("status") == "cancelled":
                job.hold(f"Klaviyo cancelled {kind.name} job {job_id}")
            else:
                settle(job, attributes)

        def ended(end: JobEnd) -> None:
            if ledger is not None and end.attributes is not None:
                ledger.job_finished(job_id)
            self.job_ended()
            job = JobRows(self, job_id, rows)
            try:
                settle_final(job, end)
            except Exception as exc:  # a bug: what has no outcome yet waits on hold
                self.outcomes.hold(job.unsettled(), f"internal error: {type(exc).__name__}")
                self.run.fail(exc)
            finally:
                self.run.spool.release(rows)  # every row has its outcome
                if submitting.release():
                    self.chunk_ended(submitting.chunk)

        created_at = (data.get("attributes") or {}).get("created_at")
        self.run.jobs.watch(kind, job_id, created_at, self.run.settings.job_timeout_s, ended)

    def job_ended(self) -> None:
        """One of this sink's jobs ended (its rows get their outcomes next)."""

    def chunk_ended(self, chunk: Chunk) -> None:
        """Every record of a chunk sent as jobs has its outcome."""
        self.dispatch.end(chunk)

    def record_of(self, item: Item) -> dict[str, Any]:
        """The record of an item, as it was received (rebuilt from its line if need be)."""
        source = item.source
        return source if isinstance(source, dict) else self.intake.rebuild(source)

    def identifiers_of(self, item: Item) -> dict[str, Any]:
        """What an item's record is known by (mapped again when the item did not keep it)."""
        if item.identifiers is not IDENTIFIERS_NOT_KEPT:
            return item.identifiers
        try:
            return self.map_record(self.record_of(item)).identifiers
        except Rejection:  # mapped once already; a mapping does not change within a run
            return self.spooled_identifiers(item.key)

    # -- the run's view -------------------------------------------------------------------

    def flush(self) -> None:
        """Send what the current chunk holds (and every record read before)."""
        self.drain_offload()
        self._batch_fill = 0
        count_records(self, self._direct_read)
        self._direct_read = 0
        self.dispatch.flush()

    def wait_idle(self) -> None:
        """Send what the current chunk holds and wait for every request of the stream."""
        self.flush()
        self.dispatch.wait_idle()

    def hold_unsent(self, reason: str) -> None:
        """The run is stopping: records read but not sent wait on hold."""
        if self.offload is not None:
            # Lines still on their way through the mapping process are left unread, as input
            # not yet read is: no STATE passed them, so the tap sends them again.
            self.offload.discard()
        self.dispatch.hold_unsent(reason)


class JobRows:
    """An ended job's rows while they get their outcomes. Each row comes back from the spool
    once, as one item, and rows loaded wholesale are noted: what has no outcome yet is known
    at any point, and a record is never settled twice."""

    def __init__(self, sink: KlaviyoSink, job_id: str, rows: SubmittedRows) -> None:
        self.sink = sink
        self.id = job_id
        self.rows = rows
        self._items: dict[int, Item] = {}
        self._loaded_but: set[int] | None = None  # rows loaded wholesale: all but these

    def items(self, *, remap: bool = False, only: Collection[int] | None = None) -> list[Item]:
        """The items of the job's rows (`only` those), back from the spool: see
        `KlaviyoSink.spooled_items`. A row comes back once; later asks get the same item."""
        wanted = range(self.rows.count) if only is None else sorted(only)
        missing = {row for row in wanted if row not in self._items}
        if missing:
            built = self.sink.spooled_items(self.rows, remap=remap, only=missing)
            self._items.update(zip(sorted(missing), built, strict=True))
        return [self._items[row] for row in wanted]

    def hold(self, reason: str) -> None:
        """Every row waits on hold."""
        self.sink.outcomes.hold(self.items(), reason)

    def mark_loaded(self, but: Collection[int] = ()) -> None:
        """Every row was loaded, `but` those (rows whose outcome is decided otherwise)."""
        self.sink.outcomes.mark_rows_loaded(self.rows, but=but)
        self._loaded_but = set(but)

    def unsettled(self) -> list[Item]:
        """The items of the rows without an outcome yet."""
        return [item for item in self.items(only=self._loaded_but) if not item.settled]
