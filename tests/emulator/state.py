"""The emulated Klaviyo account (``Store``): profiles, lists, events, suppressions, bulk jobs,
privacy deletions, the catalog (``catalog.py``) and custom objects data sources."""

from __future__ import annotations

import collections
import functools
import itertools
import json
import random
import re
import string
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import msgspec

from .catalog import PLURALS as CATALOG_PLURALS
from .catalog import Catalog
from .catalog import job_type as catalog_job_type
from .rules import (
    UNSUPPORTED_REGION,
    check_phone,
    consent_entries,
    has_identifier,
    iso,
    parse_datetime,
)

# Identifiers Klaviyo keeps unique per account (one profile per email, phone number or
# external_id), in the order they are matched.
INDEXED = ("email", "phone_number", "external_id", "_kx", "anonymous_id")
# Klaviyo: lists and subscriptions: the suppressions a subscribe removes (UNSUBSCRIBE is the
# consent it replaces).
LIFTED_BY_SUBSCRIBE = frozenset({"USER_SUPPRESSED", "SPAM_COMPLAINT"})
STANDARD_FIELDS = (
    "email",
    "phone_number",
    "external_id",
    "anonymous_id",
    "_kx",
    "first_name",
    "last_name",
    "organization",
    "locale",
    "title",
    "image",
)
LOCATION_FIELDS = (
    "address1",
    "address2",
    "city",
    "country",
    "latitude",
    "longitude",
    "region",
    "zip",
    "timezone",
    "ip",
)
# For membership tests, once per attribute of every profile written.
_INDEXED_SET = frozenset(INDEXED)
_STANDARD_SET = frozenset(STANDARD_FIELDS)
# Fields rendered in profile responses (the spec's profile response attributes).
RESPONSE_FIELDS = tuple(f for f in STANDARD_FIELDS if f not in ("_kx", "anonymous_id"))

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Every 10-bit value as two Crockford digits: an id is made by table lookups, not arithmetic
# per digit (one is made per profile and per event).
_DIGIT_PAIRS = tuple(high + low for high in _CROCKFORD for low in _CROCKFORD)
_id_lock = threading.Lock()
_id_counter = itertools.count()


# A UTC time to the second as iso() renders it (``2024-05-01T12:00:00+00:00``).
_IN_KLAVIYO_FORM = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\+00:00\Z")


def new_ulid() -> str:
    """A 26-character ULID-like id, increasing in creation order.

    Klaviyo profile and job ids look like ``01GDDKASAP8TKDDA2GRZDSVP4H``.
    """
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        counter = next(_id_counter) & ((1 << 80) - 1)
    # 26 Crockford base32 digits: 10 for the milliseconds (48 bits), 16 for the counter (80),
    # of which only the last 4 change from one id to the next.
    pairs = _DIGIT_PAIRS
    return (
        _millis_digits(millis)
        + _counter_high_digits(counter >> 20)
        + pairs[(counter >> 10) & 1023]
        + pairs[counter & 1023]
    )


# The leading digits of ids are the same for thousands of ids in a row (a bulk job makes
# thousands a millisecond): made once, not per id.
@functools.lru_cache(maxsize=8)
def _millis_digits(millis: int) -> str:
    return "".join([_DIGIT_PAIRS[(millis >> shift) & 1023] for shift in (40, 30, 20, 10, 0)])


@functools.lru_cache(maxsize=8)
def _counter_high_digits(high: int) -> str:
    """The first 12 of the counter's 16 digits, from its bits above the lowest 20."""
    return "".join([_DIGIT_PAIRS[(high >> shift) & 1023] for shift in (50, 40, 30, 20, 10, 0)])


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


class ProfileConflictError(Exception):
    """Klaviyo: profiles API: the payload's identifiers belong to different existing profiles."""

    def __init__(self, duplicate_profile_id: str) -> None:
        super().__init__(duplicate_profile_id)
        self.duplicate_profile_id = duplicate_profile_id


class UnknownProfileError(Exception):
    def __init__(self, profile_id: str) -> None:
        super().__init__(profile_id)
        self.profile_id = profile_id


def _default_subscriptions() -> dict[str, Any]:
    return {
        "email": {"marketing": {"consent": "NEVER_SUBSCRIBED"}},
        "sms": {
            "marketing": {"consent": "NEVER_SUBSCRIBED"},
            "transactional": {"consent": "NEVER_SUBSCRIBED"},
        },
    }


