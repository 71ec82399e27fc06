"""Email suppressions as a client sees them over HTTP: bulk suppress and unsuppress jobs
(``/api/profile-suppression-bulk-{create,delete}-jobs``), their counts, the suppressions they
leave on profiles, limits, scopes and the job lists.
"""

from __future__ import annotations

from typing import Any

import pytest
import requests

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client

SUPPRESS = "/api/profile-suppression-bulk-create-jobs"
UNSUPPRESS = "/api/profile-suppression-bulk-delete-jobs"


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def submit(api: Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = api.post(path, body)
    assert response.status_code == 202, response.text
    return dict(response.json()["data"])


def job(api: Client, path: str, job_id: str) -> dict[str, Any]:
    response = api.get(f"{path}/{job_id}")
    assert response.status_code == 200, response.text
    return dict(response.json()["data"]["attributes"])


def marketing(api: Client, email: str) -> dict[str, Any] | None:
    """The profile's email marketing subscription as get_profiles shows it (None: no profile)."""
    response = api.get(
        "/api/profiles",
        filter=f'equals(email,"{email}")',
        **{"additional-fields[profile]": "subscriptions"},
    )
    assert response.status_code == 200, response.text
    found = response.json()["data"]
    if not found:
        return None
    return dict(found[0]["attributes"]["subscriptions"]["email"]["marketing"])


def reasons(api: Client, email: str) -> list[str]:
    found = marketing(api, email)
    assert found is not None, f"no profile for {email}"
    return [entry["reason"] for entry in found["suppression"]]


def only_error(response: requests.Response) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    return dict(error)


# -- suppress -----------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
def test_suppress_answers_a_queued_job_and_suppresses_each_email_once_it_ends(
    emulator: Emulator, api: Client
) -> None:
    assert api.post("/api/profile-import", kl.profile_import({"email": "ann@example.com"})).ok
    created = submit(api, SUPPRESS, kl.suppression(["ann@example.com", "new@example.com"]))
    assert created["type"] == "profile-suppression-bulk-create-job"
    attributes = created["attributes"]
    assert attributes["status"] == "queued" and attributes["total_count"] == 2
    assert attributes["completed_count"] == 0 and attributes["completed_at"] is None

    assert emulator.wait_idle()
    ended = job(api, SUPPRESS, created["id"])
    assert ended["status"] == "complete" and ended["completed_at"] is not None
    assert (ended["completed_count"], ended["skipped_count"]) == (2, 0)
    for email in ("ann@example.com", "new@example.com"):
        found = marketing(api, email)
        assert found is not None  # an email without a profile gets one, suppressed
        assert [entry["reason"] for entry in found["suppression"]] == ["USER_SUPPRESSED"]
        assert found["suppression"][0]["timestamp"]
        assert found["can_receive_email_marketing"] is False


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_suppression_leaves_consent_and_list_membership_alone(
    emulator: Emulator, api: Client
) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    row = kl.consent_row(email="sub@example.com")
    assert api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([row], list_id)).ok
    assert emulator.wait_idle()
    submit(api, SUPPRESS, kl.suppression(["sub@example.com"]))
    assert emulator.wait_idle()

    found = marketing(api, "sub@example.com")
    assert found is not None
    assert found["consent"] == "SUBSCRIBED"
    assert [entry["reason"] for entry in found["suppression"]] == ["USER_SUPPRESSED"]
    members = api.get(f"/api/lists/{list_id}/relationships/profiles").json()["data"]
    assert len(members) == 1


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_suppressing_an_already_suppressed_email_is_skipped(
    emulator: Emulator, api: Client
) -> None:
    submit(api, SUPPRESS, kl.suppression(["ann@example.com"]))
    assert emulator.wait_idle()
    again = submit(api, SUPPRESS, kl.suppression(["ann@example.com", "bob@example.com"]))
    assert emulator.wait_idle()
    ended = job(api, SUPPRESS, again["id"])
    assert (ended["completed_count"], ended["skipped_count"], ended["total_count"]) == (1, 1, 2)
    assert reasons(api, "ann@example.com") == ["USER_SUPPRESSED"]


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_suppress_by_list_suppresses_its_current_members(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("Churned")).json()["data"]["id"]
    rows = [kl.profile({"email": f"m{i}@example.com"}) for i in range(3)]
    rows.append(kl.profile({"phone_number": "+14155550123"}))  # a member without an email
    assert api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows, lists=[list_id])).ok
    assert emulator.wait_idle()

    created = submit(api, SUPPRESS, kl.suppression(list_id=list_id))
    assert created["relationships"]["lists"]["data"] == [{"type": "list", "id": list_id}]
    assert created["attributes"]["total_count"] == 4
    assert emulator.wait_idle()
    ended = job(api, SUPPRESS, created["id"])
    assert (ended["completed_count"], ended["skipped_count"]) == (3, 1)
    assert all(reasons(api, f"m{i}@example.com") == ["USER_SUPPRESSED"] for i in range(3))


