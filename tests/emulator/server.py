"""The ``Emulator``: starts the HTTP transport and the background workers, and takes each API
request through routing, faults, admission, body checks and the endpoint's handler.
"""

from __future__ import annotations

import sys
import threading
import time
import traceback
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

from . import bodies, rules
from .admission import Admission, api_key
from .calls import ApiResponseError, Backend, Call, Reply, invalid
from .control import handle_control
from .faults import FaultBook, make_fault
from .handlers import ROUTES
from .query import apply_fieldsets, query_options
from .ratelimit import Decision, RateLimiter
from .request_log import LoggedRequest, RequestInfo, RequestLog
from .resources import ApiError, error_document
from .routing import Router
from .rules import iso, parse_datetime
from .schemas import Operation, load_operations, load_spec_routes
from .state import Store, now_utc
from .transport import HttpServer, RequestHandler
from .work import ConcurrentJobWorker, InFlight, Work, Worker

PRIVATE_KEY = "pk_emulator_0123456789abcdef"
PUBLIC_KEY = "EmU123"
# Queues of background work, each with its own worker thread.
WORK_LANES = ("jobs", "writes")
LEGACY_DETAIL = (
    "The v1/v2 APIs were retired on June 30, 2024; use the /api/ JSON:API endpoints. See "
    "https://developers.klaviyo.com/en/docs/migrate_track_identify_and_subscribe_to_our_new_apis"
)
# The request handler class, for tests that tune it (tests/test_client.py).
_Handler = RequestHandler

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "Emulator", "LoggedRequest"]


