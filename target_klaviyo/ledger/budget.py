"""One rate budget per Klaviyo account (SPEC §3.16), kept in the PostgreSQL ledger.

`SharedPacer` has the semantics of `Pacer` (target_klaviyo/klaviyo/pacing.py), with its windows
in the table `rate_slots` instead of in memory, so every process pacing the same account from
the same ledger schema shares one budget per operation:

- a request holds a slot from `acquire` (a row with `answered_at` NULL) until `release` stamps
  its answer time, and the window lengths count from answer times: a later request arrives a
  full window after the earlier ones, whatever the delays in between;
- burst (1 s) and steady (60 s) windows per operation, from `operation.tier`, each 1 % longer
  (`WINDOW_MARGIN`) and multiplied by `window_scale` (tests);
- times are the database's `clock_timestamp()`, so hosts whose clocks differ still agree;
- reservations for one (account, operation) are serialised by a transaction-scoped advisory
  lock, so two processes never both take the last slot;
- a slot left in flight longer than `in_flight_timeout_s` is taken to be a dead process's and
  freed (give it twice the client's request timeout: a live request has been answered or
  abandoned by then).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from target_klaviyo.klaviyo.operations import Operation
from target_klaviyo.klaviyo.pacing import WINDOW_MARGIN
from target_klaviyo.ledger.locks import lock_key

if TYPE_CHECKING:
    import psycopg

    from target_klaviyo.ledger.postgres import Connector

DEFAULT_IN_FLIGHT_TIMEOUT_S = 120.0  # twice the client's default request timeout (60 s)

# One statement: drop the rows no window needs any more (answered before the steady window,
# or in flight past the timeout), then count what is left in each window.
_WINDOWS = b"""
WITH now AS MATERIALIZED (SELECT clock_timestamp() AS t),
expired AS (
    DELETE FROM rate_slots USING now
    WHERE account = %(account)s AND operation = %(operation)s
      AND (answered_at <= now.t - make_interval(secs => %(steady)s)
           OR (answered_at IS NULL AND acquired_at < now.t - make_interval(secs => %(stale)s)))
)
SELECT now.t, live.*
FROM now, LATERAL (
    SELECT count(*) FILTER (WHERE answered_at IS NULL
                            AND acquired_at >= now.t - make_interval(secs => %(stale)s)),
           count(*) FILTER (WHERE answered_at > now.t - make_interval(secs => %(burst)s)),
           min(answered_at) FILTER (WHERE answered_at > now.t - make_interval(secs => %(burst)s)),
           count(*) FILTER (WHERE answered_at > now.t - make_interval(secs => %(steady)s)),
           min(answered_at) FILTER (WHERE answered_at > now.t - make_interval(secs => %(steady)s))
    FROM rate_slots
    WHERE account = %(account)s AND operation = %(operation)s
) AS live
"""


def _delay(
    limit: int, length: float, done: int, oldest: datetime | None, in_flight: int, now: datetime
) -> float | None:
    """As `_Window.wait_needed` in pacing.py: 0 when a request may go now; None when only an
    answer can free a slot; else the seconds until the oldest answer leaves the window."""
    if done + in_flight < limit:
        return 0.0
    if not done or oldest is None:
        return None
    return (oldest - now).total_seconds() + length


class SharedPacer:
    """Blocks each caller until its operation may send another request on this account,
    counting the requests of every process that shares the ledger."""

    def __init__(
        self,
        connector: Connector,
        account: str,
        *,
        window_scale: float = 1.0,
        in_flight_timeout_s: float = DEFAULT_IN_FLIGHT_TIMEOUT_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if window_scale <= 0 or in_flight_timeout_s <= 0:
            raise ValueError("window_scale and in_flight_timeout_s must be positive")
        self.account = account
        self._connector = connector
        self._scale = window_scale * (1 + WINDOW_MARGIN)
        self._stale = float(in_flight_timeout_s)
        self._clock = clock
        self._sleep = sleep
        # With every slot in flight only an answer (in any process) frees one: look again
        # this often, a tenth of the burst window, between 5 ms and 100 ms.
        self._poll_s = min(0.1, max(0.005, self._scale / 10))
        self._namespace = f"target-klaviyo rate budget\0{connector.schema}\0{account}"
        self._mutex = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        # Slots this process holds in flight per operation, oldest first.
        self._mine: dict[str, deque[int]] = {}

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._conn = self._connector.connect()
        return self._conn

    def _reserve(self, operation: Operation) -> list[float | None] | None:
        """Take a slot if both windows have one (None), else say how long each needs."""
        burst = 1.0 * self._scale
        steady = 60.0 * self._scale
        params = {
            "account": self.account,
            "operation": operation.name,
            "burst": burst,
            "steady": steady,
            "stale": self._stale,
        }
        with (
            self._mutex,
            self._connector.errors(f"rate budget of {operation.name}"),
        ):
            conn = self._connection()
            with conn.transaction():
                conn.execute(
                    "SELECT pg_advisory_xact_lock(%s)",
                    [lock_key(self._namespace, operation.name, "")],
                )
                row = conn.execute(_WINDOWS, params).fetchone()
                assert row is not None
                now, in_flight, burst_done, burst_oldest, steady_done, steady_oldest = row
                delays = [
                    _delay(
                        operation.tier.burst_per_s, burst, burst_done, burst_oldest, in_flight, now
                    ),
                    _delay(
                        operation.tier.steady_per_min,
                        steady,
                        steady_done,
                        steady_oldest,
                        in_flight,
                        now,
                    ),
                ]
                if any(delay != 0 for delay in delays):
                    return delays
                slot = conn.execute(
                    "INSERT INTO rate_slots (account, operation, acquired_at)"
                    " VALUES (%s, %s, %s) RETURNING id",
                    [self.account, operation.name, now],
                ).fetchone()
                assert slot is not None
            self._mine.setdefault(operation.name, deque()).append(slot[0])
            return None

    def acquire(
        self, operation: Operation, give_up: Callable[[], bool] | None = None
    ) -> float | None:
        """Wait for a slot for `operation`; return the seconds spent waiting, or None when
        `give_up()` became true while waiting (no slot was taken).

        Every `acquire` that returns a number must be followed by one `release` once the
        request is answered (or has failed).
        """
        started = self._clock()
        waited = False
        while True:
            if give_up is not None and give_up():
                return None
            delays = self._reserve(operation)
            if delays is None:
                return self._clock() - started if waited else 0.0
            waited = True
            if None in delays:
                # Every free slot is held by a request in flight: wait for an answer.
                self._sleep(self._poll_s)
                continue
            delay = max(delay for delay in delays if delay is not None)
            self._sleep(min(delay, 0.25) if give_up is not None else delay)

    def release(self, operation: Operation) -> None:
        """The request that `acquire` admitted has been answered: its windows start now."""
        with self._mutex, self._connector.errors(f"rate budget of {operation.name}"):
            mine = self._mine.get(operation.name)
            slot = mine.popleft() if mine else None
            conn = self._connection()
            if slot is not None:
                answered = conn.execute(
                    "UPDATE rate_slots SET answered_at = clock_timestamp() WHERE id = %s",
                    [slot],
                )
                if answered.rowcount == 1:
                    return
            # The slot was freed as stale (the request outlived in_flight_timeout_s): its
            # answer still counts in the windows from now on.
            conn.execute(
                "INSERT INTO rate_slots (account, operation, acquired_at, answered_at)"
                " VALUES (%s, %s, clock_timestamp(), clock_timestamp())",
                [self.account, operation.name],
            )

    def close(self) -> None:
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