@dataclass
class Profile:
    id: str
    created: str
    updated: str
    fields: dict[str, Any] = field(default_factory=dict)
    location: dict[str, Any] = field(default_factory=dict)
    properties: dict[str, Any] = field(default_factory=dict)
    # Email marketing suppressions other than UNSUBSCRIBE (which is the consent UNSUBSCRIBED):
    # {"reason", "timestamp"}, one per reason (Klaviyo: profile suppressions).
    suppressions: list[dict[str, str]] = field(default_factory=list)
    last_event_date: str | None = None
    # Consent by channel, made (as _default_subscriptions) when first asked for: six dicts a
    # profile, which most profiles (a bulk import's million) never need.
    _subscriptions: dict[str, Any] | None = None

    @property
    def subscriptions(self) -> dict[str, Any]:
        if self._subscriptions is None:
            self._subscriptions = _default_subscriptions()
        return self._subscriptions

    def dump(self, lists: list[str]) -> dict[str, Any]:
        attributes = {name: self.fields.get(name) for name in STANDARD_FIELDS}
        attributes["location"] = {name: self.location.get(name) for name in LOCATION_FIELDS}
        attributes.update(
            created=self.created, updated=self.updated, last_event_date=self.last_event_date
        )
        return {
            "id": self.id,
            "attributes": attributes,
            "properties": dict(self.properties),
            "subscriptions": _copy(self.subscriptions),
            "suppressions": _copy(self.suppressions),
            "lists": lists,
        }


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


@dataclass
class KlaviyoList:
    id: str
    name: str
    opt_in_process: str
    created: str
    updated: str
    # profile id -> joined_group_at. Klaviyo: bulk profile import: re-adding keeps the same
    # joined_group_at.
    members: dict[str, str] = field(default_factory=dict)
    # Append-only slots (None after removal) so cursors stay valid while members change.
    slots: list[str | None] = field(default_factory=list)
    _slot_of: dict[str, int] = field(default_factory=dict)

    def add(self, profile_id: str, joined: str) -> bool:
        if profile_id in self.members:
            return False
        self.members[profile_id] = joined
        self._slot_of[profile_id] = len(self.slots)
        self.slots.append(profile_id)
        return True

    def remove(self, profile_id: str) -> bool:
        if profile_id not in self.members:
            return False
        del self.members[profile_id]
        self.slots[self._slot_of.pop(profile_id)] = None
        return True

    def scan(self, start: int) -> Iterator[tuple[int, str]]:
        for position in range(start, len(self.slots)):
            member = self.slots[position]
            if member is not None:
                yield position, member


@dataclass
class Event:
    id: str
    metric: str
    profile_id: str
    time: str
    properties: dict[str, Any]
    value: Any
    value_currency: str | None
    unique_id: str | None
    backfill: bool
    received: str

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "metric": self.metric,
            "profile_id": self.profile_id,
            "time": self.time,
            "properties": self.properties,
            "value": self.value,
            "value_currency": self.value_currency,
            "unique_id": self.unique_id,
            "backfill": self.backfill,
            "received": self.received,
        }


@dataclass(kw_only=True)
class Job:
    """An asynchronous bulk job: queued -> processing -> complete (or cancelled), its rows
    applied in row order by a background worker (work.py).

    Klaviyo: bulk profile import: jobs are processed asynchronously; the same lifecycle and
    counts appear on every bulk job of Klaviyo's spec (suppressions, catalogs).
    """

    id: str
    created_at: str
    rows: list[Any]
    # Klaviyo: bulk profile import: queued | processing | complete | cancelled
    status: str = "queued"
    completed_count: int = 0
    failed_count: int = 0
    started_at: str | None = None
    completed_at: str | None = None
    expires_at: str | None = None  # Klaviyo: bulk profile import: expiry is UNVERIFIED; left null
    errors: list[dict[str, Any]] = field(default_factory=list)
    cancel: bool = False
    total_count: int = field(init=False)

    # Which background lane runs it when jobs are not under job_latency_s ("jobs" or "writes").
    lane = "jobs"
    # Whether its processing takes time in proportion to its rows (False: applied at once).
    paced = True
    # Under job_latency_s: rows applied as time passes (False: all at the end of its latency).
    gradual = True

    def __post_init__(self) -> None:
        self.total_count = len(self.rows)

    @property
    def in_progress(self) -> bool:
        return self.status in ("queued", "processing")

    def row(self, index: int) -> Any:
        return self.rows[index]

    def apply_row(self, store: Store, index: int, row: Any, stamp: str) -> None:
        """Apply one row (the store's lock is held)."""
        raise NotImplementedError

    def ended(self, store: Store) -> None:
        """What the account does when the job ends (the store's lock is held): nothing, but
        for catalog jobs, which stop counting towards the jobs in progress."""


@dataclass(kw_only=True)
class ImportJob(Job):
    """A bulk profile import job (Klaviyo: bulk profile import)."""

    # Each row as its JSON text (bytes or msgspec.Raw), decoded when it is applied: a job waiting
    # or in progress holds about its request's size, not the parsed rows (up to 10,000 a job).
    resolved_ids: list[str]
    profile_ids: list[str] = field(default_factory=list)

    def row(self, index: int) -> dict[str, Any]:
        # Each row is an object (the request's body rules read each one's attributes): decoded,
        # it is a new dict, which no one else holds.
        raw = self.rows[index]
        try:
            row: dict[str, Any] = msgspec.json.decode(raw)
        except msgspec.DecodeError:
            # What msgspec refuses but json takes (integers beyond 64 bits; see bodies.py).
            row = json.loads(bytes(raw))
        return row

    def apply_row(self, store: Store, index: int, row: Any, stamp: str) -> None:
        store.apply_import_row(self, index, row, stamp)

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "completed_at": self.completed_at,
            "total_count": self.total_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            "lists": list(self.resolved_ids),
            "profile_ids": list(self.profile_ids),
            "errors": _copy(self.errors),
        }


