"""Custom objects as a client sees them over HTTP: data sources (list, create, get, delete) and
bulk record ingestion (``POST /api/data-source-record-bulk-create-jobs``: 204, applied
asynchronously), with limits, scopes and tiers.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.emulator import Emulator
from tests.emulator.client import Client

SOURCES = "/api/data-sources"
RECORDS = "/api/data-source-record-bulk-create-jobs"


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def source_body(title: str, **attributes: Any) -> dict[str, Any]:
    return {"data": {"type": "data-source", "attributes": {"title": title, **attributes}}}


def records_body(source_id: str | None, records: list[dict[str, Any]]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "type": "data-source-record-bulk-create-job",
        "attributes": {
            "data-source-records": {
                "data": [
                    {"type": "data-source-record", "attributes": {"record": record}}
                    for record in records
                ]
            }
        },
    }
    if source_id is not None:
        data["relationships"] = {"data-source": {"data": {"type": "data-source", "id": source_id}}}
    return {"data": data}


def create(api: Client, title: str, **attributes: Any) -> dict[str, Any]:
    response = api.post(SOURCES, source_body(title, **attributes))
    assert response.status_code == 201, response.text
    return dict(response.json()["data"])


def only_error(response: Any) -> dict[str, Any]:
    (error,) = response.json()["errors"]
    return dict(error)


@pytest.mark.emulator(throttle=False)
def test_create_get_list_and_delete_data_sources(emulator: Emulator, api: Client) -> None:
    pets = create(api, "Pets", description="Pets of our customers", visibility="shared")
    assert pets["type"] == "data-source" and len(pets["id"]) == 26
    assert pets["attributes"] == {
        "title": "Pets",
        "visibility": "shared",
        "description": "Pets of our customers",
        "namespace": "custom-objects",
    }
    plain = create(api, "Reservations")
    # The spec's defaults.
    assert (plain["attributes"]["visibility"], plain["attributes"]["description"]) == (
        "private",
        "",
    )
    assert api.get(f"{SOURCES}/{pets['id']}").json()["data"] == pets

    first = api.get(SOURCES, **{"page[size]": "1"}).json()
    assert [source["id"] for source in first["data"]] == [pets["id"]]
    second = api.request("GET", first["links"]["next"]).json()
    assert [source["id"] for source in second["data"]] == [plain["id"]]
    sparse = api.get(SOURCES, **{"fields[data-source]": "title"}).json()["data"]
    assert [source["attributes"] for source in sparse] == [
        {"title": "Pets"},
        {"title": "Reservations"},
    ]

    deleted = api.delete(f"{SOURCES}/{pets['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    assert api.get(f"{SOURCES}/{pets['id']}").status_code == 404
    assert api.delete(f"{SOURCES}/{pets['id']}").status_code == 404
    assert [source["id"] for source in api.get(SOURCES).json()["data"]] == [plain["id"]]
    assert list(emulator.dump()["data_sources"]) == [plain["id"]]


@pytest.mark.emulator(throttle=False)
def test_titles_are_unique_within_a_namespace(emulator: Emulator, api: Client) -> None:
    create(api, "Pets")
    clash = api.post(SOURCES, source_body("Pets"))
    assert clash.status_code == 409
    assert only_error(clash)["source"]["pointer"] == "/data/attributes/title"
    assert create(api, "Pets", namespace="partner-app")["attributes"]["namespace"] == "partner-app"
    emulator.expect_violations(4)
    for title in ("", "   ", "x" * 256):
        response = api.post(SOURCES, source_body(title))
        assert response.status_code == 400
        assert only_error(response)["source"]["pointer"] == "/data/attributes/title"
    assert api.get(SOURCES, filter="equals(title,'Pets')").status_code == 400  # none in the spec


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_records_are_204_then_kept_in_their_data_source_in_arrival_order(
    emulator: Emulator, api: Client
) -> None:
    pets = create(api, "Pets")["id"]
    other = create(api, "Other")["id"]
    first = [{"pet_id": "p1", "name": "Rex", "owner": {"email": "ann@example.com"}}]
    second = [{"pet_id": "p2", "name": "Tom"}, {"pet_id": "p1", "name": "Rex II"}]
    for records in (first, second):
        response = api.post(RECORDS, records_body(pets, records))
        assert response.status_code == 204 and response.content == b""
    assert emulator.wait_idle()
    state = emulator.dump()["data_sources"]
    # No key at the data source: a record sent again is kept again.
    assert state[pets]["records"] == first + second
    assert state[other]["records"] == []


@pytest.mark.emulator(throttle=False, job_delay_s=2)
def test_records_for_a_data_source_deleted_before_they_apply_are_dropped(
    emulator: Emulator, api: Client
) -> None:
    # Records wait job_delay_s (2 s) on the writes lane; the data source is deleted at once.
    pets = create(api, "Pets")["id"]
    assert api.post(RECORDS, records_body(pets, [{"id": 1}])).status_code == 204
    assert api.delete(f"{SOURCES}/{pets}").status_code == 204
    assert emulator.wait_idle()
    (drop,) = emulator.silent_drops
    assert drop["reason"] == "data source deleted" and drop["records"] == 1


@pytest.mark.emulator(throttle=False)
@pytest.mark.parametrize(
    ("body", "status", "pointer"),
    [
        (records_body("SRC", [{"n": i} for i in range(501)]), 400,
         "/data/attributes/data-source-records/data"),
        (records_body("SRC", []), 400, "/data/attributes/data-source-records/data"),
        (records_body(None, [{"n": 1}]), 400, "/data/relationships/data-source/data"),
        (records_body("SRC", [{"n": 1}, {"blob": "x" * 512_000}]), 400,
         "/data/attributes/data-source-records/data/1"),
        (records_body("01NOSUCHSOURCE000000000000", [{"n": 1}]), 400,
         "/data/relationships/data-source/data/id"),
        (records_body("SRC", [{"blob": "x" * 400_000} for _ in range(11)]), 413, "/data"),
    ],
)  # fmt: skip
def test_refused_record_requests(
    emulator: Emulator, api: Client, body: dict[str, Any], status: int, pointer: str
) -> None:
    source_id = create(api, "Pets")["id"]
    relationships = body["data"].get("relationships")
    if relationships and relationships["data-source"]["data"]["id"] == "SRC":
        relationships["data-source"]["data"]["id"] = source_id
    response = api.post(RECORDS, body)
    assert response.status_code == status, response.text
    assert only_error(response)["source"]["pointer"] == pointer
    if not pointer.endswith("/id"):  # an unknown data source is not a violation
        emulator.expect_violations(1)
    assert emulator.wait_idle()
    assert emulator.dump()["data_sources"][source_id]["records"] == []


def test_scopes_and_tiers(emulator: Emulator, api: Client) -> None:
    emulator.add_key("pk_read", {"custom-objects:read"})
    reader = Client(emulator.base_url, "pk_read")
    assert reader.get(SOURCES).status_code == 200
    refused = reader.post(SOURCES, source_body("Pets"))
    assert refused.status_code == 403 and "custom-objects:write" in only_error(refused)["detail"]
    emulator.add_key("pk_catalogs", {"catalogs:write"})
    assert Client(emulator.base_url, "pk_catalogs").get(SOURCES).status_code == 403

    created = api.post(SOURCES, source_body("Pets"))
    assert created.headers["RateLimit-Limit"] == "60"  # 3/s, 60/m
    records = api.post(RECORDS, records_body(created.json()["data"]["id"], [{"n": 1}]))
    assert records.status_code == 204
    assert records.headers["RateLimit-Limit"] == "15"  # 3/s, 15/m
    assert emulator.operations["bulk_create_data_source_records"].rate_limit == {
        "burst": 3,
        "steady": 15,
    }


@pytest.mark.emulator(window_scale=100)
def test_the_fourth_record_request_of_a_burst_window_is_429(api: Client) -> None:
    # Windows 100 times longer than Klaviyo's: the burst window outlasts the requests.
    source_id = create(api, "Pets")["id"]
    statuses = [
        api.post(RECORDS, records_body(source_id, [{"n": i}])).status_code for i in range(4)
    ]
    assert statuses == [204, 204, 204, 429]


@pytest.mark.emulator(throttle=False)
def test_answers_match_the_spec_response_schemas(emulator: Emulator, api: Client) -> None:
    from tests.test_emulator_responses import SPEC, check

    if not SPEC.exists():
        pytest.skip("Klaviyo's OpenAPI spec not found")
    created = check("create_data_source", api.post(SOURCES, source_body("Pets")))
    check("get_data_source", api.get(f"{SOURCES}/{created['data']['id']}"))
    check("get_data_sources", api.get(SOURCES))
    check("get_data_source", api.get(f"{SOURCES}/01NOPE"))
    check("create_data_source", api.post(SOURCES, source_body("Pets")))


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_the_official_sdk_reads_the_answers(emulator: Emulator) -> None:
    sdk = pytest.importorskip("klaviyo_api")
    models = pytest.importorskip("openapi_client.models")
    klaviyo = sdk.KlaviyoAPI(emulator.private_key, max_retries=0, test_host=emulator.base_url)
    objects = klaviyo.Custom_Objects
    created = objects.create_data_source(
        models.DataSourceCreateQuery.from_dict(source_body("Pets"))
    )
    source_id = created.data.id
    assert objects.get_data_source(source_id).data.attributes.namespace == "custom-objects"
    assert [source.id for source in objects.get_data_sources().data] == [source_id]
    query = models.DataSourceRecordBulkCreateJobCreateQuery.from_dict(
        records_body(source_id, [{"pet_id": "p1"}])
    )
    assert objects.bulk_create_data_source_records(query) is None
    assert emulator.wait_idle()
    assert emulator.dump()["data_sources"][source_id]["records"] == [{"pet_id": "p1"}]
