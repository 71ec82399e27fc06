"""Bulk import jobs under the latency model (each job completes its latency after its own
submission, side by side with the others) and the job list endpoint
(``GET /api/profile-bulk-import-jobs``), as a client sees them over HTTP.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client

JOBS = "/api/profile-bulk-import-jobs"


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def rows(count: int, prefix: str = "u") -> list[dict[str, Any]]:
    return [kl.profile({"email": f"{prefix}{i}@example.com"}) for i in range(count)]


def submit(api: Client, body_rows: list[dict[str, Any]]) -> tuple[str, float, dict[str, Any]]:
    """Create a job: its id, the client's clock just before sending, and the 202 attributes."""
    sent = time.monotonic()
    response = api.post(JOBS, kl.bulk_import(body_rows))
    assert response.status_code == 202, response.text
    return response.json()["data"]["id"], sent, response.json()["data"]["attributes"]


def job(api: Client, job_id: str) -> dict[str, Any]:
    response = api.get(f"{JOBS}/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["attributes"])


def wait_ended(api: Client, job_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        attributes = job(api, job_id)
        if attributes["status"] in ("complete", "cancelled") or time.monotonic() > deadline:
            return attributes
        time.sleep(0.02)


STATUS_ORDER = {"queued": 0, "processing": 1, "complete": 2, "cancelled": 2}


# -- latency model ------------------------------------------------------------------------------


@pytest.mark.emulator(job_latency_s=1.0, throttle=False)
def test_jobs_run_side_by_side_each_completing_its_latency_after_its_own_submission(
    api: Client,
) -> None:
    latency = 1.0
    first, first_sent, first_answer = submit(api, rows(400, "a"))
    time.sleep(0.3)
    second, second_sent, second_answer = submit(api, rows(400, "b"))
    assert first_answer["status"] == second_answer["status"] == "queued"
    assert first_answer["completed_count"] == 0 and first_answer["started_at"] is None

    snapshots: list[tuple[float, dict[str, Any], dict[str, Any]]] = []
    while True:
        a, b = job(api, first), job(api, second)
        snapshots.append((time.monotonic(), a, b))
        if a["status"] == b["status"] == "complete":
            break
        assert len(snapshots) < 2000, snapshots[-1]
        time.sleep(0.02)

    for index, sent in ((1, first_sent), (2, second_sent)):
        states = [snapshot[index] for snapshot in snapshots]
        statuses = [state["status"] for state in states]
        ranks = [STATUS_ORDER[status] for status in statuses]
        assert ranks == sorted(ranks), statuses  # queued -> processing -> complete
        assert "processing" in statuses
        counts = [state["completed_count"] for state in states]
        assert counts == sorted(counts)  # rows are applied progressively
        assert any(0 < count < 400 for count in counts)
        completed_seen = next(
            t for t, *pair in snapshots if pair[index - 1]["status"] == "complete"
        )
        assert completed_seen >= sent + latency  # never before its own submission + latency
        final = states[-1]
        assert final["completed_count"] == final["total_count"] == 400
        assert final["failed_count"] == 0
        assert final["started_at"] is not None and final["completed_at"] is not None
    # Side by side: the second job was processing while the first still was (no waiting behind).
    assert any(a["status"] == b["status"] == "processing" for _, a, b in snapshots)


@pytest.mark.emulator(job_latency_s=0.6, throttle=False, supported_regions={"US"})
def test_rows_apply_in_row_order_with_failures_counted_and_reported(
    emulator: Emulator, api: Client
) -> None:
    body_rows = rows(30)
    # Phones of a region the account cannot send to: import errors, found when the row is applied.
    body_rows[10]["attributes"]["phone_number"] = "+447911123456"
    body_rows[20]["attributes"]["phone_number"] = "+447911123457"
    job_id, _, _ = submit(api, body_rows)
    final = wait_ended(api, job_id)
    assert final["status"] == "complete"
    assert (final["completed_count"], final["failed_count"]) == (28, 2)
    errors = api.get(f"{JOBS}/{job_id}/import-errors").json()["data"]
    assert [e["attributes"]["source"]["pointer"] for e in errors] == [
        "/data/attributes/profiles/data/10/attributes/phone_number",
        "/data/attributes/profiles/data/20/attributes/phone_number",
    ]
    emails = [p["attributes"]["email"] for p in emulator.dump()["profiles"]]
    assert emails == [f"u{i}@example.com" for i in range(30) if i not in (10, 20)]


@pytest.mark.emulator(job_latency_s=0.6, throttle=False)
def test_cancel_job_fault_stops_a_timed_job_half_way(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("cancel_job")
    cancelled, _, _ = submit(api, rows(10, "c"))
    normal, _, _ = submit(api, rows(4, "n"))
    first = wait_ended(api, cancelled)
    assert first["status"] == "cancelled"
    assert first["completed_count"] == 5 and first["completed_at"] is not None
    assert wait_ended(api, normal)["status"] == "complete"
    emails = {p["attributes"]["email"] for p in emulator.dump()["profiles"]}
    assert {f"c{i}@example.com" for i in range(5)} <= emails
    assert not {f"c{i}@example.com" for i in range(5, 10)} & emails


@pytest.mark.emulator(job_latency_s=1.0, window_scale=0.01, throttle=False)
def test_latency_is_in_real_seconds_whatever_the_window_scale(api: Client) -> None:
    job_id, sent, _ = submit(api, rows(3))
    while job(api, job_id)["status"] != "complete":
        time.sleep(0.02)
    assert time.monotonic() >= sent + 1.0


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_config_control_route_switches_the_job_model(emulator: Emulator, api: Client) -> None:
    control = requests.Session()
    base = f"{emulator.base_url}/_emulator/config"
    assert control.get(base).json() == {"job_latency_s": None}
    assert control.post(base, json={"job_latency_s": 0.8}).json() == {"job_latency_s": 0.8}
    job_id, sent, _ = submit(api, rows(50))
    statuses = []
    while (attributes := job(api, job_id))["status"] != "complete":
        statuses.append(attributes["status"])
        time.sleep(0.02)
    assert time.monotonic() >= sent + 0.8
    assert "processing" in statuses
    assert control.post(base, json={"job_latency_s": -1}).status_code == 400
    assert control.post(base, json={"job_latency_s": "soon"}).status_code == 400
    assert control.post(base, json={"latency": 1}).status_code == 400
    assert control.post(base, json={"job_latency_s": None}).json() == {"job_latency_s": None}


def test_job_latency_must_be_a_non_negative_number() -> None:
    with pytest.raises(ValueError):
        Emulator(job_latency_s=-0.5)


# -- the job list -------------------------------------------------------------------------------


@pytest.fixture
def five_jobs(emulator: Emulator, api: Client) -> list[str]:
    """Two complete jobs, one cancelled, then two that stay queued (a latency of 10 minutes)."""
    ids = [submit(api, rows(2, f"j{n}-"))[0] for n in range(2)]
    emulator.add_fault("cancel_job")
    ids.append(submit(api, rows(2, "j2-"))[0])
    assert emulator.wait_idle(10)
    emulator.configure(job_latency_s=600)
    ids += [submit(api, rows(2, f"j{n}-"))[0] for n in (3, 4)]
    return ids


def listed(api: Client, **params: str) -> tuple[list[str], dict[str, Any]]:
    response = api.get(JOBS, **params)
    assert response.status_code == 200, response.text
    document = response.json()
    return [item["id"] for item in document["data"]], document["links"]


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_list_filters_on_status(api: Client, five_jobs: list[str]) -> None:
    j1, j2, j3, j4, j5 = five_jobs
    assert listed(api)[0] == five_jobs
    assert listed(api, filter='equals(status,"queued")')[0] == [j4, j5]
    assert listed(api, filter="equals(status,'complete')")[0] == [j1, j2]
    assert listed(api, filter='any(status,["complete","cancelled"])')[0] == [j1, j2, j3]
    assert listed(api, filter='equals(status,"processing")')[0] == []


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_list_entries_are_the_job_resources(api: Client, five_jobs: list[str]) -> None:
    document = api.get(JOBS).json()
    for entry in document["data"]:
        single = api.get(f"{JOBS}/{entry['id']}").json()["data"]
        assert entry == single
    assert document["links"]["self"].endswith(JOBS)


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_list_sorts_both_ways_and_pages_with_cursors(api: Client, five_jobs: list[str]) -> None:
    assert listed(api, sort="created_at")[0] == five_jobs
    assert listed(api, sort="-created_at")[0] == five_jobs[::-1]
    for sort, expected in (("created_at", five_jobs), ("-created_at", five_jobs[::-1])):
        pages: list[list[str]] = []
        ids, links = listed(api, sort=sort, **{"page[size]": "2"})
        assert links["prev"] is None
        pages.append(ids)
        while links["next"]:
            response = api.get(links["next"])
            assert response.status_code == 200
            document = response.json()
            pages.append([item["id"] for item in document["data"]])
            previous_links, links = links, document["links"]
            assert links["prev"] is not None
            back = api.get(links["prev"]).json()
            assert [item["id"] for item in back["data"]] == pages[-2]
            assert links["self"] == previous_links["next"]
        assert pages == [expected[0:2], expected[2:4], expected[4:5]]


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_list_pages_hold_at_most_100_and_20_by_default(emulator: Emulator, api: Client) -> None:
    for n in range(23):
        submit(api, rows(1, f"p{n}-"))
    ids, links = listed(api)
    assert len(ids) == 20 and links["next"]
    assert len(listed(api, **{"page[size]": "100"})[0]) == 23


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"page[size]": "0"}, "page[size]"),
        ({"page[size]": "101"}, "page[size]"),
        ({"page[size]": "ten"}, "page[size]"),
        ({"page[cursor]": "not-a-cursor"}, "page[cursor]"),
        ({"sort": "status"}, "sort"),
        ({"sort": "-total_count"}, "sort"),
        ({"filter": 'equals(status,"done")'}, "filter"),
        ({"filter": 'equals(created_at,"2024-01-01")'}, "filter"),
        ({"filter": 'greater-than(status,"queued")'}, "filter"),
        ({"filter": "equals(status,queued)"}, "filter"),
    ],
)
def test_job_list_refuses_bad_parameters_naming_them(
    emulator: Emulator, api: Client, params: dict[str, str], parameter: str
) -> None:
    emulator.expect_violations(1)
    response = api.get(JOBS, **params)
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    (error,) = response.json()["errors"]
    assert error["status"] == 400 and error["code"] == "invalid"
    assert error["source"] == {"parameter": parameter}


@pytest.mark.emulator(window_scale=10)
def test_job_list_has_its_own_rate_limit_window(emulator: Emulator, api: Client) -> None:
    job_id, _, _ = submit(api, rows(1))
    answers = []
    for _ in range(30):
        response = api.get(JOBS)
        answers.append(response.status_code)
        if response.status_code == 429:
            break
        assert response.headers["RateLimit-Limit"] == "150"  # M tier: 10/s, 150/m
    assert answers[-1] == 429 and answers.count(200) <= 20
    assert "Retry-After" in response.headers
    # Getting one job is another operation with its own windows.
    assert api.get(f"{JOBS}/{job_id}").status_code == 200
    throttled = [r for r in emulator.request_log if r.status == 429]
    assert [r.operation for r in throttled] == ["get_bulk_import_profiles_jobs"]
