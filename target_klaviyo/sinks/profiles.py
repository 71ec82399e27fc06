"""Profiles: bulk upsert through profile import jobs, then the job's count check.

A chunk of up to 10,000 profiles / 5 MB becomes one import job
(`POST /api/profile-bulk-import-jobs`). The request thread polls the job, with a deadline and
backoff, until it is complete or cancelled, pages through every import error and maps each
back to its record (rejected with Klaviyo's detail). A handful of profiles goes through
`POST /api/profile-import` instead (Klaviyo's guidance: bulk import is not for a few profiles;
https://developers.klaviyo.com/en/docs/data-in).
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult, page_data, pages
from target_klaviyo.klaviyo.fields import IDENTIFIER_FIELDS
from target_klaviyo.mapping.profile import ProfileMapper
from target_klaviyo.mapping.values import decode, encode
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.protocol import join_body, row_locator
from target_klaviyo.sinks.base import KlaviyoSink

# The pointer of a bad row names its index (a 400 of profile-bulk-import-jobs).
ROWS_POINTER = "/data/attributes/profiles/data"
JOB_HEAD = b'{"data":{"type":"profile-bulk-import-job","attributes":{"profiles":{"data":['

POLL_FIRST_S = 0.5
POLL_MAX_S = 10.0
# Below this many profiles a chunk is sent with profile-import, one request per profile.
SINGLE_UPSERT_MAX = 3


class ProfileUpsertSink(KlaviyoSink):
    """`object: profile` — upsert by email, phone_number or external_id."""

    OBJECT: ClassVar[str] = "profile"
    BEHAVIOR: ClassVar[str] = "upsert"
    MAX_ITEMS: ClassVar[int] = 10_000  # profiles per import job

    def prepare(self) -> None:
        self.mapper = ProfileMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            self.run.settings.default_phone_region,
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        identity, identifiers, _, encoded, warnings = self.mapper.map_parts(record)
        # Sent as encoded: the resource is not kept while the record waits in a job.
        return mapped((identity.key(), identifiers, None, len(encoded), warnings, encoded))

    # -- sending --------------------------------------------------------------------------

    def list_relationships(self) -> list[str]:
        """Lists that every profile of this stream joins in the same job (list insert)."""
        return []

    def job_request(self, items: list[Item]) -> Request:
        """The import job's body, joined from the profiles as the mapping encoded them."""
        profiles = [
            item.encoded if type(item.encoded) is bytes else encode(item.payload) for item in items
        ]
        tail = b"]}}"
        lists = self.list_relationships()
        if lists:
            relationships = {"lists": {"data": [{"type": "list", "id": i} for i in lists]}}
            tail += b',"relationships":' + encode(relationships)
        body = join_body(JOB_HEAD, profiles, tail + b"}}")
        return Request(body, row_locator(ROWS_POINTER, len(items)))

    def send(self, items: list[Item]) -> None:
        if len(items) <= SINGLE_UPSERT_MAX and not self.list_relationships():
            self.upsert_each(items)
        else:
            self.protocol.send("bulk_import_profiles", items, self.job_request, self.job_accepted)

    def job_accepted(self, items: list[Item], result: ApiResult) -> None:
        self.await_job(str(result.body["data"]["id"]), items)

    def await_job(self, job_id: str, items: list[Item]) -> None:
        """Poll the job to its end, then check its counts and map its import errors."""
        ledger = self.run.ledger
        outcomes = self.outcomes
        if ledger is not None:
            ledger.job_started(job_id, "bulk_import_profiles", self.stream_name, len(items))
        try:
            job = self.poll_job(job_id)
            if job is None:
                return outcomes.hold(items, f"import job {job_id} did not finish in time")
            if isinstance(job, ApiResult):
                return outcomes.hold(items, job.describe())
            if job.get("status") == "cancelled":
                return outcomes.hold(items, f"Klaviyo cancelled import job {job_id}")
            failed = int(job.get("failed_count") or 0)
            errors: dict[int, str] = {}
            if failed:
                found = self.import_errors(job_id, items)
                if isinstance(found, ApiResult):
                    # The job ran but its errors could not be read: resending is safe (upsert).
                    return outcomes.hold(items, found.describe())
                errors = found
            for index, detail in errors.items():
                outcomes.reject(items[index], f"Klaviyo: {detail}")
            outcomes.mark_loaded([item for index, item in enumerate(items) if index not in errors])
            if failed != len(errors):
                self.logger.warning(
                    "import job %s reported %d failed rows; %d were matched to records",
                    job_id,
                    failed,
                    len(errors),
                )
            return None
        finally:
            if ledger is not None:
                ledger.job_finished(job_id)

    def poll_job(self, job_id: str) -> dict[str, Any] | ApiResult | None:
        """The job's final attributes; an ApiResult if polling failed; None past the deadline."""
        deadline = time.monotonic() + self.run.settings.job_timeout_s
        delay = POLL_FIRST_S
        progress: tuple[float, int] | None = None  # (when, rows done) at the previous poll
        while True:
            result = self.run.client.request(
                "get_bulk_import_profiles_job", path_params={"id": job_id}
            )
            if not result.ok:
                return result
            attributes = result.body["data"]["attributes"]
            if attributes.get("status") in ("complete", "cancelled"):
                return dict(attributes)
            now = time.monotonic()
            done, total = attributes.get("completed_count"), attributes.get("total_count")
            if isinstance(done, int) and isinstance(total, int) and done > 0:
                if progress is not None and done > progress[1]:
                    # Rows are being applied: poll when, at this pace, the job will be done.
                    pace = (done - progress[1]) / (now - progress[0])
                    delay = min(max((total - done) / pace, POLL_FIRST_S), POLL_MAX_S)
                progress = (now, done)
            if now + delay > deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 1.5, POLL_MAX_S)

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

    def upsert_each(self, items: list[Item]) -> None:
        """profile-import, one profile a request; a 409 duplicate_profile is retried once
        without the phone number, never in a loop."""
        for item in items:
            resource = item.payload if item.payload is not None else decode(item.encoded)
            result = self.upsert_one(resource)
            if result.status == 409 and "phone_number" in resource.get("attributes", {}):
                without_phone = {
                    **resource,
                    "attributes": {
                        k: v for k, v in resource["attributes"].items() if k != "phone_number"
                    },
                }
                self.run.stats.add(self.stream_name, self.OBJECT, warnings=1)
                self.logger.info(
                    "profile-import: identifiers belong to two profiles; retried without phone"
                )
                result = self.upsert_one(without_phone)
            if result.exhausted:
                self.outcomes.hold([item], result.describe())
            elif result.ok:
                self.outcomes.mark_loaded([item])
            else:
                self.outcomes.reject(item, result.describe())

    def upsert_one(self, resource: dict[str, Any]) -> ApiResult:
        return self.run.client.request("create_or_update_profile", body=encode({"data": resource}))


def _identifier_tuple(attributes: Any) -> tuple[str | None, ...]:
    return tuple(
        None if attributes.get(field) is None else str(attributes[field])
        for field in IDENTIFIER_FIELDS
    )