# -- unsuppress ---------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_unsuppress_lifts_only_user_suppressions(emulator: Emulator, api: Client) -> None:
    submit(api, SUPPRESS, kl.suppression(["user@example.com", "both@example.com"]))
    assert emulator.wait_idle()
    emulator.suppress("bounced@example.com", "HARD_BOUNCE", "2024-05-01T12:00:00+00:00")
    emulator.suppress("both@example.com", "SPAM_COMPLAINT")
    emulator.suppress("gone@example.com", "UNSUBSCRIBE")

    emails = [
        "user@example.com",
        "both@example.com",
        "bounced@example.com",
        "gone@example.com",
        "nobody@example.com",
    ]
    created = submit(api, UNSUPPRESS, kl.suppression(emails, remove=True))
    assert created["type"] == "profile-suppression-bulk-delete-job"
    assert emulator.wait_idle()
    ended = job(api, UNSUPPRESS, created["id"])
    # Klaviyo reports no outcome per email: the emails left suppressed by another reason and
    # the one without a profile are counted as skipped.
    assert (ended["completed_count"], ended["skipped_count"], ended["total_count"]) == (2, 3, 5)

    user = marketing(api, "user@example.com")
    assert user is not None
    assert user["suppression"] == [] and user["can_receive_email_marketing"] is True
    assert reasons(api, "both@example.com") == ["SPAM_COMPLAINT"]
    bounced = marketing(api, "bounced@example.com")
    assert bounced is not None
    assert bounced["suppression"] == [
        {"reason": "HARD_BOUNCE", "timestamp": "2024-05-01T12:00:00+00:00"}
    ]
    assert bounced["can_receive_email_marketing"] is False
    gone = marketing(api, "gone@example.com")
    assert gone is not None
    assert gone["consent"] == "UNSUBSCRIBED" and reasons(api, "gone@example.com") == ["UNSUBSCRIBE"]
    assert marketing(api, "nobody@example.com") is None  # no action taken: no profile made


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_subscribing_lifts_user_and_spam_suppressions_but_not_bounces(
    emulator: Emulator, api: Client
) -> None:
    submit(api, SUPPRESS, kl.suppression(["ann@example.com"]))
    assert emulator.wait_idle()
    emulator.suppress("ann@example.com", "SPAM_COMPLAINT")
    emulator.suppress("ann@example.com", "HARD_BOUNCE")
    row = kl.consent_row(email="ann@example.com")
    assert api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([row])).ok
    assert emulator.wait_idle()
    assert reasons(api, "ann@example.com") == ["HARD_BOUNCE"]


def test_seeded_suppressions_through_the_control_api(emulator: Emulator, api: Client) -> None:
    control = requests.post(
        f"{emulator.base_url}/_emulator/suppressions",
        json={"email": "cy@example.com", "reason": "INVALID_EMAIL"},
        timeout=10,
    )
    assert control.status_code == 200, control.text
    (profile,) = emulator.dump()["profiles"]
    assert profile["id"] == control.json()["profile_id"]
    assert [entry["reason"] for entry in profile["suppressions"]] == ["INVALID_EMAIL"]
    assert reasons(api, "cy@example.com") == ["INVALID_EMAIL"]
    refused = requests.post(
        f"{emulator.base_url}/_emulator/suppressions",
        json={"email": "cy@example.com", "reason": "BORED"},
        timeout=10,
    )
    assert refused.status_code == 400 and "BORED" in refused.json()["error"]


