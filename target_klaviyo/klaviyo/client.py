"""The one HTTP client: base URL, auth, revision, pacing, retries and call accounting.

Every request goes through `KlaviyoClient.request`, which returns an `ApiResult` rather than
raising for Klaviyo's answers: a sink decides what a 400 or an exhausted retry means for its
records. Only a wrong key (401) or a missing scope (403) raises, because no record can be
loaded after that.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import backoff
import requests
from requests.adapters import HTTPAdapter

from target_klaviyo.klaviyo.operations import OPERATIONS, Operation
from target_klaviyo.klaviyo.pacing import Pacer

LOGGER = logging.getLogger("target-klaviyo.http")

JSON_API = "application/vnd.api+json"
# Klaviyo's own Python SDK (klaviyo-api) retries 429, 503, 504 and 524; 5xx are server errors
# (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling).
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504, 520, 522, 524})
# A Retry-After longer than this is not waited out in-run: the records go on hold instead.
MAX_RETRY_AFTER_S = 900.0


class ConfigError(ValueError):
    """A setting is unusable; the message is one line naming the setting."""


class KlaviyoAuthError(RuntimeError):
    """The private key was refused (401) or lacks a scope (403); no record can be loaded."""


@dataclass(frozen=True)
class ApiErrorDetail:
    """One entry of a JSON:API `errors` array (https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling)."""

    status: int | None
    code: str
    title: str
    detail: str
    pointer: str | None = None
    parameter: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ApiResult:
    """What one (possibly retried) request came to."""

    operation: str
    status: int | None
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    errors: tuple[ApiErrorDetail, ...] = ()
    exhausted: bool = False
    message: str = ""

    @property
    def ok(self) -> bool:
        return not self.exhausted and self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        """One line for logs and rejects: Klaviyo's details, never the payload."""
        if self.message:
            return self.message
        details = "; ".join(error.detail or error.title for error in self.errors)
        return f"{self.operation} answered {self.status}" + (f": {details}" if details else "")


class Pacing(Protocol):
    """A per-operation rate budget: this process's `Pacer`, or one shared by every run on the
    account (`ledger.budget.SharedPacer`)."""

    def acquire(
        self, operation: Operation, give_up: Callable[[], bool] | None = None
    ) -> float | None: ...

    def release(self, operation: Operation) -> None: ...


class Requester(Protocol):
    """Anything that sends requests as `KlaviyoClient.request` does (the dry-run planner)."""

    def request(
        self,
        operation_name: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        url: str | None = None,
    ) -> ApiResult: ...


def pages(
    client: Requester,
    operation: str,
    params: Mapping[str, Any],
    path_params: Mapping[str, str] | None = None,
) -> Iterator[ApiResult]:
    """Every page of a GET, following Klaviyo's `links.next` cursors. A page that failed is
    yielded too, and ends the paging: the caller decides what it means."""
    url: str | None = None
    query: Mapping[str, Any] | None = params
    while True:
        result = client.request(operation, path_params=path_params, params=query, url=url)
        yield result
        body = result.body if isinstance(result.body, dict) else {}
        url = (body.get("links") or {}).get("next") if result.ok else None
        if not url:
            return
        query = None


def page_data(result: ApiResult) -> list[dict[str, Any]]:
    """The resources of one page."""
    body = result.body if isinstance(result.body, dict) else {}
    return [entry for entry in body.get("data") or () if isinstance(entry, dict)]


