"""The Klaviyo emulator's endpoints behave like Klaviyo (sources: tests/emulator/README.md)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def errors_of(response: Any) -> list[dict[str, Any]]:
    return list(response.json()["errors"])


def pointers(response: Any) -> list[str]:
    return [e["source"].get("pointer") for e in errors_of(response)]


def wait_job(api: Client, job_id: str, timeout: float = 10) -> dict[str, Any]:
    """Poll a bulk import job until it ends, honouring 429s (the M tier allows 10/s)."""
    deadline = time.monotonic() + timeout
    while True:
        response = api.get(f"/api/profile-bulk-import-jobs/{job_id}")
        if response.status_code == 429:
            time.sleep(float(response.headers["X-Emulator-Retry-After-Exact"]))
            continue
        attributes = response.json()["data"]["attributes"]
        if attributes["status"] in ("complete", "cancelled") or time.monotonic() > deadline:
            return dict(attributes)
        time.sleep(0.02)


def import_profiles(api: Client, rows: list[dict[str, Any]], **kwargs: Any) -> dict[str, Any]:
    response = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows, **kwargs))
    assert response.status_code == 202, response.text
    return wait_job(api, response.json()["data"]["id"]) | {"id": response.json()["data"]["id"]}


def profiles_by_email(emulator: Emulator) -> dict[str, dict[str, Any]]:
    return {p["attributes"]["email"]: p for p in emulator.dump()["profiles"]}


# -- common rules -------------------------------------------------------------------------------


def test_accounts_returns_the_public_key_and_jsonapi_content_type(
    emulator: Emulator, api: Client
) -> None:
    response = api.get("/api/accounts")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/vnd.api+json"
    (account,) = response.json()["data"]
    assert account["type"] == "account"
    assert account["attributes"]["public_api_key"] == emulator.public_key
    assert {"test_account", "contact_information", "timezone", "preferred_currency"} <= set(
        account["attributes"]
    )


@pytest.mark.parametrize("key", [None, "pk_wrong", "Bearer x"])
def test_missing_or_wrong_key_is_401(emulator: Emulator, key: str | None) -> None:
    response = Client(emulator.base_url, key).get("/api/accounts")
    assert response.status_code == 401
    assert errors_of(response)[0]["code"] == "authentication_failed"


def test_key_without_scope_is_403_naming_the_scope(emulator: Emulator) -> None:
    emulator.add_key("pk_limited", {"profiles:write"})
    limited = Client(emulator.base_url, "pk_limited")
    response = limited.post("/api/lists", kl.create_list("VIP"))
    assert response.status_code == 403
    error = errors_of(response)[0]
    assert error["code"] == "permission_denied"
    assert "lists:write" in error["detail"]
    # A write scope implies the read scope.
    assert limited.get("/api/profiles").status_code == 200


def test_missing_revision_is_400_on_the_parameter(emulator: Emulator) -> None:
    emulator.expect_violations(2)
    response = Client(emulator.base_url, emulator.private_key, revision=None).get("/api/accounts")
    assert response.status_code == 400
    assert errors_of(response)[0]["source"] == {"parameter": "revision"}
    bad = Client(emulator.base_url, emulator.private_key, revision="July").get("/api/lists")
    assert bad.status_code == 400
    retired = Client(emulator.base_url, emulator.private_key, revision="2024-10-15")
    assert retired.get("/api/lists").status_code == 410


def test_unknown_path_404_wrong_method_405_and_legacy_410(api: Client) -> None:
    assert api.get("/api/nothing-here").status_code == 404
    assert api.request("PATCH", "/api/lists").status_code == 405
    for path in ("/api/track", "/api/identify", "/api/v2/list/abc/members", "/api/v1/metrics"):
        response = api.get(path)
        assert response.status_code == 410, path
        assert errors_of(response)[0]["status"] == 410


def test_trailing_slash_is_accepted(api: Client) -> None:
    assert api.get("/api/accounts/").status_code == 200


def test_body_must_be_json_with_a_json_content_type(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(4)
    assert api.post("/api/lists", raw=b"{not json").status_code == 400
    assert api.post("/api/lists", raw=b"").status_code == 400
    nan = b'{"data":{"type":"list","attributes":{"name":NaN}}}'
    assert api.post("/api/lists", raw=nan).status_code == 400
    plain = api.post("/api/lists", kl.create_list("X"), headers={"content-type": "text/plain"})
    assert plain.status_code == 415
    ok = api.post("/api/lists", kl.create_list("X"), headers={"content-type": "application/json"})
    assert ok.status_code == 201


def test_bodies_python_json_reads_are_read_alike(emulator: Emulator, api: Client) -> None:
    # A byte-order mark and an integer beyond 64 bits: both read, as Python's json reads them.
    body = b"\xef\xbb\xbf" + b'{"data":{"type":"list","attributes":{"name":"BOM"}}}'
    assert api.post("/api/lists", raw=body).status_code == 201
    big = kl.profile_import({"email": "big@example.com", "properties": {"n": 2**70}})
    assert api.post("/api/profile-import", big).status_code == 201
    (profile,) = emulator.dump()["profiles"]
    assert profile["properties"]["n"] == 2**70


@pytest.mark.emulator(validate=False)
def test_validation_can_be_switched_off(api: Client) -> None:
    response = api.post("/api/profile-import", kl.profile_import({"email": "a@x.com", "x": 1}))
    assert response.status_code == 201


# -- profile-import -----------------------------------------------------------------------------


def test_profile_import_creates_then_updates_with_null_clearing_and_unset(
    emulator: Emulator, api: Client
) -> None:
    first = api.post(
        "/api/profile-import",
        kl.profile_import(
            {
                "email": "sarah@example.com",
                "first_name": "Sarah",
                "title": "Manager",
                "location": {"city": "Boston", "zip": "02110"},
                "properties": {"tier": "gold", "legacy": 1, "old": 2, "skus": ["A1"]},
            }
        ),
    )
    assert first.status_code == 201
    profile_id = first.json()["data"]["id"]
    assert first.json()["data"]["attributes"]["title"] == "Manager"

    second = api.post(
        "/api/profile-import",
        kl.profile_import(
            {"email": "sarah@example.com", "first_name": None, "location": {"zip": None}},
            meta={"patch_properties": {"unset": "legacy", "append": {"skus": "B2"}}},
        ),
    )
    assert second.status_code == 200
    assert second.json()["data"]["id"] == profile_id
    third = api.post(
        "/api/profile-import",
        kl.profile_import(
            {"email": "sarah@example.com"}, meta={"patch_properties": {"unset": ["old"]}}
        ),
    )
    assert third.status_code == 200
    (stored,) = emulator.dump()["profiles"]
    assert stored["attributes"]["first_name"] is None  # null clears
    assert stored["attributes"]["title"] == "Manager"  # absent leaves unchanged
    assert stored["attributes"]["location"]["city"] == "Boston"
    assert stored["attributes"]["location"]["zip"] is None
    assert stored["properties"] == {"tier": "gold", "skus": ["A1", "B2"]}


def test_profile_import_adds_a_new_phone_to_the_profile_matched_by_email(
    emulator: Emulator, api: Client
) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    response = api.post(
        "/api/profile-import",
        kl.profile_import({"email": "a@example.com", "phone_number": "+16175551234"}),
    )
    assert response.status_code == 200
    assert emulator.dump()["profiles"][0]["attributes"]["phone_number"] == "+16175551234"


def test_profile_import_409_when_identifiers_belong_to_two_profiles(
    emulator: Emulator, api: Client
) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    owner = api.post("/api/profile-import", kl.profile_import({"phone_number": "+16175551234"}))
    response = api.post(
        "/api/profile-import",
        kl.profile_import({"email": "a@example.com", "phone_number": "+16175551234"}),
    )
    assert response.status_code == 409
    error = errors_of(response)[0]
    assert error["code"] == "duplicate_profile"
    assert error["meta"]["duplicate_profile_id"] == owner.json()["data"]["id"]
    assert len(emulator.dump()["profiles"]) == 2


@pytest.mark.parametrize(
    ("attributes", "pointer"),
    [
        ({"email": "not-an-email"}, "/data/attributes/email"),
        ({"email": " a@example.com"}, "/data/attributes/email"),
        ({"phone_number": "6175551234"}, "/data/attributes/phone_number"),
        ({"phone_number": "+1234"}, "/data/attributes/phone_number"),
        ({"phone_number": "+11234567890"}, "/data/attributes/phone_number"),  # not a number
        ({"phone_number": "+8613800138000"}, "/data/attributes/phone_number"),  # region
        ({"first_name": "No identifier"}, "/data/attributes"),
        ({"email": "a@example.com", "favourite": "x"}, "/data/attributes/favourite"),
        ({"email": 5}, "/data/attributes/email"),
    ],
)
def test_profile_import_rejects_invalid_input(
    emulator: Emulator, api: Client, attributes: dict[str, Any], pointer: str
) -> None:
    emulator.expect_violations(1)
    response = api.post("/api/profile-import", kl.profile_import(attributes))
    assert response.status_code == 400
    assert pointers(response) == [pointer]
    assert emulator.violations[0][1] == pointer
    assert emulator.dump()["profiles"] == []


def test_profile_import_unknown_attribute_detail_names_the_resource(
    emulator: Emulator, api: Client
) -> None:
    emulator.expect_violations(1)
    body = {"data": {"type": "profile-bulk-import-job", "attributes": {"profiles": {"data": [
        kl.profile({"email": "a@example.com", "first_nam": "A"})]}}}}  # fmt: skip
    response = api.post("/api/profile-bulk-import-jobs", body)
    assert errors_of(response)[0]["detail"] == (
        "'first_nam' is not a valid field for the resource 'profile'."
    )


# -- get_profiles -------------------------------------------------------------------------------


def test_get_profiles_filters_on_identifiers(emulator: Emulator, api: Client) -> None:
    for i in range(3):
        api.post(
            "/api/profile-import",
            kl.profile_import(
                {"email": f"p{i}@example.com", "external_id": f"c-{i}",
                 "phone_number": f"+1617555000{i}"}
            ),
        )  # fmt: skip
    ids = [p["id"] for p in emulator.dump()["profiles"]]

    def emails(filter_: str) -> list[str]:
        response = api.get("/api/profiles", filter=filter_)
        assert response.status_code == 200, response.text
        return [p["attributes"]["email"] for p in response.json()["data"]]

    assert emails('equals(email,"p1@example.com")') == ["p1@example.com"]
    assert emails('any(email,["p2@example.com","p0@example.com","zz@example.com"])') == [
        "p0@example.com",
        "p2@example.com",
    ]
    assert emails('equals(phone_number,"+16175550002")') == ["p2@example.com"]
    assert emails('any(external_id,["c-1"])') == ["p1@example.com"]
    assert emails(f'equals(id,"{ids[0]}")') == ["p0@example.com"]
    assert emails("equals(email,'p0@example.com')") == ["p0@example.com"]
    assert emails('and(equals(email,"p0@example.com"),equals(external_id,"c-0"))') == [
        "p0@example.com"
    ]
    assert emails('equals(email,"p0@example.com"),equals(external_id,"c-1")') == []
    assert len(emails("greater-than(created,2020-01-01T00:00:00Z)")) == 3


def test_filter_values_with_quotes_and_backslashes(emulator: Emulator, api: Client) -> None:
    tricky = 'ext "quoted" \\ back,slash)'
    api.post("/api/profile-import", kl.profile_import({"external_id": tricky}))
    escaped = tricky.replace("\\", "\\\\").replace('"', '\\"')
    response = api.get("/api/profiles", filter=f'equals(external_id,"{escaped}")')
    assert [p["attributes"]["external_id"] for p in response.json()["data"]] == [tricky]
    listed = api.get("/api/profiles", filter=f'any(external_id,["x","{escaped}"])')
    assert len(listed.json()["data"]) == 1


@pytest.mark.parametrize(
    "filter_",
    [
        "equals(email,a@example.com)",  # strings must be quoted
        'equals(first_name,"A")',  # not a filterable field
        'greater-than(email,"a")',  # operator not allowed on the field
        'equals(email,"unterminated)',
        'any(email,"not-a-list")',
        'greater-than(created,"2024-01-01T00:00:00Z")',  # datetimes are unquoted
        'equals(email,"a@example.com"',
    ],
)
def test_malformed_filters_are_400_on_the_filter_parameter(
    emulator: Emulator, api: Client, filter_: str
) -> None:
    emulator.expect_violations(1)
    response = api.get("/api/profiles", filter=filter_)
    assert response.status_code == 400
    assert errors_of(response)[0]["source"] == {"parameter": "filter"}


def test_get_profiles_pages_with_cursor_links_and_sparse_fields(
    emulator: Emulator, api: Client
) -> None:
    import_profiles(api, [kl.profile({"email": f"u{i}@example.com"}) for i in range(45)])
    seen: list[str] = []
    url: str | None = "/api/profiles"
    pages = 0
    while url:
        response = (
            api.request("GET", url) if pages else api.get(url, **{"fields[profile]": "email"})
        )
        body = response.json()
        assert set(body["data"][0]["attributes"]) == {"email"}
        seen += [p["attributes"]["email"] for p in body["data"]]
        url = body["links"]["next"]
        pages += 1
    assert pages == 3  # default page size 20
    assert seen == [f"u{i}@example.com" for i in range(45)]


@pytest.mark.parametrize(("size", "status"), [("100", 200), ("1", 200), ("101", 400), ("0", 400),
                                              ("x", 400)])  # fmt: skip
def test_get_profiles_page_size_bounds(
    emulator: Emulator, api: Client, size: str, status: int
) -> None:
    if status == 400:
        emulator.expect_violations(1)
    response = api.get("/api/profiles", **{"page[size]": size})
    assert response.status_code == status
    if status == 400:
        assert errors_of(response)[0]["source"] == {"parameter": "page[size]"}


def test_invalid_cursor_is_400(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(1)
    assert api.get("/api/profiles", **{"page[cursor]": "garbage!"}).status_code == 400


# -- bulk import --------------------------------------------------------------------------------


def test_bulk_import_applies_rows_and_joins_lists_without_touching_consent(
    emulator: Emulator, api: Client
) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    rows = [
        kl.profile({"email": "a@example.com", "first_name": "A", "properties": {"tier": "gold"}}),
        kl.profile({"phone_number": "+16175551234", "external_id": "c-2"},
                   meta={"patch_properties": {"unset": "legacy_flag"}}),
    ]  # fmt: skip
    response = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows, lists=[list_id]))
    assert response.status_code == 202
    job = response.json()["data"]
    assert job["type"] == "profile-bulk-import-job"
    assert job["attributes"]["status"] == "queued"
    assert job["attributes"]["total_count"] == 2
    assert job["relationships"]["lists"]["data"] == [{"type": "list", "id": list_id}]
    done = wait_job(api, job["id"])
    assert done["status"] == "complete"
    assert (done["completed_count"], done["failed_count"]) == (2, 0)
    assert done["completed_at"] and done["started_at"]
    state = emulator.dump()
    assert len(state["lists"][list_id]["members"]) == 2
    by_email = profiles_by_email(emulator)
    assert by_email["a@example.com"]["properties"] == {"tier": "gold"}
    assert by_email["a@example.com"]["subscriptions"]["email"]["marketing"]["consent"] == (
        "NEVER_SUBSCRIBED"
    )
    # Re-running the same import is idempotent for membership.
    import_profiles(api, rows, lists=[list_id])
    assert len(emulator.dump()["lists"][list_id]["members"]) == 2
    assert len(emulator.dump()["profiles"]) == 2


@pytest.mark.emulator(job_delay_s=0.3, throttle=False)
def test_bulk_import_leaves_fields_sent_as_null_alone(emulator: Emulator, api: Client) -> None:
    created = api.post(
        "/api/profile-import",
        kl.profile_import(
            {
                "email": "sam@example.com",
                "external_id": "s-1",
                "first_name": "Sam",
                "title": "Chef",
                "location": {"city": "Boston", "zip": "02110"},
                "properties": {"tier": "gold", "legacy": 1},
            }
        ),
    )
    assert created.status_code == 201
    rows = [
        kl.profile(
            {
                "email": "sam@example.com",
                "external_id": None,
                "first_name": None,
                "last_name": "Stone",
                "location": {"city": None, "zip": "02111"},
                "properties": {"tier": None, "color": "red"},
            },
            meta={"patch_properties": {"unset": "legacy"}},
        ),
        kl.profile({"email": "sam@example.com", "location": None, "properties": None}),
    ]
    job = import_profiles(api, rows)
    assert (job["status"], job["completed_count"]) == ("complete", 2)
    (stored,) = emulator.dump()["profiles"]
    attributes = stored["attributes"]
    assert (attributes["first_name"], attributes["last_name"]) == ("Sam", "Stone")
    assert attributes["external_id"] == "s-1" and attributes["title"] == "Chef"
    assert (attributes["location"]["city"], attributes["location"]["zip"]) == ("Boston", "02111")
    # A null custom property is left alone too; unset still removes one.
    assert stored["properties"] == {"tier": "gold", "color": "red"}
    found = api.get("/api/profiles", filter='equals(external_id,"s-1")').json()["data"]
    assert [p["id"] for p in found] == [stored["id"]]

    # Clearing goes through profile-import, which clears a field sent as null.
    cleared = api.post(
        "/api/profile-import",
        kl.profile_import(
            {"email": "sam@example.com", "first_name": None, "location": {"city": None}}
        ),
    )
    assert cleared.status_code == 200
    attributes = cleared.json()["data"]["attributes"]
    assert attributes["first_name"] is None and attributes["location"]["city"] is None
    assert attributes["last_name"] == "Stone"


def test_bulk_import_job_goes_queued_processing_complete(api: Client) -> None:
    rows = [kl.profile({"email": f"u{i}@example.com"}) for i in range(2000)]
    job_id = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows)).json()["data"]["id"]
    statuses: list[str] = []
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        status = api.get(f"/api/profile-bulk-import-jobs/{job_id}").json()["data"]["attributes"][
            "status"
        ]
        if not statuses or statuses[-1] != status:
            statuses.append(status)
        if status == "complete":
            break
        time.sleep(0.01)
    assert statuses == ["queued", "processing", "complete"]


def test_bulk_import_is_all_or_nothing_with_one_error_per_bad_row(
    emulator: Emulator, api: Client
) -> None:
    rows = [kl.profile({"email": f"u{i}@example.com"}) for i in range(6)]
    rows[2]["attributes"]["email"] = "bad@"
    rows[4]["attributes"]["nickname"] = "x"
    rows[4]["attributes"]["email"] = "also bad"  # second problem in the same row
    rows[5]["attributes"]["phone_number"] = "+1234"  # not a validation error in bulk import
    emulator.expect_violations(2)
    response = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows))
    assert response.status_code == 400
    found = pointers(response)
    assert found == [
        "/data/attributes/profiles/data/2/attributes/email",
        "/data/attributes/profiles/data/4/attributes/nickname",
    ]
    emulator.wait_idle()
    assert emulator.dump()["profiles"] == []
    assert emulator.dump()["jobs"] == {}


def test_bulk_import_unknown_list_is_400_on_data(emulator: Emulator, api: Client) -> None:
    rows = [kl.profile({"email": "a@example.com"})]
    response = api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows, lists=["Nope12"]))
    assert response.status_code == 400
    error = errors_of(response)[0]
    assert error["source"] == {"pointer": "/data"}
    assert error["detail"] == "List ID Nope12 does not exist."


def test_bulk_import_row_errors_silent_phone_drop_and_409_rows(
    emulator: Emulator, api: Client
) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    api.post("/api/profile-import", kl.profile_import({"phone_number": "+16175551234"}))
    rows = [
        kl.profile({"email": "ok@example.com", "phone_number": "+16175550000"}),
        kl.profile({"email": "cn@example.com", "phone_number": "+8613800138000"}),
        kl.profile({"email": "a@example.com", "phone_number": "+16175551234"}),  # two owners
        kl.profile({"email": "short@example.com", "phone_number": "+1234"}),
    ]
    job = import_profiles(api, rows)
    assert (job["completed_count"], job["failed_count"]) == (2, 2)
    errors = api.get(f"/api/profile-bulk-import-jobs/{job['id']}/import-errors").json()["data"]
    assert [e["type"] for e in errors] == ["import-error", "import-error"]
    region, conflict = (e["attributes"] for e in errors)
    assert region["detail"] == (
        "Phone number is valid but is not in a supported region for this account."
    )
    assert region["source"]["pointer"] == "/data/attributes/profiles/data/1/attributes/phone_number"
    assert region["original_payload"] == rows[1]["attributes"]
    assert conflict["code"] == "duplicate_profile"
    assert conflict["original_payload"]["email"] == "a@example.com"
    by_email = profiles_by_email(emulator)
    assert "cn@example.com" not in by_email
    assert by_email["a@example.com"]["attributes"]["phone_number"] is None
    # Klaviyo: bulk profile import: the invalid phone is dropped without an import error.
    assert by_email["short@example.com"]["attributes"]["phone_number"] is None
    (drop,) = emulator.silent_drops
    assert (drop["row"], drop["field"], drop["value"]) == (3, "phone_number", "+1234")


@pytest.mark.emulator(supported_regions={"US", "CN"})
def test_supported_regions_are_configurable(emulator: Emulator, api: Client) -> None:
    job = import_profiles(api, [kl.profile({"phone_number": "+8613800138000"})])
    assert job["completed_count"] == 1


def test_import_errors_page_with_cursor(emulator: Emulator, api: Client) -> None:
    rows = [kl.profile({"email": f"u{i}@example.com", "phone_number": f"+86138001380{i:02d}"})
            for i in range(45)]  # fmt: skip
    job = import_profiles(api, rows)
    assert job["failed_count"] == 45
    url: str | None = f"/api/profile-bulk-import-jobs/{job['id']}/import-errors"
    sizes = []
    payloads = []
    while url:
        body = api.request("GET", url).json()
        sizes.append(len(body["data"]))
        payloads += [e["attributes"]["original_payload"]["email"] for e in body["data"]]
        url = body["links"]["next"]
    assert sizes == [20, 20, 5]
    assert payloads == [f"u{i}@example.com" for i in range(45)]
    big = api.get(
        f"/api/profile-bulk-import-jobs/{job['id']}/import-errors", **{"page[size]": "100"}
    )
    assert len(big.json()["data"]) == 45
    emulator.expect_violations(1)
    over = api.get(
        f"/api/profile-bulk-import-jobs/{job['id']}/import-errors", **{"page[size]": "101"}
    )
    assert over.status_code == 400


def test_unknown_job_is_404(api: Client) -> None:
    assert api.get("/api/profile-bulk-import-jobs/01NOPE").status_code == 404
    assert api.get("/api/profile-bulk-import-jobs/01NOPE/import-errors").status_code == 404


def test_cancel_job_fault_cancels_the_next_import_half_way(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("cancel_job")
    job = import_profiles(api, [kl.profile({"email": f"u{i}@example.com"}) for i in range(10)])
    assert job["status"] == "cancelled"
    assert job["completed_count"] == 5
    assert len(emulator.dump()["profiles"]) == 5
    assert import_profiles(api, [kl.profile({"email": "next@example.com"})])["status"] == "complete"


def test_jobs_apply_in_submission_order(emulator: Emulator, api: Client) -> None:
    for name in ("first", "second", "third"):
        rows = [kl.profile({"email": "same@example.com", "first_name": name})]
        assert api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows)).status_code == 202
    assert emulator.wait_idle(10)
    assert emulator.dump()["profiles"][0]["attributes"]["first_name"] == "third"


# -- lists --------------------------------------------------------------------------------------


def test_create_and_find_lists_with_duplicate_names(emulator: Emulator, api: Client) -> None:
    first = api.post("/api/lists", kl.create_list("VIP", opt_in_process="double_opt_in"))
    assert first.status_code == 201
    assert first.json()["data"]["attributes"]["opt_in_process"] == "double_opt_in"
    assert api.post("/api/lists", kl.create_list("VIP")).status_code == 201
    api.post("/api/lists", kl.create_list('Say "hi"'))
    found = api.get("/api/lists", filter='equals(name,"VIP")').json()["data"]
    assert [item["attributes"]["name"] for item in found] == ["VIP", "VIP"]
    quoted = api.get("/api/lists", filter='any(name,["Say \\"hi\\""])').json()["data"]
    assert len(quoted) == 1
    by_id = api.get("/api/lists", filter=f'equals(id,"{first.json()["data"]["id"]}")')
    assert len(by_id.json()["data"]) == 1


def test_create_list_rejects_bad_bodies(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(3)
    assert api.post("/api/lists", {"data": {"type": "list", "attributes": {}}}).status_code == 400
    assert api.post("/api/lists", kl.create_list(" ")).status_code == 400
    bad = api.post("/api/lists", kl.create_list("X", opt_in_process="maybe"))
    assert bad.status_code == 400
    assert pointers(bad) == ["/data/attributes/opt_in_process"]


@pytest.mark.emulator(throttle=False)
def test_get_lists_pages_by_ten_at_most(emulator: Emulator, api: Client) -> None:
    for i in range(25):
        api.post("/api/lists", kl.create_list(f"L{i}"))
    first = api.get("/api/lists").json()
    assert len(first["data"]) == 10
    second = api.request("GET", first["links"]["next"]).json()
    third = api.request("GET", second["links"]["next"]).json()
    assert len(third["data"]) == 5 and third["links"]["next"] is None
    assert api.get("/api/lists", **{"page[size]": "10"}).status_code == 200
    emulator.expect_violations(2)
    assert api.get("/api/lists", **{"page[size]": "11"}).status_code == 400
    assert api.get("/api/lists", **{"page[size]": "0"}).status_code == 400


def test_list_membership_add_remove_and_read(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    job = import_profiles(api, [kl.profile({"email": f"u{i}@example.com"}) for i in range(30)])
    assert job["status"] == "complete"
    ids = [p["id"] for p in emulator.dump()["profiles"]]
    path = f"/api/lists/{list_id}/relationships/profiles"
    added = api.post(path, kl.members(ids))
    assert added.status_code == 204 and added.content == b""
    assert api.post(path, kl.members(ids[:5])).status_code == 204  # idempotent
    page = api.get(path).json()
    assert len(page["data"]) == 20 and page["data"][0] == {"type": "profile", "id": ids[0]}
    rest = api.request("GET", page["links"]["next"]).json()
    assert [m["id"] for m in page["data"] + rest["data"]] == ids
    assert api.get(path, filter='equals(email,"u3@example.com")').json()["data"] == [
        {"type": "profile", "id": ids[3]}
    ]
    assert api.delete(path, kl.members(ids[:10])).status_code == 204
    assert len(emulator.dump()["lists"][list_id]["members"]) == 20
    assert emulator.dump()["profiles"][0]["lists"] == []


def test_list_membership_errors(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("VIP")).json()["data"]["id"]
    path = f"/api/lists/{list_id}/relationships/profiles"
    assert (
        api.post("/api/lists/NoSuch/relationships/profiles", kl.members(["x"])).status_code == 404
    )
    assert api.get("/api/lists/NoSuch/relationships/profiles").status_code == 404
    unknown = api.post(path, kl.members(["01UNKNOWN"]))
    assert unknown.status_code == 400
    assert pointers(unknown) == ["/data/0/id"]
    emulator.expect_violations(2)
    assert api.post(path, {"data": [{"type": "list", "id": "x"}]}).status_code == 400
    assert api.get(path, **{"page[size]": "101"}).status_code == 400


# -- events -------------------------------------------------------------------------------------


def test_create_event_is_202_without_body_and_upserts_the_profile(
    emulator: Emulator, api: Client
) -> None:
    body = kl.single_event(
        {"email": "a@example.com", "properties": {"tier": "gold"}},
        properties={"OrderId": "1"},
        time="2024-05-01T12:00:00.123Z",
        value=9.99,
        value_currency="USD",
        unique_id="order-1",
    )
    body["data"]["attributes"]["profile"]["data"]["attributes"]["meta"] = {
        "patch_properties": {"unset": ["gone"]}
    }
    response = api.post("/api/events", body)
    assert response.status_code == 202 and response.content == b""
    assert emulator.wait_idle(5)
    state = emulator.dump()
    (event,) = state["events"]
    assert (event["metric"], event["time"], event["unique_id"]) == (
        "Placed Order",
        "2024-05-01T12:00:00+00:00",
        "order-1",
    )
    (profile,) = state["profiles"]
    assert event["profile_id"] == profile["id"]
    assert profile["properties"] == {"tier": "gold"}
    assert profile["attributes"]["last_event_date"] == "2024-05-01T12:00:00+00:00"


def test_create_event_rejects_missing_parts(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(2)
    body = kl.single_event({"email": "a@example.com"})
    del body["data"]["attributes"]["properties"]
    assert pointers(api.post("/api/events", body)) == ["/data/attributes/properties"]
    nobody = kl.single_event({"first_name": "A"})
    assert pointers(api.post("/api/events", nobody)) == ["/data/attributes/profile/data/attributes"]


def test_bulk_events_dedupe_first_write_wins(emulator: Emulator, api: Client) -> None:
    who = {"email": "a@example.com"}
    first = kl.bulk_events([(who, [kl.event(unique_id="o-1", properties={"v": 1}),
                                   kl.event("Viewed", unique_id="o-1")])])  # fmt: skip
    assert api.post("/api/event-bulk-create-jobs", first).status_code == 202
    later = kl.bulk_events([(who, [kl.event(unique_id="o-1", properties={"v": 2})])])
    assert api.post("/api/event-bulk-create-jobs", later).status_code == 202
    assert emulator.wait_idle(5)
    state = emulator.dump()
    assert [(e["metric"], e["properties"]) for e in state["events"]] == [
        ("Placed Order", {"v": 1}),
        ("Viewed", {}),
    ]
    assert state["duplicate_events"][0]["unique_id"] == "o-1"


def test_bulk_events_without_unique_id_collapse_within_a_second(
    emulator: Emulator, api: Client
) -> None:
    who = {"email": "a@example.com"}
    body = kl.bulk_events([(who, [kl.event(time="2024-01-01T00:00:00.1Z"),
                                  kl.event(time="2024-01-01T00:00:00.9Z"),
                                  kl.event(time="2024-01-01T00:00:01Z")])])  # fmt: skip
    assert api.post("/api/event-bulk-create-jobs", body).status_code == 202
    emulator.wait_idle(5)
    assert len(emulator.dump()["events"]) == 2


def test_bulk_events_repeated_unique_id_in_one_request_fails_it(
    emulator: Emulator, api: Client
) -> None:
    emulator.expect_violations(2)
    same = kl.bulk_events([({"email": "a@example.com"}, [kl.event(unique_id="x"),
                                                         kl.event(unique_id="x")])])  # fmt: skip
    response = api.post("/api/event-bulk-create-jobs", same)
    assert response.status_code == 400
    assert pointers(response) == [
        "/data/attributes/events-bulk-create/data/0/attributes/events/data/1/attributes/unique_id"
    ]
    # The same profile in two entries (matched through a shared identifier) counts too.
    split = kl.bulk_events([
        ({"email": "a@example.com"}, [kl.event(unique_id="y")]),
        ({"email": "a@example.com", "external_id": "c-1"}, [kl.event(unique_id="y")]),
    ])  # fmt: skip
    assert api.post("/api/event-bulk-create-jobs", split).status_code == 400
    other_metric = kl.bulk_events(
        [({"email": "a@example.com"}, [kl.event(unique_id="z"), kl.event("Other", unique_id="z")])]
    )
    assert api.post("/api/event-bulk-create-jobs", other_metric).status_code == 202
    emulator.wait_idle(5)
    assert len(emulator.dump()["events"]) == 2


@pytest.mark.parametrize(
    ("event_time", "ok"),
    [
        ("1990-01-01T00:00:01Z", True),
        ("1990-01-01T00:00:00Z", False),
        ("1989-12-31T23:59:59Z", False),
        ("2024-05-01T12:00:00+02:00", True),
        ("2024-05-01", False),
        ("yesterday", False),
    ],
)
def test_event_time_bounds(emulator: Emulator, api: Client, event_time: str, ok: bool) -> None:
    if not ok:
        emulator.expect_violations(1)
    body = kl.bulk_events([({"email": "a@example.com"}, [kl.event(time=event_time)])])
    response = api.post("/api/event-bulk-create-jobs", body)
    assert response.status_code == (202 if ok else 400)


@pytest.mark.parametrize(
    ("sent", "stored"),
    [
        ("2024-05-01T12:00:00+00:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00+00:00"),
        ("2024-05-01 12:00:00-08:00", "2024-05-01T20:00:00+00:00"),
        ("2024-05-01T12:00:00.75+00:00", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00+00:00"),
        ("2024-05-01T12:00+0530", "2024-05-01T06:30:00+00:00"),
    ],
)
def test_event_times_are_stored_in_utc_to_the_second(
    emulator: Emulator, api: Client, sent: str, stored: str
) -> None:
    body = kl.bulk_events([({"email": "a@example.com"}, [kl.event(time=sent)])])
    assert api.post("/api/event-bulk-create-jobs", body).status_code == 202
    assert emulator.wait_idle(5)
    assert [event["time"] for event in emulator.dump()["events"]] == [stored]


@pytest.mark.parametrize("event_time", ["2024-02-30T12:00:00+00:00", "2024-05-01T12:00:00+24:00"])
def test_impossible_event_times_are_refused(
    emulator: Emulator, api: Client, event_time: str
) -> None:
    emulator.expect_violations(1)
    body = kl.bulk_events([({"email": "a@example.com"}, [kl.event(time=event_time)])])
    assert api.post("/api/event-bulk-create-jobs", body).status_code == 400


def test_queued_events_are_applied_while_requests_keep_coming(
    emulator: Emulator, api: Client
) -> None:
    # Background work gives way to requests being answered, but only for a moment at a time:
    # a request that never ends (held open here) does not stop events from being applied.
    with emulator.in_flight:
        body = kl.bulk_events([({"email": f"p{i}@example.com"}, [kl.event()]) for i in range(200)])
        assert api.post("/api/event-bulk-create-jobs", body).status_code == 202
        assert emulator.wait_idle(10)
        assert len(emulator.dump()["events"]) == 200


def test_event_time_at_most_a_year_ahead(emulator: Emulator, api: Client) -> None:
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    soon = (now + timedelta(days=364)).isoformat()
    late = (now + timedelta(days=366)).isoformat()
    who = {"email": "a@example.com"}
    assert (
        api.post(
            "/api/event-bulk-create-jobs", kl.bulk_events([(who, [kl.event(time=soon)])])
        ).status_code
        == 202
    )
    emulator.expect_violations(1)
    assert (
        api.post(
            "/api/event-bulk-create-jobs", kl.bulk_events([(who, [kl.event(time=late)])])
        ).status_code
        == 400
    )


def test_event_profile_conflict_goes_to_the_first_match_and_is_recorded(
    emulator: Emulator, api: Client
) -> None:
    api.post("/api/profile-import", kl.profile_import({"email": "a@example.com"}))
    api.post("/api/profile-import", kl.profile_import({"phone_number": "+16175551234"}))
    body = kl.bulk_events(
        [({"email": "a@example.com", "phone_number": "+16175551234"}, [kl.event()])]
    )
    assert api.post("/api/event-bulk-create-jobs", body).status_code == 202
    emulator.wait_idle(5)
    state = emulator.dump()
    assert state["events"][0]["profile_id"] == state["profiles"][0]["id"]
    assert emulator.silent_drops[0]["reason"] == "identifier conflict"


# -- subscriptions ------------------------------------------------------------------------------


def test_subscribe_records_consent_and_joins_the_list(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("News")).json()["data"]["id"]
    rows = [kl.consent_row("a@example.com", "+16175551234", channels=("email", "sms"))]
    response = api.post(
        "/api/profile-subscription-bulk-create-jobs",
        kl.subscribe(rows, list_id=list_id, custom_source="target-klaviyo"),
    )
    assert response.status_code == 202 and response.content == b""
    emulator.wait_idle(5)
    (profile,) = emulator.dump()["profiles"]
    email = profile["subscriptions"]["email"]["marketing"]
    assert email["consent"] == "SUBSCRIBED" and email["consented_at"]
    assert email["method_detail"] == "target-klaviyo"
    assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "SUBSCRIBED"
    assert profile["lists"] == [list_id]


def test_historical_subscribe_needs_past_consented_at_on_every_channel(
    emulator: Emulator, api: Client
) -> None:
    path = "/api/profile-subscription-bulk-create-jobs"
    past = "2024-01-15T00:00:00Z"
    ok = [kl.consent_row("a@example.com", "+16175551234", ("email", "sms"), consented_at=past)]
    assert api.post(path, kl.subscribe(ok, historical_import=True)).status_code == 202
    emulator.expect_violations(4)
    missing = [kl.consent_row("a@example.com", channels=("email",))]
    response = api.post(path, kl.subscribe(missing, historical_import=True))
    assert pointers(response) == [
        "/data/attributes/profiles/data/0/attributes/subscriptions/email/marketing/consented_at"
    ]
    not_historical = [kl.consent_row("a@example.com", consented_at=past)]
    assert api.post(path, kl.subscribe(not_historical)).status_code == 400
    future = [kl.consent_row("a@example.com", consented_at="2999-01-01T00:00:00Z")]
    assert api.post(path, kl.subscribe(future, historical_import=True)).status_code == 400
    no_phone = [kl.consent_row("a@example.com", channels=("sms",))]
    response = api.post(path, kl.subscribe(no_phone))
    assert errors_of(response)[0]["detail"] == (
        "'phone_number' must not be empty when the sms channel is included in 'subscriptions'."
    )


def test_unsubscribe_sets_unsubscribed_and_leaves_the_list(emulator: Emulator, api: Client) -> None:
    list_id = api.post("/api/lists", kl.create_list("News")).json()["data"]["id"]
    api.post("/api/profile-subscription-bulk-create-jobs",
             kl.subscribe([kl.consent_row("a@example.com")], list_id=list_id))  # fmt: skip
    emulator.wait_idle(5)
    response = api.post(
        "/api/profile-subscription-bulk-delete-jobs",
        kl.unsubscribe([kl.consent_row("a@example.com", consent="UNSUBSCRIBED")], list_id),
    )
    assert response.status_code == 202
    emulator.wait_idle(5)
    (profile,) = emulator.dump()["profiles"]
    assert profile["subscriptions"]["email"]["marketing"]["consent"] == "UNSUBSCRIBED"
    assert profile["lists"] == []


def test_backdated_subscribe_before_a_newer_unsubscribe_is_400(
    emulator: Emulator, api: Client
) -> None:
    api.post("/api/profile-subscription-bulk-delete-jobs",
             kl.unsubscribe([kl.consent_row("a@example.com", consent="UNSUBSCRIBED")]))  # fmt: skip
    emulator.wait_idle(5)
    rows = [kl.consent_row("a@example.com", consented_at="2020-01-01T00:00:00Z")]
    response = api.post(
        "/api/profile-subscription-bulk-create-jobs", kl.subscribe(rows, historical_import=True)
    )
    assert response.status_code == 400
    assert "is before current unsubscription date" in errors_of(response)[0]["detail"]


def test_subscription_schema_rejects_other_profile_fields(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(2)
    row = kl.consent_row("a@example.com")
    row["attributes"]["first_name"] = "A"
    response = api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([row]))
    assert pointers(response) == ["/data/attributes/profiles/data/0/attributes/first_name"]
    wrong_consent = kl.consent_row("a@example.com", consent="SUBSCRIBED")
    assert (
        api.post(
            "/api/profile-subscription-bulk-delete-jobs", kl.unsubscribe([wrong_consent])
        ).status_code
        == 400
    )


def test_subscribe_to_unknown_list_is_400(api: Client) -> None:
    response = api.post(
        "/api/profile-subscription-bulk-create-jobs",
        kl.subscribe([kl.consent_row("a@example.com")], list_id="NoSuch"),
    )
    assert response.status_code == 400
