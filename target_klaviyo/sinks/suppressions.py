"""Suppressions: email suppressions through Klaviyo's bulk suppress and unsuppress jobs.

`suppress` sends up to 100 emails a request to `profile-suppression-bulk-create-jobs`;
`unsuppress` up to 100 to `profile-suppression-bulk-delete-jobs` (the spec: "Email address per
request limit: 100"; both L tier, 75/s and 750/min). Neither touches list membership or consent:
the bodies carry emails only, never a list or segment (which would (un)suppress every member).

Klaviyo answers 202 with a job and processes it asynchronously; the job reports counts only
(`completed_count`, `skipped_count`), no outcome per email. The job joins the run's other open
jobs (`records/jobs.py`) and its records wait on disk. A suppress job that skipped nothing
loaded every email. When it skipped some, and after every unsuppress job (whose outcome for an
email must not depend on the other emails of its job), the emails' profiles are read back (one
`GET /api/profiles` per 100 emails, with `subscriptions`) and each email is settled by what
Klaviyo shows under `subscriptions.email.marketing.suppression`:

- suppress: an email already suppressed by the user before the job was created is `unchanged`;
- unsuppress: Klaviyo lifts only suppressions with reason `USER_SUPPRESSED` (the spec:
  "unsubscribed profiles and suppressed profiles with reason INVALID_EMAIL or HARD_BOUNCE
  remain unchanged"); an email still suppressed for another reason, or without a profile, is
  `unchanged`, and the summary names the reasons.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult, page_data, pages
from target_klaviyo.klaviyo.filters import any_of
from target_klaviyo.mapping.identity import Rejection, blank, normalise_email
from target_klaviyo.mapping.profile import standard_columns
from target_klaviyo.mapping.values import encode, encoded_size
from target_klaviyo.records.dispatch import Chunk, ChunkJobs
from target_klaviyo.records.item import Item, Mapped, Request, mapped
from target_klaviyo.records.jobs import JobKind, parse_time
from target_klaviyo.records.protocol import row_locator
from target_klaviyo.sinks.base import JobRows, KlaviyoSink

# The pointer of a bad row names its index.
ROWS_POINTER = "/data/attributes/profiles/data"
# Suppression belongs to the email, whichever stream sets it: skip_unchanged keys it per email
# across every suppression stream (the digest is seeded by the mapping, so an unsuppress after
# a suppress is never skipped as unchanged).
SUPPRESSION_NAMESPACE = "\x00suppression"
USER_SUPPRESSED = "USER_SUPPRESSED"
LOOKUP_BATCH = 100  # emails in one any(...) filter of get_profiles, and its largest page
EMAIL_KEY = "email:"

# The job lists' sort is `created` / `-created` (the spec), not `-created_at`.
SUPPRESS_JOB = JobKind(
    "bulk suppress",
    "get_bulk_suppress_profiles_jobs",
    "get_bulk_suppress_profiles_job",
    (("sort", "-created"),),
    page_size=None,  # the spec has no page[size] for the suppression job lists
)
UNSUPPRESS_JOB = JobKind(
    "bulk unsuppress",
    "get_bulk_unsuppress_profiles_jobs",
    "get_bulk_unsuppress_profiles_job",
    (("sort", "-created"),),
    page_size=None,  # the spec has no page[size] for the suppression job lists
)


class SuppressionSink(KlaviyoSink):
    """What suppress and unsuppress share: emails in, one job per 100, settled per email."""

    OBJECT: ClassVar[str] = "suppression"
    MAX_ITEMS: ClassVar[int] = 100  # emails per request (the spec)
    OPENS_JOBS: ClassVar[bool] = True
    OPERATION: ClassVar[str]
    JOB_TYPE: ClassVar[str]
    JOB_KIND: ClassVar[JobKind]
    # Whether every job's emails are read back, not only those of a job that skipped some.
    READS_BACK: ClassVar[bool] = False

    def spooled_identifiers(self, key: str) -> dict[str, Any]:
        return {"email": key.removeprefix(EMAIL_KEY)}

    def prepare(self) -> None:
        plan = standard_columns(self.mapping.fields, self.mapping.exclude)
        self.email_column: str | None = plan.get("email")

    def map_record(self, record: dict[str, Any]) -> Mapped:
        value = record.get(self.email_column) if self.email_column else None
        if blank(value):
            column = self.email_column or "email"
            raise Rejection(f"a suppression needs an email (column {column!r} is empty)")
        email = normalise_email(value)
        resource = {"type": "profile", "attributes": {"email": email}}
        return mapped(
            (EMAIL_KEY + email, {"email": email}, resource, encoded_size(resource), (), None)
        )

    def unchanged_namespace(self) -> str:
        return SUPPRESSION_NAMESPACE

    def job_request(self, items: list[Item]) -> Request:
        data = {
            "type": self.JOB_TYPE,
            "attributes": {"profiles": {"data": [item.payload for item in items]}},
        }
        return Request(encode({"data": data}), row_locator(ROWS_POINTER, len(items)))

    def send_chunk(self, chunk: Chunk) -> bool:
        submitting = ChunkJobs(chunk)
        self.protocol.send(
            self.OPERATION,
            chunk.items,
            self.job_request,
            lambda accepted, result: self.job_accepted(submitting, accepted, result),
        )
        return submitting.submitted(self.dispatch.end)

    def job_accepted(self, submitting: ChunkJobs, items: list[Item], result: ApiResult) -> None:
        data = result.body.get("data") if isinstance(result.body, dict) else None
        if not isinstance(data, dict) or not data.get("id"):
            # A dry run plans the request and has no job; Klaviyo answers with one.
            if not self.run.settings.dry_run:
                self.logger.warning("%s: accepted without a job to follow", self.OPERATION)
            self.outcomes.mark_loaded(items)
            return
        for item in items:
            item.payload = None  # Klaviyo has it; the spool keeps the record, not a payload
        self.follow_job(submitting, self.JOB_KIND, data, items, self.settle_job)

    def settle_job(self, job: JobRows, attributes: dict[str, Any]) -> None:
        skipped = int(attributes.get("skipped_count") or 0)
        if not skipped and not self.READS_BACK:
            job.mark_loaded()
            return
        items = job.items()
        found = self.suppressions_of([item.identifiers["email"] for item in items])
        if isinstance(found, ApiResult):
            # The job ran, but which emails it skipped cannot be told: sending them again is
            # safe ((un)suppressing twice changes nothing).
            self.outcomes.hold(items, found.describe())
            return
        reasons: Counter[str] = Counter()
        loaded: list[Item] = []
        for item in items:
            email = item.identifiers["email"]
            why = self.unchanged_because(found.get(email), parse_time(attributes.get("created_at")))
            if why is None:
                loaded.append(item)
                continue
            reasons[why] += 1
            self.logger.debug("%s: %s unchanged: %s", self.stream_name, email, why)
            self.outcomes.mark_unchanged([item])
        self.outcomes.mark_loaded(loaded)
        if reasons:
            told = "; ".join(f"{why} ({count})" for why, count in sorted(reasons.items()))
            message = f"{self.BEHAVIOR} of stream {self.stream_name!r}: unchanged: {told}"
            self.logger.info("%s", message)
            self.run.stats.note(message)
        if skipped and sum(reasons.values()) != skipped:
            self.logger.info(
                "%s job %s skipped %d emails; %d were told apart by their profiles",
                self.JOB_KIND.name,
                job.id,
                skipped,
                sum(reasons.values()),
            )

    def unchanged_because(
        self, suppressions: list[dict[str, Any]] | None, job_created: datetime | None
    ) -> str | None:
        """Why Klaviyo left this email as it was (its profile's suppressions, or None for no
        profile), or None when the job changed it."""
        raise NotImplementedError

    def suppressions_of(self, emails: list[str]) -> dict[str, list[dict[str, Any]]] | ApiResult:
        """Each email's email-marketing suppressions, as Klaviyo shows them on its profile
        (emails without a profile are absent); or the failed lookup."""
        found: dict[str, list[dict[str, Any]]] = {}
        for start in range(0, len(emails), LOOKUP_BATCH):
            params = {
                "filter": any_of("email", emails[start : start + LOOKUP_BATCH]),
                "page[size]": LOOKUP_BATCH,
                "additional-fields[profile]": "subscriptions",
            }
            for page in pages(self.run.client, "get_profiles", params):
                if not page.ok:
                    return page
                for profile in page_data(page):
                    attributes = profile.get("attributes") or {}
                    email = attributes.get("email")
                    if isinstance(email, str):
                        found[email.lower()] = _email_suppressions(attributes)
        return found


def _email_suppressions(attributes: dict[str, Any]) -> list[dict[str, Any]]:
    marketing = ((attributes.get("subscriptions") or {}).get("email") or {}).get("marketing")
    entries = (marketing or {}).get("suppression") or []
    return [entry for entry in entries if isinstance(entry, dict)]


def _reasons(entries: Iterable[dict[str, Any]]) -> list[str]:
    return sorted({str(entry.get("reason")) for entry in entries if entry.get("reason")})


class SuppressSink(SuppressionSink):
    """`object: suppression`, `behavior: suppress`."""

    BEHAVIOR: ClassVar[str] = "suppress"
    OPERATION: ClassVar[str] = "bulk_suppress_profiles"
    JOB_TYPE: ClassVar[str] = "profile-suppression-bulk-create-job"
    JOB_KIND: ClassVar[JobKind] = SUPPRESS_JOB

    def unchanged_because(
        self, suppressions: list[dict[str, Any]] | None, job_created: datetime | None
    ) -> str | None:
        if not suppressions or job_created is None:
            return None
        for entry in suppressions:
            stamp = parse_time(entry.get("timestamp"))
            if entry.get("reason") == USER_SUPPRESSED and stamp is not None and stamp < job_created:
                return "already suppressed"
        return None


class UnsuppressSink(SuppressionSink):
    """`object: suppression`, `behavior: unsuppress` (lifts USER_SUPPRESSED only)."""

    BEHAVIOR: ClassVar[str] = "unsuppress"
    OPERATION: ClassVar[str] = "bulk_unsuppress_profiles"
    JOB_TYPE: ClassVar[str] = "profile-suppression-bulk-delete-job"
    JOB_KIND: ClassVar[JobKind] = UNSUPPRESS_JOB
    # An email that stays suppressed for another reason is not skipped by Klaviyo when its
    # USER_SUPPRESSED is lifted: only its profile tells.
    READS_BACK: ClassVar[bool] = True

    def unchanged_because(
        self, suppressions: list[dict[str, Any]] | None, job_created: datetime | None
    ) -> str | None:
        if suppressions is None:
            return "Klaviyo has no profile with this email"
        reasons = _reasons(suppressions)
        if not reasons:
            return None
        if reasons == [USER_SUPPRESSED]:
            return "Klaviyo kept its USER_SUPPRESSED suppression"
        others = ", ".join(reason for reason in reasons if reason != USER_SUPPRESSED)
        return f"still suppressed for {others} (unsuppress lifts only USER_SUPPRESSED)"
