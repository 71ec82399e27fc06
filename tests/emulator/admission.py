"""Whether a request gets to its endpoint: scripted faults, the private key and its scopes, the
``revision`` header and the rate limits, with the ``Retry-After`` each client was given.
"""

from __future__ import annotations

import re
import threading
import time
from email.message import Message

from .calls import ApiResponseError, Reply, bad_parameter
from .faults import Fault
from .ratelimit import Decision, RateLimiter
from .resources import ApiError, error_document
from .schemas import Operation

# Klaviyo: API versioning: revision header format YYYY-MM-DD[.suffix].
REVISION = re.compile(r"^\d{4}-\d{2}-\d{2}(\.[a-z0-9]+)?$")
# The revisions Klaviyo has released, from its API changelog
# (https://developers.klaviyo.com/en/changelog, one "Revision YYYY-MM-DD" entry each, and the
# per-revision docs at https://developers.klaviyo.com/en/v<revision>/). Since 2023-06 one a
# quarter month, on the 15th; 2026-07-15 is the spec's info.version and 2026-10-15 what the
# official Python SDK (klaviyo-api 25.0.0) pins (Klaviyo: API versioning). "The revision passed in
# must be a valid revision" (https://developers.klaviyo.com/en/docs/api_versioning_and_deprecation_policy):
# any other date is refused.
RELEASED_REVISIONS = frozenset(
    {
        "2022-10-17",
        "2023-01-24",
        "2023-02-22",
        "2023-06-15",
        "2023-07-15",
        "2023-08-15",
        "2023-09-15",
        "2023-10-15",
        "2023-12-15",
        "2024-02-15",
        "2024-05-15",
        "2024-06-15",
        "2024-07-15",
        "2024-10-15",
        "2025-01-15",
        "2025-04-15",
        "2025-07-15",
        "2025-10-15",
        "2026-01-15",
        "2026-04-15",
        "2026-07-15",
        "2026-10-15",
    }
)
# Klaviyo: API versioning: ".pre" suffixes are beta revisions, published alongside each revision.
BETA_SUFFIX = ".pre"
# Klaviyo: API versioning: all 2024-* revisions are retired (410 or silent fall-forward).
OLDEST_SUPPORTED_REVISION = "2025-01-01"
TITLES_5XX = {500: "A server error occurred.", 503: "Service unavailable. Please try again later."}


def api_key(header: str | None) -> str | None:
    # Klaviyo: API overview: Authorization: Klaviyo-API-Key <private key>
    prefix = "Klaviyo-API-Key "
    if header and header.startswith(prefix):
        return header[len(prefix) :].strip() or None
    return None


class Admission:
    """Keys and their scopes, the rate limiter and the Retry-After given per key and operation."""

    def __init__(self, limiter: RateLimiter, private_key: str, all_scopes: frozenset[str]) -> None:
        self.limiter = limiter
        self._private_key = private_key
        self._all_scopes = all_scopes
        self._lock = threading.Lock()
        self._keys: dict[str, frozenset[str]] = {private_key: all_scopes}
        self._not_before: dict[tuple[str, str], float] = {}

    def reset(self) -> None:
        self.limiter.reset()
        with self._lock:
            self._keys = {self._private_key: self._all_scopes}
            self._not_before.clear()

    def add_key(self, key: str, scopes: set[str] | frozenset[str] | list[str]) -> frozenset[str]:
        # A write scope implies the matching read scope (Klaviyo's "Full access" per object).
        granted = set(scopes)
        granted |= {s.replace(":write", ":read") for s in granted if s.endswith(":write")}
        with self._lock:
            self._keys[key] = frozenset(granted)
        return frozenset(granted)

    # -- Retry-After ----------------------------------------------------------------------------

    def early_retry(self, key: str, operation: str) -> bool:
        """Whether this request comes before the Retry-After its client was last given."""
        now = time.monotonic()
        with self._lock:
            not_before = self._not_before.pop((key, operation), None)
        # 1 ms of slack for clock granularity.
        return not_before is not None and now < not_before - 0.001

    def remember_retry_after(self, key: str, operation: str, seconds: float) -> None:
        with self._lock:
            self._not_before[(key, operation)] = time.monotonic() + seconds

    # -- admission ------------------------------------------------------------------------------

    def admit(self, operation: Operation, key: str | None, headers: Message) -> Decision | None:
        """Auth, scopes, revision and rate limit, in that order."""
        with self._lock:
            scopes = self._keys.get(key) if key else None
        if scopes is None:
            # Klaviyo: rate limits and errors: bad or missing private key -> 401
            # authentication_failed.
            raise ApiResponseError(
                [ApiError(401, "authentication_failed", "Incorrect authentication credentials.")]
            )
        missing = sorted(operation.scopes - scopes)
        if missing:
            # Klaviyo: API overview: a key without the scope -> 403 permission_denied.
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
        check_revision(headers.get("revision"))
        if not self.limiter.enabled:
            return None
        decision = self.limiter.acquire(operation.operation_id, operation.rate_limit)
        if not decision.allowed:
            # Klaviyo: rate limits and errors: 429 with Retry-After (integer seconds), no
            # RateLimit-* headers.
            self.remember_retry_after(key or "", operation.operation_id, decision.retry_after)
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

    # -- faults ---------------------------------------------------------------------------------

    def fault_reply(
        self, fault: Fault, key: str, operation: str, stopping: threading.Event
    ) -> Reply:
        """The answer a scripted fault gives instead of the endpoint's (faults.py)."""
        kind = fault.kind
        if kind == "429":
            retry_after = fault.params.get("retry_after")
            headers: dict[str, str] = {}
            if retry_after is not None:
                seconds = float(retry_after)
                headers["Retry-After"] = str(int(-(-seconds // 1)))
                headers["X-Emulator-Retry-After-Exact"] = f"{seconds:.3f}"
                self.remember_retry_after(key, operation, seconds)
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
            return cloudflare_reply(kind)
        if kind == "413":
            return Reply(
                413,
                error_document([ApiError(413, "request_too_large", "Request entity too large.")]),
            )
        if kind == "reset":
            return Reply(0, action="reset")
        if kind == "timeout":
            stopping.wait(float(fault.params["delay_s"]))
            return Reply(0, action="timeout")
        raise ValueError(f"unhandled fault {kind}")


def check_revision(revision: str | None) -> None:
    if not revision:
        # Klaviyo: API overview: the revision header is required.
        raise bad_parameter("revision", "Missing required header: revision.")
    if not REVISION.match(revision):
        raise bad_parameter("revision", f"Invalid revision '{revision}'.")
    released = revision.removesuffix(BETA_SUFFIX)
    if released not in RELEASED_REVISIONS:
        current = sorted(r for r in RELEASED_REVISIONS if r >= OLDEST_SUPPORTED_REVISION)
        raise bad_parameter(
            "revision",
            f"Invalid revision '{revision}'. Supported revisions: {', '.join(current)}.",
        )
    if revision < OLDEST_SUPPORTED_REVISION:
        raise ApiResponseError(
            [ApiError(410, "gone", f"Revision {revision} has been retired.", parameter="revision")]
        )


def cloudflare_reply(kind: str) -> Reply:
    """Faults that come from Cloudflare in front of Klaviyo: HTML, not JSON:API."""
    if kind == "html403":
        # Klaviyo: rate limits and errors: HTML 403 challenge, content-type text/html, cf-mitigated.
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