# Klaviyo's OpenAPI spec: the reasons of EmailMarketingSuppression.
SUPPRESSION_REASONS = (
    "HARD_BOUNCE",
    "INVALID_EMAIL",
    "SPAM_COMPLAINT",
    "UNSUBSCRIBE",
    "USER_SUPPRESSED",
)
SUPPRESS_JOB = "profile-suppression-bulk-create-job"
UNSUPPRESS_JOB = "profile-suppression-bulk-delete-job"


@dataclass(kw_only=True)
class SuppressionJob(Job):
    """A bulk suppress or unsuppress job (Klaviyo: profile suppressions). Its rows are the
    emails to (un)suppress, None for a member of the job's list without an email."""

    type: str  # SUPPRESS_JOB | UNSUPPRESS_JOB
    list_id: str | None = None
    segment_id: str | None = None
    # Klaviyo's OpenAPI spec: "The total number of profiles that have been skipped as part of
    # the job"; the emulator's completed_count + skipped_count reach total_count.
    skipped_count: int = 0

    def apply_row(self, store: Store, index: int, row: Any, stamp: str) -> None:
        if self.type == SUPPRESS_JOB:
            store.suppress_row(self, row, stamp)
        else:
            store.unsuppress_row(self, row, stamp)

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "total_count": self.total_count,
            "completed_count": self.completed_count,
            "skipped_count": self.skipped_count,
            "list_id": self.list_id,
            "segment_id": self.segment_id,
        }


@dataclass
class DataSource:
    """A custom objects data source and the records ingested into it (Klaviyo: custom
    objects)."""

    id: str
    title: str
    visibility: str
    description: str
    namespace: str
    position: int
    # Klaviyo: custom objects: records are JSON documents with no schema and no key at the data
    # source (an object type's source mapping picks them apart later): kept in arrival order.
    records: list[dict[str, Any]] = field(default_factory=list)

    def dump(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "visibility": self.visibility,
            "description": self.description,
            "namespace": self.namespace,
            "records": _copy(self.records),
        }


@dataclass(kw_only=True)
class DeletionJob(Job):
    """A privacy deletion request (Klaviyo: data privacy): one row, the identifier; applied at
    once on the writes lane, or all at the end of ``job_latency_s``."""

    identifier: tuple[str, str]  # ("id" | "email" | "phone_number", value)
    deleted_profile_ids: list[str] = field(default_factory=list)

    lane = "writes"  # after the events and subscriptions sent before it
    paced = False
    gradual = False

    def apply_row(self, store: Store, index: int, row: Any, stamp: str) -> None:
        store.delete_matching(self, stamp)
        self.completed_count += 1

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "identifier": {self.identifier[0]: self.identifier[1]},
            "status": self.status,
            "requested_at": self.created_at,
            "completed_at": self.completed_at,
            "deleted_profile_ids": list(self.deleted_profile_ids),
        }


@dataclass(kw_only=True)
class CatalogJob(Job):
    """A catalog bulk create, update or delete job of items, variants or categories
    (Klaviyo: catalogs API). Its rows are the request's resource objects."""

    kind: str  # catalog.ITEM | VARIANT | CATEGORY
    action: str  # create | update | delete
    # Klaviyo's OpenAPI spec: relationships of the job: "IDs of the created catalog items" (of
    # the updated / deleted ones): the rows applied without error so far.
    resource_ids: list[str] = field(default_factory=list)

    @property
    def type(self) -> str:
        return catalog_job_type(self.kind, self.action)

    def apply_row(self, store: Store, index: int, row: Any, stamp: str) -> None:
        store.catalog.apply(self, index, row, stamp)

    def ended(self, store: Store) -> None:
        store.catalog.open_jobs.discard(self.id)

    def dump(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "status": self.status,
            "created_at": self.created_at,
            "completed_at": self.completed_at,
            "total_count": self.total_count,
            "completed_count": self.completed_count,
            "failed_count": self.failed_count,
            CATALOG_PLURALS[self.kind]: list(self.resource_ids),
            "errors": _copy(self.errors),
        }


def without_nulls(attributes: dict[str, Any]) -> dict[str, Any]:
    """Profile attributes without the nulls in them: standard fields, ``location`` and its
    fields, ``properties`` and custom properties sent as null are dropped.

    A new dict; ``location`` and ``properties`` are copied only when they hold a null (bulk
    import rows seldom do), else shared with ``attributes``."""
    kept = {name: value for name, value in attributes.items() if value is not None}
    for name in ("location", "properties"):
        value = kept.get(name)
        if isinstance(value, dict) and None in value.values():
            kept[name] = {k: v for k, v in value.items() if v is not None}
    return kept


