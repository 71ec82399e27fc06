"""Catalogs as a client sees them over HTTP: bulk create / update / delete jobs of items,
variants and categories with per-row errors in the job, the job lists, the items, variants and
categories themselves (batched lookup, sparse fieldsets, paging), limits, scopes and tiers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import CATALOG_PREFIX, Client

ITEM_JOBS = {a: f"/api/catalog-item-bulk-{a}-jobs" for a in ("create", "update", "delete")}
VARIANT_JOBS = {a: f"/api/catalog-variant-bulk-{a}-jobs" for a in ("create", "update", "delete")}
CATEGORY_JOBS = {a: f"/api/catalog-category-bulk-{a}-jobs" for a in ("create", "update", "delete")}
JOBS = {"items": ITEM_JOBS, "variants": VARIANT_JOBS, "categories": CATEGORY_JOBS}


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


def cid(external_id: str) -> str:
    return CATALOG_PREFIX + external_id


def run(
    emulator: Emulator, api: Client, plural: str, action: str, resources: list[dict[str, Any]]
) -> dict[str, Any]:
    """Submit a job, wait for it to end, and return the job resource as a client polls it."""
    response = api.post(JOBS[plural][action], kl.catalog_job(plural, action, resources))
    assert response.status_code == 202, response.text
    job_id = response.json()["data"]["id"]
    assert emulator.wait_idle()
    polled = api.get(f"{JOBS[plural][action]}/{job_id}")
    assert polled.status_code == 200, polled.text
    return dict(polled.json()["data"])


def item(api: Client, external_id: str, **params: str) -> dict[str, Any]:
    response = api.get(f"/api/catalog-items/{cid(external_id)}", **params)
    assert response.status_code == 200, response.text
    return dict(response.json())


def listed(api: Client, path: str, **params: str) -> list[str]:
    response = api.get(path, **params)
    assert response.status_code == 200, response.text
    return [entry["id"] for entry in response.json()["data"]]


# -- items --------------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
def test_create_job_answers_queued_then_the_items_are_there(
    emulator: Emulator, api: Client
) -> None:
    body = kl.catalog_job(
        "items",
        "create",
        [
            kl.catalog_item(
                "SKU-1",
                title="Blue shirt",
                description="Cotton",
                url="https://shop.example/blue",
                price=42.5,
                image_full_url="https://img.example/full.jpg",
                image_thumbnail_url="https://img.example/thumb.jpg",
                images=["https://img.example/1.jpg", "https://img.example/2.jpg"],
                custom_metadata={"Top Pick": True, "colour": "blue"},
            ),
            kl.catalog_item("SKU-2", published=False),
        ],
    )
    response = api.post(ITEM_JOBS["create"], body)
    assert response.status_code == 202, response.text
    created = response.json()["data"]
    assert created["type"] == "catalog-item-bulk-create-job"
    assert created["attributes"]["status"] == "queued"
    assert created["attributes"]["total_count"] == 2 and created["attributes"]["errors"] == []

    assert emulator.wait_idle()
    job = api.get(f"{ITEM_JOBS['create']}/{created['id']}").json()["data"]
    assert job["attributes"]["status"] == "complete"
    assert (job["attributes"]["completed_count"], job["attributes"]["failed_count"]) == (2, 0)
    assert [r["id"] for r in job["relationships"]["items"]["data"]] == [cid("SKU-1"), cid("SKU-2")]

    shirt = item(api, "SKU-1")["data"]
    assert shirt["type"] == "catalog-item" and shirt["id"] == "$custom:::$default:::SKU-1"
    attributes = shirt["attributes"]
    assert attributes["external_id"] == "SKU-1" and attributes["title"] == "Blue shirt"
    assert attributes["price"] == 42.5 and attributes["published"] is True  # spec default
    assert attributes["images"] == ["https://img.example/1.jpg", "https://img.example/2.jpg"]
    assert attributes["custom_metadata"] == {"Top Pick": True, "colour": "blue"}
    assert attributes["created"] and attributes["updated"]
    assert item(api, "SKU-2")["data"]["attributes"]["published"] is False
    stored = emulator.dump()["catalog"]["items"][cid("SKU-1")]
    assert stored["image_thumbnail_url"] == "https://img.example/thumb.jpg"
    assert stored["description"] == "Cotton" and stored["url"] == "https://shop.example/blue"


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_create_fails_on_an_existing_id_and_the_rest_of_the_job_applies(
    emulator: Emulator, api: Client
) -> None:
    run(emulator, api, "items", "create", [kl.catalog_item("A", title="first")])
    job = run(
        emulator,
        api,
        "items",
        "create",
        [kl.catalog_item("B"), kl.catalog_item("A", title="second"), kl.catalog_item("C")],
    )
    attributes = job["attributes"]
    assert attributes["status"] == "complete"
    assert (attributes["completed_count"], attributes["failed_count"]) == (2, 1)
    (error,) = attributes["errors"]
    assert error["code"] == "conflict"
    assert error["source"]["pointer"] == "/data/attributes/items/data/1/attributes/external_id"
    assert cid("A") in error["detail"]
    assert [r["id"] for r in job["relationships"]["items"]["data"]] == [cid("B"), cid("C")]
    assert item(api, "A")["data"]["attributes"]["title"] == "first"  # not overwritten


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_update_and_delete_fail_on_missing_ids(emulator: Emulator, api: Client) -> None:
    run(emulator, api, "items", "create", [kl.catalog_item("A"), kl.catalog_item("B")])
    updated = run(
        emulator,
        api,
        "items",
        "update",
        [
            kl.catalog_update("items", cid("NOPE"), title="x"),
            kl.catalog_update("items", cid("A"), title="New title", price=None, published=False),
        ],
    )
    assert (updated["attributes"]["completed_count"], updated["attributes"]["failed_count"]) == (
        1,
        1,
    )
    (error,) = updated["attributes"]["errors"]
    assert (error["code"], error["source"]["pointer"]) == (
        "not_found", "/data/attributes/items/data/0/id",
    )  # fmt: skip
    attributes = item(api, "A")["data"]["attributes"]
    assert (attributes["title"], attributes["price"], attributes["published"]) == (
        "New title", None, False,
    )  # fmt: skip
    assert attributes["description"] == ""  # left out: unchanged

    deleted = run(
        emulator,
        api,
        "items",
        "delete",
        [kl.catalog_delete("items", cid("B")), kl.catalog_delete("items", cid("B"))],
    )
    assert (deleted["attributes"]["completed_count"], deleted["attributes"]["failed_count"]) == (
        1,
        1,
    )
    assert (
        deleted["attributes"]["errors"][0]["source"]["pointer"]
        == "/data/attributes/items/data/1/id"
    )
    assert api.get(f"/api/catalog-items/{cid('B')}").status_code == 404
    assert listed(api, "/api/catalog-items") == [cid("A")]


# -- variants and categories --------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_variants_belong_to_an_existing_item(emulator: Emulator, api: Client) -> None:
    run(emulator, api, "items", "create", [kl.catalog_item("SHIRT")])
    job = run(
        emulator,
        api,
        "variants",
        "create",
        [
            kl.catalog_variant("SHIRT-M", cid("SHIRT"), sku="SH-M", inventory_quantity=25),
            kl.catalog_variant("HAT-M", cid("HAT")),
            kl.catalog_variant("SHIRT-L", cid("SHIRT"), inventory_policy=1),
        ],
    )
    assert (job["attributes"]["completed_count"], job["attributes"]["failed_count"]) == (2, 1)
    (error,) = job["attributes"]["errors"]
    assert error["code"] == "not_found" and cid("HAT") in error["detail"]
    assert (
        error["source"]["pointer"] == "/data/attributes/variants/data/1/relationships/item/data/id"
    )

    variant = api.get(f"/api/catalog-variants/{cid('SHIRT-M')}").json()["data"]
    assert variant["relationships"]["item"]["data"] == {"type": "catalog-item", "id": cid("SHIRT")}
    assert (
        variant["attributes"]["sku"] == "SH-M" and variant["attributes"]["inventory_quantity"] == 25
    )
    assert variant["attributes"]["inventory_policy"] == 0  # the spec's default
    with_variants = item(api, "SHIRT", include="variants")
    data = with_variants["data"]["relationships"]["variants"]["data"]
    assert [v["id"] for v in data] == [cid("SHIRT-M"), cid("SHIRT-L")]
    assert [v["id"] for v in with_variants["included"]] == [cid("SHIRT-M"), cid("SHIRT-L")]
    assert listed(api, "/api/catalog-variants", filter=f"equals(item.id,'{cid('SHIRT')}')") == [
        cid("SHIRT-M"), cid("SHIRT-L"),
    ]  # fmt: skip
    assert listed(api, "/api/catalog-variants", filter="equals(sku,'SH-M')") == [cid("SHIRT-M")]

    updated = run(
        emulator, api, "variants", "update",
        [kl.catalog_update("variants", cid("SHIRT-L"), inventory_quantity=0, price=19.99)],
    )  # fmt: skip
    assert updated["attributes"]["completed_count"] == 1
    stored = emulator.dump()["catalog"]["variants"][cid("SHIRT-L")]
    assert (stored["inventory_quantity"], stored["price"], stored["item"]) == (
        0,
        19.99,
        cid("SHIRT"),
    )

    # Deleting the item takes its variants with it.
    run(emulator, api, "items", "delete", [kl.catalog_delete("items", cid("SHIRT"))])
    assert listed(api, "/api/catalog-variants") == []
    gone = run(emulator, api, "variants", "delete", [kl.catalog_delete("variants", cid("SHIRT-M"))])
    assert gone["attributes"]["failed_count"] == 1


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_items_and_categories_relate_both_ways(emulator: Emulator, api: Client) -> None:
    categories = [kl.catalog_category("SHIRTS", "Shirts"), kl.catalog_category("SALE", "Sale")]
    run(emulator, api, "categories", "create", categories)
    job = run(
        emulator,
        api,
        "items",
        "create",
        [
            kl.catalog_item("A", categories=[cid("SHIRTS"), cid("SALE")]),
            kl.catalog_item("B", categories=[cid("SHIRTS")]),
            kl.catalog_item("C", categories=[cid("SHIRTS"), cid("SHOES")]),
        ],
    )
    (error,) = job["attributes"]["errors"]
    assert (
        error["source"]["pointer"]
        == "/data/attributes/items/data/2/relationships/categories/data/1/id"
    )
    items_in = lambda category: listed(  # noqa: E731
        api, "/api/catalog-items", filter=f"equals(category.id,'{cid(category)}')"
    )
    assert items_in("SHIRTS") == [cid("A"), cid("B")] and items_in("SALE") == [cid("A")]
    categories_of = lambda external: listed(  # noqa: E731
        api, "/api/catalog-categories", filter=f"equals(item.id,'{cid(external)}')"
    )
    assert categories_of("A") == [cid("SHIRTS"), cid("SALE")]

    # An item update's categories replace the item's; a category update's items replace its.
    sale = {"categories": {"data": [{"type": "catalog-category", "id": cid("SALE")}]}}
    run(emulator, api, "items", "update", [kl.catalog_update("items", cid("A"), sale)])
    assert items_in("SHIRTS") == [cid("B")]
    run(emulator, api, "categories", "update", [kl.catalog_update(
        "categories", cid("SALE"), {"items": {"data": [{"type": "catalog-item", "id": cid("B")}]}},
        name="Summer sale",
    )])  # fmt: skip
    assert items_in("SALE") == [cid("B")] and categories_of("A") == []
    category = api.get(f"/api/catalog-categories/{cid('SALE')}").json()["data"]
    assert category["attributes"]["name"] == "Summer sale"
    assert category["attributes"]["external_id"] == "SALE"
    created = run(
        emulator, api, "categories", "create", [kl.catalog_category("NEW", items=[cid("A")])]
    )
    assert created["attributes"]["completed_count"] == 1 and categories_of("A") == [cid("NEW")]

    run(emulator, api, "categories", "delete", [kl.catalog_delete("categories", cid("SALE"))])
    assert categories_of("B") == [cid("SHIRTS")]
    assert emulator.dump()["catalog"]["items"][cid("B")]["categories"] == [cid("SHIRTS")]


# -- reading ------------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_batched_lookup_filters_fieldsets_and_paging(emulator: Emulator, api: Client) -> None:
    resources = [
        kl.catalog_item(f"I{i}", title=f"{'Red' if i % 2 else 'Blue'} {i}", published=i != 3)
        for i in range(7)
    ]
    run(emulator, api, "items", "create", resources)
    wanted = [cid("I5"), cid("I1"), cid("NOPE")]
    quoted = ",".join(f"'{i}'" for i in wanted)
    response = api.get(
        "/api/catalog-items",
        filter=f"any(ids,[{quoted}])",
        **{"fields[catalog-item]": "external_id,price"},
    )
    assert response.status_code == 200, response.text
    found = {entry["id"]: entry["attributes"] for entry in response.json()["data"]}
    assert found == {
        cid("I1"): {"external_id": "I1", "price": None},
        cid("I5"): {"external_id": "I5", "price": None},
    }
    assert listed(api, "/api/catalog-items", filter="contains(title,'Red')") == [
        cid("I1"), cid("I3"), cid("I5"),
    ]  # fmt: skip
    assert listed(api, "/api/catalog-items", filter="equals(published,false)") == [cid("I3")]
    both = "and(contains(title,'Red'),equals(published,true))"
    assert listed(api, "/api/catalog-items", filter=both) == [cid("I1"), cid("I5")]

    page = api.get("/api/catalog-items", **{"page[size]": "3"}).json()
    assert [entry["id"] for entry in page["data"]] == [cid("I0"), cid("I1"), cid("I2")]
    second = api.request("GET", page["links"]["next"]).json()
    assert [entry["id"] for entry in second["data"]] == [cid("I3"), cid("I4"), cid("I5")]
    newest = listed(api, "/api/catalog-items", sort="-created", **{"page[size]": "2"})
    assert newest == [cid("I6"), cid("I5")]
    emulator.expect_violations(3)
    assert api.get("/api/catalog-items", filter="equals(title,'Red 1')").status_code == 400
    assert api.get("/api/catalog-items", **{"page[size]": "101"}).status_code == 400
    assert api.get("/api/catalog-items", sort="title").status_code == 400


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_ids_in_paths_may_be_percent_encoded(emulator: Emulator, api: Client) -> None:
    run(emulator, api, "items", "create", [kl.catalog_item("A B/1")])
    encoded = quote(cid("A B/1"), safe="")
    response = api.get(f"/api/catalog-items/{encoded}")
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["id"] == cid("A B/1")
    assert api.request("GET", data["links"]["self"]).json()["data"]["id"] == cid("A B/1")
    assert api.get(f"/api/catalog-items/{quote(cid('nope'), safe='')}").status_code == 404


# -- jobs ---------------------------------------------------------------------------------------


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_job_lists_include_and_404(emulator: Emulator, api: Client) -> None:
    first = run(emulator, api, "items", "create", [kl.catalog_item("A")])["id"]
    second = run(emulator, api, "items", "create", [kl.catalog_item("A")])["id"]
    update = run(emulator, api, "items", "update", [kl.catalog_update("items", cid("A"), price=3)])
    assert listed(api, ITEM_JOBS["create"]) == [first, second]
    assert listed(api, ITEM_JOBS["create"], filter="equals(status,'complete')") == [first, second]
    assert listed(api, ITEM_JOBS["create"], filter="equals(status,'processing')") == []
    assert listed(api, ITEM_JOBS["update"]) == [update["id"]]
    assert api.get(f"{ITEM_JOBS['create']}/{update['id']}").status_code == 404
    assert api.get(f"{VARIANT_JOBS['create']}/{first}").status_code == 404

    polled = api.get(
        f"{ITEM_JOBS['update']}/{update['id']}",
        include="items",
        **{"fields[catalog-item]": "price"},
    ).json()
    assert polled["included"] == [
        {**polled["included"][0], "attributes": {"price": 3}, "id": cid("A")}
    ]
    emulator.expect_violations(2)
    assert api.get(ITEM_JOBS["create"], filter="equals(status,'done')").status_code == 400
    # The spec's job lists have no page size: 100 jobs a page.
    refused = api.get(ITEM_JOBS["create"], **{"page[size]": "50"})
    assert refused.status_code == 400
    assert refused.json()["errors"][0]["source"] == {"parameter": "page[size]"}


@pytest.mark.emulator(throttle=False, job_latency_s=0.2)
def test_jobs_under_the_latency_model(emulator: Emulator, api: Client) -> None:
    response = api.post(
        CATEGORY_JOBS["create"],
        kl.catalog_job("categories", "create", [kl.catalog_category(f"C{i}") for i in range(100)]),
    )
    assert response.status_code == 202
    assert response.json()["data"]["attributes"]["status"] == "queued"
    assert emulator.wait_idle()
    job = api.get(f"{CATEGORY_JOBS['create']}/{response.json()['data']['id']}").json()["data"]
    assert job["attributes"]["status"] == "complete" and job["attributes"]["completed_count"] == 100


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_cancel_job_fault_stops_a_catalog_job_half_way(emulator: Emulator, api: Client) -> None:
    emulator.add_fault("cancel_job", operation="bulk_create_catalog_items")
    job = run(emulator, api, "items", "create", [kl.catalog_item(f"I{i}") for i in range(10)])
    assert job["attributes"]["status"] == "cancelled"
    assert job["attributes"]["completed_count"] == 5 and len(listed(api, "/api/catalog-items")) == 5


@pytest.mark.emulator(throttle=False, job_latency_s=60)
def test_beyond_500_catalog_jobs_in_progress_is_429(emulator: Emulator, api: Client) -> None:
    for index in range(500):
        plural = ("items", "variants", "categories")[index % 3]
        action = "delete"  # any catalog job counts: deletes of missing ids are cheapest to build
        body = kl.catalog_job(plural, action, [kl.catalog_delete(plural, cid(f"X{index}"))])
        assert api.post(JOBS[plural][action], body).status_code == 202
    refused = api.post(
        ITEM_JOBS["create"], kl.catalog_job("items", "create", [kl.catalog_item("A")])
    )
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "1"
    assert "500" in refused.json()["errors"][0]["detail"]
    assert len(emulator.dump()["catalog_jobs"]) == 500


# -- limits, scopes, tiers ----------------------------------------------------------------------


@pytest.mark.emulator(throttle=False)
@pytest.mark.parametrize(
    ("plural", "action", "resources", "pointer"),
    [
        ("items", "create", [kl.catalog_item(f"I{i}") for i in range(101)],
         "/data/attributes/items/data"),
        ("items", "update", [], "/data/attributes/items/data"),
        ("items", "create", [kl.catalog_item("A", catalog_type="$other")],
         "/data/attributes/items/data/0/attributes/catalog_type"),
        ("items", "create", [kl.catalog_item("A", integration_type="$shopify")],
         "/data/attributes/items/data/0/attributes/integration_type"),
        ("items", "create", [kl.catalog_item("A", custom_metadata={"k": "x" * 100_000})],
         "/data/attributes/items/data/0/attributes/custom_metadata"),
        ("variants", "create",
         [{**kl.catalog_variant("V", cid("A")), "relationships": {"item": {}}}],
         "/data/attributes/variants/data/0/relationships/item/data"),
        ("categories", "create", [{"type": "catalog-category", "attributes": {"external_id": "C"}}],
         "/data/attributes/categories/data/0/attributes/name"),
    ],
)  # fmt: skip
def test_refused_bodies_are_400_naming_where(
    emulator: Emulator,
    api: Client,
    plural: str,
    action: str,
    resources: list[dict[str, Any]],
    pointer: str,
) -> None:
    emulator.expect_violations(1)
    response = api.post(JOBS[plural][action], kl.catalog_job(plural, action, resources))
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0]["source"]["pointer"] == pointer
    assert emulator.dump()["catalog_jobs"] == {}


@pytest.mark.emulator(throttle=False)
def test_a_body_over_5_mb_is_413(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(1)
    big = [kl.catalog_item(f"I{i}", description="x" * 60_000) for i in range(90)]
    response = api.post(ITEM_JOBS["create"], kl.catalog_job("items", "create", big))
    assert response.status_code == 413


def test_scopes_and_tiers(emulator: Emulator, api: Client) -> None:
    emulator.add_key("pk_read", {"catalogs:read"})
    reader = Client(emulator.base_url, "pk_read")
    assert reader.get("/api/catalog-items").status_code == 200
    assert reader.get(ITEM_JOBS["create"]).status_code == 200
    refused = reader.post(
        ITEM_JOBS["create"], kl.catalog_job("items", "create", [kl.catalog_item("A")])
    )
    assert refused.status_code == 403 and "catalogs:write" in refused.json()["errors"][0]["detail"]
    emulator.add_key("pk_profiles", {"profiles:write"})
    assert Client(emulator.base_url, "pk_profiles").get("/api/catalog-items").status_code == 403

    created = api.post(
        ITEM_JOBS["create"], kl.catalog_job("items", "create", [kl.catalog_item("A")])
    )
    assert created.headers["RateLimit-Limit"] == "750"  # 75/s, 750/m
    assert api.get("/api/catalog-items").headers["RateLimit-Limit"] == "3500"  # 350/s, 3500/m
    limits = {op: emulator.operations[op].rate_limit for op in emulator.operations}
    assert limits["bulk_delete_catalog_categories"] == {"burst": 75, "steady": 750}
    assert limits["get_bulk_delete_catalog_items_jobs"] == {"burst": 350, "steady": 3500}


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_answers_match_the_spec_response_schemas(emulator: Emulator, api: Client) -> None:
    from tests.test_emulator_responses import SPEC, check

    if not SPEC.exists():
        pytest.skip("Klaviyo's OpenAPI spec not found")
    answers = {}
    bodies = {
        ("categories", "create"): [kl.catalog_category("C")],
        ("items", "create"): [kl.catalog_item("A", categories=[cid("C")], images=["u"], price=1)],
        ("variants", "create"): [kl.catalog_variant("V", cid("A"))],
        ("items", "update"): [kl.catalog_update("items", cid("A"), title="T")],
        ("variants", "update"): [kl.catalog_update("variants", cid("V"), sku="S")],
        ("categories", "update"): [kl.catalog_update("categories", cid("C"), name="N")],
        ("variants", "delete"): [kl.catalog_delete("variants", cid("NOPE"))],
        ("items", "delete"): [kl.catalog_delete("items", cid("NOPE"))],
        ("categories", "delete"): [kl.catalog_delete("categories", cid("NOPE"))],
    }
    job_names = {"items": "catalog_items", "variants": "variants", "categories": "categories"}
    for (plural, action), resources in bodies.items():
        operation = f"bulk_{action}_catalog_{plural}"
        response = api.post(JOBS[plural][action], kl.catalog_job(plural, action, resources))
        answers[plural, action] = check(operation, response)["data"]["id"]
        assert emulator.wait_idle()
    for (plural, action), job_id in answers.items():
        name = f"get_bulk_{action}_{job_names[plural]}"
        include = {"include": plural} if action != "delete" else {}
        check(f"{name}_job", api.get(f"{JOBS[plural][action]}/{job_id}", **include))
        check(f"{name}_jobs", api.get(JOBS[plural][action]))
    check("get_catalog_items", api.get("/api/catalog-items", include="variants"))
    check("get_catalog_item", api.get(f"/api/catalog-items/{cid('A')}", include="variants"))
    check("get_catalog_variants", api.get("/api/catalog-variants"))
    check("get_catalog_variant", api.get(f"/api/catalog-variants/{cid('V')}"))
    check("get_catalog_categories", api.get("/api/catalog-categories"))
    check("get_catalog_category", api.get(f"/api/catalog-categories/{cid('C')}"))
    check("get_catalog_item", api.get(f"/api/catalog-items/{cid('NOPE')}"))


@pytest.mark.emulator(throttle=False, job_delay_s=0)
def test_the_official_sdk_reads_the_answers(emulator: Emulator) -> None:
    sdk = pytest.importorskip("klaviyo_api")
    models = pytest.importorskip("openapi_client.models")
    klaviyo = sdk.KlaviyoAPI(emulator.private_key, max_retries=0, test_host=emulator.base_url)
    catalogs = klaviyo.Catalogs
    body = kl.catalog_job(
        "items", "create", [kl.catalog_item("A", price=2.5), kl.catalog_item("A")]
    )
    job_id = catalogs.bulk_create_catalog_items(
        models.CatalogItemCreateJobCreateQuery.from_dict(body)
    ).data.id
    variants = kl.catalog_job("variants", "create", [kl.catalog_variant("V", cid("A"))])
    catalogs.bulk_create_catalog_variants(
        models.CatalogVariantCreateJobCreateQuery.from_dict(variants)
    )
    assert emulator.wait_idle()
    job = catalogs.get_bulk_create_catalog_items_job(job_id, include=["items"])
    assert (job.data.attributes.completed_count, job.data.attributes.failed_count) == (1, 1)
    assert job.data.attributes.errors[0].source.pointer.endswith("/1/attributes/external_id")
    found = catalogs.get_catalog_items(filter=f"any(ids,['{cid('A')}'])", include=["variants"])
    assert [item.attributes.price for item in found.data] == [2.5]
    assert catalogs.get_catalog_item(cid("A")).data.id == cid("A")
    assert catalogs.get_catalog_variant(cid("V")).data.relationships.item.data.id == cid("A")