class Emulator:
    """A stateful stand-in for Klaviyo's API on a loopback port."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        window_scale: float = 1.0,
        job_delay_s: float = 0.05,
        job_latency_s: float | None = None,
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
        # None: import jobs run one after another, each taking job_delay_s plus a little per row;
        # a number: each job completes that many seconds after its own submission.
        self.job_latency_s = _latency(job_latency_s)
        self.validate = validate
        self.private_key = private_key
        self.public_key = public_key
        self.operations = dict(load_operations())
        self.router = Router(self.operations, load_spec_routes())
        self.all_scopes = frozenset(
            scope for op in self.operations.values() for scope in op.scopes
        ) | {"accounts:read", "events:read", "subscriptions:read", "lists:read", "profiles:read"}
        regions = (
            rules.DEFAULT_SUPPORTED_REGIONS if supported_regions is None else supported_regions
        )
        self.store = Store(frozenset(regions), default_opt_in)
        self.faults = FaultBook()
        self.limiter = RateLimiter(window_scale, enabled=throttle)
        self.admission = Admission(self.limiter, private_key, self.all_scopes)
        self.backend = Backend(self.store, self.faults, self._submit, public_key)
        self._requests = RequestLog()
        self._server: HttpServer | None = None
        self._thread: threading.Thread | None = None
        self._workers: dict[str, Worker] = {}  # lane -> its worker, while running
        self._timed_jobs: ConcurrentJobWorker | None = None  # jobs under job_latency_s
        self.in_flight = InFlight()
        self._stopping = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> Emulator:
        if self._server is not None:
            return self
        self._stopping.clear()
        self._server = HttpServer((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._start_workers()
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
        self.store.clear()
        self.faults.clear()
        self.admission.reset()
        self._requests.clear()
        if running:
            self._start_workers()

    def _start_workers(self) -> None:
        # Import jobs run apart from event and subscription writes, as Klaviyo's do: a job does
        # not wait behind the events queued before it.
        self._workers = {
            lane: Worker(self.store, self.job_delay_s, self.in_flight, name=lane)
            for lane in WORK_LANES
        }
        self._timed_jobs = ConcurrentJobWorker(self.store, self.in_flight)
        for worker in self._lanes():
            worker.start()

    def _lanes(self) -> list[Worker | ConcurrentJobWorker]:
        timed = [] if self._timed_jobs is None else [self._timed_jobs]
        return [*self._workers.values(), *timed]

    def _stop_workers(self) -> None:
        lanes = self._lanes()
        for worker in lanes:
            worker.stop()
        for worker in lanes:
            worker.join(timeout=5)
        self._workers = {}
        self._timed_jobs = None

    def _submit(self, work: Work) -> None:
        latency = self.job_latency_s
        if work.job is not None and latency is not None:
            if self._timed_jobs is not None:
                self._timed_jobs.submit(work, latency)
            return
        worker = self._workers.get("writes" if work.job is None else work.job.lane)
        if worker is not None:
            worker.submit(work)

    def timing(self) -> dict[str, Any]:
        """How closely jobs under `job_latency_s` kept to it: the emulator checks and applies
        every row itself, so on a busy machine a job can end after it was due."""
        timed = self._timed_jobs
        return {
            "jobs_ended": timed.ended if timed else 0,
            "late_s_max": round(timed.late_s_max, 3) if timed else 0.0,
        }

    def configure(self, *, job_latency_s: float | None) -> None:
        """Change the job model for jobs submitted from now on (jobs under way keep theirs)."""
        self.job_latency_s = _latency(job_latency_s)

    # -- test-facing API ----------------------------------------------------------------------

    def add_key(self, key: str, scopes: set[str] | frozenset[str] | list[str]) -> frozenset[str]:
        """Accept another private key with only ``scopes`` (returns the scopes granted).

        A write scope implies the matching read scope (Klaviyo's "Full access" per object).
        """
        return self.admission.add_key(key, scopes)

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
        return self._requests.entries

    @property
    def violations(self) -> list[tuple[str, str, str]]:
        """(operation, pointer or parameter, detail) of each request-validation failure."""
        return self._requests.violations

    @property
    def silent_drops(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [dict(item) for item in self.store.silent_drops]

    def expect_violations(self, count: int) -> None:
        """Declare that this test deliberately causes ``count`` more violations."""
        self._requests.expect_violations(count)

    def unexpected_violations(self) -> str | None:
        """A message when the violations recorded differ from those declared, else None."""
        return self._requests.unexpected_violations()

    def dump(self) -> dict[str, Any]:
        return self.store.dump()

    def suppress(
        self, email: str, reason: str = "HARD_BOUNCE", timestamp: str | None = None
    ) -> str:
        """Give the profile of ``email`` (created when missing) an email suppression, as
        Klaviyo records bounces, spam complaints and unsubscribes; returns the profile id.

        ``reason``: one of the spec's HARD_BOUNCE, INVALID_EMAIL, SPAM_COMPLAINT, UNSUBSCRIBE
        (the consent UNSUBSCRIBED) and USER_SUPPRESSED; ``timestamp`` defaults to now.
        """
        stamp = timestamp or iso(now_utc())
        if parse_datetime(stamp) is None:
            raise ValueError(f"timestamp {stamp!r} is not an ISO 8601 date-time")
        return self.store.seed_suppression(email, reason, stamp).id

    def wait_idle(self, timeout: float | None = 10.0) -> bool:
        """Wait until every queued bulk job, event batch and subscription is applied."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for worker in self._lanes():
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not worker.wait_idle(left):
                return False
        return True

    def log(self, entry: LoggedRequest) -> None:
        self._requests.append(entry)

    def handle_control(self, method: str, path: str, query: str, body: bytes) -> Reply:
        return handle_control(self, method, path, query, body)

    # -- request handling ---------------------------------------------------------------------

    def handle_api(
        self, method: str, path: str, query: str, headers: Message, body: bytes
    ) -> tuple[Reply, RequestInfo]:
        info = RequestInfo()
        if len(path) > 1 and path.endswith("/"):
            path = path[:-1]  # Klaviyo: API overview: both /api/profiles and /api/profiles/ work
        if _is_legacy(path):
            # Klaviyo: legacy API migration: v1/v2 (Track/Identify) retired June 30 2024, calls
            # return 410.
            gone = ApiError(410, "gone", LEGACY_DETAIL)
            return Reply(410, error_document([gone])), info
        routed = self.router.resolve(method, path)
        if isinstance(routed, str):
            if routed == "method":
                error = ApiError(405, "method_not_allowed", f'Method "{method}" not allowed.')
            else:
                error = ApiError(404, "not_found", f"No endpoint at {path}.")
            return Reply(error.status, error_document([error])), info
        route, params = routed.route, routed.params
        operation = route.operation
        if operation is None:
            # An operation of Klaviyo's spec that the emulator does not serve: not a 404, which
            # would tell a client the endpoint does not exist.
            info.operation = route.operation_id
            error = ApiError(
                501,
                "not_implemented",
                f"{route.operation_id} ({route.method} {route.path}) is not emulated.",
            )
            return Reply(501, error_document([error])), info
        op_id = operation.operation_id
        info.operation = op_id
        key = api_key(headers.get("Authorization"))
        info.key = (key or "")[-4:]
        info.retry_after_violation = self.admission.early_retry(key or "", op_id)

        fault = self.faults.take(op_id)
        if fault is not None:
            info.fault = fault.kind
            info.items = bodies.count_items(op_id, bodies.loads_quietly(body))
            if fault.kind == "slow":
                self._stopping.wait(float(fault.params["delay_s"]))
            else:
                return self.admission.fault_reply(fault, key or "", op_id, self._stopping), info

        decision: Decision | None = None
        try:
            decision = self.admission.admit(operation, key, headers)
            call = self._call(operation, params, path, query, headers, body, key or "")
            info.items = bodies.count_items(op_id, call.body)
            reply = self._dispatch(call)
        except ApiResponseError as failure:
            if not info.items and body:
                info.items = bodies.count_items(op_id, bodies.loads_quietly(body))
            if failure.violation:
                self._requests.record_violations(
                    op_id,
                    [
                        (error.pointer or error.parameter or "", error.detail)
                        for error in failure.errors
                    ],
                )
            reply = Reply(failure.status, error_document(failure.errors), dict(failure.headers))
        except Exception as exc:  # an emulator bug: answer like a server error, loudly
            traceback.print_exc(file=sys.stderr)
            reply = Reply(500, error_document([ApiError(500, "error", f"Emulator error: {exc}")]))
        if decision is not None:
            # Klaviyo: rate limits and errors: non-429 responses describe the steady window.
            reply.headers.update(
                {
                    "RateLimit-Limit": str(decision.limit),
                    "RateLimit-Remaining": str(decision.remaining),
                    "RateLimit-Reset": str(max(1, int(-(-decision.reset // 1)))),
                }
            )
        return reply, info

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
            parsed = bodies.parse_body(operation, headers, raw)
        base_url = self.base_url
        url = f"{base_url}{path}" + (f"?{query}" if query else "")
        first_values = dict(reversed(pairs))
        return Call(
            operation=operation,
            params=params,
            query=first_values,
            query_pairs=pairs,
            headers=headers,
            body=parsed,
            raw=raw,
            url=url,
            base_url=base_url,
            key=key,
            options=query_options(operation, first_values),
        )

    def _dispatch(self, call: Call) -> Reply:
        if call.body is not None:
            errors = bodies.body_errors(
                call.operation,
                call.body,
                self.store.supported_regions,
                validate=self.validate,
                raw=call.raw,
            )
            if errors:
                # Klaviyo: bulk profile import: all-or-nothing, one error per bad row, nothing
                # applied.
                raise invalid(errors)
        handler = ROUTES[call.operation.operation_id]
        try:
            reply = handler(self.backend, call)
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            if self.validate:
                raise
            raise invalid([("/data", f"Invalid request body: {exc!r}")]) from exc
        apply_fieldsets(reply.document, call.options.fields)
        return reply


def _latency(seconds: float | None) -> float | None:
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
        raise ValueError(f"job_latency_s must be a number of seconds >= 0 or None, not {seconds!r}")
    return float(seconds)


def _is_legacy(path: str) -> bool:
    return path in ("/api/track", "/api/identify") or path.startswith(("/api/v1/", "/api/v2/"))