class Store:
    """All account state. Every public method takes ``self.lock``."""

    def __init__(self, supported_regions: frozenset[str], default_opt_in: str) -> None:
        self.lock = threading.RLock()
        self.supported_regions = supported_regions
        self.default_opt_in = default_opt_in
        self.clear()

    def clear(self) -> None:
        with self.lock:
            self.profiles: dict[str, Profile] = {}
            # Profile ids in creation order; a deleted profile leaves None (cursors stay valid).
            self.profile_order: list[str | None] = []
            self.profile_position: dict[str, int] = {}
            self.index: dict[str, dict[str, str]] = {name: {} for name in INDEXED}
            self.lists: dict[str, KlaviyoList] = {}
            self.events: list[Event] = []
            self.event_keys: set[tuple[str, str, str]] = set()
            self.jobs: dict[str, ImportJob] = {}
            # The other bulk jobs (suppressions, catalogs) by JSON:API job type, then id, in
            # creation order.
            self.bulk_jobs: dict[str, dict[str, Job]] = collections.defaultdict(dict)
            # Items, variants, categories and the catalog jobs in progress.
            self.catalog = Catalog()
            # Custom objects data sources by id, and their ids in creation order (None where one
            # was deleted, so cursors stay valid).
            self.data_sources: dict[str, DataSource] = {}
            self.data_source_order: list[str | None] = []
            # Privacy deletion requests in the order received (Klaviyo: data privacy).
            self.deletions: list[DeletionJob] = []
            # Data Klaviyo accepted but did not store, with no error to the client
            # (Klaviyo: bulk profile import: invalid phones in bulk import are silently dropped).
            self.silent_drops: list[dict[str, Any]] = []
            # Klaviyo: events API: later duplicates are dropped silently (first write wins).
            self.duplicate_events: list[dict[str, Any]] = []

    # -- profiles -----------------------------------------------------------------------------

    def match(self, profile_id: str | None, attributes: dict[str, Any]) -> list[Profile]:
        """Distinct existing profiles the payload's identifiers point at, in match order."""
        found: list[Profile] = []
        if profile_id:
            profile = self.profiles.get(profile_id)
            if profile is None:
                raise UnknownProfileError(profile_id)
            found.append(profile)
        for name in INDEXED:
            value = attributes.get(name)
            if isinstance(value, str):
                owner = self.index[name].get(value)
                if owner is not None and all(p.id != owner for p in found):
                    found.append(self.profiles[owner])
        return found

    def upsert(
        self,
        attributes: dict[str, Any],
        meta: dict[str, Any] | None = None,
        profile_id: str | None = None,
        *,
        keep_on_conflict: bool = False,
        stamp: str | None = None,
        ignore_nulls: bool = False,
    ) -> tuple[Profile, bool, list[str]]:
        """Create or update a profile. Returns (profile, created, identifiers not applied).

        Klaviyo: profiles API: identifiers that belong to two different profiles raise
        ``ProfileConflictError`` (the 409 rule), unless ``keep_on_conflict``: then the first
        matched profile is updated and the identifiers owned by another profile are left out.
        """
        with self.lock:
            matched = self.match(profile_id, attributes)
            dropped: list[str] = []
            if len(matched) > 1:
                if not keep_on_conflict:
                    raise ProfileConflictError(matched[1].id)
                primary = matched[0]
                attributes = dict(attributes)
                for name in INDEXED:
                    value = attributes.get(name)
                    if isinstance(value, str) and self.index[name].get(value, primary.id) != (
                        primary.id
                    ):
                        del attributes[name]
                        dropped.append(name)
                matched = [primary]
            stamp = stamp or iso(now_utc())
            created = not matched
            if created:
                profile = Profile(id=new_ulid(), created=stamp, updated=stamp)
                self.profiles[profile.id] = profile
                self.profile_position[profile.id] = len(self.profile_order)
                self.profile_order.append(profile.id)
            else:
                profile = matched[0]
            # ignore_nulls (bulk import): a field sent as null is left as it is, not cleared.
            self._apply(profile, without_nulls(attributes) if ignore_nulls else attributes, meta)
            profile.updated = stamp
            return profile, created, dropped

    def _apply(
        self, profile: Profile, attributes: dict[str, Any], meta: dict[str, Any] | None
    ) -> None:
        # Klaviyo: profiles API: null clears a field, an absent field is left unchanged.
        for name, value in attributes.items():
            if name == "properties":
                if value is None:
                    profile.properties.clear()
                else:
                    # Whether a null custom property removes the key is UNVERIFIED (§2.1);
                    # it is stored as null here. Removal goes through patch_properties.unset.
                    profile.properties.update(value)
            elif name == "location":
                if value is None:
                    profile.location.clear()
                else:
                    for key, item in value.items():
                        if item is None:
                            profile.location.pop(key, None)
                        else:
                            profile.location[key] = item
            elif name in _INDEXED_SET:
                index = self.index[name]
                old = profile.fields.get(name)
                if old is not None and index.get(old) == profile.id:
                    del index[old]
                if value is None:
                    profile.fields.pop(name, None)
                else:
                    profile.fields[name] = value
                    index[value] = profile.id
            elif name in _STANDARD_SET:
                if value is None:
                    profile.fields.pop(name, None)
                else:
                    profile.fields[name] = value
        if not meta:
            return
        patch = meta.get("patch_properties") or {}
        # Klaviyo: profiles API: unset (a string or a list) removes keys; append / unappend add or
        # remove values of array properties.
        unset = patch.get("unset")
        for key in [unset] if isinstance(unset, str) else unset or []:
            profile.properties.pop(key, None)
        for key, value in (patch.get("append") or {}).items():
            current = profile.properties.get(key)
            items = (
                list(current) if isinstance(current, list) else [] if current is None else [current]
            )
            items.extend(value if isinstance(value, list) else [value])
            profile.properties[key] = items
        for key, value in (patch.get("unappend") or {}).items():
            current = profile.properties.get(key)
            if isinstance(current, list):
                gone = value if isinstance(value, list) else [value]
                profile.properties[key] = [v for v in current if v not in gone]

    def find_by(self, name: str, value: str) -> Profile | None:
        if name == "id":
            return self.profiles.get(value)
        owner = self.index[name].get(value)
        return self.profiles[owner] if owner else None

    def lists_of(self) -> dict[str, list[str]]:
        memberships: dict[str, list[str]] = collections.defaultdict(list)
        for klaviyo_list in self.lists.values():
            for member in klaviyo_list.members:
                memberships[member].append(klaviyo_list.id)
        return memberships

    # -- lists --------------------------------------------------------------------------------

    def create_list(self, name: str, opt_in_process: str | None) -> KlaviyoList:
        with self.lock:
            while True:
                list_id = "".join(random.choices(string.ascii_letters + string.digits, k=6))
                if list_id not in self.lists:
                    break
            stamp = iso(now_utc())
            created = KlaviyoList(
                id=list_id,
                name=name,
                # Klaviyo: lists and subscriptions: the account default applies when omitted.
                opt_in_process=opt_in_process or self.default_opt_in,
                created=stamp,
                updated=stamp,
            )
            self.lists[list_id] = created
            return created

    # -- asynchronous work --------------------------------------------------------------------

    def import_error(
        self, job: ImportJob, code: str, title: str, detail: str, pointer: str, row: dict[str, Any]
    ) -> None:
        job.errors.append(
            {
                "id": str(uuid.uuid4()),
                "code": code,
                "title": title,
                "detail": detail,
                "source": {"pointer": pointer},
                "original_payload": _copy(row.get("attributes") or {}),
            }
        )
        job.failed_count += 1

    def apply_import_row(
        self, job: ImportJob, index: int, row: dict[str, Any], stamp: str | None = None
    ) -> None:
        """Apply one bulk-import row while its job is processing (Klaviyo: bulk profile import)."""
        base = f"/data/attributes/profiles/data/{index}"
        attributes = row["attributes"]  # not changed: upsert applies a copy without its nulls
        phone = attributes.get("phone_number")
        if isinstance(phone, str):
            check = check_phone(phone)
            if not check.ok:
                # Klaviyo: bulk profile import: an invalid phone in a bulk import is silently
                # dropped;
                # the profile is imported without it and no import error is recorded.
                attributes = dict(attributes)
                del attributes["phone_number"]
                self.silent_drops.append(
                    {
                        "operation": "bulk_import_profiles",
                        "job_id": job.id,
                        "row": index,
                        "field": "phone_number",
                        "value": phone,
                        "reason": check.detail,
                    }
                )
            elif check.region not in self.supported_regions:
                # Klaviyo: profile identifiers: observed per-row error for a region the account
                # can't use.
                self.import_error(
                    job,
                    "invalid",
                    "Invalid input.",
                    UNSUPPORTED_REGION,
                    f"{base}/attributes/phone_number",
                    row,
                )
                return
        if not row.get("id") and not has_identifier(attributes, INDEXED):
            self.import_error(
                job,
                "invalid",
                "Invalid input.",
                "A profile requires at least one identifier (email, phone_number, external_id).",
                f"{base}/attributes",
                row,
            )
            return
        try:
            stamp = stamp or iso(now_utc())
            # Klaviyo's Bulk Import Profiles guide: the bulk import "does not support setting
            # fields to null to clear them. Only fields explicitly provided with non-null values
            # will be updated" (clearing goes through profile-import or Update Profile);
            # meta.patch_properties.unset still removes custom properties.
            # https://developers.klaviyo.com/en/docs/use_klaviyos_bulk_profile_import_api
            profile, _, _ = self.upsert(
                attributes, row.get("meta"), row.get("id"), stamp=stamp, ignore_nulls=True
            )
        except ProfileConflictError:
            # Klaviyo: profiles API: identifiers belonging to two profiles; the row is not applied.
            self.import_error(
                job,
                "duplicate_profile",
                "Conflict.",
                "A profile already exists with one of these identifiers.",
                f"{base}/attributes",
                row,
            )
            return
        except UnknownProfileError as unknown:
            self.import_error(
                job,
                "invalid",
                "Invalid input.",
                f"Profile with id '{unknown.profile_id}' does not exist.",
                f"{base}/id",
                row,
            )
            return
        for list_id in job.resolved_ids:
            # Klaviyo: bulk profile import: profiles join the job's lists; consent is unchanged.
            klaviyo_list = self.lists.get(list_id)
            if klaviyo_list is not None:
                klaviyo_list.add(profile.id, stamp)
        job.profile_ids.append(profile.id)
        job.completed_count += 1

    def apply_events(self, entries: list[dict[str, Any]], received: str) -> None:
        """Entries: ``{"profile": resource, "events": [event attributes], "backfill": bool}``."""
        stamp = iso(now_utc())  # timestamps are to the second: one for the whole batch
        for entry in entries:
            resource = entry["profile"]
            attributes = dict(resource.get("attributes") or {})
            meta = resource.get("meta") or attributes.pop("meta", None)
            try:
                profile, _, dropped = self.upsert(
                    attributes, meta, resource.get("id"), keep_on_conflict=True, stamp=stamp
                )
            except UnknownProfileError as unknown:
                self.silent_drops.append(
                    {
                        "operation": entry["operation"],
                        "reason": "unknown profile id",
                        "value": unknown.profile_id,
                        "events": len(entry["events"]),
                    }
                )
                continue
            if dropped:
                # Emulator choice (Klaviyo gives no feedback for accepted events): on the
                # §2.4 conflict the event goes to the first matched profile and the identifiers
                # owned by another profile are not applied; recorded so tests can see it.
                self.silent_drops.append(
                    {
                        "operation": entry["operation"],
                        "reason": "identifier conflict",
                        "profile_id": profile.id,
                        "fields": dropped,
                    }
                )
            for event in entry["events"]:
                self._record_event(profile, event, entry.get("backfill", False), received)

    def _record_event(
        self, profile: Profile, event: dict[str, Any], backfill: bool, received: str
    ) -> None:
        metric = event["metric"]["data"]["attributes"]["name"]
        raw_time = event.get("time")
        # Klaviyo: events API: time is truncated to the second and defaults to the receive time.
        if isinstance(raw_time, str) and _IN_KLAVIYO_FORM.match(raw_time):
            stamp = raw_time  # already what iso() would render
        else:
            moment = parse_datetime(raw_time) if isinstance(raw_time, str) else None
            stamp = iso(moment.replace(microsecond=0)) if moment else received
        unique_id = event.get("unique_id")
        # Klaviyo: events API: dedupe on (profile, metric, unique_id), or the time to the second
        # without a unique_id; first write wins, later duplicates are dropped silently.
        key = (profile.id, metric, unique_id if unique_id is not None else f"time:{stamp}")
        if key in self.event_keys:
            self.duplicate_events.append(
                {"profile_id": profile.id, "metric": metric, "unique_id": unique_id, "time": stamp}
            )
            return
        self.event_keys.add(key)
        self.events.append(
            Event(
                id=new_ulid(),
                metric=metric,
                profile_id=profile.id,
                time=stamp,
                properties=_copy(event.get("properties") or {}),
                value=event.get("value"),
                value_currency=event.get("value_currency"),
                unique_id=unique_id,
                backfill=bool(event.get("backfill") or backfill),
                received=received,
            )
        )
        if profile.last_event_date is None or stamp > profile.last_event_date:
            profile.last_event_date = stamp

    def _subscription_profile(self, row: dict[str, Any], operation: str) -> Profile | None:
        attributes = row["attributes"]
        identifiers = {
            name: attributes[name]
            for name in ("email", "phone_number")
            if isinstance(attributes.get(name), str)
        }
        try:
            profile, _, dropped = self.upsert(
                identifiers, None, row.get("id"), keep_on_conflict=True
            )
        except UnknownProfileError as unknown:
            self.silent_drops.append(
                {
                    "operation": operation,
                    "reason": "unknown profile id",
                    "value": unknown.profile_id,
                }
            )
            return None
        if dropped:
            self.silent_drops.append(
                {
                    "operation": operation,
                    "reason": "identifier conflict",
                    "profile_id": profile.id,
                    "fields": dropped,
                }
            )
        return profile

    def apply_subscribe(self, payload: dict[str, Any], received: str) -> None:
        list_id = payload["list_id"]
        historical = payload["historical_import"]
        klaviyo_list = self.lists.get(list_id) if list_id else None
        # Klaviyo: lists and subscriptions: a double opt-in list sends a confirmation first (skipped
        # by
        # historical_import); the email consent stays pending, modelled as unchanged.
        double = (
            klaviyo_list is not None
            and klaviyo_list.opt_in_process == "double_opt_in"
            and not historical
        )
        for row in payload["rows"]:
            profile = self._subscription_profile(row, "bulk_subscribe_profiles")
            if profile is None:
                continue
            joined = False
            for channel, kind, leaf in consent_entries(row["attributes"]["subscriptions"]):
                current = profile.subscriptions.setdefault(channel, {})
                if channel == "email" and double:
                    current.setdefault(kind, {"consent": "NEVER_SUBSCRIBED"})[
                        "pending_double_opt_in"
                    ] = True
                    continue
                current[kind] = {
                    "consent": "SUBSCRIBED",
                    "consented_at": leaf.get("consented_at") or received,
                    "method": "API",
                    "method_detail": payload["custom_source"],
                    "historical_import": historical,
                    "last_updated": received,
                    "list_id": list_id,
                    # Klaviyo: lists and subscriptions: subscribing removes UNSUBSCRIBE /
                    # SPAM_REPORT /
                    # USER_SUPPRESSED suppressions.
                    "suppression": [],
                }
                if channel == "email":
                    # ... UNSUBSCRIBE is the consent replaced here; the spec's reason for a spam
                    # report is SPAM_COMPLAINT. HARD_BOUNCE and INVALID_EMAIL stay.
                    profile.suppressions = [
                        entry
                        for entry in profile.suppressions
                        if entry["reason"] not in LIFTED_BY_SUBSCRIBE
                    ]
                joined = True
            if klaviyo_list is not None and joined:
                klaviyo_list.add(profile.id, received)

    def apply_unsubscribe(self, payload: dict[str, Any], received: str) -> None:
        list_id = payload["list_id"]
        klaviyo_list = self.lists.get(list_id) if list_id else None
        for row in payload["rows"]:
            # Emulator choice: an unknown email/phone gets a profile that records the
            # unsubscription (so a later subscribe can be checked against it).
            profile = self._subscription_profile(row, "bulk_unsubscribe_profiles")
            if profile is None:
                continue
            subscriptions = row["attributes"]["subscriptions"]
            for channel, params in subscriptions.items():
                if not isinstance(params, dict):
                    continue
                current = profile.subscriptions.setdefault(channel, {})
                for kind, leaf in params.items():
                    if isinstance(leaf, dict) and leaf.get("consent") == "UNSUBSCRIBED":
                        # Klaviyo: lists and subscriptions: "Profiles not in the specified list will
                        # be
                        # globally unsubscribed"; modelled as consent UNSUBSCRIBED (global) ...
                        current[kind] = {
                            "consent": "UNSUBSCRIBED",
                            "method": "API",
                            "last_updated": received,
                            "list_id": list_id,
                        }
            if klaviyo_list is not None:
                # ... and removal from the given list.
                klaviyo_list.remove(profile.id)

    # -- suppressions (Klaviyo: profile suppressions) -----------------------------------------

    def suppress_row(self, job: SuppressionJob, email: str | None, stamp: str) -> None:
        """Suppress one email of a bulk suppress job."""
        if email is None:
            job.skipped_count += 1  # a list member without an email: nothing to suppress
            return
        # Klaviyo's OpenAPI spec (bulk_suppress_profiles' request body): "If a profile is not
        # found with the given email, one will be created and immediately suppressed."
        profile = self.find_by("email", email)
        if profile is None:
            profile, _, _ = self.upsert({"email": email}, stamp=stamp)
        elif any(entry["reason"] == "USER_SUPPRESSED" for entry in profile.suppressions):
            job.skipped_count += 1  # Emulator choice: already suppressed, nothing changes
            return
        # Klaviyo: profile suppressions: a manual suppression; consent and lists are untouched.
        profile.suppressions.append({"reason": "USER_SUPPRESSED", "timestamp": stamp})
        profile.updated = stamp
        job.completed_count += 1

    def unsuppress_row(self, job: SuppressionJob, email: str | None, stamp: str) -> None:
        """Unsuppress one email of a bulk unsuppress job."""
        profile = self.find_by("email", email) if email is not None else None
        # Klaviyo: profile suppressions: only USER_SUPPRESSED suppressions are removed;
        # unsubscribed profiles and other reasons (HARD_BOUNCE, INVALID_EMAIL, ...) stay, and an
        # email without a profile is left alone ("no action will be taken"). Klaviyo reports
        # no outcome per email: both count as skipped.
        if profile is None or not any(
            entry["reason"] == "USER_SUPPRESSED" for entry in profile.suppressions
        ):
            job.skipped_count += 1
            return
        profile.suppressions = [
            entry for entry in profile.suppressions if entry["reason"] != "USER_SUPPRESSED"
        ]
        profile.updated = stamp
        job.completed_count += 1

    def seed_suppression(self, email: str, reason: str, stamp: str) -> Profile:
        """Give the profile of ``email`` (created when missing) a suppression of ``reason``."""
        if reason not in SUPPRESSION_REASONS:
            raise ValueError(f"unknown reason {reason!r}; known: {', '.join(SUPPRESSION_REASONS)}")
        with self.lock:
            profile, _, _ = self.upsert({"email": email}, stamp=stamp)
            if reason == "UNSUBSCRIBE":
                # The emulator's UNSUBSCRIBE suppression is the email consent UNSUBSCRIBED.
                email_consent = profile.subscriptions.setdefault("email", {})
                email_consent["marketing"] = {"consent": "UNSUBSCRIBED", "last_updated": stamp}
            else:
                profile.suppressions = [
                    entry for entry in profile.suppressions if entry["reason"] != reason
                ]
                profile.suppressions.append({"reason": reason, "timestamp": stamp})
            return profile

    # -- privacy deletion (Klaviyo: data privacy) ---------------------------------------------

    def delete_matching(self, job: DeletionJob, stamp: str) -> None:
        """Delete the profile the request's identifier matches, with everything about it."""
        field_name, value = job.identifier
        profile = self.find_by(field_name, value)
        if profile is None:
            return  # Emulator choice: accepted (202) and nothing deleted; recorded in dump()
        pid = profile.id
        del self.profiles[pid]
        self.profile_order[self.profile_position.pop(pid)] = None
        for name in INDEXED:
            owned = profile.fields.get(name)
            if owned is not None and self.index[name].get(owned) == pid:
                del self.index[name][owned]
        # Klaviyo: data privacy: the profile is erased: its events, list memberships and
        # consent (kept on the profile) go with it.
        for klaviyo_list in self.lists.values():
            klaviyo_list.remove(pid)
        if any(event.profile_id == pid for event in self.events):
            self.events = [event for event in self.events if event.profile_id != pid]
            self.event_keys = {key for key in self.event_keys if key[0] != pid}
        job.deleted_profile_ids.append(pid)

    # -- custom objects (Klaviyo: custom objects) ---------------------------------------------

    def apply_records(self, payload: dict[str, Any], received: str) -> None:
        """Keep the records of one bulk create request in their data source."""
        source = self.data_sources.get(payload["data_source_id"])
        records = payload["records"]
        if source is None:
            # Deleted between the request (204) and its processing: nothing to keep them in.
            self.silent_drops.append(
                {
                    "operation": "bulk_create_data_source_records",
                    "reason": "data source deleted",
                    "value": payload["data_source_id"],
                    "records": len(records),
                }
            )
            return
        source.records.extend(records)

    def unsubscribed_at(
        self, row_attributes: dict[str, Any], channel: str, kind: str
    ) -> str | None:
        """When the profile behind a subscribe row last unsubscribed from channel/kind."""
        with self.lock:
            for name in ("email", "phone_number"):
                value = row_attributes.get(name)
                profile = self.find_by(name, value) if isinstance(value, str) else None
                if profile is not None:
                    leaf = profile.subscriptions.get(channel, {}).get(kind, {})
                    if leaf.get("consent") == "UNSUBSCRIBED":
                        stamp = leaf.get("last_updated")
                        return stamp if isinstance(stamp, str) else None
            return None

    def dump(self) -> dict[str, Any]:
        with self.lock:
            memberships = self.lists_of()
            return {
                "profiles": [
                    self.profiles[pid].dump(memberships.get(pid, []))
                    for pid in self.profile_order
                    if pid is not None
                ],
                "lists": {
                    list_id: {
                        "name": item.name,
                        "opt_in_process": item.opt_in_process,
                        "created": item.created,
                        "members": list(item.members),
                    }
                    for list_id, item in self.lists.items()
                },
                "events": [event.dump() for event in self.events],
                "jobs": {job_id: job.dump() for job_id, job in self.jobs.items()},
                "suppression_jobs": {
                    job_id: job.dump()
                    for kind in (SUPPRESS_JOB, UNSUPPRESS_JOB)
                    for job_id, job in self.bulk_jobs.get(kind, {}).items()
                    if isinstance(job, SuppressionJob)
                },
                "deletions": [deletion.dump() for deletion in self.deletions],
                "catalog": self.catalog.dump(),
                "data_sources": {
                    source_id: source.dump() for source_id, source in self.data_sources.items()
                },
                "catalog_jobs": {
                    job_id: job.dump()
                    for jobs in self.bulk_jobs.values()
                    for job_id, job in jobs.items()
                    if isinstance(job, CatalogJob)
                },
                "silent_drops": _copy(self.silent_drops),
                "duplicate_events": _copy(self.duplicate_events),
            }
