"""Lists: insert, delete and mirror list membership.

- `insert` (default): every profile is upserted by the bulk import job with
  `relationships.lists`, so one job both upserts and adds to the list (klaviyo-api.md §3.1).
  Consent is left alone.
- `delete`: Klaviyo removes members by profile id only (klaviyo-api.md §4.1), so each chunk's
  identities are resolved to ids with `GET /api/profiles?filter=any(...)` (email first, then
  phone_number, then external_id for what is still unresolved; ≤100 values a filter), then
  removed with `DELETE /api/lists/{id}/relationships/profiles` (≤1,000 ids a call). An identity
  Klaviyo does not know is not a member: the record is `unchanged`. Consent is left alone.
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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.klaviyo.filters import any_of
from target_klaviyo.ledger.store import sent_keys
from target_klaviyo.mapping.identity import Rejection
from target_klaviyo.mapping.values import encode, encoded_size
from target_klaviyo.sinks.base import Item, Mapped
from target_klaviyo.sinks.profiles import ProfileSink

IDENTIFIERS = ("email", "phone_number", "external_id")
FILTER_MAX_VALUES = 100  # values in one any(...) filter (klaviyo-api.md §2.3)
# Keep each lookup URL well under common URL length limits (long emails, many values).
FILTER_MAX_CHARS = 6_000
PAGE_SIZE = 100  # get_profiles maximum (klaviyo-api.md §2.3)
REMOVE_MAX_IDS = 1_000  # remove_profiles_from_list (klaviyo-api.md §4.1)
DELETE_MAX_ITEMS = 1_000  # records per delete chunk: one removal call each
MIRROR_WINDOW = 1_000  # missing members resolved and removed at a time


def _normal(field: str, value: Any) -> str:
    text = str(value)
    return text.lower() if field == "email" else text


class ListSink(ProfileSink):
    """`object: list` — membership of one list (`list_id` or `list_name`)."""

    OBJECT: ClassVar[str] = "list"
    behavior: str = "insert"

    def prepare(self) -> None:
        super().prepare()
        self.list_id: str = self.run.list_ids[self.mapping.pattern]
        self.behavior = self.mapping.behavior
        self.label = (
            f"{self.mapping.list_name!r} ({self.list_id})"
            if self.mapping.list_name
            else self.list_id
        )
        if self.behavior == "delete":
            # Deletes are always resolved and sent: the list may have changed since.
            self.skip_unchanged = False
        ledger = self.run.ledger
        self._pass = ledger.current_pass(self.list_id) if ledger is not None else 1
        self._pass_start = 0  # input records read before this pass began
        # A dry run's ledger is read-only: the members seen in its pass are kept here.
        self._dry_seen: set[str] = set()
        self._dry_lock = threading.Lock()

    @property
    def MAX_ITEMS(self) -> int:  # type: ignore[override]  # noqa: N802
        return DELETE_MAX_ITEMS if self.behavior == "delete" else ProfileSink.MAX_ITEMS

    @property
    def mirror(self) -> bool:
        return self.behavior == "mirror"

    # -- mapping --------------------------------------------------------------------------

    def map_record(self, record: dict[str, Any]) -> Mapped:
        if self.behavior == "delete":
            identity, warnings = self.mapper.identity(record)
            identifiers = identity.as_attributes()
            return (
                identity.key(),
                identifiers,
                identifiers,
                encoded_size(identifiers),
                warnings,
                None,
            )
        try:
            return super().map_record(record)
        except Rejection:
            if self.mirror:
                # A record of this pass that cannot be sent still names a member of the
                # source: the pass must not remove that member.
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
        return self._seq - self._replayed - self._pass_start

    def sent_keys(self) -> Callable[[str], int]:
        # Membership of this list, whichever stream adds to it.
        return sent_keys("\x00list\x00" + self.list_id, self.OBJECT)

    # -- insert and mirror: one import job upserts and adds -------------------------------

    def list_relationships(self) -> list[str]:
        return [self.list_id]

    # Mirror: every outcome of a record of this pass marks its member as seen.

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
        if self.mirror and items:
            self._track((item.key, dict(item.identifiers)) for item in items)

    def loaded(self, items: Sequence[Item]) -> None:
        super().loaded(items)
        self._track_items(items)

    def unchanged(self, items: Sequence[Item]) -> None:
        super().unchanged(items)
        self._track_items(items)

    def hold(self, items: Sequence[Item], reason: str) -> None:
        super().hold(items, reason)
        self._track_items(items)

    def rejected(self, item: Item, reason: str) -> None:
        super().rejected(item, reason)
        self._track_items([item])

    # -- delete ---------------------------------------------------------------------------

    def send(self, items: list[Item]) -> None:
        if self.behavior == "delete":
            self.delete_members(items)
        else:
            super().send(items)

    def delete_members(self, items: list[Item]) -> None:
        found, failure = self.resolve_ids([item.identifiers for item in items])
        if failure is not None:
            if failure.exhausted:
                self.hold(items, failure.describe())
            else:
                self.reject_all(items, failure)
            return
        unknown = [item for index, item in enumerate(items) if index not in found]
        self.unchanged(unknown)
        self._forget([item.key for item in unknown])
        by_id: dict[str, list[Item]] = {}
        for index, profile_id in found.items():
            by_id.setdefault(profile_id, []).append(items[index])
        ids = list(by_id)
        for start in range(0, len(ids), REMOVE_MAX_IDS):
            batch = ids[start : start + REMOVE_MAX_IDS]
            batch_items = [item for profile_id in batch for item in by_id[profile_id]]
            result = self.remove_ids(batch)
            if result.exhausted:
                self.hold(batch_items, result.describe())
            elif not result.ok:
                self.reject_all(batch_items, result)
            else:
                self.loaded(batch_items)
                self._forget([item.key for item in batch_items])

    def _forget(self, keys: Sequence[str]) -> None:
        """Members that are no longer on the list: not tracked for mirror, and not skipped as
        unchanged when a later record adds them again."""
        ledger = self.run.ledger
        if ledger is None or not keys:
            return
        ledger.untrack_members(self.list_id, keys)
        ledger.forget_sent([self.sent_key_of(key) for key in keys])

    # -- Klaviyo calls --------------------------------------------------------------------

    def resolve_ids(
        self, identities: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[int, str], ApiResult | None]:
        """The Klaviyo profile id of each identity Klaviyo knows, by position.

        Looked up by email, then phone_number, then external_id for those still unresolved.
        Returns the first failed lookup, if any (nothing is removed then).
        """
        found: dict[int, str] = {}
        for field in IDENTIFIERS:
            wanted: dict[str, list[int]] = {}
            for position, identity in enumerate(identities):
                value = identity.get(field)
                if position not in found and value is not None:
                    wanted.setdefault(_normal(field, value), []).append(position)
            for values in self._filter_batches(field, list(wanted)):
                failure = self._lookup(field, values, wanted, found)
                if failure is not None:
                    return found, failure
        return found, None

    @staticmethod
    def _filter_batches(field: str, values: list[str]) -> Iterable[list[str]]:
        batch: list[str] = []
        chars = 0
        for value in values:
            size = len(quote(any_of(field, [value]), safe=""))
            if batch and (len(batch) >= FILTER_MAX_VALUES or chars + size > FILTER_MAX_CHARS):
                yield batch
                batch, chars = [], 0
            batch.append(value)
            chars += size
        if batch:
            yield batch

    def _lookup(
        self,
        field: str,
        values: list[str],
        wanted: Mapping[str, list[int]],
        found: dict[int, str],
    ) -> ApiResult | None:
        params: dict[str, Any] | None = {
            "filter": any_of(field, values),
            "page[size]": PAGE_SIZE,
            "fields[profile]": ",".join(IDENTIFIERS),
        }
        url: str | None = None
        while True:
            result = self.run.client.request("get_profiles", params=params, url=url)
            if not result.ok:
                return result
            body = result.body if isinstance(result.body, dict) else {}
            for profile in body.get("data") or []:
                value = (profile.get("attributes") or {}).get(field)
                if value is None or profile.get("id") is None:
                    continue
                for position in wanted.get(_normal(field, value), ()):
                    found.setdefault(position, str(profile["id"]))
            url = (body.get("links") or {}).get("next")
            params = None
            if not url:
                return None

    def remove_ids(self, ids: Sequence[str]) -> ApiResult:
        body = encode({"data": [{"type": "profile", "id": profile_id} for profile_id in ids]})
        return self.run.client.request(
            "remove_profiles_from_list", body=body, path_params={"id": self.list_id}
        )

    # -- mirror passes --------------------------------------------------------------------

    def activate_version(self, new_version: int) -> None:
        if not self.mirror or self.mapping.mirror_on != "activate_version":
            self.logger.debug(
                "ACTIVATE_VERSION %s: nothing to do for this list stream", new_version
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
        if not self.mirror or self.mapping.mirror_on != "end_of_stream":
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
        self._pass_start = self._seq - self._replayed
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
            found, failure = self.resolve_ids([identity for _, identity in window])
            if failure is not None:
                failures.append(failure.describe())
                break
            # Unknown to Klaviyo: not a member any more (the profile was deleted).
            unknown = [key for index, (key, _) in enumerate(window) if index not in found]
            self._forget(unknown)
            gone += len(unknown)
            keys_of: dict[str, list[str]] = {}
            for index, profile_id in found.items():
                keys_of.setdefault(profile_id, []).append(window[index][0])
            ids = list(keys_of)
            for id_start in range(0, len(ids), REMOVE_MAX_IDS):
                batch = ids[id_start : id_start + REMOVE_MAX_IDS]
                result = self.remove_ids(batch)
                if not result.ok:
                    failures.append(result.describe())
                    continue
                self._forget([key for profile_id in batch for key in keys_of[profile_id]])
                removed += len(batch)
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
