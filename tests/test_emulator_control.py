"""The emulator's rate limits, scripted faults, request log, control API, CLI and schema file."""

from __future__ import annotations

import http.client
import json
import math
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client
from tests.emulator.handlers import ROUTES

REPO = Path(__file__).resolve().parent.parent
SPEC = REPO.parent / "shared" / "klaviyo-openapi" / "stable.json"
SCHEMA_FILE = REPO / "tests" / "emulator" / "klaviyo_schemas.json"
RATE_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def exact_wait(response: requests.Response) -> float:
    return float(response.headers["X-Emulator-Retry-After-Exact"])


# -- rate limits (Klaviyo: rate limits and errors) -------------------------------------------------


@pytest.mark.emulator(window_scale=0.2)
def test_burst_limit_429_retry_after_and_early_retry_detection(
    emulator: Emulator, api: Client
) -> None:
    first = api.get("/api/accounts")  # get_accounts: 1/s burst, 15/m steady
    assert first.status_code == 200
    assert first.headers["RateLimit-Limit"] == "15"
    assert first.headers["RateLimit-Remaining"] == "14"
    assert int(first.headers["RateLimit-Reset"]) >= 1

    throttled = api.get("/api/accounts")
    assert throttled.status_code == 429
    error = throttled.json()["errors"][0]
    assert error["code"] == "throttled"
    assert error["detail"] == "Request was throttled. Expected available in 1 seconds."
    assert throttled.headers["Retry-After"] == "1"
    assert 0 < exact_wait(throttled) <= 0.2
    assert not any(name in throttled.headers for name in RATE_HEADERS)

    early = api.get("/api/accounts")  # retried without waiting
    assert early.status_code == 429
    time.sleep(exact_wait(early) + 0.01)
    assert api.get("/api/accounts").status_code == 200
    log = [(e.status, e.retry_after_violation) for e in emulator.request_log]
    assert log == [(200, False), (429, False), (429, True), (200, False)]


@pytest.mark.emulator(window_scale=0.1)
def test_steady_limit_and_remaining_count_down(emulator: Emulator, api: Client) -> None:
    remaining: list[str] = []
    while len(remaining) < 15:
        response = api.get("/api/accounts")
        if response.status_code == 429:  # the 1/s (here 0.1 s) burst window
            time.sleep(exact_wait(response))
            continue
        remaining.append(response.headers["RateLimit-Remaining"])
    assert remaining == [str(n) for n in range(14, -1, -1)]
    blocked = api.get("/api/accounts")
    assert blocked.status_code == 429
    # Blocked by the 60 s (here 6 s) steady window, not the burst window.
    assert exact_wait(blocked) > 0.5
    assert blocked.headers["Retry-After"] == str(max(1, math.ceil(exact_wait(blocked))))


@pytest.mark.emulator(window_scale=0.2)
def test_limits_are_per_account_and_early_retries_per_key(emulator: Emulator, api: Client) -> None:
    emulator.add_key("pk_second", {"accounts:read"})
    other = Client(emulator.base_url, "pk_second")
    assert api.get("/api/accounts").status_code == 200
    assert other.get("/api/accounts").status_code == 429  # shares the account's quota
    assert api.get("/api/accounts").status_code == 429  # first 429 for this key: not early
    assert [e.retry_after_violation for e in emulator.request_log] == [False, False, False]
    assert [e.key for e in emulator.request_log] == ["cdef", "cond", "cdef"]


@pytest.mark.emulator(throttle=False)
def test_unthrottled_emulator_never_answers_429(api: Client) -> None:
    responses = [api.get("/api/accounts") for _ in range(30)]
    assert {r.status_code for r in responses} == {200}
    assert "RateLimit-Limit" not in responses[0].headers


