"""Settings: the config JSON schema (`--about`, Meltano) and the typed Settings parsed from it.

Every setting is described once, in `CONFIG_SCHEMA`, with its default and bounds; `Settings`
reads the config through it, so a default lives in one place. Whatever JSON schema cannot say
(a region libphonenumber knows, a usable URL, the stream mappings) is checked here too, before
any input is read, one line per problem.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import phonenumbers

from target_klaviyo.klaviyo.client import ConfigError, check_base_url
from target_klaviyo.streams import (
    STREAMS_SCHEMA,
    MappingConfigError,
    StreamMappings,
    parse_stream_mappings,
)

DEFAULT_REVISION = "2026-07-15"
# Klaviyo revisions: a date, and `.pre` for a beta (https://developers.klaviyo.com/en/docs/api_versioning_and_deprecation_policy).
REVISION_PATTERN = r"^\d{4}-\d{2}-\d{2}(\.pre)?$"


def _setting(
    kind: str | list[str],
    title: str,
    description: str,
    *,
    default: Any = None,
    secret: bool = False,
    **bounds: Any,
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, "title": title, "description": description}
    if default is not None:
        schema["default"] = default
    if secret:
        schema.update(secret=True, writeOnly=True)  # as singer-sdk marks secrets
    schema.update(bounds)
    return schema


CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["private_api_key", "streams"],
    "properties": {
        "private_api_key": _setting(
            "string",
            "Private API Key",
            "Klaviyo private API key (starts with `pk_`), sent as "
            "`Authorization: Klaviyo-API-Key <key>`. Never logged or written to disk.",
            secret=True,
            minLength=1,
        ),
        "public_api_key": _setting(
            "string",
            "Public API Key",
            "The account's public API key (site ID). When given, it is checked against "
            "`GET /api/accounts` at start-up, which catches a private key from the wrong account.",
        ),
        "api_base_url": _setting(
            "string",
            "API Base URL",
            "Klaviyo API base URL. Plain `http://` is refused unless the host is loopback "
            "(127.0.0.0/8, ::1, localhost).",
            default="https://a.klaviyo.com",
            pattern=r"^https?://[^/\s]+(/[^\s]*)?$",
        ),
        "revision": _setting(
            "string",
            "API Revision",
            "Klaviyo API revision, sent as the `revision` header.",
            default=DEFAULT_REVISION,
            pattern=REVISION_PATTERN,
        ),
        "default_phone_region": _setting(
            "string",
            "Default Phone Region",
            "ISO 3166-1 alpha-2 region (e.g. `US`) for phone numbers written without a "
            "`+country` prefix. Without it such numbers are rejected.",
            pattern=r"^[A-Za-z]{2}$",
        ),
        "state_dir": _setting(
            "string",
            "State Directory",
            "Directory of the local ledger (SQLite): records on hold, jobs in flight, "
            "unchanged-record hashes, mirror membership, and the last run's summary "
            "(`last_run.json`).",
            default=".target-klaviyo",
            minLength=1,
        ),
        "rejects_path": _setting(
            "string",
            "Rejects File",
            "JSON Lines file that rejected records are appended to (mode 0600). "
            "Default: `<state_dir>/rejects.jsonl`.",
            minLength=1,
        ),
        "max_retries": _setting(
            "integer",
            "Max Retries",
            "Retries of one request on 429, 5xx or connection errors before its records go "
            "on hold (they are replayed on the next run).",
            default=5,
            minimum=0,
            maximum=100,
        ),
        "skip_unchanged": _setting(
            "boolean",
            "Skip Unchanged Records",
            "Do not resend a record whose outgoing payload is identical to the last one "
            "Klaviyo accepted.",
            default=True,
        ),
        "dry_run": _setting(
            "boolean",
            "Dry Run",
            "Validate, map and plan every request and write the plan to "
            "`<state_dir>/dry_run.jsonl`; send nothing and leave the ledger untouched.",
            default=False,
        ),
        "streams": {
            **STREAMS_SCHEMA,
            "title": "Stream Mappings",
            "description": "Stream name (or a glob such as `public-*`, or `*`) -> how its "
            "records load into Klaviyo: `object` (profile, list, event, subscription, suppression, "
            "deletion, `catalog_item`, `catalog_variant`, `catalog_category`, `custom_object`), "
            "`behavior`, `fields`, `properties`, `exclude` and the object's own keys. "
            "See the README.",
        },
        "ledger_url": _setting(
            "string",
            "Ledger URL",
            "Where the ledger lives. Unset: SQLite under `state_dir`. "
            "`postgresql://user[:password]@host[:port]/db`: the same ledger in PostgreSQL, for "
            "workers whose disk does not survive the run (Meltano's system database can host "
            "it). The password is never logged.",
            secret=True,
            pattern=r"^postgres(ql)?://",
        ),
        "ledger_schema": _setting(
            "string",
            "Ledger Schema",
            "PostgreSQL schema holding the ledger's tables (with `ledger_url`).",
            default="target_klaviyo",
            pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$",
        ),
        "lock_timeout_s": _setting(
            "integer",
            "Lock Timeout (Seconds)",
            "How long a run waits for a stream that another live run is loading before it "
            "exits 1 naming the stream and that run (0: do not wait).",
            default=0,
            minimum=0,
        ),
        "stop_grace_s": _setting(
            "integer",
            "Stop Grace Period (Seconds)",
            "After SIGTERM or SIGINT, how long requests already sent may take to finish; "
            "records read but not settled by then go on hold for the next run.",
            default=30,
            minimum=0,
        ),
        "request_timeout_s": _setting(
            "integer",
            "Request Timeout (Seconds)",
            "Tuning: timeout of one HTTP request (connect and read), in seconds.",
            default=60,
            minimum=1,
        ),
        "job_timeout_s": _setting(
            "integer",
            "Job Timeout (Seconds)",
            "Tuning: how long to wait for one bulk import job before its records go on hold.",
            default=3600,
            minimum=1,
        ),
        "max_jobs_in_flight": _setting(
            "integer",
            "Max Jobs in Flight",
            "Tuning: how many bulk jobs one stream may have open at Klaviyo (submitted, not yet "
            "complete) before it waits for one to end. The default does not bind at Klaviyo's "
            "rate limits; an open job's records wait on disk, and about 0.1 MB of it (its "
            "records' key hashes) stays in memory.",
            default=1000,
            minimum=1,
        ),
        "progress_interval_s": _setting(
            "integer",
            "Progress Interval (Seconds)",
            "Tuning: seconds between progress lines on stderr (0 turns them off).",
            default=10,
            minimum=0,
        ),
        # singer-sdk's built-in setting (singer_sdk/helpers/capabilities.py,
        # TARGET_LOAD_METHOD_CONFIG), restated with a title and what it means here.
        "load_method": _setting(
            ["string", "null"],
            "Load Method",
            "singer-sdk's setting, not used by this target: each stream's mapping says how its "
            "records load (`object` and `behavior`; upserts where Klaviyo has them).",
            default="append-only",
            enum=["append-only", "upsert", "overwrite"],
        ),
    },
}

_PROPERTIES: Mapping[str, Mapping[str, Any]] = CONFIG_SCHEMA["properties"]


class SettingsError(ValueError):
    """Settings that cannot be used; `errors` holds one line per problem."""

    def __init__(self, errors: Sequence[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors))


def _default(name: str) -> Any:
    return _PROPERTIES[name].get("default")


@dataclass(frozen=True)
class Settings:
    """The run's settings, typed, with defaults applied (from CONFIG_SCHEMA)."""

    private_api_key: str = field(repr=False)
    streams: StreamMappings
    public_api_key: str | None = None
    api_base_url: str = _default("api_base_url")
    revision: str = _default("revision")
    default_phone_region: str | None = None
    state_dir: Path = Path(_default("state_dir"))
    rejects_path: Path = Path(_default("state_dir")) / "rejects.jsonl"
    max_retries: int = _default("max_retries")
    skip_unchanged: bool = _default("skip_unchanged")
    dry_run: bool = _default("dry_run")
    ledger_url: str | None = field(default=None, repr=False)  # may hold a password
    ledger_schema: str = _default("ledger_schema")
    lock_timeout_s: int = _default("lock_timeout_s")
    stop_grace_s: int = _default("stop_grace_s")
    request_timeout_s: int = _default("request_timeout_s")
    job_timeout_s: int = _default("job_timeout_s")
    max_jobs_in_flight: int = _default("max_jobs_in_flight")
    progress_interval_s: int = _default("progress_interval_s")
    # singer-sdk's own settings that the target reads too.
    add_record_metadata: bool = False
    process_activate_version_messages: bool = True

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """Read the config (already checked against CONFIG_SCHEMA by singer-sdk); raise
        SettingsError listing every problem left."""
        errors: list[str] = []

        def value(name: str) -> Any:
            raw = config.get(name)
            return _default(name) if raw is None else raw

        streams = StreamMappings(())
        try:
            streams = parse_stream_mappings(config.get("streams"))
        except MappingConfigError as exc:
            errors.extend(exc.errors)
        base_url = str(value("api_base_url"))
        try:
            base_url = check_base_url(base_url)
        except ConfigError as exc:
            errors.append(str(exc))
        revision = str(value("revision"))
        if not re.fullmatch(REVISION_PATTERN, revision):
            errors.append(f"revision: {revision!r} is not a Klaviyo API revision (YYYY-MM-DD)")
        region = config.get("default_phone_region")
        if region is not None:
            region = str(region).upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                errors.append(
                    f"default_phone_region: {config['default_phone_region']!r} is not a region "
                    "libphonenumber knows (ISO 3166-1 alpha-2, e.g. US)"
                )
        numbers = {}
        for name in (
            "max_retries",
            "lock_timeout_s",
            "stop_grace_s",
            "request_timeout_s",
            "job_timeout_s",
            "max_jobs_in_flight",
            "progress_interval_s",
        ):
            numbers[name] = _number(name, value(name), errors)
        key = config.get("private_api_key")
        if not isinstance(key, str) or not key.strip():
            errors.append("private_api_key: required (the account's private API key)")
        if errors:
            raise SettingsError(errors)
        state_dir = Path(str(value("state_dir")))
        rejects = config.get("rejects_path")
        return cls(
            private_api_key=str(key),
            streams=streams,
            public_api_key=config.get("public_api_key") or None,
            api_base_url=base_url,
            revision=revision,
            default_phone_region=region,
            state_dir=state_dir,
            rejects_path=Path(str(rejects)) if rejects else state_dir / "rejects.jsonl",
            ledger_url=config.get("ledger_url") or None,
            ledger_schema=str(value("ledger_schema")),
            skip_unchanged=bool(value("skip_unchanged")),
            dry_run=bool(value("dry_run")),
            add_record_metadata=bool(config.get("add_record_metadata", False)),
            process_activate_version_messages=bool(
                config.get("process_activate_version_messages", True)
            ),
            **numbers,
        )


def _number(name: str, raw: Any, errors: list[str]) -> Any:
    """A numeric setting within its schema bounds (also when the config was not validated)."""
    schema = _PROPERTIES[name]
    integer = schema["type"] == "integer"
    if isinstance(raw, bool) or (not isinstance(raw, (int, float)) and not _is_decimal(raw)):
        errors.append(f"{name}: expected {'an integer' if integer else 'a number'}, got {raw!r}")
        return raw
    if integer and raw != int(raw):
        errors.append(f"{name}: expected an integer, got {raw!r}")
        return raw
    low, high = schema.get("minimum"), schema.get("maximum")
    above = schema.get("exclusiveMinimum")
    if (low is not None and raw < low) or (high is not None and raw > high):
        bounds = f"from {low}" + (f" to {high}" if high is not None else " up")
        errors.append(f"{name}: {raw} is out of range ({bounds})")
    elif above is not None and raw <= above:
        errors.append(f"{name}: {raw} must be greater than {above}")
    return int(raw) if integer else float(raw)


def _is_decimal(raw: Any) -> bool:
    return isinstance(raw, Decimal) and raw.is_finite()
