"""Catalog items, variants and categories: upsert and delete through Klaviyo's bulk catalog jobs.

Klaviyo has bulk create, update and delete jobs for each (up to 100 entries / 5 MB a request,
https://developers.klaviyo.com/en/reference/catalogs_api_overview) but no upsert: a create of an
id that exists fails, and so does an update of one that does not. So the target decides from
what it knows: ids the ledger holds (entries it created or saw before), then one lookup of the
rest per request (`GET /api/catalog-items?filter=any(ids,[...])`). Klaviyo can still differ
(an entry deleted or created elsewhere): a create row that meets an existing entry is sent again
as an update, an update row that meets a missing one as a create — once, each record still
settles exactly once.

Jobs run asynchronously and report per-row errors whose pointer names the row
(`/data/attributes/items/data/<i>/...`); they are followed with the run's other open jobs
(`records/jobs.py`), their records wait on disk meanwhile (`records/spool.py`). Klaviyo allows
at most 500 catalog jobs in progress per account ("The maximum number of jobs in progress at
one time is 500"): every catalog stream of the run takes its jobs from one count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult, page_data, pages
from target_klaviyo.klaviyo.filters import any_of
from target_klaviyo.mapping.catalog import (
    ID_PREFIX,
    KINDS,
    PLURALS,
    RESOURCE_TYPES,
    CatalogMapper,
    compound_id,
    entry_of,
    entry_payload,
    external_id_of,
    payload_size,
)
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.values import encode
from target_klaviyo.records.dispatch import Chunk, ChunkJobs
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.jobs import JobKind
from target_klaviyo.records.protocol import join_body, row_locator
from target_klaviyo.records.unchanged import UnchangedFilter
from target_klaviyo.sinks.base import JobRows, KlaviyoSink

MAX_ENTRIES = 100  # per bulk catalog job
LOOKUP_PAGE = 100  # the largest page of get_catalog_items (and variants, categories)

# The spec's job operations name variants and categories without "catalog_".
_JOB_NAMES = {
    "catalog_item": "catalog_items",
    "catalog_variant": "variants",
    "catalog_category": "categories",
}
# Klaviyo applies each job on its own, in no promised order: a variant created before its item
# exists, or an item before its categories, fails. So an upsert chunk waits for the chunks of
# what it names that were read before it (within the run).
DEPENDS_ON = {"catalog_variant": "catalog_item", "catalog_item": "catalog_category"}
_LOOKUPS = {
    "catalog_item": "get_catalog_items",
    "catalog_variant": "get_catalog_variants",
    "catalog_category": "get_catalog_categories",
}


def job_kind(obj: str, action: str) -> JobKind:
    """How to follow one object's jobs of one action: the job list filtered on each open status
    (the spec's lists take `equals(status, ...)`, no sort and no page size: 100 jobs a page)."""
    jobs = _JOB_NAMES[obj]
    return JobKind(
        f"catalog {KINDS[obj]} {action}",
        f"get_bulk_{action}_{jobs}_jobs",
        f"get_bulk_{action}_{jobs}_job",
        list_params=(),
        page_size=None,
        open_statuses=("processing", "queued"),
    )


JOB_KINDS = {
    (obj, action): job_kind(obj, action)
    for obj in _JOB_NAMES
    for action in ("create", "update", "delete")
}


def _is_missing(error: dict[str, Any]) -> bool:
    """An update or delete row whose own entry Klaviyo does not have (not a related one)."""
    pointer = str((error.get("source") or {}).get("pointer") or "")
    if "/relationships/" in pointer:
        return False
    return error.get("code") == "not_found" or "does not exist" in str(error.get("detail"))


def _is_existing(error: dict[str, Any]) -> bool:
    """A create row whose entry Klaviyo has already."""
    return error.get("code") in ("conflict", "duplicate") or "already exists" in str(
        error.get("detail")
    )


class CatalogJobsSink(KlaviyoSink):
    """What the catalog sinks share: a chunk as bulk jobs, followed until they end."""

    MAX_ITEMS: ClassVar[int] = MAX_ENTRIES
    OPENS_JOBS: ClassVar[bool] = True

    def spooled_identifiers(self, key: str) -> dict[str, Any]:
        return {"external_id": key}

    def prepare(self) -> None:
        self.mapper = CatalogMapper(
            self.OBJECT, self.mapping, list(self.schema.get("properties", {}))
        )
        self.kind = KINDS[self.OBJECT]
        self.plural = PLURALS[self.OBJECT]
        self.slots = self.run.catalog_job_slots
        self._chunk_seqs: dict[int, int] = {}  # first record's seq -> the chunk's place in line
        self._open_chunks: dict[int, int] = {}  # chunk token -> its place, until it ends
        self.row_pointer = re.compile(rf"^/data/attributes/{self.plural}/data/(\d+)(?:/|$)")

    def stopped(self) -> bool:
        return self.run.stopping is not None or self.run.failure is not None

    def unchanged_namespace(self) -> str:
        # One namespace per catalog object, whatever the stream: a delete forgets the hashes
        # of the entries it removed, so that loading them again sends them.
        return f"catalog:{self.OBJECT}"

    # -- sending --------------------------------------------------------------------------

    def encode_rows(self, action: str, items: list[Item]) -> list[bytes]:  # pragma: no cover
        raise NotImplementedError

    def job_request(self, action: str) -> Callable[[list[Item]], Request]:
        head = (
            b'{"data":{"type":"'
            + f"{RESOURCE_TYPES[self.OBJECT]}-bulk-{action}-job".encode()
            + b'","attributes":{"'
            + self.plural.encode()
            + b'":{"data":['
        )

        def encode_request(items: list[Item]) -> Request:
            body = join_body(head, self.encode_rows(action, items), b"]}}}}")
            return Request(body, row_locator(f"/data/attributes/{self.plural}/data", len(items)))

        return encode_request

    def submit(
        self, submitting: ChunkJobs, action: str, items: list[Item], *, recover: bool
    ) -> None:
        """One bulk job (or more, should Klaviyo split it) of these items."""
        if not items:
            return
        # A recovery is sent from a job's end: it never waits for a slot, which only the
        # endings of jobs free.
        reserved = recover
        if reserved:
            self.slots.reserve(self.stopped)
        try:
            self.protocol.send(
                f"bulk_{action}_catalog_{self.plural}",
                items,
                self.job_request(action),
                lambda accepted, result: self.job_accepted(
                    submitting, action, accepted, result, recover
                ),
            )
        finally:
            if reserved:
                self.slots.unreserve()

    def job_accepted(
        self,
        submitting: ChunkJobs,
        action: str,
        items: list[Item],
        result: ApiResult,
        recover: bool,
    ) -> None:
        self.slots.opened()
        self.follow_job(
            submitting,
            JOB_KINDS[(self.OBJECT, action)],
            result.body["data"],
            items,
            lambda job, attributes: self.settle_job(submitting, action, job, attributes, recover),
        )

    def job_ended(self) -> None:
        self.slots.ended()

    def settle_job(
        self,
        submitting: ChunkJobs,
        action: str,
        job: JobRows,
        attributes: dict[str, Any],
        recover: bool,
    ) -> None:
        rows = job.rows
        keys = [key for _, key in self.run.spool.rows(rows)]
        errors = self.row_errors(attributes.get("errors") or [], keys)
        failed = int(attributes.get("failed_count") or 0)
        if failed > len(errors):
            self.logger.warning(
                "catalog %s job %s reported %d failed rows; %d were matched to records",
                action,
                job.id,
                failed,
                len(errors),
            )
        done = [key for row, key in enumerate(keys) if row not in errors]
        self.applied(action, done)
        job.mark_loaded(but=set(errors))
        if not errors:
            return
        items = job.items(remap=True, only=errors)
        failed_rows = sorted(errors)
        self.settle_errors(
            submitting,
            action,
            [(items[n], errors[row]) for n, row in enumerate(failed_rows)],
            recover,
        )
        return

    def applied(self, action: str, keys: list[str]) -> None:
        """Klaviyo created, updated or deleted the entries of these keys."""
        ledger = self.run.ledger
        if ledger is not None and keys:
            if action == "delete":
                ledger.catalog_forget(self.kind, keys)
            else:
                ledger.catalog_remember(self.kind, keys)

    def settle_errors(
        self,
        submitting: ChunkJobs,
        action: str,
        failures: list[tuple[Item, dict[str, Any]]],
        recover: bool,
    ) -> None:
        for item, error in failures:
            self.outcomes.reject(item, f"Klaviyo: {_detail(error)}")

    def row_errors(self, errors: list[dict[str, Any]], keys: list[str]) -> dict[int, dict]:
        """Row -> its error: by the error's pointer, or else by the id its detail names."""
        by_id = {compound_id(key): row for row, key in enumerate(keys)}
        found: dict[int, dict[str, Any]] = {}
        for error in errors:
            pointer = str((error.get("source") or {}).get("pointer") or "")
            match = self.row_pointer.match(pointer)
            row: int | None = None
            if match and int(match.group(1)) < len(keys):
                row = int(match.group(1))
            else:
                detail = str(error.get("detail") or "")
                row = next((r for i, r in by_id.items() if f"'{i}'" in detail), None)
            if row is not None:
                found.setdefault(row, error)
        return found


def _detail(error: dict[str, Any]) -> str:
    return str(error.get("detail") or error.get("title") or error.get("code") or "row failed")


class CatalogUpsertSink(CatalogJobsSink):
    """`behavior: upsert` — create what Klaviyo does not have, update what it has."""

    BEHAVIOR: ClassVar[str] = "upsert"

    def map_record(self, record: dict[str, Any]) -> Mapped:
        entry = self.mapper.map(record)
        payload = entry_payload(entry)
        size = payload_size(payload)
        if size > self.MAX_BYTES - 4_096:
            raise Rejection(f"{self.OBJECT} is {size:,} bytes: over Klaviyo's 5 MB request limit")
        return mapped(
            (entry.external_id, {"external_id": entry.external_id}, payload, size, (), None)
        )

    def encode_rows(self, action: str, items: list[Item]) -> list[bytes]:
        build = self.mapper.create if action == "create" else self.mapper.update
        return [encode(build(entry_of(item.key, item.payload))) for item in items]

    def prepare_chunk(self, items: list[Item]) -> list[Item]:
        items = super().prepare_chunk(items)
        if items:
            depends = DEPENDS_ON.get(self.OBJECT)
            if depends is not None:
                # What this chunk names may still wait in its own stream's chunk: send that first.
                for sink in self.run.sinks:
                    if depends == sink.OBJECT and sink.BEHAVIOR == "upsert":
                        sink.flush()
            self._chunk_seqs[items[0].seq] = self.slots.begin(self.OBJECT)
        return items

    def send_chunk(self, chunk: Chunk) -> bool:
        seq = self._chunk_seqs.pop(chunk.items[0].seq, 0) if chunk.items else 0
        ended = True
        try:
            depends = DEPENDS_ON.get(self.OBJECT)
            if depends is not None and seq:
                self.slots.wait_for(depends, seq, self.stopped)
            self._open_chunks[chunk.token] = seq
            ended = self.send_upserts(chunk)
            return ended
        finally:
            if ended:
                self._open_chunks.pop(chunk.token, None)
                self.slots.finish(self.OBJECT, seq)

    def chunk_ended(self, chunk: Chunk) -> None:
        self.slots.finish(self.OBJECT, self._open_chunks.pop(chunk.token, 0))
        super().chunk_ended(chunk)

    def send_upserts(self, chunk: Chunk) -> bool:
        items = chunk.items
        existing = self.existing([item.key for item in items])
        if isinstance(existing, ApiResult):
            self.outcomes.hold(items, existing.describe())
            return True
        submitting = ChunkJobs(chunk)
        self.submit(submitting, "create", [i for i in items if i.key not in existing], recover=True)
        self.submit(submitting, "update", [i for i in items if i.key in existing], recover=True)
        return submitting.submitted(self.chunk_ended)

    def existing(self, keys: list[str]) -> set[str] | ApiResult:
        """Which of these external ids Klaviyo has: those the ledger knows, and of the others
        those one lookup finds (ids escaped in the filter; up to 100 a request)."""
        ledger = self.run.ledger
        known = ledger.catalog_known(self.kind, keys) if ledger is not None else set()
        rest = [key for key in keys if key not in known]
        found: set[str] = set()
        for start in range(0, len(rest), LOOKUP_PAGE):
            ids = [compound_id(key) for key in rest[start : start + LOOKUP_PAGE]]
            params = {
                "filter": any_of("ids", ids),
                f"fields[{RESOURCE_TYPES[self.OBJECT]}]": "external_id",
                "page[size]": LOOKUP_PAGE,
            }
            for page in pages(self.run.client, _LOOKUPS[self.OBJECT], params):
                if not page.ok:
                    return page
                for resource in page_data(page):
                    entry_id = str(resource.get("id") or "")
                    if entry_id.startswith(ID_PREFIX):
                        found.add(entry_id[len(ID_PREFIX) :])
        if found and ledger is not None:
            ledger.catalog_remember(self.kind, found)
        return known | found

    def settle_errors(
        self,
        submitting: ChunkJobs,
        action: str,
        failures: list[tuple[Item, dict[str, Any]]],
        recover: bool,
    ) -> None:
        """A create that met an existing entry goes again as an update, an update that met a
        missing one as a create (once); other errors reject the record with Klaviyo's detail."""
        again: list[Item] = []
        for item, error in failures:
            if recover and (
                (action == "create" and _is_existing(error))
                or (action == "update" and _is_missing(error))
            ):
                again.append(item)
            else:
                self.outcomes.reject(item, f"Klaviyo: {_detail(error)}")
        if again:
            other = "update" if action == "create" else "create"
            self.logger.info(
                "%d %s rows met Klaviyo's catalog as it differs from the ledger; sent as %s",
                len(again),
                action,
                other,
            )
            if other == "create" and self.run.ledger is not None:
                self.run.ledger.catalog_forget(self.kind, [item.key for item in again])
            self.submit(submitting, other, again, recover=False)


class CatalogDeleteSink(CatalogJobsSink):
    """`behavior: delete` — remove entries by external id; one that Klaviyo does not have is
    unchanged (nothing to delete)."""

    BEHAVIOR: ClassVar[str] = "delete"
    SKIPS_UNCHANGED: ClassVar[bool] = False  # a delete is always sent: the entry may be back

    def map_record(self, record: dict[str, Any]) -> Mapped:
        external_id = external_id_of(self.mapper, record)
        resource = {"type": RESOURCE_TYPES[self.OBJECT], "id": compound_id(external_id)}
        encoded = encode(resource)
        return mapped((external_id, {"external_id": external_id}, None, len(encoded), (), encoded))

    def encode_rows(self, action: str, items: list[Item]) -> list[bytes]:
        return [
            item.encoded
            if type(item.encoded) is bytes
            else encode({"type": RESOURCE_TYPES[self.OBJECT], "id": compound_id(item.key)})
            for item in items
        ]

    def send_chunk(self, chunk: Chunk) -> bool:
        submitting = ChunkJobs(chunk)
        self.submit(submitting, "delete", chunk.items, recover=True)
        return submitting.submitted(self.dispatch.end)

    def applied(self, action: str, keys: list[str]) -> None:
        super().applied(action, keys)
        self.forget_upserts(keys)

    def forget_upserts(self, keys: list[str]) -> None:
        """An upsert of a deleted entry must be sent again, not skipped as unchanged."""
        UnchangedFilter(
            self.run.ledger, self.unchanged_namespace(), self.OBJECT, self.fingerprint, enabled=True
        ).forget_keys(keys)

    def settle_errors(
        self,
        submitting: ChunkJobs,
        action: str,
        failures: list[tuple[Item, dict[str, Any]]],
        recover: bool,
    ) -> None:
        gone = [item for item, error in failures if _is_missing(error)]
        if gone:
            self.applied("delete", [item.key for item in gone])
            self.outcomes.mark_unchanged(gone)
        for item, error in failures:
            if not _is_missing(error):
                self.outcomes.reject(item, f"Klaviyo: {_detail(error)}")


def _sink(base: type[CatalogJobsSink], obj: str) -> type[CatalogJobsSink]:
    name = "".join(part.title() for part in obj.split("_")) + base.BEHAVIOR.title() + "Sink"
    return type(name, (base,), {"OBJECT": obj, "__module__": __name__})


CatalogItemUpsertSink = _sink(CatalogUpsertSink, "catalog_item")
CatalogVariantUpsertSink = _sink(CatalogUpsertSink, "catalog_variant")
CatalogCategoryUpsertSink = _sink(CatalogUpsertSink, "catalog_category")
CatalogItemDeleteSink = _sink(CatalogDeleteSink, "catalog_item")
CatalogVariantDeleteSink = _sink(CatalogDeleteSink, "catalog_variant")
CatalogCategoryDeleteSink = _sink(CatalogDeleteSink, "catalog_category")