@pytest.mark.emulator(window_scale=0.001)
def test_create_list_daily_cap_of_150(emulator: Emulator, api: Client) -> None:
    created = 0
    while created < 150:
        response = api.post("/api/lists", kl.create_list(f"L{created}"))
        if response.status_code == 429:
            assert exact_wait(response) < 1  # burst / steady windows are milliseconds here
            time.sleep(exact_wait(response))
            continue
        assert response.status_code == 201
        created += 1
    capped = api.post("/api/lists", kl.create_list("one too many"))
    assert capped.status_code == 429
    # The daily window is 86.4 s at this scale.
    assert exact_wait(capped) > 60
    assert int(capped.headers["Retry-After"]) == math.ceil(exact_wait(capped))
    assert len(emulator.dump()["lists"]) == 150


# -- faults -------------------------------------------------------------------------------------


def test_fault_429_with_and_without_retry_after(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("429", operation="get_lists", retry_after=2)
    emulator.add_fault("429", operation="get_profiles", retry_after=None)
    with_header = api.get("/api/lists")
    assert with_header.status_code == 429
    assert with_header.headers["Retry-After"] == "2"
    assert with_header.json()["errors"][0]["code"] == "throttled"
    without = api.get("/api/profiles")
    assert without.status_code == 429 and "Retry-After" not in without.headers
    assert api.get("/api/lists").status_code == 200  # retried 2 s too early: flagged
    assert [(e.status, e.fault, e.retry_after_violation) for e in emulator.request_log] == [
        (429, "429", False),
        (429, "429", False),
        (200, None, True),
    ]


@pytest.mark.parametrize(("kind", "status", "html"), [("500", 500, False), ("503", 503, False),
                                                      ("504", 504, True), ("524", 524, True),
                                                      ("413", 413, False)])  # fmt: skip
def test_fault_status_codes(
    emulator: Emulator, api: Client, kind: str, status: int, html: bool
) -> None:
    emulator.add_fault(kind)
    response = api.get("/api/accounts")
    assert response.status_code == status
    if html:
        assert response.headers["Content-Type"].startswith("text/html")
    else:
        assert response.json()["errors"][0]["status"] == status
    assert api.get("/api/accounts").status_code == 200  # count=1 by default
    assert emulator.request_log[0].status == status


def test_fault_html403_is_a_cloudflare_challenge(api: Client, emulator: Emulator) -> None:
    emulator.add_fault("html403")
    response = api.get("/api/profiles")
    assert response.status_code == 403
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.headers["cf-mitigated"] == "challenge"
    assert "<html" in response.text


def test_fault_reset_closes_the_connection(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("reset", operation="bulk_import_profiles")
    body = kl.bulk_import([kl.profile({"email": "a@example.com"})])
    with pytest.raises(requests.exceptions.ConnectionError):
        api.post("/api/profile-bulk-import-jobs", body)
    assert api.post("/api/profile-bulk-import-jobs", body).status_code == 202
    first = emulator.request_log[0]
    assert (first.status, first.fault, first.items) == (0, "reset", 1)


def test_fault_slow_and_timeout(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("slow", delay_s=0.3)
    started = time.monotonic()
    assert api.get("/api/lists").status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator.add_fault("timeout", delay_s=1.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        api.request("GET", "/api/lists", timeout=0.3)
    assert api.get("/api/lists").status_code == 200


def test_fault_count_operation_and_until_cleared(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("503", operation="get_lists", count=2)
    assert api.get("/api/accounts").status_code == 200  # other operations unaffected
    assert [api.get("/api/lists").status_code for _ in range(3)] == [503, 503, 200]
    emulator.add_fault("500", count=None)
    assert [api.get("/api/lists").status_code for _ in range(3)] == [500, 500, 500]
    emulator.clear_faults()
    assert api.get("/api/lists").status_code == 200


def test_unknown_fault_kind_or_parameter_is_refused(emulator: Emulator) -> None:
    with pytest.raises(ValueError, match="unknown fault kind"):
        emulator.add_fault("418")
    with pytest.raises(ValueError, match="takes no parameter"):
        emulator.add_fault("500", delay_s=1)
    with pytest.raises(ValueError, match="unknown operation"):
        emulator.add_fault("500", operation="get_nothing")


# -- request log --------------------------------------------------------------------------------


def test_request_log_records_items_bytes_and_times(emulator: Emulator, api: Client) -> None:
    body = kl.bulk_import([kl.profile({"email": f"u{i}@example.com"}) for i in range(7)])
    raw = kl.encode(body)
    api.post("/api/profile-bulk-import-jobs", raw=raw)
    api.get("/api/nothing")
    bulk, unknown = emulator.request_log
    assert (bulk.operation, bulk.method, bulk.path, bulk.status) == (
        "bulk_import_profiles",
        "POST",
        "/api/profile-bulk-import-jobs",
        202,
    )
    assert (bulk.items, bulk.bytes) == (7, len(raw))
    assert bulk.started <= bulk.ended and bulk.started_wall <= bulk.ended_wall
    assert (unknown.operation, unknown.status) == ("unknown", 404)


@pytest.mark.emulator(throttle=False)
def test_concurrent_requests_are_all_logged(emulator: Emulator) -> None:
    def worker() -> None:
        client = Client(emulator.base_url, emulator.private_key)
        for _ in range(10):
            assert client.get("/api/accounts").status_code == 200

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(emulator.request_log) == 80


def test_connections_are_kept_alive(emulator: Emulator) -> None:
    connection = http.client.HTTPConnection(emulator.host, emulator.port, timeout=5)
    headers = {"Authorization": f"Klaviyo-API-Key {emulator.private_key}", "revision": "2026-07-15"}
    sockets = []
    for path in ("/api/lists", "/api/profiles", "/api/nothing"):
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        assert int(response.headers["Content-Length"]) == len(response.read())
        sockets.append(connection.sock)
    assert sockets[0] is not None and sockets.count(sockets[0]) == 3
    connection.close()


# -- control API --------------------------------------------------------------------------------


def test_control_api(emulator: Emulator, api: Client) -> None:
    control = requests.Session()
    base = f"{emulator.base_url}/_emulator"
    fault = control.post(f"{base}/faults", json={"kind": "503", "operation": "get_lists"})
    assert fault.status_code == 200 and fault.json()["kind"] == "503"
    assert control.get(f"{base}/faults").json()[0]["operation"] == "get_lists"
    assert api.get("/api/lists").status_code == 503
    control.post(f"{base}/faults", json={"kind": "500", "count": None})
    assert control.delete(f"{base}/faults").status_code == 200
    assert api.get("/api/lists").status_code == 200

    assert control.post(f"{base}/keys", json={"key": "pk_ro", "scopes": ["lists:read"]}).ok
    read_only = Client(emulator.base_url, "pk_ro")
    assert read_only.get("/api/lists").status_code == 200
    assert read_only.post("/api/lists", kl.create_list("X")).status_code == 403

    api.post("/api/event-bulk-create-jobs",
             kl.bulk_events([({"email": "a@example.com"}, [kl.event()])]))  # fmt: skip
    assert control.post(f"{base}/wait-idle", json={"timeout": 5}).json() == {"idle": True}
    state = control.get(f"{base}/state").json()
    assert len(state["events"]) == 1 and len(state["profiles"]) == 1
    requests_seen = control.get(f"{base}/requests").json()
    assert [r["operation"] for r in requests_seen][:2] == ["get_lists", "get_lists"]
    assert control.get(f"{base}/violations").json() == []

    assert control.post(f"{base}/faults", json={"kind": "nope"}).status_code == 400
    assert control.get(f"{base}/nothing").status_code == 404
    assert control.post(f"{base}/reset").json() == {"reset": True}
    assert control.get(f"{base}/state").json()["profiles"] == []
    assert control.get(f"{base}/requests").json() == []
    assert read_only.get("/api/lists").status_code == 401  # added keys are forgotten too


def test_reset_and_restart_in_process(emulator: Emulator, api: Client) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    emulator.reset()
    assert emulator.dump()["profiles"] == []
    assert (
        api.post(
            "/api/profile-bulk-import-jobs",
            kl.bulk_import([kl.profile({"email": "b@example.com"})]),
        ).status_code
        == 202
    )
    assert emulator.wait_idle(5)
    assert len(emulator.dump()["profiles"]) == 1


def test_expect_violations_counts_what_the_test_declares() -> None:
    with Emulator() as em:
        client = Client(em.base_url, em.private_key, revision=None)
        client.get("/api/accounts")
        problem = em.unexpected_violations()
        assert problem is not None and "revision" in problem
        em.expect_violations(1)
        assert em.unexpected_violations() is None
        with pytest.raises(ValueError):
            em.expect_violations(0)


# -- command line -------------------------------------------------------------------------------


def test_python_m_tests_emulator_prints_its_address_and_serves() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0", "--window-scale", "0.5",
         "--job-delay", "0"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.fullmatch(
            r"Klaviyo emulator at (http://127\.0\.0\.1:\d+) "
            r"\(private key (pk_\w+), public key (\w+)\)\n",
            line,
        )
        assert match, line
        base_url, private_key, public_key = match.groups()
        response = Client(base_url, private_key).get("/api/accounts")
        assert response.status_code == 200
        assert response.json()["data"][0]["attributes"]["public_api_key"] == public_key
    finally:
        process.terminate()
        assert process.wait(timeout=10) == 0


# -- derived schema file ------------------------------------------------------------------------


def test_schema_file_has_every_operation_with_closed_attributes() -> None:
    derived = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    operations = derived["operations"]
    assert set(operations) == set(ROUTES)  # every operation served has its schema
    bulk = operations["bulk_import_profiles"]
    assert (bulk["method"], bulk["path"], bulk["success_status"]) == (
        "POST", "/api/profile-bulk-import-jobs", [202],
    )  # fmt: skip
    assert bulk["rate_limit"] == {"burst": 10, "steady": 150}
    assert bulk["scopes"] == ["lists:write", "profiles:write"]
    assert operations["create_list"]["rate_limit"]["daily"] == 150
    row = bulk["request_schema"]["properties"]["data"]["properties"]["attributes"]["properties"][
        "profiles"
    ]["properties"]["data"]["items"]
    attributes = row["properties"]["attributes"]
    assert attributes["additionalProperties"] is False
    assert "additionalProperties" not in attributes["properties"]["properties"]  # free-form
    assert attributes["properties"]["email"]["type"] == ["string", "null"]
    # No keyword of the spec's prose (catalog items have a property named "description").
    keywords = set(_schema_keywords([op["request_schema"] for op in operations.values()]))
    assert not keywords & {"description", "example", "title", "default"}


def _schema_keywords(node: Any, naming: bool = False) -> Any:
    """The keywords of every schema in ``node``; the names under ``properties`` are not."""
    if isinstance(node, list):
        for item in node:
            yield from _schema_keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if naming:
                yield from _schema_keywords(value)
            else:
                yield key
                yield from _schema_keywords(value, naming=key == "properties")


@pytest.mark.skipif(not SPEC.exists(), reason=f"Klaviyo's OpenAPI spec not found at {SPEC}")
def test_derived_schema_file_is_up_to_date(tmp_path: Path) -> None:
    output = tmp_path / "klaviyo_schemas.json"
    script = REPO / "scripts" / "derive_klaviyo_schemas.py"
    for _ in range(2):  # idempotent
        subprocess.run(
            [sys.executable, str(script), str(SPEC), "--output", str(output)],
            check=True, capture_output=True,
        )  # fmt: skip
        assert output.read_text(encoding="utf-8") == SCHEMA_FILE.read_text(encoding="utf-8")


def test_logged_request_is_json_serialisable(emulator: Emulator, api: Client) -> None:
    api.get("/api/accounts")
    entry: dict[str, Any] = emulator.request_log[0].to_dict()
    assert json.loads(json.dumps(entry))["operation"] == "get_accounts"
