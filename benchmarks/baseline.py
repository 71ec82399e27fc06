"""A per-record loader, the way existing integrations load Klaviyo.

One ``POST /api/profile-import`` per profile and one ``POST /api/events`` per event, from a
pool of threads, waiting ``Retry-After`` on a 429. It is run on a sample against the emulator
at Klaviyo's real rates; its measured rate and the tier limits give the time it would need for
a whole workload.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from benchmarks.workload import email, phone

REVISION = "2026-07-15"


def profile_body(i: int) -> dict[str, Any]:
    digits = "".join(ch for ch in str(phone(i)) if ch.isdigit())
    attributes: dict[str, Any] = {
        "email": email(i),
        "external_id": str(i),
        "first_name": "Ada",
        "properties": {
            "loyalty_tier": "gold",
            "lifetime_orders": i % 500,
            "lifetime_value": 12.5,
            "accepts_sms": True,
            "signed_up_at": "2025-12-31T00:00:00Z",
        },
    }
    if len(digits) == 11 and digits[0] == "1":
        attributes["phone_number"] = "+" + digits
    return {"data": {"type": "profile", "attributes": attributes}}


def event_body(i: int) -> dict[str, Any]:
    return {
        "data": {
            "type": "event",
            "attributes": {
                "properties": {"items": 2, "channel": "web"},
                "time": "2026-01-01T00:00:00+00:00",
                "value": 42.0,
                "value_currency": "USD",
                "unique_id": f"order-{i}",
                "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
                "profile": {"data": {"type": "profile", "attributes": {"email": email(i)}}},
            },
        }
    }


@dataclass
class OperationSample:
    operation: str
    requests: int
    seconds: float
    throttled: int
    statuses: Counter[int]

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else float("inf")


class PerRecordLoader:
    def __init__(self, base_url: str, private_key: str, threads: int = 16) -> None:
        self.base_url = base_url
        self.headers = {
            "Authorization": f"Klaviyo-API-Key {private_key}",
            "revision": REVISION,
            "Content-Type": "application/vnd.api+json",
            "Accept": "application/vnd.api+json",
        }
        self.threads = threads
        self._local = threading.local()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            session.headers.update(self.headers)
        return session

    def _post(self, path: str, body: dict[str, Any]) -> tuple[int, int]:
        """POST until not throttled; (final status, 429s seen)."""
        throttled = 0
        while True:
            response = self._session().post(self.base_url + path, json=body, timeout=60)
            if response.status_code != 429:
                return response.status_code, throttled
            throttled += 1
            time.sleep(float(response.headers.get("Retry-After", "1")))

    def run(self, operation: str, path: str, bodies: list[dict[str, Any]]) -> OperationSample:
        started = time.perf_counter()
        with ThreadPoolExecutor(self.threads) as pool:
            results = list(pool.map(lambda body: self._post(path, body), bodies))
        seconds = time.perf_counter() - started
        return OperationSample(
            operation,
            len(bodies),
            seconds,
            sum(t for _, t in results),
            Counter(status for status, _ in results),
        )

    def sample(self, profiles: int, events: int) -> list[OperationSample]:
        """Both operations at once, as a loader of both streams would run them."""
        with ThreadPoolExecutor(2) as pool:
            profile_run = pool.submit(
                self.run,
                "create_or_update_profile",
                "/api/profile-import",
                [profile_body(i) for i in range(profiles)],
            )
            event_run = pool.submit(
                self.run, "create_event", "/api/events", [event_body(i) for i in range(events)]
            )
            return [profile_run.result(), event_run.result()]
