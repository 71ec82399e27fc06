"""What the emulator answers across Klaviyo's API surface: operations of the spec it does not
serve, the revisions it accepts, and sort / include / sparse fieldsets / additional-fields on the
operations it serves (over HTTP, as a client sees them).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def only_error(response: Any) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    return dict(error)


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


# -- routing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "operation_id"),
    [
        ("GET", "/api/lists/AbC123", "get_list"),
        ("PATCH", "/api/profiles/01ABC", "update_profile"),
        ("GET", "/api/events", "get_events"),
        ("POST", "/api/back-in-stock-subscriptions", "create_back_in_stock_subscription"),
        ("POST", "/client/subscriptions", "create_client_subscription"),
    ],
)
def test_spec_operations_not_emulated_answer_501_naming_them(
    emulator: Emulator, api: Client, method: str, path: str, operation_id: str
) -> None:
    response = api.request(method, path, {"data": {}})
    assert response.status_code == 501
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    error = only_error(response)
    assert error["status"] == 501
    assert operation_id in error["detail"] and "not emulated" in error["detail"]
    assert emulator.request_log[-1].operation == operation_id


def test_paths_outside_the_spec_404_and_methods_outside_it_405(api: Client) -> None:
    assert api.get("/api/nothing-here").status_code == 404
    assert api.get("/api/profiles/01ABC/shoe-size").status_code == 404
    assert api.request("PUT", "/api/profiles").status_code == 405
    assert api.request("DELETE", "/api/profile-import").status_code == 405


# -- revisions ----------------------------------------------------------------------------------


@pytest.mark.parametrize("revision", ["2026-10-15", "2026-07-15", "2025-01-15", "2026-04-15.pre"])
def test_released_revisions_are_accepted(emulator: Emulator, revision: str) -> None:
    client = Client(emulator.base_url, emulator.private_key, revision=revision)
    assert client.get("/api/accounts").status_code == 200


@pytest.mark.parametrize("revision", ["2026-05-15", "2027-01-15", "2025-02-30", "2026-07-16.pre"])
def test_revisions_klaviyo_never_released_are_400_on_the_header(
    emulator: Emulator, revision: str
) -> None:
    emulator.expect_violations(1)
    client = Client(emulator.base_url, emulator.private_key, revision=revision)
    response = client.get("/api/accounts")
    assert response.status_code == 400
    error = only_error(response)
    assert error["source"] == {"parameter": "revision"} and revision in error["detail"]


def test_released_but_retired_revisions_are_410_and_unreleased_old_ones_400(
    emulator: Emulator,
) -> None:
    retired = Client(emulator.base_url, emulator.private_key, revision="2024-07-15")
    assert retired.get("/api/accounts").status_code == 410
    emulator.expect_violations(1)
    never = Client(emulator.base_url, emulator.private_key, revision="2024-03-03")
    assert never.get("/api/accounts").status_code == 400


# -- query options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "params", "parameter"),
    [
        ("/api/profiles", {"sort": "first_name"}, "sort"),
        ("/api/lists", {"sort": "-opt_in_process"}, "sort"),
        ("/api/accounts", {"sort": "id"}, "sort"),  # the spec gives get_accounts no sort
        ("/api/profiles", {"include": "lists"}, "include"),
        ("/api/lists", {"include": "profiles"}, "include"),
        ("/api/accounts", {"include": "lists"}, "include"),
        ("/api/profiles", {"fields[profile]": "email,shoe_size"}, "fields[profile]"),
        ("/api/profiles", {"fields[list]": "name"}, "fields[list]"),
        ("/api/lists", {"fields[list]": ""}, "fields[list]"),
        ("/api/profiles", {"additional-fields[profile]": "lists"}, "additional-fields[profile]"),
    ],
)
def test_query_options_the_spec_does_not_allow_are_400_on_the_parameter(
    emulator: Emulator, api: Client, path: str, params: dict[str, str], parameter: str
) -> None:
    emulator.expect_violations(1)
    response = api.get(path, **params)
    assert response.status_code == 400
    assert only_error(response)["source"] == {"parameter": parameter}


def test_a_refused_query_option_changes_nothing(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(1)
    response = api.request(
        "POST",
        "/api/profile-import",
        kl.profile_import({"email": "ann@example.com"}),
        params={"fields[profile]": "shoe_size"},
    )
    assert response.status_code == 400
    assert emulator.dump()["profiles"] == []


def test_sparse_fieldsets_on_lists_accounts_and_jobs(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    (item,) = api.get("/api/lists", **{"fields[list]": "name"}).json()["data"]
    assert item["attributes"] == {"name": "VIP"} and item["id"] == list_id
    (account,) = api.get(
        "/api/accounts", **{"fields[account]": "contact_information.street_address.city"}
    ).json()["data"]
    assert account["attributes"] == {"contact_information": {"street_address": {"city": "Boston"}}}
    created = api.request(
        "POST",
        "/api/profile-bulk-import-jobs",
        kl.bulk_import([kl.profile({"email": "a@example.com"})], lists=[list_id]),
        params={"fields[profile-bulk-import-job]": "status,total_count"},
    )
    assert created.json()["data"]["attributes"] == {"status": "queued", "total_count": 1}
    job = api.get(
        f"/api/profile-bulk-import-jobs/{created.json()['data']['id']}",
        include="lists",
        **{"fields[list]": "opt_in_process"},
    ).json()
    assert set(job["data"]["attributes"]) >= {"status", "completed_count"}
    assert job["included"][0]["attributes"] == {"opt_in_process": "single_opt_in"}


def test_include_adds_the_related_resources(emulator: Emulator, api: Client) -> None:
    first = api.post("/api/lists", kl.create_list("One")).json()["data"]["id"]
    second = api.post("/api/lists", kl.create_list("Two")).json()["data"]["id"]
    body = kl.bulk_import([kl.profile({"email": "a@example.com"})], lists=[first, second])
    job_id = api.post("/api/profile-bulk-import-jobs", body).json()["data"]["id"]
    plain = api.get(f"/api/profile-bulk-import-jobs/{job_id}").json()
    assert "included" not in plain
    included = api.get(f"/api/profile-bulk-import-jobs/{job_id}", include="lists").json()
    assert [(i["type"], i["id"]) for i in included["included"]] == [
        ("list", first), ("list", second),
    ]  # fmt: skip
    assert [i["attributes"]["name"] for i in included["included"]] == ["One", "Two"]
    # The emulated account has no tags: the relationship is there, and empty.
    lists = api.get("/api/lists", include="tags").json()
    assert lists["included"] == []
    assert all(item["relationships"]["tags"]["data"] == [] for item in lists["data"])


def test_get_lists_sorts_on_the_spec_fields(api: Client) -> None:
    for name in ("Bravo", "Alpha", "Charlie"):
        api.post("/api/lists", kl.create_list(name))
    names = lambda **params: [  # noqa: E731
        item["attributes"]["name"] for item in api.get("/api/lists", **params).json()["data"]
    ]
    assert names() == ["Bravo", "Alpha", "Charlie"]
    assert names(sort="name") == ["Alpha", "Bravo", "Charlie"]
    assert names(sort="-name") == ["Charlie", "Bravo", "Alpha"]
    assert names(sort="-created") == ["Charlie", "Alpha", "Bravo"]
    ids_sorted = ids(api.get("/api/lists", sort="id"))
    assert ids_sorted == sorted(ids_sorted)
    first, links = api.get("/api/lists", sort="name", **{"page[size]": "2"}).json().values()
    assert [item["attributes"]["name"] for item in first] == ["Alpha", "Bravo"]
    rest = api.get(links["next"]).json()
    assert [item["attributes"]["name"] for item in rest["data"]] == ["Charlie"]
    assert rest["links"]["prev"] is not None


def test_list_members_sort_on_joined_group_at(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    profile_ids = [
        api.post("/api/profile-import", kl.profile_import({"email": f"m{n}@example.com"})).json()[
            "data"
        ]["id"]
        for n in range(3)
    ]
    for joined, profile_id in zip(
        ("2026-03-01T00:00:00+00:00", "2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00"),
        profile_ids,
        strict=True,
    ):
        emulator.store.lists[list_id].add(profile_id, joined)
    path = f"/api/lists/{list_id}/relationships/profiles"
    assert ids(api.get(path)) == profile_ids  # the order they joined the list in
    by_date = [profile_ids[1], profile_ids[2], profile_ids[0]]
    assert ids(api.get(path, sort="joined_group_at")) == by_date
    assert ids(api.get(path, sort="-joined_group_at")) == by_date[::-1]


def test_get_profiles_prev_links_and_descending_pages(api: Client) -> None:
    profile_ids = [
        api.post("/api/profile-import", kl.profile_import({"email": f"p{n}@example.com"})).json()[
            "data"
        ]["id"]
        for n in range(5)
    ]
    first = api.get("/api/profiles", sort="-created", **{"page[size]": "2"}).json()
    assert [p["id"] for p in first["data"]] == profile_ids[:2:-1][:2]
    assert first["links"]["prev"] is None
    second = api.get(first["links"]["next"]).json()
    assert [p["id"] for p in second["data"]] == [profile_ids[2], profile_ids[1]]
    back = api.get(second["links"]["prev"]).json()
    assert back["data"] == first["data"]


def test_additional_fields_predictive_analytics_are_null(api: Client) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    (profile,) = api.get(
        "/api/profiles", **{"additional-fields[profile]": "predictive_analytics"}
    ).json()["data"]
    analytics = profile["attributes"]["predictive_analytics"]
    assert analytics["historic_clv"] is None and "churn_probability" in analytics
    assert "subscriptions" not in profile["attributes"]
