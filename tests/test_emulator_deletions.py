"""Privacy deletion (``POST /api/data-privacy-deletion-jobs``) as a client sees it over HTTP:
202 with no body, then the profile gone with its events, list memberships and consent; and the
external-id lookup a client makes first (``GET /api/profiles?filter=any(external_id,[...])``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client

DELETIONS = "/api/data-privacy-deletion-jobs"


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def deletion(
    *, email: str | None = None, phone: str | None = None, profile_id: str | None = None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {}
    if email is not None:
        attributes["email"] = email
    if phone is not None:
        attributes["phone_number"] = phone
    profile: dict[str, Any] = {"type": "profile", "attributes": attributes}
    if profile_id is not None:
        profile["id"] = profile_id
    return {
        "data": {
            "type": "data-privacy-deletion-job",
            "attributes": {"profile": {"data": profile}},
        }
    }


def upsert(api: Client, **attributes: Any) -> str:
    response = api.post("/api/profile-import", kl.profile_import(attributes))
    assert response.status_code in (200, 201), response.text
    return str(response.json()["data"]["id"])


def profile_ids(api: Client, **params: str) -> list[str]:
    response = api.get("/api/profiles", **params)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


def only_error(response: Any) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    return dict(error)


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_deletion_is_202_without_body_then_removes_profile_events_lists_and_consent(
    emulator: Emulator, api: Client
) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    row = kl.consent_row(email="ann@example.com")
    assert api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([row], list_id)).ok
    kept = upsert(api, email="bob@example.com")
    events = kl.bulk_events(
        [({"email": "ann@example.com"}, [kl.event()]), ({"email": "bob@example.com"}, [kl.event()])]
    )
    assert api.post("/api/event-bulk-create-jobs", events).status_code == 202
    assert emulator.wait_idle()
    (ann,) = profile_ids(api, filter='equals(email,"ann@example.com")')

    response = api.post(DELETIONS, deletion(email="ann@example.com"))
    assert response.status_code == 202
    assert response.content == b""
    assert emulator.wait_idle()

    assert profile_ids(api, filter='equals(email,"ann@example.com")') == []
    assert profile_ids(api) == [kept]
    assert api.get(f"/api/lists/{list_id}/relationships/profiles").json()["data"] == []
    state = emulator.dump()
    assert [event["profile_id"] for event in state["events"]] == [kept]
    (record,) = state["deletions"]
    assert record["identifier"] == {"email": "ann@example.com"}
    assert record["status"] == "complete" and record["deleted_profile_ids"] == [ann]

    # The email is free again: a later subscribe makes a new profile with fresh consent.
    again = kl.consent_row(email="ann@example.com")
    assert api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([again])).ok
    assert emulator.wait_idle()
    (new,) = profile_ids(api, filter='equals(email,"ann@example.com")')
    assert new != ann


@pytest.mark.emulator(throttle=False, job_delay_s=0)
@pytest.mark.parametrize("by", ["id", "phone_number"])
def test_deletion_by_profile_id_or_phone(emulator: Emulator, api: Client, by: str) -> None:
    target = upsert(api, email="ann@example.com", phone_number="+14155550101")
    other = upsert(api, email="bob@example.com")
    body = deletion(profile_id=target) if by == "id" else deletion(phone="+14155550101")
    assert api.post(DELETIONS, body).status_code == 202
    assert emulator.wait_idle()
    assert profile_ids(api) == [other]
    # The deleted profile's identifiers can be used again.
    assert upsert(api, phone_number="+14155550101") not in (target, other)


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_deleting_an_unknown_profile_is_accepted_and_changes_nothing(
    emulator: Emulator, api: Client
) -> None:
    kept = upsert(api, email="bob@example.com")
    assert api.post(DELETIONS, deletion(email="nobody@example.com")).status_code == 202
    assert api.post(DELETIONS, deletion(profile_id="01NOSUCHPROFILE0000000000")).status_code == 202
    assert emulator.wait_idle()
    assert profile_ids(api) == [kept]
    assert [d["deleted_profile_ids"] for d in emulator.dump()["deletions"]] == [[], []]


@pytest.mark.emulator(throttle=False, job_latency_s=0.2)
def test_under_the_latency_model_the_profile_goes_when_the_latency_has_passed(
    emulator: Emulator, api: Client
) -> None:
    upsert(api, email="ann@example.com")
    assert api.post(DELETIONS, deletion(email="ann@example.com")).status_code == 202
    assert emulator.dump()["deletions"][0]["status"] == "queued"
    assert emulator.wait_idle()
    assert profile_ids(api) == []
    assert emulator.dump()["deletions"][0]["status"] == "complete"


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_cursor_pages_stay_valid_across_a_deletion(emulator: Emulator, api: Client) -> None:
    ids = [upsert(api, email=f"u{i}@example.com") for i in range(5)]
    first = api.get("/api/profiles", **{"page[size]": "2"}).json()
    assert [item["id"] for item in first["data"]] == ids[:2]
    assert api.post(DELETIONS, deletion(profile_id=ids[2])).status_code == 202
    assert emulator.wait_idle()
    second = api.request("GET", first["links"]["next"]).json()
    assert [item["id"] for item in second["data"]] == [ids[3], ids[4]]
    assert second["links"]["next"] is None
    assert len(profile_ids(api, sort="-created")) == 4


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (deletion(email="a@example.com", phone="+14155550101"), "/data/attributes/profile/data"),
        (deletion(email="a@example.com", profile_id="01ABC"), "/data/attributes/profile/data"),
        (deletion(), "/data/attributes/profile/data"),
        (deletion(email="not-an-email"), "/data/attributes/profile/data/attributes/email"),
        (deletion(phone="4155550101"), "/data/attributes/profile/data/attributes/phone_number"),
    ],
)
def test_one_valid_identifier_is_required(
    emulator: Emulator, api: Client, body: dict[str, Any], pointer: str
) -> None:
    emulator.expect_violations(1)
    response = api.post(DELETIONS, body)
    assert response.status_code == 400
    assert only_error(response)["source"]["pointer"] == pointer
    assert emulator.dump()["deletions"] == []


def test_scope_and_rate_limit(emulator: Emulator) -> None:
    emulator.add_key("pk_profiles", {"profiles:write"})
    refused = Client(emulator.base_url, "pk_profiles").post(DELETIONS, deletion(email="a@b.com"))
    assert refused.status_code == 403
    assert "data-privacy:write" in only_error(refused)["detail"]
    emulator.add_key("pk_privacy", {"data-privacy:write"})
    allowed = Client(emulator.base_url, "pk_privacy").post(DELETIONS, deletion(email="a@b.com"))
    assert allowed.status_code == 202
    assert allowed.headers["RateLimit-Limit"] == "60"  # S: 3/s, 60/m


@pytest.mark.emulator(window_scale=100)
def test_the_fourth_request_of_a_burst_window_is_429(api: Client) -> None:
    # Windows 100 times longer than Klaviyo's: the burst window outlasts the 4 requests.
    statuses = [
        api.post(DELETIONS, deletion(email=f"u{i}@example.com")).status_code for i in range(4)
    ]
    assert statuses == [202, 202, 202, 429]


# -- resolving external ids ---------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
def test_external_ids_resolve_in_one_request_with_a_sparse_fieldset(api: Client) -> None:
    wanted = {upsert(api, external_id=f"ext-{i}", email=f"u{i}@example.com"): f"ext-{i}"
              for i in range(3)}  # fmt: skip
    upsert(api, external_id="ext-other")
    response = api.get(
        "/api/profiles",
        filter="any(external_id,['ext-0','ext-1','ext-2','ext-unknown'])",
        **{"fields[profile]": "external_id", "page[size]": "100"},
    )
    assert response.status_code == 200, response.text
    found = {item["id"]: item["attributes"] for item in response.json()["data"]}
    assert found == {pid: {"external_id": external} for pid, external in wanted.items()}


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_the_official_sdk_requests_a_deletion(emulator: Emulator, api: Client) -> None:
    sdk = pytest.importorskip("klaviyo_api")
    models = pytest.importorskip("openapi_client.models")
    klaviyo = sdk.KlaviyoAPI(emulator.private_key, max_retries=0, test_host=emulator.base_url)
    target = upsert(api, email="ann@example.com")
    query = models.DataPrivacyCreateDeletionJobQuery.from_dict(deletion(profile_id=target))
    assert klaviyo.Data_Privacy.request_profile_deletion(query) is None
    assert emulator.wait_idle()
    assert profile_ids(api) == []
