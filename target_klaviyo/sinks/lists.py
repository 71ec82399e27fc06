"""Lists: list membership — insert, delete, mirror. Consent is never changed.

- `insert`: every profile is upserted by the bulk import job with `relationships.lists`, so one
  job both upserts and adds to the list.
- `delete`: Klaviyo removes members by profile id only, so each chunk's identities are resolved
  to ids and removed (`klaviyo/list_members.py`). An identity Klaviyo does not know is no
  member: the record is `unchanged`.
- `mirror`: like insert, and the ledger remembers the members this target added, with the pass
  that last saw them. After a full pass of the stream (an ACTIVATE_VERSION message, or the end
  of the stream with `mirror_on: end_of_stream`), tracked members the pass did not see are
  removed as for delete, unless they are more than `mirror_max_removal_ratio` of the tracked
  members: then nothing is removed and the summary says why.

skip_unchanged state is kept per (list, identity) rather than per stream, so that a member
removed by a delete stream or a mirror pass is added again when it comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, ClassVar

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.klaviyo.list_members import remove_members
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.profile import ProfileMapper, ProfileRecords
from target_klaviyo.mapping.values import encoded_size
from target_klaviyo.records.item import Item, Mapped, mapped
from target_klaviyo.sinks.base import KlaviyoSink
from target_klaviyo.sinks.profiles import ProfileUpsertSink

MIRROR_WINDOW = 1_000  # missing members resolved and removed at a time


class ListSink(KlaviyoSink):
    """What every list sink shares: its list, and membership kept per list."""

    OBJECT: ClassVar[str] = "list"
    KEEPS_IDENTIFIERS: ClassVar[bool] = True  # members are tracked by them

    def prepare(self) -> None:
        super().prepare()
        self.list_id: str = self.run.resolved_ids[self.mapping.pattern]
        self.label = (
            f"{self.mapping.list_name!r} ({self.list_id})"
            if self.mapping.list_name
            else self.list_id
        )

    def unchanged_namespace(self) -> str:
        # Membership of this list, whichever stream adds to it.
        return "\x00list\x00" + self.list_id

    def forget_members(self, keys: Sequence[str]) -> None:
        """Members that are no longer on the list: not tracked for mirror, and not skipped as
        unchanged when a later record adds them again."""
        ledger = self.run.ledger
        if ledger is None or not keys:
            return
        ledger.untrack_members(self.list_id, keys)
        self.unchanged.forget_keys(keys)


class ListInsertSink(ListSink, ProfileUpsertSink):
    """`object: list`, `behavior: insert` — upsert the profiles and add them to the list."""

    BEHAVIOR: ClassVar[str] = "insert"

    def list_relationships(self) -> list[str]:
        return [self.list_id]


class ListDeleteSink(ListSink):
    """`object: list`, `behavior: delete` — remove the profiles from the list."""

    BEHAVIOR: ClassVar[str] = "delete"
    MAX_ITEMS: ClassVar[int] = 1_000  # records per chunk: one removal call each
    SKIPS_UNCHANGED: ClassVar[bool] = False  # the list may have changed since: always resolve

    def prepare(self) -> None:
        super().prepare()
        self.mapper = ProfileMapper(
            self.mapping,
            list(self.schema.get("properties", {})),
            self.run.settings.default_phone_region,
        )

    def map_record(self, record: dict[str, Any]) -> Mapped:
        identity, warnings = self.mapper.identity(record)
        identifiers = identity.as_attributes()
        return mapped(
            (identity.key(), identifiers, identifiers, encoded_size(identifiers), warnings, None)
        )

    def send(self, items: list[Item]) -> None:
        outcomes = self.outcomes
        removal = remove_members(
            self.run.client, self.list_id, [item.identifiers for item in items]
        )
        failure = removal.lookup_failure
        if failure is not None:
            if failure.exhausted:
                outcomes.hold(items, failure.describe())
            else:
                outcomes.reject_all(items, failure)
            return
        unknown = [items[i] for i in removal.unknown]
        outcomes.mark_unchanged(unknown)
        self.forget_members([item.key for item in unknown])
        for positions, result in removal.failed:
            batch = [items[i] for i in positions]
            if result.exhausted:
                outcomes.hold(batch, result.describe())
            else:
                outcomes.reject_all(batch, result)
        removed = [items[i] for i in removal.removed]
        outcomes.mark_loaded(removed)
        self.forget_members([item.key for item in removed])


class ListMirrorSink(ListInsertSink):
    """`object: list`, `behavior: mirror` — insert, then remove what a full pass did not see."""

    BEHAVIOR: ClassVar[str] = "mirror"

    def prepare(self) -> None:
        super().prepare()
        ledger = self.run.ledger
        self._pass = ledger.current_pass(self.list_id) if ledger is not None else 1
        self._pass_start = 0  # input records read before this pass began
        # A dry run's ledger is read-only: the members seen in its pass are kept here.
        self._dry_seen: set[str] = set()
        self._dry_lock = threading.Lock()

    def setup(self) -> None:
        super().setup()
        # Every outcome of a record of this pass marks its member as seen.
        self.outcomes.on_settled = self._track_items

    def record_mapper(self) -> ProfileRecords | None:
        # `map_record` below adds to the profile mapping only for a record it rejects, and a
        # record the mapping process rejects comes back to be mapped here.
        return self.profile_records

    def map_record(self, record: dict[str, Any]) -> Mapped:
        try:
            return super().map_record(record)
        except Rejection:
            # A record of this pass that cannot be sent still names a member of the source:
            # the pass must not remove that member.
            try:
                identity, _ = self.mapper.identity(record)
            except Rejection:
                pass
            else:
                self._track([(identity.key(), identity.as_attributes())])
            raise

    @property
    def _pass_records(self) -> int:
        """Input records since the last completed pass (records replayed from hold are not
        input: they are read before it)."""
        return self.dispatch.seq - self.outcomes.replayed - self._pass_start

    def _track(self, members: Iterable[tuple[str, dict[str, Any]]]) -> None:
        ledger = self.run.ledger
        if ledger is None:
            return
        if ledger.read_only:
            keys = [key for key, _ in members]
            with self._dry_lock:
                self._dry_seen.update(keys)
            return
        ledger.track_members(self.list_id, self._pass, members)

    def _track_items(self, items: Sequence[Item]) -> None:
        # Rows of a job held from the spool carry no identifiers: their job's acceptance
        # tracked them already.
        self._track((item.key, dict(item.identifiers)) for item in items if item.identifiers)

    def job_accepted(self, submitting: Any, items: list[Item], result: ApiResult) -> None:
        # The job's rows are seen by this pass now: a job that ends without errors settles
        # them without their records in memory (and any other outcome tracks them again).
        self._track_items(items)
        super().job_accepted(submitting, items, result)

    # -- passes ---------------------------------------------------------------------------

    def activate_version(self, new_version: int) -> None:
        if self.mapping.mirror_on != "activate_version":
            self.logger.debug(
                "ACTIVATE_VERSION %s: this mirror completes its pass at the end of the stream",
                new_version,
            )
            return
        if not self._pass_records:
            # The tap's start-of-sync marker: this pass has not begun yet.
            self.logger.debug(
                "ACTIVATE_VERSION %s before any record of this pass: ignored", new_version
            )
            return
        self.wait_idle()
        self.complete_pass(f"ACTIVATE_VERSION {new_version}")

    def finish_stream(self) -> None:
        super().finish_stream()
        if self.mapping.mirror_on != "end_of_stream":
            return
        if not self._pass_records:
            self.logger.info(
                "mirror of list %s: the stream sent no records; no pass to complete", self.label
            )
            return
        self.complete_pass("end of stream")

    def complete_pass(self, why: str) -> None:
        """Remove tracked members this pass did not see (within the guard), then start the
        next pass."""
        self._pass_start = self.dispatch.seq - self.outcomes.replayed
        ledger = self.run.ledger
        if ledger is None:
            return
        if ledger.current_pass(self.list_id) != self._pass:
            # Another sink of this stream (a schema change) completed this pass already.
            self._pass = ledger.current_pass(self.list_id)
            return
        if ledger.read_only:
            with self._dry_lock:
                missing = sum(
                    key not in self._dry_seen for page in self._missing_pages() for key, _ in page
                )
                self._dry_seen.clear()
        else:
            missing = ledger.count_not_seen(self.list_id, self._pass)
        tracked = ledger.member_count(self.list_id)
        self.logger.info(
            "mirror of list %s: pass %d complete (%s); %d of %d tracked members not seen",
            self.label,
            self._pass,
            why,
            missing,
            tracked,
        )
        if missing:
            ratio = missing / tracked if tracked else 1.0
            limit = self.mapping.mirror_max_removal_ratio
            if ratio > limit:
                message = (
                    f"mirror of list {self.label}: {missing} of {tracked} tracked members "
                    f"({ratio:.0%}) missing from this pass, over mirror_max_removal_ratio "
                    f"{limit:g}; nothing removed"
                )
                self.logger.warning("%s", message)
                self.run.stats.note(message)
            elif ledger.read_only:
                message = (
                    f"mirror of list {self.label} (dry run): {missing} tracked members "
                    "missing from this pass would be removed"
                )
                self.logger.info("%s", message)
                self.run.stats.note(message)
            else:
                self.remove_missing()
        if not ledger.read_only:
            ledger.next_pass(self.list_id)
            self._pass += 1

    def _missing_pages(self) -> Iterator[list[tuple[str, dict[str, Any]]]]:
        """Tracked members not seen in this pass, a window at a time (bounded memory)."""
        ledger = self.run.ledger
        assert ledger is not None
        after = ""
        while True:
            page = ledger.members_not_seen(
                self.list_id, self._pass, after=after, limit=MIRROR_WINDOW
            )
            if not page:
                return
            yield page
            after = page[-1][0]

    def remove_missing(self) -> None:
        """Resolve and remove members not seen in this pass; untrack what left the list."""
        removed = 0
        gone = 0
        failures: list[str] = []
        for window in self._missing_pages():
            removal = remove_members(
                self.run.client, self.list_id, [identity for _, identity in window]
            )
            if removal.lookup_failure is not None:
                failures.append(removal.lookup_failure.describe())
                break
            # Unknown to Klaviyo: not a member any more (the profile was deleted).
            self.forget_members([window[i][0] for i in removal.unknown])
            gone += len(removal.unknown)
            failures.extend(result.describe() for _, result in removal.failed)
            self.forget_members([window[i][0] for i in removal.removed])
            removed += len(removal.removed)
        message = f"mirror of list {self.label}: removed {removed} members not in this pass"
        if gone:
            message += f"; {gone} more no longer exist in Klaviyo"
        if failures:
            message += (
                f"; removal failed ({failures[0]}), the rest stay tracked and are retried "
                "after the next pass"
            )
            self.logger.warning("%s", message)
        else:
            self.logger.info("%s", message)
        self.run.stats.note(message)