# -- jobs ---------------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_latency_s=0.2)
def test_jobs_under_the_latency_model_complete_after_their_latency(
    emulator: Emulator, api: Client
) -> None:
    created = submit(api, SUPPRESS, kl.suppression([f"u{i}@example.com" for i in range(50)]))
    assert created["attributes"]["status"] == "queued"
    assert emulator.wait_idle()
    ended = job(api, SUPPRESS, created["id"])
    assert ended["status"] == "complete" and ended["completed_count"] == 50


@pytest.mark.emulator(throttle=False)
def test_cancel_job_fault_stops_a_suppression_job_half_way(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("cancel_job", operation="bulk_suppress_profiles")
    created = submit(api, SUPPRESS, kl.suppression([f"u{i}@example.com" for i in range(10)]))
    assert emulator.wait_idle()
    ended = job(api, SUPPRESS, created["id"])
    assert ended["status"] == "cancelled" and ended["completed_count"] == 5


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_lists_filter_sort_and_404(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("L")).json()["data"]["id"]
    first = submit(api, SUPPRESS, kl.suppression(["a@example.com"]))["id"]
    second = submit(api, SUPPRESS, kl.suppression(list_id=list_id))["id"]
    unsuppress = submit(api, UNSUPPRESS, kl.suppression(["a@example.com"], remove=True))["id"]
    assert emulator.wait_idle()

    def ids(path: str, **params: str) -> list[str]:
        response = api.get(path, **params)
        assert response.status_code == 200, response.text
        return [item["id"] for item in response.json()["data"]]

    assert ids(SUPPRESS) == [first, second]
    assert ids(SUPPRESS, sort="-created") == [second, first]
    assert ids(SUPPRESS, filter="equals(status,'complete')") == [first, second]
    assert ids(SUPPRESS, filter="equals(status,'queued')") == []
    assert ids(SUPPRESS, filter=f"equals(list_id,'{list_id}')") == [second]
    assert ids(UNSUPPRESS) == [unsuppress]
    assert api.get(f"{SUPPRESS}/{unsuppress}").status_code == 404  # the other kind of job
    emulator.expect_violations(3)
    assert api.get(SUPPRESS, filter="equals(status,'done')").status_code == 400
    assert api.get(SUPPRESS, filter="any(status,['complete'])").status_code == 400
    # The spec gives the suppression job lists no page size.
    refused = api.get(SUPPRESS, **{"page[size]": "50"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"] == {"parameter": "page[size]"}


# -- limits, scopes, rate limits ----------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (kl.suppression([f"u{i}@x.com" for i in range(101)]), "/data/attributes/profiles/data"),
        (kl.suppression([]), "/data/attributes/profiles/data"),
        (kl.suppression(["ok@example.com", "not-an-email"]),
         "/data/attributes/profiles/data/1/attributes/email"),
        (kl.suppression(["a@example.com"], list_id="AbC123"), "/data/relationships"),
        (kl.suppression(), "/data/attributes/profiles"),
        (kl.suppression(list_id="Nope12"), "/data"),
        (kl.suppression(segment_id="Seg123"), "/data"),
    ],
)  # fmt: skip
def test_refused_bodies_are_400_naming_where(
    emulator: Emulator, api: Client, body: dict[str, Any], pointer: str
) -> None:
    for path, payload in ((SUPPRESS, body), (UNSUPPRESS, _as_unsuppress(body))):
        response = api.post(path, payload)
        assert response.status_code == 400, response.text
        assert only_error(response)["source"]["pointer"] == pointer
    if pointer != "/data":  # unknown lists / segments are not violations, the rest are
        emulator.expect_violations(2)
    assert emulator.dump()["suppression_jobs"] == {}


def _as_unsuppress(body: dict[str, Any]) -> dict[str, Any]:
    data = dict(body["data"], type="profile-suppression-bulk-delete-job")
    return {"data": data}


def test_scopes(emulator: Emulator) -> None:
    emulator.add_key("pk_subs", {"subscriptions:write"})
    subs = Client(emulator.base_url, "pk_subs")
    refused = subs.post(SUPPRESS, kl.suppression(["a@example.com"]))
    assert refused.status_code == 403
    assert "profiles:write" in only_error(refused)["detail"]
    done = subs.post(UNSUPPRESS, kl.suppression(["a@example.com"], remove=True))
    assert done.status_code == 202
    assert subs.get(f"{UNSUPPRESS}/{done.json()['data']['id']}").status_code == 200
    emulator.add_key("pk_profiles", {"profiles:write"})
    profiles = Client(emulator.base_url, "pk_profiles")
    assert profiles.post(SUPPRESS, kl.suppression(["a@example.com"])).status_code == 403
    assert profiles.get(UNSUPPRESS).status_code == 403


def test_rate_limits_are_the_spec_tiers(emulator: Emulator, api: Client) -> None:
    for path, body in (
        (SUPPRESS, kl.suppression(["a@example.com"])),
        (UNSUPPRESS, kl.suppression(["a@example.com"], remove=True)),
    ):
        response = api.post(path, body)
        assert response.status_code == 202
        assert response.headers["RateLimit-Limit"] == "750"  # L: 75/s, 750/m
    assert emulator.operations["bulk_suppress_profiles"].rate_limit == {
        "burst": 75,
        "steady": 750,
    }


@pytest.mark.emulator(window_scale=100, job_delay_s=0)
def test_the_76th_request_of_a_burst_window_is_429(api: Client) -> None:
    # Windows 100 times longer than Klaviyo's: the burst window outlasts the 76 requests.
    statuses = [
        api.post(SUPPRESS, kl.suppression([f"u{i}@example.com"])).status_code for i in range(76)
    ]
    assert statuses == [202] * 75 + [429]


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_answers_match_the_spec_response_schemas(emulator: Emulator, api: Client) -> None:
    from tests.test_emulator_responses import SPEC, check

    if not SPEC.exists():
        pytest.skip("Klaviyo's OpenAPI spec not found")
    list_id = api.post("/api/lists", kl.create_list("L")).json()["data"]["id"]
    created = check("bulk_suppress_profiles", api.post(SUPPRESS, kl.suppression(["a@example.com"])))
    check("bulk_suppress_profiles", api.post(SUPPRESS, kl.suppression(list_id=list_id)))
    removed = check(
        "bulk_unsuppress_profiles",
        api.post(UNSUPPRESS, kl.suppression(["a@example.com"], remove=True)),
    )
    assert emulator.wait_idle()
    check("get_bulk_suppress_profiles_job", api.get(f"{SUPPRESS}/{created['data']['id']}"))
    check("get_bulk_unsuppress_profiles_job", api.get(f"{UNSUPPRESS}/{removed['data']['id']}"))
    check("get_bulk_suppress_profiles_jobs", api.get(SUPPRESS))
    check("get_bulk_unsuppress_profiles_jobs", api.get(UNSUPPRESS, sort="-created"))
    check("get_bulk_suppress_profiles_job", api.get(f"{SUPPRESS}/01NOPE"))
    emulator.suppress("b@example.com", "HARD_BOUNCE")
    profiles = api.get("/api/profiles", **{"additional-fields[profile]": "subscriptions"})
    check("get_profiles", profiles)


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_the_official_sdk_reads_the_answers(emulator: Emulator) -> None:
    sdk = pytest.importorskip("klaviyo_api")
    models = pytest.importorskip("openapi_client.models")
    klaviyo = sdk.KlaviyoAPI(emulator.private_key, max_retries=0, test_host=emulator.base_url)
    body = models.SuppressionCreateJobCreateQuery.from_dict(kl.suppression(["a@example.com"]))
    job_id = klaviyo.Profiles.bulk_suppress_profiles(body).data.id
    assert emulator.wait_idle()
    job = klaviyo.Profiles.get_bulk_suppress_profiles_job(job_id).data.attributes
    assert (job.status, job.completed_count, job.skipped_count) == ("complete", 1, 0)
    assert [j.id for j in klaviyo.Profiles.get_bulk_suppress_profiles_jobs().data] == [job_id]
    removal = kl.suppression(["a@example.com"], remove=True)
    klaviyo.Profiles.bulk_unsuppress_profiles(
        models.SuppressionDeleteJobCreateQuery.from_dict(removal)
    )
    assert emulator.wait_idle()
    (profile,) = klaviyo.Profiles.get_profiles(additional_fields_profile=["subscriptions"]).data
    assert profile.attributes.subscriptions.email.marketing.suppression == []
