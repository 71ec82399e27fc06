"""HTTP front of the Klaviyo emulator: routing, auth, revision, rate limits, faults, request log,
the endpoints target-klaviyo uses, and a small control API under ``/_emulator/``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import msgspec

from . import rules
from .faults import Fault, FaultBook, make_fault
from .filters import DATETIME, STRING, Condition, FilterError, parse_filter
from .ratelimit import Decision, RateLimiter
from .resources import (
    JSONAPI,
    ApiError,
    account_resource,
    error_document,
    import_error_resource,
    job_resource,
    list_resource,
    profile_resource,
)
from .schemas import Operation, load_operations
from .state import (
    ImportJob,
    InFlight,
    Profile,
    ProfileConflictError,
    Store,
    UnknownProfileError,
    Work,
    Worker,
    iso,
    new_ulid,
    now_utc,
)

PRIVATE_KEY = "pk_emulator_0123456789abcdef"
PUBLIC_KEY = "EmU123"
# Queues of background work, each with its own worker thread.
WORK_LANES = ("jobs", "writes")
# Bodies above this are refused without being read (far above every Klaviyo limit).
HARD_BODY_CAP = 64_000_000
# klaviyo-api.md §0: revision header format YYYY-MM-DD[.suffix].
REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?$")
# klaviyo-api.md §0: all 2024-* revisions are retired (410 or silent fall-forward).
OLDEST_SUPPORTED_REVISION = "2025-01-01"
CONTROL_PREFIX = "/_emulator"
LEGACY_DETAIL = (
    "The v1/v2 APIs were retired on June 30, 2024; use the /api/ JSON:API endpoints. See "
    "https://developers.klaviyo.com/en/docs/migrate_track_identify_and_subscribe_to_our_new_apis"
)
REASONS = {524: "A Timeout Occurred"}

# Rows of bulk bodies: a 400 carries one error per bad row (klaviyo-api.md §3.1).
ROW_PATTERNS: dict[str, re.Pattern[str]] = {
    "bulk_import_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_subscribe_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_unsubscribe_profiles": re.compile(r"^/data/attributes/profiles/data/\d+"),
    "bulk_create_events": re.compile(
        r"^/data/attributes/events-bulk-create/data/\d+(?:/attributes/events/data/\d+)?"
    ),
    "add_profiles_to_list": re.compile(r"^/data/\d+"),
    "remove_profiles_from_list": re.compile(r"^/data/\d+"),
}


@dataclass
class LoggedRequest:
    operation: str  # operationId, or "unknown"
    method: str
    path: str
    status: int  # 0 when the connection was reset or held without a response
    items: int  # profiles / events / ids in the body
    bytes: int  # body length
    started: float  # time.monotonic()
    ended: float
    started_wall: float  # time.time()
    ended_wall: float
    retry_after_violation: bool
    query: str = ""
    key: str = ""  # last four characters of the key used, for telling clients apart
    fault: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reply:
    status: int
    document: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = JSONAPI
    action: str | None = None  # "reset" | "timeout": no response at all


@dataclass
class RequestInfo:
    operation: str = "unknown"
    items: int = 0
    retry_after_violation: bool = False
    key: str = ""
    fault: str | None = None


class ApiResponseError(Exception):
    """An error answer; ``violation`` marks a request our client should never have sent."""

    def __init__(
        self,
        errors: list[ApiError],
        *,
        violation: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(errors[0].detail)
        self.errors = errors
        self.status = errors[0].status
        self.violation = violation
        self.headers = headers or {}


def invalid(
    errors: list[tuple[str, str]], *, violation: bool = True, status: int = 400
) -> ApiResponseError:
    code = "invalid" if status == 400 else "request_too_large"
    return ApiResponseError(
        [ApiError(status, code, detail, pointer=where) for where, detail in errors],
        violation=violation,
    )


def bad_parameter(parameter: str, detail: str) -> ApiResponseError:
    # klaviyo-api.md §7.3: source.parameter for query-parameter errors.
    return ApiResponseError([ApiError(400, "invalid", detail, parameter=parameter)], violation=True)


def not_found(detail: str) -> ApiResponseError:
    return ApiResponseError([ApiError(404, "not_found", detail)])


@dataclass
class Call:
    operation: Operation
    params: dict[str, str]
    query: dict[str, str]
    query_pairs: list[tuple[str, str]]
    headers: Message
    body: Any
    url: str
    key: str


class Emulator:
    """A stateful stand-in for Klaviyo's API on a loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        window_scale: float = 1.0,
        job_delay_s: float = 0.05,
        validate: bool = True,
        throttle: bool = True,
        supported_regions: set[str] | frozenset[str] | None = None,
        default_opt_in: str = "single_opt_in",
        private_key: str = PRIVATE_KEY,
        public_key: str = PUBLIC_KEY,
    ) -> None:
        self.host = host
        self.port = port
        self.window_scale = window_scale
        self.job_delay_s = job_delay_s
        self.validate = validate
        self.private_key = private_key
        self.public_key = public_key
        self.operations = dict(load_operations())
        self.all_scopes = frozenset(
            scope for op in self.operations.values() for scope in op.scopes
        ) | {"accounts:read", "events:read", "subscriptions:read", "lists:read", "profiles:read"}
        regions = (
            rules.DEFAULT_SUPPORTED_REGIONS if supported_regions is None else supported_regions
        )
        self.store = Store(frozenset(regions), default_opt_in)
        self.faults = FaultBook()
        self.limiter = RateLimiter(window_scale, enabled=throttle)
        self._keys: dict[str, frozenset[str]] = {private_key: self.all_scopes}
        self._log_lock = threading.Lock()
        self._log: list[LoggedRequest] = []
        self._violations: list[tuple[str, str, str]] = []
        self._expected_violations = 0
        self._not_before: dict[tuple[str, str], float] = {}
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._workers: dict[str, Worker] = {}  # lane -> its worker, while running
        self.in_flight = InFlight()
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._workers = self._new_workers()
        for worker in self._workers.values():
            worker.start()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="klaviyo-emulator-http",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        self._stop_workers()
        self._workers = {}

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def reset(self) -> None:
        """Forget everything: state, keys added, faults, rate windows, logs and violations."""
        running = bool(self._workers)
        self._stop_workers()
        self._workers = self._new_workers() if running else {}
        self.store.clear()
        self.faults.clear()
        self.limiter.reset()
        with self._log_lock:
            self._keys = {self.private_key: self.all_scopes}
            self._log.clear()
            self._violations.clear()
            self._expected_violations = 0
            self._not_before.clear()
        for worker in self._workers.values():
            worker.start()

    def _new_workers(self) -> dict[str, Worker]:
        # Import jobs run apart from event and subscription writes, as Klaviyo's do: a job does
        # not wait behind the events queued before it.
        return {
            lane: Worker(self.store, self.job_delay_s, self.in_flight, name=lane)
            for lane in WORK_LANES
        }

    def _stop_workers(self) -> None:
        for worker in self._workers.values():
            worker.stop()
        for worker in self._workers.values():
            worker.join(timeout=5)

    # -- test-facing API ----------------------------------------------------------------------

    def add_key(self, key: str, scopes: set[str] | frozenset[str] | list[str]) -> None:
        """Accept another private key with only ``scopes``.

        A write scope implies the matching read scope (Klaviyo's "Full access" per object).
        """
        granted = set(scopes)
        granted |= {s.replace(":write", ":read") for s in granted if s.endswith(":write")}
        with self._log_lock:
            self._keys[key] = frozenset(granted)

    def add_fault(
        self, kind: str, operation: str | None = None, count: int | None = 1, **params: Any
    ) -> dict[str, Any]:
        """Script a failure for the next ``count`` requests matching ``operation``."""
        if operation is not None and operation not in self.operations:
            raise ValueError(f"unknown operation {operation!r}")
        return self.faults.add(make_fault(kind, operation, count, **params)).to_dict()

    def clear_faults(self) -> None:
        self.faults.clear()

    @property
    def request_log(self) -> list[LoggedRequest]:
        with self._log_lock:
            return list(self._log)

    @property
    def violations(self) -> list[tuple[str, str, str]]:
        """(operation, pointer or parameter, detail) of each request-validation failure."""
        with self._log_lock:
            return list(self._violations)

    @property
    def silent_drops(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(item) for item in self.store.silent_drops]

    def expect_violations(self, count: int) -> None:
        """Declare that this test deliberately causes ``count`` more violations."""
        if count < 1:
            raise ValueError("expect_violations needs n >= 1")
        with self._log_lock:
            self._expected_violations += count

    def unexpected_violations(self) -> str | None:
        """A message when the violations recorded differ from those declared, else None."""
        with self._log_lock:
            found, expected = list(self._violations), self._expected_violations
        if len(found) == expected:
            return None
        listing = "\n".join(f"  {op} {where}: {detail}" for op, where, detail in found)
        return (
            f"Klaviyo emulator recorded {len(found)} request violation(s), "
            f"the test expected {expected}:\n{listing or '  (none)'}"
        )

    def dump(self) -> dict[str, Any]:
        return self.store.dump()

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued bulk job, event batch and subscription is applied."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in list(self._workers.values()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.wait_idle(left):
                return False
        return True

    # -- request handling ---------------------------------------------------------------------

    def _route(self, method: str, path: str) -> tuple[Operation, dict[str, str]] | str:
        path_matched = False
        for operation in self.operations.values():
            match = operation.path_regex.match(path)
            if match:
                path_matched = True
                if operation.method == method:
                    return operation, match.groupdict()
        return "method" if path_matched else "path"

    def _record(self, operation: str, failure: ApiResponseError) -> None:
        with self._log_lock:
            for error in failure.errors:
                self._violations.append(
                    (operation, error.pointer or error.parameter or "", error.detail)
                )

    def handle_api(
        self, method: str, path: str, query: str, headers: Message, body: bytes
    ) -> tuple[Reply, RequestInfo]:
        info = RequestInfo()
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # klaviyo-api.md §1: both /api/profiles and /api/profiles/ work
        if _is_legacy(path):
            # klaviyo-api.md §6: v1/v2 (Track/Identify) retired June 30 2024, calls return 410.
            gone = ApiError(410, "gone", LEGACY_DETAIL)
            return Reply(410, error_document([gone])), info
        routed = self._route(method, path)
        if isinstance(routed, str):
            if routed == "method":
                error = ApiError(405, "method_not_allowed", f'Method "{method}" not allowed.')
            else:
                error = ApiError(404, "not_found", f"No endpoint at {path}.")
            return Reply(error.status, error_document([error])), info
        operation, params = routed
        op_id = operation.operation_id
        info.operation = op_id
        key = _api_key(headers.get("Authorization"))
        info.key = (key or "")[-4:]
        info.retry_after_violation = self._early_retry(key or "", op_id)

        fault = self.faults.take(op_id)
        if fault is not None:
            info.fault = fault.kind
            info.items = _count_items(op_id, _loads_quietly(body))
            if fault.kind == "slow":
                self._stopping.wait(float(fault.params["delay_s"]))
            else:
                return self._fault_reply(fault, key or "", op_id), info

        decision: Decision | None = None
        try:
            decision = self._admit(operation, key, headers)
            call = self._call(operation, params, path, query, headers, body, key or "")
            info.items = _count_items(op_id, call.body)
            reply = self._dispatch(call)
        except ApiResponseError as failure:
            if not info.items and body:
                info.items = _count_items(op_id, _loads_quietly(body))
            if failure.violation:
                self._record(op_id, failure)
            reply = Reply(failure.status, error_document(failure.errors), dict(failure.headers))
        except Exception as exc:  # an emulator bug: answer like a server error, loudly
            traceback.print_exc(file=sys.stderr)
            reply = Reply(500, error_document([ApiError(500, "error", f"Emulator error: {exc}")]))
        if decision is not None:
            # klaviyo-api.md §7.2: non-429 responses describe the steady window.
            reply.headers.update(
                {
                    "RateLimit-Limit": str(decision.limit),
                    "RateLimit-Remaining": str(decision.remaining),
                    "RateLimit-Reset": str(max(1, int(-(-decision.reset // 1)))),
                }
            )
        return reply, info

    def _early_retry(self, key: str, operation: str) -> bool:
        now = time.monotonic()
        with self._log_lock:
            not_before = self._not_before.pop((key, operation), None)
        # 1 ms of slack for clock granularity.
        return not_before is not None and now < not_before - 0.001

    def _remember_retry_after(self, key: str, operation: str, seconds: float) -> None:
        with self._log_lock:
            self._not_before[(key, operation)] = time.monotonic() + seconds

    def _fault_reply(self, fault: Fault, key: str, operation: str) -> Reply:
        kind = fault.kind
        if kind == "429":
            retry_after = fault.params.get("retry_after")
            headers: dict[str, str] = {}
            if retry_after is not None:
                seconds = float(retry_after)
                headers["Retry-After"] = str(int(-(-seconds // 1)))
                headers["X-Emulator-Retry-After-Exact"] = f"{seconds:.3f}"
                self._remember_retry_after(key, operation, seconds)
            expected = int(-(-float(retry_after or 0) // 1))
            detail = f"Request was throttled. Expected available in {expected} seconds."
            return Reply(
                429, error_document([ApiError(429, "throttled", detail, pointer="/data/")]), headers
            )
        if kind in ("500", "503"):
            code = "error" if kind == "500" else "service_unavailable"
            status = int(kind)
            return Reply(status, error_document([ApiError(status, code, TITLES_5XX[status])]))
        if kind in ("504", "524", "html403"):
            return _cloudflare_reply(kind)
        if kind == "413":
            return Reply(
                413,
                error_document([ApiError(413, "request_too_large", "Request entity too large.")]),
            )
        if kind == "reset":
            return Reply(0, action="reset")
        if kind == "timeout":
            self._stopping.wait(float(fault.params["delay_s"]))
            return Reply(0, action="timeout")
        raise ValueError(f"unhandled fault {kind}")

    def _admit(self, operation: Operation, key: str | None, headers: Message) -> Decision | None:
        """Auth, scopes, revision and rate limit, in that order."""
        with self._log_lock:
            scopes = self._keys.get(key) if key else None
        if scopes is None:
            # klaviyo-api.md §7.3: bad or missing private key -> 401 authentication_failed.
            raise ApiResponseError(
                [ApiError(401, "authentication_failed", "Incorrect authentication credentials.")]
            )
        missing = sorted(operation.scopes - scopes)
        if missing:
            # klaviyo-api.md §1 / §7.3: a key without the scope -> 403 permission_denied.
            raise ApiResponseError(
                [
                    ApiError(
                        403,
                        "permission_denied",
                        "You do not have permission to perform this action. "
                        f"Missing required scope(s): {', '.join(missing)}.",
                    )
                ]
            )
        revision = headers.get("revision")
        if not revision:
            # klaviyo-api.md §1: the revision header is required.
            raise bad_parameter("revision", "Missing required header: revision.")
        if not REVISION.match(revision):
            raise bad_parameter("revision", f"Invalid revision '{revision}'.")
        if revision < OLDEST_SUPPORTED_REVISION:
            raise ApiResponseError(
                [
                    ApiError(
                        410, "gone", f"Revision {revision} has been retired.", parameter="revision"
                    )
                ]
            )
        if not self.limiter.enabled:
            return None
        decision = self.limiter.acquire(operation.operation_id, operation.rate_limit)
        if not decision.allowed:
            # klaviyo-api.md §7.2: 429 with Retry-After (integer seconds), no RateLimit-* headers.
            self._remember_retry_after(key or "", operation.operation_id, decision.retry_after)
            seconds = decision.retry_after_header
            raise ApiResponseError(
                [
                    ApiError(
                        429,
                        "throttled",
                        f"Request was throttled. Expected available in {seconds} seconds.",
                        pointer="/data/",
                    )
                ],
                headers={
                    "Retry-After": seconds,
                    "X-Emulator-Retry-After-Exact": f"{decision.retry_after:.3f}",
                },
            )
        return decision

    def _call(
        self,
        operation: Operation,
        params: dict[str, str],
        path: str,
        query: str,
        headers: Message,
        raw: bytes,
        key: str,
    ) -> Call:
        pairs = parse_qsl(query, keep_blank_values=True)
        parsed: Any = None
        if operation.request_schema is not None:
            parsed = self._parse_body(operation, headers, raw)
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        return Call(operation, params, dict(reversed(pairs)), pairs, headers, parsed, url, key)

    def _parse_body(self, operation: Operation, headers: Message, raw: bytes) -> Any:
        limit = rules.MAX_BODY_BYTES.get(operation.operation_id)
        if limit is not None and len(raw) > limit:
            # klaviyo-api.md §7.3/§7.4: a payload over the operation's limit -> 413.
            raise invalid(
                [("/data", f"Payload is {len(raw)} bytes; the maximum is {limit} bytes.")],
                status=413,
            )
        content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type not in ("application/vnd.api+json", "application/json"):
            # klaviyo-api.md §1: bodies are application/vnd.api+json (application/json works).
            raise ApiResponseError(
                [
                    ApiError(
                        415,
                        "unsupported_media_type",
                        f'Unsupported media type "{content_type}" in request.',
                    )
                ],
                violation=True,
            )
        if not raw:
            raise invalid([("/data", "A request body is required.")])
        try:
            # msgspec reads a well-formed body several times faster than json; anything it
            # refuses (bad JSON, but also numbers beyond a double or a BOM, which Python's
            # parser takes) gets json's answer, so json decides what is accepted.
            return msgspec.json.decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
            pass
        try:
            # NaN / Infinity are not JSON; Klaviyo's parser refuses them.
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError) as exc:
            raise invalid([("/data", f"JSON parse error - {exc}")]) from exc

    def _dispatch(self, call: Call) -> Reply:
        op_id = call.operation.operation_id
        if call.body is not None:
            errors = self._body_errors(op_id, call)
            if errors:
                # klaviyo-api.md §3.1: all-or-nothing, one error per bad row, nothing applied.
                raise invalid(errors)
        handler: Callable[[Call], Reply] = getattr(self, f"_op_{op_id}")
        try:
            return handler(call)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            if self.validate:
                raise
            raise invalid([("/data", f"Invalid request body: {exc!r}")]) from exc

    def _body_errors(self, op_id: str, call: Call) -> list[tuple[str, str]]:
        """Schema violations, then Klaviyo's rules; bulk bodies get one error per bad row."""
        schema_errors = call.operation.body_errors(call.body) if self.validate else []
        row_pattern = ROW_PATTERNS.get(op_id)
        if schema_errors and row_pattern is None:
            return schema_errors
        try:
            rule_errors = self._rule_errors(op_id, call.body)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            # The rules assume a schema-valid body; without one, report the schema errors.
            rule_errors = [] if schema_errors else [("/data", f"Invalid request body: {exc!r}")]
        if row_pattern is None:
            return rule_errors
        # Rows that broke the schema report that; the other rows report rule violations.
        bad_rows = {m.group(0) for where, _ in schema_errors if (m := row_pattern.match(where))}
        combined = schema_errors + [
            (where, detail)
            for where, detail in rule_errors
            if not ((m := row_pattern.match(where)) and m.group(0) in bad_rows)
        ]
        combined.sort(key=lambda error: _row_numbers(error[0]))
        return _first_per_row(combined, row_pattern)

    def _rule_errors(self, op_id: str, body: Any) -> list[tuple[str, str]]:
        regions = self.store.supported_regions
        now = now_utc()
        checks: dict[str, Callable[[], list[tuple[str, str]]]] = {
            "create_or_update_profile": lambda: rules.profile_import_errors(body, regions),
            "bulk_import_profiles": lambda: rules.bulk_import_errors(body, regions),
            "create_list": lambda: rules.create_list_errors(body),
            "add_profiles_to_list": lambda: rules.list_members_errors(body),
            "remove_profiles_from_list": lambda: rules.list_members_errors(body),
            "create_event": lambda: rules.create_event_errors(body, regions, now),
            "bulk_create_events": lambda: rules.bulk_events_errors(body, regions, now),
            "bulk_subscribe_profiles": lambda: rules.subscribe_errors(body, regions, now),
            "bulk_unsubscribe_profiles": lambda: rules.unsubscribe_errors(body, regions),
        }
        check = checks.get(op_id)
        return check() if check else []

    # -- paging helpers -----------------------------------------------------------------------

    def _page_size(self, call: Call) -> int:
        bounds = call.operation.page_size or {"default": 20, "minimum": 1, "maximum": 100}
        raw = call.query.get("page[size]")
        if raw is None:
            return bounds["default"]
        try:
            size = int(raw)
        except ValueError:
            raise bad_parameter("page[size]", f"'{raw}' is not a valid integer.") from None
        if not bounds["minimum"] <= size <= bounds["maximum"]:
            # The spec's page[size] bounds, e.g. get_lists "Min: 1. Max: 10." (klaviyo-api.md §4.2).
            raise bad_parameter(
                "page[size]",
                f"Page size must be between {bounds['minimum']} and {bounds['maximum']}.",
            )
        return size

    def _cursor(self, call: Call) -> int:
        raw = call.query.get("page[cursor]")
        if raw is None:
            return 0
        try:
            text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
            kind, _, position = text.partition(":")
            if kind != "emu" or not position.isdigit():
                raise ValueError(text)
            return int(position)
        except (ValueError, binascii.Error):
            raise bad_parameter("page[cursor]", f"Invalid cursor '{raw}'.") from None

    def _links(self, call: Call, next_position: int | None) -> dict[str, Any]:
        links: dict[str, Any] = {"self": call.url, "next": None, "prev": None}
        if next_position is not None:
            token = base64.urlsafe_b64encode(f"emu:{next_position}".encode()).decode().rstrip("=")
            pairs = [(k, v) for k, v in call.query_pairs if k != "page[cursor]"]
            pairs.append(("page[cursor]", token))
            path = urlsplit(call.url).path
            links["next"] = f"{self.base_url}{path}?{urlencode(pairs)}"
        return links

    @staticmethod
    def _take(positions: Iterator[tuple[int, Any]], size: int) -> tuple[list[Any], int | None]:
        page: list[Any] = []
        for position, item in positions:
            if len(page) == size:
                return page, position
            page.append(item)
        return page, None

    def _filters(
        self, call: Call, allowed: dict[str, tuple[str, frozenset[str]]]
    ) -> list[Condition]:
        raw = call.query.get("filter")
        if raw is None:
            return []
        try:
            return parse_filter(raw, allowed)
        except FilterError as exc:
            raise bad_parameter("filter", str(exc)) from None

    # -- endpoints ----------------------------------------------------------------------------

    def _op_get_accounts(self, call: Call) -> Reply:
        return Reply(
            200,
            {
                "data": [account_resource(self.public_key, self.base_url)],
                "links": {"self": call.url, "next": None, "prev": None},
            },
        )

    def _op_create_or_update_profile(self, call: Call) -> Reply:
        data = call.body["data"]
        store = self.store
        with store.lock:
            try:
                profile, created, _ = store.upsert(
                    data["attributes"], data.get("meta"), data.get("id")
                )
            except ProfileConflictError as conflict:
                # klaviyo-api.md §2.4: identifiers of two different profiles -> 409.
                raise ApiResponseError(
                    [
                        ApiError(
                            409,
                            "duplicate_profile",
                            "A profile already exists with one of these identifiers.",
                            pointer="/data/attributes",
                            meta={"duplicate_profile_id": conflict.duplicate_profile_id},
                        )
                    ]
                ) from None
            except UnknownProfileError as unknown:
                raise not_found(f"Profile with id '{unknown.profile_id}' does not exist.") from None
            document = {
                "data": self._profile_doc(profile, call),
                "links": {"self": call.url},
            }
        # klaviyo-api.md §2.1: 201 when created, 200 when updated.
        return Reply(201 if created else 200, document)

    def _profile_doc(self, profile: Profile, call: Call) -> dict[str, Any]:
        fields = call.query.get("fields[profile]")
        additional = call.query.get("additional-fields[profile]")
        return profile_resource(
            profile,
            self.base_url,
            fields=set(fields.split(",")) if fields else None,
            additional=set(additional.split(",")) if additional else None,
        )

    PROFILE_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
        # klaviyo-api.md §2.3: filterable fields and operators of get_profiles.
        "id": (STRING, frozenset({"equals", "any"})),
        "email": (STRING, frozenset({"equals", "any"})),
        "phone_number": (STRING, frozenset({"equals", "any"})),
        "external_id": (STRING, frozenset({"equals", "any"})),
        "_kx": (STRING, frozenset({"equals"})),
        "created": (DATETIME, frozenset({"greater-than", "less-than"})),
        "updated": (DATETIME, frozenset({"greater-than", "less-than"})),
    }

    def _op_get_profiles(self, call: Call) -> Reply:
        size = self._page_size(call)
        start = self._cursor(call)
        conditions = self._filters(call, self.PROFILE_FILTERS)
        store = self.store
        with store.lock:
            candidates: list[int] | None = None
            checks: list[Callable[[Profile], bool]] = []
            for condition in conditions:
                if condition.field in ("created", "updated"):
                    checks.append(_time_check(condition))
                    continue
                values = condition.value if isinstance(condition.value, list) else [condition.value]
                found = set()
                for value in values:
                    profile = store.find_by(condition.field, value)
                    if profile is not None:
                        found.add(store.profile_position[profile.id])
                candidates = sorted(found if candidates is None else found & set(candidates))
            order = store.profile_order
            positions = candidates if candidates is not None else range(len(order))

            def scan() -> Iterator[tuple[int, Profile]]:
                for position in positions:
                    if position < start:
                        continue
                    profile = store.profiles[order[position]]
                    if all(check(profile) for check in checks):
                        yield position, profile

            page, next_position = self._take(scan(), size)
            data = [self._profile_doc(profile, call) for profile in page]
        return Reply(200, {"data": data, "links": self._links(call, next_position)})

    def _op_bulk_import_profiles(self, call: Call) -> Reply:
        data = call.body["data"]
        list_ids = [
            item["id"]
            for item in ((data.get("relationships") or {}).get("lists") or {}).get("data", [])
        ]
        store = self.store
        with store.lock:
            self._require_lists(list_ids)
            stamp = iso(now_utc())
            job = ImportJob(
                id=new_ulid(),
                created_at=stamp,
                rows=data["attributes"]["profiles"]["data"],
                list_ids=list_ids,
            )
            if self.faults.take(call.operation.operation_id, job=True) is not None:
                job.cancel = True
            store.jobs[job.id] = job
            document = {"data": job_resource(job, self.base_url), "links": {"self": call.url}}
        self._submit(Work("import", time.monotonic(), None, stamp, job))
        # klaviyo-api.md §3.1: 202 with the job resource, status queued.
        return Reply(202, document)

    def _require_lists(self, list_ids: list[str]) -> None:
        missing = [list_id for list_id in list_ids if list_id not in self.store.lists]
        if missing:
            # klaviyo-api.md §3.1: unknown list id -> 400 /data "List ID … does not exist."
            raise ApiResponseError(
                [
                    ApiError(400, "invalid", f"List ID {list_id} does not exist.", pointer="/data")
                    for list_id in missing
                ]
            )

    def _submit(self, work: Work) -> None:
        worker = self._workers.get("jobs" if work.kind == "import" else "writes")
        if worker is not None:
            worker.submit(work)

    def _job(self, call: Call, name: str) -> ImportJob:
        job = self.store.jobs.get(call.params[name])
        if job is None:
            raise not_found(f"Bulk import job '{call.params[name]}' does not exist.")
        return job

    def _op_get_bulk_import_profiles_job(self, call: Call) -> Reply:
        with self.store.lock:
            job = self._job(call, "job_id")
            return Reply(
                200, {"data": job_resource(job, self.base_url), "links": {"self": call.url}}
            )

    def _op_get_errors_for_bulk_import_profiles_job(self, call: Call) -> Reply:
        size = self._page_size(call)
        start = self._cursor(call)
        with self.store.lock:
            job = self._job(call, "id")
            errors = job.errors
            page, next_position = self._take(
                ((i, errors[i]) for i in range(start, len(errors))), size
            )
            data = [import_error_resource(error) for error in page]
        return Reply(200, {"data": data, "links": self._links(call, next_position)})

    LIST_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
        # klaviyo-api.md §4.2: get_lists filters on name and id (any, equals), created/updated.
        "name": (STRING, frozenset({"equals", "any"})),
        "id": (STRING, frozenset({"equals", "any"})),
        "created": (DATETIME, frozenset({"greater-than"})),
        "updated": (DATETIME, frozenset({"greater-than"})),
    }

    def _op_get_lists(self, call: Call) -> Reply:
        size = self._page_size(call)
        start = self._cursor(call)
        conditions = self._filters(call, self.LIST_FILTERS)
        with self.store.lock:
            lists = list(self.store.lists.values())

            def keep(item: Any) -> bool:
                for condition in conditions:
                    value = getattr(item, condition.field)
                    if condition.operator == "equals" and value != condition.value:
                        return False
                    if condition.operator == "any" and value not in condition.value:
                        return False
                    if condition.operator == "greater-than":
                        stamp = rules.parse_datetime(value)
                        if stamp is None or not stamp > condition.value:
                            return False
                return True

            page, next_position = self._take(
                ((i, lists[i]) for i in range(start, len(lists)) if keep(lists[i])), size
            )
            data = [list_resource(item, self.base_url) for item in page]
        return Reply(200, {"data": data, "links": self._links(call, next_position)})

    def _op_create_list(self, call: Call) -> Reply:
        attributes = call.body["data"]["attributes"]
        # klaviyo-api.md §4.2: names are not checked for uniqueness (UNVERIFIED) -> duplicates
        # are allowed. The 150/day cap is the operation's "daily" rate-limit window.
        created = self.store.create_list(attributes["name"], attributes.get("opt_in_process"))
        return Reply(
            201, {"data": list_resource(created, self.base_url), "links": {"self": call.url}}
        )

    MEMBER_FILTERS: dict[str, tuple[str, frozenset[str]]] = {
        # klaviyo-api.md §4.1: members filter on email, phone_number (any, equals), _kx,
        # joined_group_at.
        "email": (STRING, frozenset({"equals", "any"})),
        "phone_number": (STRING, frozenset({"equals", "any"})),
        "_kx": (STRING, frozenset({"equals"})),
        "joined_group_at": (
            DATETIME,
            frozenset({"greater-or-equal", "greater-than", "less-or-equal", "less-than"}),
        ),
    }

    def _op_get_profile_ids_for_list(self, call: Call) -> Reply:
        size = self._page_size(call)
        start = self._cursor(call)
        conditions = self._filters(call, self.MEMBER_FILTERS)
        store = self.store
        with store.lock:
            klaviyo_list = store.lists.get(call.params["id"])
            if klaviyo_list is None:
                raise not_found(f"List '{call.params['id']}' does not exist.")

            def keep(profile_id: str) -> bool:
                profile = store.profiles[profile_id]
                for condition in conditions:
                    if condition.field == "joined_group_at":
                        joined = rules.parse_datetime(klaviyo_list.members[profile_id])
                        if joined is None or not _compare(
                            condition.operator, joined, condition.value
                        ):
                            return False
                        continue
                    value = profile.fields.get(condition.field)
                    wanted = (
                        condition.value if isinstance(condition.value, list) else [condition.value]
                    )
                    if value not in wanted:
                        return False
                return True

            page, next_position = self._take(
                ((pos, pid) for pos, pid in klaviyo_list.scan(start) if keep(pid)), size
            )
        data = [{"type": "profile", "id": profile_id} for profile_id in page]
        return Reply(200, {"data": data, "links": self._links(call, next_position)})

    def _members_change(self, call: Call, add: bool) -> Reply:
        store = self.store
        ids = [item["id"] for item in call.body["data"]]
        with store.lock:
            klaviyo_list = store.lists.get(call.params["id"])
            if klaviyo_list is None:
                raise not_found(f"List '{call.params['id']}' does not exist.")
            unknown = [(i, pid) for i, pid in enumerate(ids) if pid not in store.profiles]
            if unknown:
                # Emulator choice (UNVERIFIED): an unknown profile id fails the call with 400
                # naming the row, rather than being ignored.
                raise ApiResponseError(
                    [
                        ApiError(
                            400,
                            "invalid",
                            f"Profile with id '{pid}' does not exist.",
                            pointer=f"/data/{i}/id",
                        )
                        for i, pid in unknown
                    ]
                )
            stamp = iso(now_utc())
            for profile_id in ids:
                if add:
                    # klaviyo-api.md §4.1: adding an existing member is idempotent (UNVERIFIED).
                    klaviyo_list.add(profile_id, stamp)
                else:
                    # klaviyo-api.md §4.1: removal does not change consent.
                    klaviyo_list.remove(profile_id)
        return Reply(204)

    def _op_add_profiles_to_list(self, call: Call) -> Reply:
        return self._members_change(call, add=True)

    def _op_remove_profiles_from_list(self, call: Call) -> Reply:
        return self._members_change(call, add=False)

    def _op_create_event(self, call: Call) -> Reply:
        attributes = call.body["data"]["attributes"]
        entry = {
            "operation": "create_event",
            "profile": attributes["profile"]["data"],
            "events": [attributes],
            "backfill": bool(attributes.get("backfill")),
        }
        self._submit(Work("events", time.monotonic(), [entry], iso(now_utc())))
        # klaviyo-api.md §5.1: 202, no body: validated and queued, not processed.
        return Reply(202)

    def _op_bulk_create_events(self, call: Call) -> Reply:
        entries = [
            {
                "operation": "bulk_create_events",
                "profile": entry["attributes"]["profile"]["data"],
                "events": [event["attributes"] for event in entry["attributes"]["events"]["data"]],
                "backfill": bool(entry["attributes"].get("backfill")),
            }
            for entry in call.body["data"]["attributes"]["events-bulk-create"]["data"]
        ]
        self._submit(Work("events", time.monotonic(), entries, iso(now_utc())))
        # klaviyo-api.md §5.2: 202, no body, no job id.
        return Reply(202)

    def _subscription_payload(self, call: Call) -> dict[str, Any]:
        data = call.body["data"]
        relationship = ((data.get("relationships") or {}).get("list") or {}).get("data")
        list_id = relationship["id"] if relationship else None
        with self.store.lock:
            self._require_lists([list_id] if list_id else [])
        attributes = data["attributes"]
        return {
            "rows": attributes["profiles"]["data"],
            "list_id": list_id,
            "historical_import": attributes.get("historical_import") is True,
            "custom_source": attributes.get("custom_source"),
        }

    def _op_bulk_subscribe_profiles(self, call: Call) -> Reply:
        payload = self._subscription_payload(call)
        if payload["historical_import"]:
            self._check_backdated(payload["rows"])
        self._submit(Work("subscribe", time.monotonic(), payload, iso(now_utc())))
        # klaviyo-api.md §4.3: 202 with no body, no job to poll.
        return Reply(202)

    def _check_backdated(self, rows: list[dict[str, Any]]) -> None:
        errors: list[ApiError] = []
        for index, row in enumerate(rows):
            attributes = row["attributes"]
            for channel, kind, leaf in rules.consent_entries(attributes["subscriptions"]):
                consented = rules.parse_datetime(leaf.get("consented_at") or "")
                stamp = self.store.unsubscribed_at(attributes, channel, kind)
                unsubscribed = rules.parse_datetime(stamp) if stamp else None
                if consented and unsubscribed and consented < unsubscribed:
                    # klaviyo-api.md §4.3: backdated consent older than a newer unsubscribe.
                    errors.append(
                        ApiError(
                            400,
                            "invalid",
                            f"backdated consent date {leaf['consented_at']} is before current "
                            f"unsubscription date {stamp}",
                            pointer=f"/data/attributes/profiles/data/{index}/attributes/"
                            f"subscriptions/{channel}/{kind}/consented_at",
                        )
                    )
        if errors:
            raise ApiResponseError(errors)

    def _op_bulk_unsubscribe_profiles(self, call: Call) -> Reply:
        payload = self._subscription_payload(call)
        self._submit(Work("unsubscribe", time.monotonic(), payload, iso(now_utc())))
        return Reply(202)

    # -- control API --------------------------------------------------------------------------

    def handle_control(self, method: str, path: str, query: str, body: bytes) -> Reply:
        route = path[len(CONTROL_PREFIX) :].rstrip("/")
        try:
            payload = json.loads(body) if body else {}
        except ValueError:
            return Reply(400, {"error": "body is not JSON"}, content_type="application/json")
        try:
            document = self._control(method, route, dict(parse_qsl(query)), payload)
        except (ValueError, TypeError, KeyError) as exc:
            return Reply(400, {"error": str(exc)}, content_type="application/json")
        if document is None:
            return Reply(
                404, {"error": f"no control route {method} {path}"}, content_type="application/json"
            )
        return Reply(200, document, content_type="application/json")

    def _control(self, method: str, route: str, query: dict[str, str], payload: Any) -> Any:
        if (method, route) == ("GET", "/state"):
            return self.dump()
        if (method, route) == ("GET", "/requests"):
            return [entry.to_dict() for entry in self.request_log]
        if (method, route) == ("GET", "/violations"):
            return [list(item) for item in self.violations]
        if (method, route) == ("GET", "/faults"):
            return self.faults.pending()
        if (method, route) == ("POST", "/faults"):
            params = dict(payload)
            kind = params.pop("kind")
            operation = params.pop("operation", None)
            count = params.pop("count", 1)
            return self.add_fault(str(kind), operation, count, **params)
        if (method, route) in (("DELETE", "/faults"), ("POST", "/faults/clear")):
            self.clear_faults()
            return {"cleared": True}
        if (method, route) == ("POST", "/reset"):
            self.reset()
            return {"reset": True}
        if (method, route) == ("POST", "/keys"):
            self.add_key(str(payload["key"]), list(payload.get("scopes", [])))
            return {"key": payload["key"], "scopes": sorted(self._keys[payload["key"]])}
        if (method, route) == ("POST", "/wait-idle"):
            timeout = float(payload.get("timeout", query.get("timeout", 10)))
            return {"idle": self.wait_idle(timeout)}
        return None

    def log(self, entry: LoggedRequest) -> None:
        with self._log_lock:
            self._log.append(entry)


TITLES_5XX = {500: "A server error occurred.", 503: "Service unavailable. Please try again later."}


def _cloudflare_reply(kind: str) -> Reply:
    """Faults that come from Cloudflare in front of Klaviyo: HTML, not JSON:API."""
    if kind == "html403":
        # klaviyo-api.md §7.3: HTML 403 challenge, content-type text/html, cf-mitigated.
        body = (
            '<!DOCTYPE html><html lang="en-US"><head><title>Just a moment...</title></head>'
            "<body><noscript>Enable JavaScript and cookies to continue</noscript></body></html>"
        )
        return Reply(
            403,
            raw=body.encode(),
            content_type="text/html; charset=UTF-8",
            headers={"cf-mitigated": "challenge", "Server": "cloudflare"},
        )
    status = int(kind)
    title = "504 Gateway Time-out" if status == 504 else "A timeout occurred"
    body = f"<html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Reply(
        status,
        raw=body.encode(),
        content_type="text/html; charset=UTF-8",
        headers={"Server": "cloudflare"},
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _is_legacy(path: str) -> bool:
    return path in ("/api/track", "/api/identify") or path.startswith(("/api/v1/", "/api/v2/"))


def _api_key(header: str | None) -> str | None:
    # klaviyo-api.md §1: Authorization: Klaviyo-API-Key <private key>
    prefix = "Klaviyo-API-Key "
    if header and header.startswith(prefix):
        return header[len(prefix) :].strip() or None
    return None


def _loads_quietly(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _count_items(operation: str, body: Any) -> int:
    """Profiles / events / ids carried by a request body, for the request log."""
    if operation in ("create_or_update_profile", "create_event", "create_list"):
        return 1
    try:
        data = body["data"]
        if operation in ("add_profiles_to_list", "remove_profiles_from_list"):
            return len(data)
        if operation == "bulk_create_events":
            return sum(
                len(entry["attributes"]["events"]["data"])
                for entry in data["attributes"]["events-bulk-create"]["data"]
            )
        if operation in (
            "bulk_import_profiles",
            "bulk_subscribe_profiles",
            "bulk_unsubscribe_profiles",
        ):
            return len(data["attributes"]["profiles"]["data"])
    except (KeyError, TypeError, AttributeError):
        pass
    return 0


def _first_per_row(
    errors: list[tuple[str, str]], pattern: re.Pattern[str] | None
) -> list[tuple[str, str]]:
    if pattern is None:
        return errors
    seen: set[str] = set()
    kept: list[tuple[str, str]] = []
    for where, detail in errors:
        match = pattern.match(where)
        row = match.group(0) if match else where
        if row not in seen:
            seen.add(row)
            kept.append((where, detail))
    return kept


def _row_numbers(where: str) -> list[int]:
    return [int(number) for number in re.findall(r"/(\d+)(?=/|$)", where)]


def _compare(operator: str, left: datetime, right: datetime) -> bool:
    return {
        "greater-than": left > right,
        "greater-or-equal": left >= right,
        "less-than": left < right,
        "less-or-equal": left <= right,
    }[operator]


def _time_check(condition: Condition) -> Callable[[Profile], bool]:
    def check(profile: Profile) -> bool:
        stamp = rules.parse_datetime(getattr(profile, condition.field))
        return stamp is not None and _compare(condition.operator, stamp, condition.value)

    return check


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: Emulator) -> None:
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def track(self, connection: socket.socket, add: bool) -> None:
        with self._connections_lock:
            if add:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def close_all(self) -> None:
        """Close idle keep-alive connections so their handler threads end with the server."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, OSError, ValueError)):
            return  # client went away; nothing to report
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response carries Content-Length
    server: _Server
    timeout = 120

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the request log replaces access logging

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > HARD_BODY_CAP:
            self.close_connection = True
            self._send(
                Reply(
                    413 if length > 0 else 400,
                    error_document(
                        [ApiError(413 if length > 0 else 400, "invalid", "Bad Content-Length.")]
                    ),
                )
            )
            return None
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        with self.server.emulator.in_flight:
            self._answer(method)

    def _answer(self, method: str) -> None:
        emulator = self.server.emulator
        started, started_wall = time.monotonic(), time.time()
        body = self._read_body()
        if body is None:
            return
        url = urlsplit(self.path)
        if url.path == CONTROL_PREFIX or url.path.startswith(CONTROL_PREFIX + "/"):
            self._send(emulator.handle_control(method, url.path, url.query, body))
            return
        reply, info = emulator.handle_api(method, url.path, url.query, self.headers, body)
        # Logged before the response goes out, so a client that has its answer sees the entry.
        emulator.log(
            LoggedRequest(
                operation=info.operation,
                method=method,
                path=url.path,
                status=reply.status,
                items=info.items,
                bytes=len(body),
                started=started,
                ended=time.monotonic(),
                started_wall=started_wall,
                ended_wall=time.time(),
                retry_after_violation=info.retry_after_violation,
                query=url.query,
                key=info.key,
                fault=info.fault,
            )
        )
        if reply.action == "reset":
            self._reset()
        elif reply.action == "timeout":
            self.close_connection = True
        else:
            self._send(reply)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (errno 104 on the client)."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()
            self.connection.close()
        except OSError:
            pass

    def _send(self, reply: Reply) -> None:
        if reply.raw is not None:
            payload = reply.raw
        elif reply.document is None:
            payload = b""
        else:
            payload = json.dumps(reply.document, separators=(",", ":"), ensure_ascii=False).encode()
        self.send_response(reply.status, REASONS.get(reply.status))
        if payload:
            self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.status != 204:
            self.send_header("Content-Length", str(len(payload)))
        if self.close_connection:
            self.send_header("Connection", "close")
        # Headers and body in one write: two small writes meet Nagle + delayed ACK (~40 ms).
        buffer: list[bytes] = self._headers_buffer  # type: ignore[attr-defined]
        buffer.append(b"\r\n" + payload)
        self.flush_headers()
