"""The rate-limit floor: the least time Klaviyo's tiers allow for a workload's requests.

For ``n`` requests of one operation with a burst limit ``b`` (per second) and a steady limit
``s`` (per minute), in fixed windows that open with the first request at t = 0:

- ``n <= s``: the requests go in bursts of ``b``, one a second: ``ceil(n / b) - 1`` seconds;
- otherwise ``floor((n - 1) / s)`` full minutes, then the bursts of the remainder.

Each operation has its own windows
(https://developers.klaviyo.com/en/docs/rate_limits_and_error_handling), so operations run in
parallel and the floor of a workload is the largest time over its operations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from benchmarks.workload import EVENTS_PER_REQUEST, PROFILES_PER_JOB, Workload
from target_klaviyo.klaviyo.operations import OPERATIONS, Tier


def tier_time(n: int, tier: Tier) -> float:
    """Least seconds from the first to the last of ``n`` requests of one operation."""
    if n <= 0:
        return 0.0
    minutes = (n - 1) // tier.steady_per_min
    remainder = n - minutes * tier.steady_per_min
    return minutes * 60.0 + math.ceil(remainder / tier.burst_per_s) - 1


@dataclass(frozen=True)
class OperationFloor:
    operation: str
    requests: int
    tier: Tier
    seconds: float


def bulk_requests(workload: Workload) -> dict[str, int]:
    """Requests per operation at Klaviyo's batch maxima (profiles and members both go through
    profile import jobs; the job list is polled at least once)."""
    jobs = math.ceil(workload.profiles / PROFILES_PER_JOB) + math.ceil(
        workload.members / PROFILES_PER_JOB
    )
    counts = {
        "get_profiles": 1,  # the start-up check of the key
        "bulk_import_profiles": jobs,
        "get_bulk_import_profiles_jobs": 1 if jobs else 0,
        "bulk_create_events": math.ceil(workload.events / EVENTS_PER_REQUEST),
    }
    if workload.members:
        counts["get_lists"] = 1
        counts["create_list"] = 1
    return {name: n for name, n in counts.items() if n}


def per_record_requests(workload: Workload) -> dict[str, int]:
    """What a per-record loader sends: one profile-import per profile or list member (without
    the list subscription calls it would also need), one POST /api/events per event."""
    return {
        "create_or_update_profile": workload.profiles + workload.members,
        "create_event": workload.events,
    }


def floor(counts: dict[str, int], job_seconds: float = 0.0) -> tuple[float, list[OperationFloor]]:
    """The workload's floor (seconds) and each operation's share of it.

    ``job_seconds`` is added to the job submissions: the time the server takes to process the
    last job, which the tiers do not cover.
    """
    rows = []
    for name, n in counts.items():
        tier = OPERATIONS[name].tier
        seconds = tier_time(n, tier)
        if name == "bulk_import_profiles":
            seconds += job_seconds
        rows.append(OperationFloor(name, n, tier, seconds))
    return max((row.seconds for row in rows), default=0.0), rows


def format_rows(rows: list[OperationFloor]) -> list[str]:
    return [
        f"    {row.operation:<32} {row.requests:>9,} requests  tier {row.tier.name:<2} "
        f"({row.tier.burst_per_s}/s, {row.tier.steady_per_min}/min)  >= {row.seconds:,.0f} s"
        for row in rows
    ]
