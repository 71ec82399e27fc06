"""Profiles: bulk upsert through profile import jobs, then the job's count check.

A chunk of up to 10,000 profiles / 5 MB becomes one import job
(`POST /api/profile-bulk-import-jobs`). The request thread submits it and moves on: the job
joins the run's other open jobs (`records/jobs.py`, one poll for all of them) and its records
wait on disk (`records/spool.py`). When it ends, every import error is mapped back to its
record (rejected with Klaviyo's detail) and the rest are loaded. A handful of profiles goes through
`POST /api/profile-import` instead (Klaviyo's guidance: bulk import is not for a few profiles;
https://developers.klaviyo.com/en/docs/data-in).
"""

from __future__ import annotations

from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult, page_data, pages
from target_klaviyo.klaviyo.fields import IDENTIFIER_FIELDS
from target_klaviyo.mapping.profile import ProfileRecords
from target_klaviyo.mapping.values import decode, encode
from target_klaviyo.records.dispatch import Chunk, ChunkJobs
from target_klaviyo.records.item import Item, Mapped, Request
from target_klaviyo.records.jobs import PROFILE_IMPORT
from target_klaviyo.records.protocol import join_parts, row_locator
from target_klaviyo.sinks.base import JobRows, KlaviyoSink

# The pointer of a bad row names its index (a 400 of profile-bulk-import-jobs).
ROWS_POINTER = "/data/attributes/profiles/data"
JOB_HEAD = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['

# Below this many profiles a chunk is sent with profile-import, one request per profile.
SINGLE_UPSERT_MAX = 3


class ProfileUpsertSink(KlaviyoSink):
    """`object: profile` — upsert by email, phone_number or external_id."""

    OBJECT: ClassVar[str] = "profile"
    BEHAVIOR: ClassVar[str] = "upsert"
    MAX_ITEMS: ClassVar[int] = 10_000  # profiles per import job
    OPENS_JOBS: ClassVar[bool] = True
    KEEPS_IDENTIFIERS: ClassVar[bool] = False  # an import's errors are matched after a remap

    def prepare(self) -> None:
        self.profile_records = ProfileRecords(
            self.mapping,
            tuple(self.schema.get("properties", {})),
            self.run.settings.default_phone_region,
        )
        self.mapper = self.profile_records.mapper
        self.clears_nulls = self.profile_records.clears_nulls

    def map_record(self, record: dict[str, Any]) -> Mapped:
        return self.profile_records(record)

    def record_mapper(self) -> ProfileRecords | None:
        # Only where `map_record` is this class's own (a subclass may add to it).
        if type(self).map_record is not ProfileUpsertSink.map_record:
            return None
        return self.profile_records

    # -- sending --------------------------------------------------------------------------

    def list_relationships(self) -> list[str]:
        """Lists that every profile of this stream joins in the same job (list insert)."""
        return []

    def job_request(self, items: list[Item]) -> Request:
        """The import job's body, joined from the profiles as the mapping encoded them."""
        profiles = [item.encoded for item in items]
        if not all(type(profile) is bytes for profile in profiles):
            # Every mapped profile is encoded, and the protocol gives a resent item its part
            # back: sending anything else would send `null` rows.
            raise RuntimeError("a profile to import has no encoded payload")
        tail = b"]}}"
        lists = self.list_relationships()
        if lists:
            relationships = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
            tail += b',"relationships":' + encode(relationships)
        body, ends = join_parts(JOB_HEAD, profiles, tail + b"}}")
        return Request(body, row_locator(ROWS_POINTER, len(items)), len(JOB_HEAD), ends)

    def send(self, items: list[Item]) -> None:
        """A handful of profiles: profile-import, one request each."""
        self.upsert_each(items)

    def send_chunk(self, chunk: Chunk) -> bool:
        items = chunk.items
        if len(items) <= SINGLE_UPSERT_MAX and not self.list_relationships():
            return super().send_chunk(chunk)
        submitting = ChunkJobs(chunk)
        self.protocol.send(
            "bulk_import_profiles",
            items,
            self.job_request,
            lambda accepted, result: self.job_accepted(submitting, accepted, result),
        )
        return submitting.submitted(self.dispatch.end)

    def job_accepted(self, submitting: ChunkJobs, items: list[Item], result: ApiResult) -> None:
        """Klaviyo accepted an import job of these items: it is followed with the run's other
        open jobs, and the items' records wait on disk until it ends."""
        self.follow_job(
            submitting,
            PROFILE_IMPORT,
            result.body["data"],
            items,
            self.settle_job,
        )

    def settle_job(self, job: JobRows, attributes: dict[str, Any]) -> None:
        """Give every row of an ended import job its outcome."""
        outcomes = self.outcomes
        failed = int(attributes.get("failed_count") or 0)
        clears = set(job.rows.clears)
        if not failed:
            job.mark_loaded(but=clears)
            if clears:
                self.clear_nulls(job.items(remap=True, only=clears))
            return None
        items = job.items(remap=True)
        errors = self.import_errors(job.id, items)
        if isinstance(errors, ApiResult):
            # The job ran but its errors could not be read: resending is safe (upsert).
            return outcomes.hold(items, errors.describe())
        for index, detail in errors.items():
            outcomes.reject(items[index], f"Klaviyo: {detail}")
        imported = [(index, item) for index, item in enumerate(items) if index not in errors]
        outcomes.mark_loaded([item for index, item in imported if index not in clears])
        self.clear_nulls([item for index, item in imported if index in clears])
        if failed != len(errors):
            self.logger.warning(
                "import job %s reported %d failed rows; %d were matched to records",
                job.id,
                failed,
                len(errors),
            )
        return None

    def import_errors(self, job_id: str, items: list[Item]) -> dict[int, str] | ApiResult:
        """Every import error of a job, mapped back to its row by its identifiers.

        `original_payload` echoes the row sent, so its identifiers as a whole name one row
        (two rows with the same key never share a job). Rows may share a single identifier
        (one phone number, two emails): matching one identifier alone is only the fallback.
        """
        exact: dict[tuple[str | None, ...], int] = {}
        index: dict[tuple[str, str], int] = {}
        for row, item in enumerate(items):
            exact.setdefault(_identifier_tuple(item.identifiers), row)
            for field, value in item.identifiers.items():
                index.setdefault((field, str(value)), row)
        errors: dict[int, str] = {}
        unmatched = 0
        for page in pages(
            self.run.client,
            "get_errors_for_bulk_import_profiles_job",
            {"page[size]": 100},
            path_params={"id": job_id},
        ):
            if not page.ok:
                return page
            for error in page_data(page):
                attributes = error.get("attributes") or {}
                payload = attributes.get("original_payload") or {}
                position = exact.get(_identifier_tuple(payload))
                if position is None:
                    position = next(
                        (
                            index[(field, str(payload[field]))]
                            for field in IDENTIFIER_FIELDS
                            if payload.get(field) is not None
                            and (field, str(payload[field])) in index
                        ),
                        None,
                    )
                if position is None:
                    unmatched += 1
                    continue
                errors[position] = (
                    attributes.get("detail") or attributes.get("title") or "import error"
                )
        if unmatched:
            self.logger.warning("%d import errors could not be matched to a record", unmatched)
        return errors

    def clear_nulls(self, items: list[Item]) -> None:
        """After their bulk import: the fields these records sent as null are cleared with
        profile-import, which clears a field sent as null (`nulls: unset`). A record is loaded
        once both are done."""
        for item in items:
            self.settle_one(item, self.upsert_one(item.payload))

    def upsert_each(self, items: list[Item]) -> None:
        """profile-import, one profile a request (it clears fields sent as null itself)."""
        for item in items:
            self.settle_one(item, self.upsert_one(decode(item.encoded)))

    def settle_one(self, item: Item, result: ApiResult) -> None:
        """A profile-import's outcome, the same as its record would have in a bulk job: a
        refused profile (an identifier conflict: a 409 duplicate_profile) is rejected with
        Klaviyo's reason, worded as an import error is, and never retried with fewer
        identifiers (that would write to whichever profile the rest name)."""
        if result.exhausted:
            self.outcomes.hold([item], result.describe())
        elif result.ok:
            self.outcomes.mark_loaded([item])
        elif result.errors:
            details = "; ".join(error.detail or error.title for error in result.errors)
            self.outcomes.reject(item, f"Klaviyo: {details}")
        else:
            self.outcomes.reject(item, result.describe())

    def upsert_one(self, resource: dict[str, Any]) -> ApiResult:
        return self.run.client.request("create_or_update_profile", body=encode({"data": resource}))


def _identifier_tuple(attributes: Any) -> tuple[str | None, ...]:
    return tuple(
        None if attributes.get(field) is None else str(attributes[field])
        for field in IDENTIFIER_FIELDS
    )