def check_base_url(url: str) -> str:
    """Refuse plain http:// except to a loopback host (the key would travel in clear)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"api_base_url: {url!r} is not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(
            f"api_base_url: {url!r} uses plain http:// to a non-loopback host; use https://"
        )
    return url.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _version() -> str:
    try:
        return metadata.version("target-klaviyo")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def parse_errors(body: Any) -> tuple[ApiErrorDetail, ...]:
    if not isinstance(body, dict) or not isinstance(body.get("errors"), list):
        return ()
    details = []
    for raw in body["errors"]:
        if not isinstance(raw, dict):
            continue
        source: dict[str, Any] = raw["source"] if isinstance(raw.get("source"), dict) else {}
        meta: dict[str, Any] = raw["meta"] if isinstance(raw.get("meta"), dict) else {}
        details.append(
            ApiErrorDetail(
                status=int(raw["status"]) if str(raw.get("status", "")).isdigit() else None,
                code=str(raw.get("code") or ""),
                title=str(raw.get("title") or ""),
                detail=str(raw.get("detail") or ""),
                pointer=source.get("pointer"),
                parameter=source.get("parameter"),
                meta=meta,
            )
        )
    return tuple(details)


class _Retry(Exception):  # noqa: N818 (internal control flow, not an error)
    """Internal: this attempt may be retried; `wait` is Klaviyo's Retry-After if given."""

    def __init__(self, reason: str, status: int | None, wait: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.wait = wait


class KlaviyoClient:
    """Thread-safe client for Klaviyo's JSON:API with pacing and bounded retries."""

    def __init__(
        self,
        *,
        private_key: str,
        base_url: str = "https://a.klaviyo.com",
        revision: str = "2026-07-15",
        max_retries: int = 5,
        timeout_s: float = 60.0,
        window_scale: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = check_base_url(base_url)
        self._host = urlsplit(self.base_url).netloc
        self.max_retries = max(0, int(max_retries))
        self.timeout = (min(10.0, timeout_s), timeout_s)
        self._sleep = sleep
        self._pacer: Pacing = Pacer(window_scale=window_scale, sleep=sleep)
        self._session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=32, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update(
            {
                "Authorization": f"Klaviyo-API-Key {private_key}",
                "revision": revision,
                "Accept": JSON_API,
                "User-Agent": f"target-klaviyo/{_version()} python-requests/{requests.__version__}",
            }
        )
        self._lock = threading.Lock()
        self.calls: Counter[str] = Counter()
        self.rate_limit_wait_s = 0.0
        self._stopping = threading.Event()
        self._writes_waiting = 0  # writes waiting for their rate-limit window or a retry

    def share_budget(self, pacer: Pacing) -> None:
        """Pace from a budget other runs on the account share (the ledger in PostgreSQL)."""
        self._pacer = pacer

    def stop_sending(self) -> None:
        """The run is stopping: writes not yet sent (waiting for their rate-limit window or a
        retry) are not sent; reads go on, so that what was sent can still be followed."""
        self._stopping.set()

    def writes_waiting(self) -> bool:
        """Whether a write waits for its rate-limit window (or a retry) now: the run sends
        as fast as Klaviyo allows, and reading faster would only make requests wait longer."""
        return self._writes_waiting > 0

    def _count_waiting(self, step: int) -> None:
        with self._lock:
            self._writes_waiting += step

    def _held_back(self, operation: Operation) -> bool:
        return self._stopping.is_set() and operation.method != "GET"

    def _pause(self, seconds: float, operation: Operation) -> None:
        """Sleep before a retry; a write wakes when the run stops."""
        if operation.method != "GET" and self._sleep is time.sleep:
            self._stopping.wait(seconds)
        else:
            self._sleep(seconds)

    def close(self) -> None:
        self._session.close()

    def _account_wait(self, seconds: float) -> None:
        if seconds > 0:
            with self._lock:
                self.rate_limit_wait_s += seconds

    def _url(self, operation: Operation, path_params: Mapping[str, str] | None) -> str:
        path = operation.path
        for name, value in (path_params or {}).items():
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        return self.base_url + path

    def request(
        self,
        operation_name: str,
        *,
        path_params: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        body: bytes | None = None,
        url: str | None = None,
    ) -> ApiResult:
        """Send one request (paced, retried); return what it came to.

        `body` is the already encoded JSON (its size was checked by the caller). `url` follows
        a `links.next` cursor; it must point at the configured host.
        """
        operation = OPERATIONS[operation_name]
        if url is not None:
            if urlsplit(url).netloc != self._host:
                return ApiResult(
                    operation_name,
                    None,
                    message=f"{operation_name}: refused a link to another host",
                )
            target, query = url, None
        else:
            target, query = self._url(operation, path_params), params

        # 5xx and network errors: exponential backoff with full jitter (0.5 s, 1 s, 2 s, ...).
        expo = backoff.expo(base=2, factor=0.5, max_value=60)
        next(expo)  # backoff's generators yield None first (primed by .send(None))
        delays: Iterator[float] = (backoff.full_jitter(v) for v in expo)
        last: _Retry | None = None
        write = operation.method != "GET"
        for attempt in range(self.max_retries + 1):
            if write:
                self._count_waiting(1)
            try:
                waited = self._wait_turn(operation, operation_name, attempt, last, delays)
            finally:
                if write:
                    self._count_waiting(-1)
            if waited is None or self._held_back(operation):
                if waited is not None:
                    self._pacer.release(operation)
                return ApiResult(
                    operation_name,
                    last.status if last else None,
                    exhausted=True,
                    message=f"{operation_name}: not sent, the run is stopping",
                )
            self._account_wait(waited)
            try:
                return self._attempt(operation, target, query, body)
            except _Retry as retry:
                last = retry
                if retry.wait is not None and retry.wait > MAX_RETRY_AFTER_S:
                    last.reason += (
                        f" with Retry-After {retry.wait:.0f} s (over {MAX_RETRY_AFTER_S:.0f} s)"
                    )
                    break
            finally:
                self._pacer.release(operation)
        assert last is not None
        return ApiResult(
            operation_name,
            last.status,
            exhausted=True,
            message=f"{operation_name}: gave up after {attempt} retries: {last.reason}",
        )

    def _wait_turn(
        self,
        operation: Operation,
        operation_name: str,
        attempt: int,
        last: _Retry | None,
        delays: Iterator[float],
    ) -> float | None:
        """Wait out the retry delay (after a failed attempt), then the rate-limit window: the
        seconds waited for the window, or None when the run stopped meanwhile."""
        if last is not None:
            wait = last.wait if last.wait is not None else next(delays)
            if last.wait is not None or last.status == 429:
                self._account_wait(wait)
            LOGGER.info(
                "%s: %s; retry %d of %d in %.1f s",
                operation_name,
                last.reason,
                attempt,
                self.max_retries,
                wait,
            )
            self._pause(wait, operation)
        return self._pacer.acquire(operation, give_up=lambda: self._held_back(operation))

    def _attempt(
        self, operation: Operation, url: str, params: Mapping[str, Any] | None, body: bytes | None
    ) -> ApiResult:
        headers = {"Content-Type": JSON_API} if body is not None else None
        with self._lock:
            self.calls[operation.name] += 1
        started = time.monotonic()
        try:
            response = self._session.request(
                operation.method,
                url,
                params=params,
                data=body,
                headers=headers,
                timeout=self.timeout,
            )
        except requests.Timeout as exc:
            raise _Retry("timed out", None) from exc
        except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
            raise _Retry(f"connection error ({type(exc).__name__})", None) from exc
        elapsed = time.monotonic() - started
        status = response.status_code
        LOGGER.debug("%s %s -> %d in %.3f s", operation.method, url, status, elapsed)
        if body is not None and LOGGER.isEnabledFor(logging.DEBUG):
            LOGGER.debug("request body: %.2000s", body.decode("utf-8", "replace"))

        content_type = response.headers.get("Content-Type", "")
        parsed: Any = None
        if response.content and "json" in content_type:
            try:
                parsed = response.json()
            except ValueError:
                parsed = None

        if status == 403 and "text/html" in content_type:
            # Cloudflare's challenge page (text/html), not Klaviyo's answer.
            raise _Retry("Cloudflare returned an HTML 403 challenge", status)
        if status in RETRY_STATUSES:
            retry_after = _retry_after(response.headers.get("Retry-After"))
            if status == 429:
                raise _Retry("throttled (429)", status, retry_after)
            raise _Retry(f"server error {status}", status, retry_after)
        errors = parse_errors(parsed)
        if status == 401:
            raise KlaviyoAuthError(
                "Klaviyo refused the private API key (401): check private_api_key"
            )
        if status == 403:
            scopes = ", ".join(operation.scopes)
            raise KlaviyoAuthError(
                f"the private API key lacks a scope needed for {operation.method} "
                f"{operation.path} (needs {scopes}) (403)"
            )
        if status >= 400 and LOGGER.isEnabledFor(logging.DEBUG):
            LOGGER.debug("error body: %.2000s", json.dumps(parsed) if parsed else response.text)
        return ApiResult(
            operation.name,
            status,
            body=parsed,
            headers=dict(response.headers),
            errors=errors,
        )


def _retry_after(value: str | None) -> float | None:
    """Klaviyo sends integer seconds; anything else means back off."""
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    if seconds < 0:
        return None
    # A little jitter so that parallel workers do not return in lockstep.
    return seconds + random.uniform(0, 0.1)
