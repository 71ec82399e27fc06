"""Catalog items, variants and categories through the CLI against the emulator: upsert by
external id (create or update decided by the target), relationships, per-row job errors as
rejects, recovery when Klaviyo differs from the ledger, deletes, skip_unchanged and dry run."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import CATALOG_PREFIX, Client
from tests.support import (
    BOOLEAN,
    NUMBER,
    STRING,
    Running,
    TargetRun,
    base_config,
    run_checked,
    run_target,
    singer_lines,
    stream_messages,
)

PRODUCTS = {
    "sku": STRING,
    "name": STRING,
    "description": STRING,
    "url": STRING,
    "price": NUMBER,
    "published": BOOLEAN,
    "brand": STRING,
    "collections": {"type": ["array", "null"], "items": {"type": "string"}},
}
PRODUCT_MAPPING: dict[str, Any] = {
    "object": "catalog_item",
    "fields": {"external_id": "sku", "title": "name", "categories": "collections"},
}
VARIANTS = {
    "variant_sku": STRING,
    "product_sku": STRING,
    "title": STRING,
    "description": STRING,
    "url": STRING,
    "price": NUMBER,
    "stock": NUMBER,
}
VARIANT_MAPPING: dict[str, Any] = {
    "object": "catalog_variant",
    "fields": {
        "external_id": "variant_sku",
        "item": "product_sku",
        "sku": "variant_sku",
        "inventory_quantity": "stock",
    },
}
CATEGORIES = {"slug": STRING, "name": STRING}
CATEGORY_MAPPING: dict[str, Any] = {
    "object": "catalog_category",
    "fields": {"external_id": "slug"},
}
FAST = pytest.mark.emulator(window_scale=0.01, job_latency_s=0.05)


def product(i: int, **extra: Any) -> dict[str, Any]:
    return {
        "sku": f"SKU-{i}",
        "name": f"Product {i}",
        "description": f"The {i}th product",
        "url": f"https://shop.example.com/p/{i}",
        "price": 10.0 + i,
        "published": True,
        "brand": "Acme",
        **extra,
    }


def cid(external_id: str) -> str:
    return CATALOG_PREFIX + external_id


def load(
    emulator: Emulator,
    tmp_path: Path,
    streams: dict[str, tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]],
    *,
    state: str = "state",
    **settings: Any,
) -> TargetRun:
    """One CLI run of the given streams (name -> (mapping, schema, rows))."""
    config = base_config(
        emulator,
        tmp_path / state,
        {name: mapping for name, (mapping, _, _) in streams.items()},
        **settings,
    )
    messages = [
        message
        for name, (_, schema, rows) in streams.items()
        for message in stream_messages(name, schema, rows)
    ]
    return run_checked(emulator, config, messages, tmp_path)


def products(
    emulator: Emulator, tmp_path: Path, rows: list[dict[str, Any]], **settings: Any
) -> TargetRun:
    return load(emulator, tmp_path, {"products": (PRODUCT_MAPPING, PRODUCTS, rows)}, **settings)


def catalog(emulator: Emulator) -> dict[str, Any]:
    return dict(emulator.dump()["catalog"])


def calls(emulator: Emulator, operation: str) -> int:
    return sum(1 for entry in emulator.request_log if entry.operation == operation)


@FAST
def test_items_are_created_with_their_fields_and_custom_metadata(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [product(i) for i in range(250)]
    result = products(emulator, tmp_path, rows)

    stats = result.stream("products")
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (250, 250, 0)
    items = catalog(emulator)["items"]
    assert len(items) == 250
    first = items[cid("SKU-1")]
    assert first["title"] == "Product 1"
    assert first["description"] == "The 1th product"
    assert first["url"] == "https://shop.example.com/p/1"
    assert first["price"] == 11.0
    assert first["published"] is True
    # Columns that are no catalog field become custom_metadata (properties: all).
    assert first["custom_metadata"] == {"brand": "Acme"}
    # 100 items a job: three create jobs, no update.
    assert calls(emulator, "bulk_create_catalog_items") == 3
    assert calls(emulator, "bulk_update_catalog_items") == 0


@FAST
def test_second_run_skips_unchanged_and_updates_changed_items(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [product(i) for i in range(120)]
    products(emulator, tmp_path, rows)
    creates = calls(emulator, "bulk_create_catalog_items")

    again = products(emulator, tmp_path, rows)
    assert again.stream("products")["unchanged"] == 120
    assert calls(emulator, "bulk_create_catalog_items") == creates
    assert calls(emulator, "bulk_update_catalog_items") == 0

    changed = [product(i, price=99.5) if i < 10 else product(i) for i in range(120)]
    third = products(emulator, tmp_path, changed)
    stats = third.stream("products")
    assert (stats["loaded"], stats["unchanged"]) == (10, 110)
    # The ledger knows these ids: they are updated, never created again, and not looked up.
    assert calls(emulator, "bulk_create_catalog_items") == creates
    assert calls(emulator, "bulk_update_catalog_items") == 1
    assert catalog(emulator)["items"][cid("SKU-3")]["price"] == 99.5


@FAST
def test_items_created_elsewhere_are_found_by_lookup_and_updated(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    existing = [kl.catalog_item(f"SKU-{i}", title="old") for i in range(5)]
    response = api.post(
        "/api/catalog-item-bulk-create-jobs", kl.catalog_job("items", "create", existing)
    )
    assert response.status_code == 202
    assert emulator.wait_idle()

    result = products(emulator, tmp_path, [product(i) for i in range(8)])

    assert result.stream("products")["loaded"] == 8
    items = catalog(emulator)["items"]
    assert items[cid("SKU-2")]["title"] == "Product 2"
    assert len(items) == 8
    lookups = [
        unquote(e.query)
        for e in emulator.request_log
        if e.operation == "get_catalog_items" and "filter" in e.query
    ]
    assert len(lookups) == 1  # one batched lookup for the chunk (besides the start-up check)
    assert "any(ids," in lookups[0] and cid("SKU-7") in lookups[0]


@FAST
def test_an_update_that_meets_a_missing_item_is_sent_again_as_a_create(
    emulator: Emulator, tmp_path: Path, api: Client
) -> None:
    """The ledger knows the items from the first run; one was deleted elsewhere since: its
    update fails in the job and the row goes again as a create, every record counted once."""
    products(emulator, tmp_path, [product(i) for i in range(3)], state="first")
    # SKU-0 deleted elsewhere: the ledger is wrong about it now.
    response = api.post(
        "/api/catalog-item-bulk-delete-jobs",
        kl.catalog_job("items", "delete", [kl.catalog_delete("items", cid("SKU-0"))]),
    )
    assert response.status_code == 202
    assert emulator.wait_idle()

    result = products(emulator, tmp_path, [product(i, price=1.0) for i in range(3)], state="first")

    stats = result.stream("products")
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (3, 3, 0)
    items = catalog(emulator)["items"]
    assert items[cid("SKU-0")]["price"] == 1.0  # the update met a missing item: created
    assert items[cid("SKU-1")]["price"] == 1.0


@FAST
def test_per_row_errors_reject_those_records_with_klaviyos_reason(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Items in a category that does not exist fail in the job; the others load."""
    rows = [product(i) for i in range(4)]
    rows[2]["collections"] = ["no-such-collection"]
    result = products(emulator, tmp_path, rows)

    stats = result.stream("products")
    assert (stats["loaded"], stats["rejected"]) == (3, 1)
    (reject,) = result.rejects()
    assert reject["record"]["sku"] == "SKU-2"
    assert "Klaviyo" in reject["reason"] and "does not exist" in reject["reason"]
    assert cid("SKU-2") not in catalog(emulator)["items"]


@FAST
def test_bad_values_are_rejected_before_sending(emulator: Emulator, tmp_path: Path) -> None:
    rows = [
        product(1),
        product(2, price="cheap"),
        product(3, url=None),
        {**product(4), "sku": None},
    ]
    result = products(emulator, tmp_path, rows)
    stats = result.stream("products")
    assert (stats["loaded"], stats["rejected"]) == (1, 3)
    reasons = sorted(r["reason"] for r in result.rejects())
    assert any("external_id" in r for r in reasons)
    assert any("price" in r and "number" in r for r in reasons)
    assert any("url" in r for r in reasons)


@FAST
def test_categories_items_and_variants_linked(emulator: Emulator, tmp_path: Path) -> None:
    categories = [{"slug": "shoes", "name": "Shoes"}, {"slug": "hats", "name": "Hats"}]
    load(emulator, tmp_path, {"collections": (CATEGORY_MAPPING, CATEGORIES, categories)})
    items = [product(1, collections=["shoes"]), product(2, collections=["shoes", "hats"])]
    variants = [
        {
            "variant_sku": f"SKU-{i}-{size}",
            "product_sku": f"SKU-{i}",
            "title": f"Product {i} size {size}",
            "description": "a size",
            "url": f"https://shop.example.com/p/{i}?size={size}",
            "price": 12.5,
            "stock": 3,
        }
        for i in (1, 2)
        for size in ("S", "M")
    ]
    result = load(
        emulator,
        tmp_path,
        {
            "products": (PRODUCT_MAPPING, PRODUCTS, items),
            "variants": (VARIANT_MAPPING, VARIANTS, variants),
        },
    )
    assert result.stream("variants")["loaded"] == 4
    state = catalog(emulator)
    assert state["items"][cid("SKU-2")]["categories"] == [cid("shoes"), cid("hats")]
    assert state["categories"][cid("shoes")]["items"] == [cid("SKU-1"), cid("SKU-2")]
    assert state["variants"][cid("SKU-1-M")]["item"] == cid("SKU-1")
    assert state["variants"][cid("SKU-1-M")]["inventory_quantity"] == 3
    assert sorted(state["items"][cid("SKU-1")]["variants"]) == [cid("SKU-1-M"), cid("SKU-1-S")]


@FAST
def test_a_variant_of_a_missing_item_is_rejected(emulator: Emulator, tmp_path: Path) -> None:
    row = {
        "variant_sku": "V-1",
        "product_sku": "NOPE",
        "title": "t",
        "description": "d",
        "url": "https://x.example.com",
        "price": 1,
        "stock": 1,
    }
    result = load(emulator, tmp_path, {"variants": (VARIANT_MAPPING, VARIANTS, [row])})
    assert result.stream("variants")["rejected"] == 1
    assert "NOPE" in result.rejects()[0]["reason"]


@FAST
def test_delete_removes_items_and_a_later_upsert_creates_them_again(
    emulator: Emulator, tmp_path: Path
) -> None:
    rows = [product(i) for i in range(5)]
    products(emulator, tmp_path, rows)
    deletes = [{"sku": "SKU-1"}, {"sku": "SKU-3"}, {"sku": "NEVER-THERE"}]
    mapping = {"object": "catalog_item", "behavior": "delete", "fields": {"external_id": "sku"}}
    result = load(emulator, tmp_path, {"discontinued": (mapping, {"sku": STRING}, deletes)})

    stats = result.stream("discontinued")
    # The id Klaviyo never had: nothing to delete.
    assert (stats["loaded"], stats["unchanged"], stats["rejected"]) == (2, 1, 0)
    assert sorted(catalog(emulator)["items"]) == [cid(f"SKU-{i}") for i in (0, 2, 4)]

    again = products(emulator, tmp_path, rows)
    # Deleted items are not "unchanged": they are sent (created) again.
    assert (again.stream("products")["loaded"], again.stream("products")["unchanged"]) == (2, 3)
    assert len(catalog(emulator)["items"]) == 5


@FAST
def test_dry_run_plans_catalog_jobs_and_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", {"products": PRODUCT_MAPPING}, dry_run=True)
    lines = singer_lines(stream_messages("products", PRODUCTS, [product(i) for i in range(150)]))
    result = run_target(config, lines, tmp_path)
    assert result.exit_code == 0, result.stderr
    assert catalog(emulator)["items"] == {}
    plan = [
        json.loads(line) for line in (tmp_path / "state" / "dry_run.jsonl").read_text().splitlines()
    ]
    assert [(p["operation"], p["items"]) for p in plan] == [
        ("bulk_create_catalog_items", 100),
        ("bulk_create_catalog_items", 50),
    ]
    assert not any(e.operation.startswith("bulk_") for e in emulator.request_log)


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


@pytest.mark.emulator(window_scale=0.01, job_latency_s=1.0)
def test_a_create_that_meets_an_existing_item_is_sent_again_as_an_update(
    emulator: Emulator, tmp_path: Path
) -> None:
    """Two streams load the same new item in one run: both look it up before either job ran,
    both send a create; the one Klaviyo applies second fails on the existing id and goes again
    as an update. Each record is counted once."""
    result = load(
        emulator,
        tmp_path,
        {
            "shop_a": (PRODUCT_MAPPING, PRODUCTS, [product(7, price=1.0)]),
            "shop_b": (PRODUCT_MAPPING, PRODUCTS, [product(7, price=2.0)]),
        },
    )
    for stream in ("shop_a", "shop_b"):
        stats = result.stream(stream)
        assert (stats["read"], stats["loaded"], stats["rejected"]) == (1, 1, 0)
    assert list(catalog(emulator)["items"]) == [cid("SKU-7")]
    assert calls(emulator, "bulk_create_catalog_items") == 2
    assert calls(emulator, "bulk_update_catalog_items") == 1


@FAST
def test_test_connection_names_a_missing_catalog_scope(emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_key("pk_profiles_only_2222", {"profiles:write"})
    config = base_config(
        emulator,
        tmp_path / "state",
        {"products": PRODUCT_MAPPING},
        private_api_key="pk_profiles_only_2222",
    )
    result = run_target(config, "", tmp_path, args=("--test-connection",))
    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert "catalogs:read" in line

    ok = run_target(
        base_config(emulator, tmp_path / "state", {"products": PRODUCT_MAPPING}),
        "",
        tmp_path,
        args=("--test-connection",),
    )
    assert ok.exit_code == 0, ok.stderr
    assert "get_catalog_items" in {e.operation for e in emulator.request_log}


@pytest.mark.emulator(window_scale=0.01, job_latency_s=0.5)
def test_variants_read_before_their_items_wait_for_them(emulator: Emulator, tmp_path: Path) -> None:
    """Klaviyo runs each job on its own: a variant job that ran before its item's job would
    fail. Variants wait for the item chunks read before them (flushed first)."""
    variants = [
        {
            "variant_sku": f"SKU-{i}-V",
            "product_sku": f"SKU-{i}",
            "title": "v",
            "description": "d",
            "url": "https://shop.example.com/v",
            "price": 1,
            "stock": 1,
        }
        for i in range(30)
    ]
    categories = [{"slug": "all", "name": "All"}]
    result = load(
        emulator,
        tmp_path,
        {
            "variants": (VARIANT_MAPPING, VARIANTS, variants),
            "products": (
                PRODUCT_MAPPING,
                PRODUCTS,
                [product(i, collections=["all"]) for i in range(30)],
            ),
            "collections": (CATEGORY_MAPPING, CATEGORIES, categories),
        },
    )
    for stream in ("variants", "products", "collections"):
        assert result.stream(stream)["rejected"] == 0, result.rejects()
    state = catalog(emulator)
    assert len(state["variants"]) == 30
    assert state["items"][cid("SKU-4")]["categories"] == [cid("all")]


@FAST
def test_items_klaviyo_keeps_refusing_wait_on_hold_and_load_next_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.add_fault("503", "bulk_create_catalog_items", count=None)
    rows = [product(i) for i in range(5)]
    first = products(emulator, tmp_path, rows, max_retries=0)
    assert (first.stream("products")["loaded"], first.stream("products")["on_hold"]) == (0, 5)
    assert catalog(emulator)["items"] == {}

    emulator.clear_faults()
    second = products(emulator, tmp_path, [], max_retries=0)
    stats = second.stream("products")
    assert (stats["replayed"], stats["loaded"], stats["on_hold"]) == (5, 5, 0)
    assert len(catalog(emulator)["items"]) == 5


@FAST
def test_categories_upsert_and_skip_unchanged(emulator: Emulator, tmp_path: Path) -> None:
    rows = [{"slug": "shoes", "name": "Shoes"}, {"slug": "hats", "name": "Hats"}]
    streams = {"collections": (CATEGORY_MAPPING, CATEGORIES, rows)}
    load(emulator, tmp_path, streams)
    renamed = [{"slug": "shoes", "name": "Footwear"}, {"slug": "hats", "name": "Hats"}]
    result = load(emulator, tmp_path, {"collections": (CATEGORY_MAPPING, CATEGORIES, renamed)})
    stats = result.stream("collections")
    assert (stats["loaded"], stats["unchanged"]) == (1, 1)
    assert catalog(emulator)["categories"][cid("shoes")]["name"] == "Footwear"
    assert calls(emulator, "bulk_update_catalog_categories") == 1


@FAST
def test_a_variant_mapping_without_its_item_rejects_with_what_to_map(
    emulator: Emulator, tmp_path: Path
) -> None:
    mapping = {
        "object": "catalog_variant",
        "fields": {
            "external_id": "variant_sku",
            "sku": "variant_sku",
            "inventory_quantity": "stock",
        },
    }
    row = {
        "variant_sku": "V-1",
        "product_sku": "SKU-1",
        "title": "t",
        "description": "d",
        "url": "https://x.example.com",
        "price": 1,
        "stock": 1,
    }
    result = load(emulator, tmp_path, {"variants": (mapping, VARIANTS, [row])})
    assert result.stream("variants")["rejected"] == 1
    assert "fields.item" in result.rejects()[0]["reason"]
    assert calls(emulator, "bulk_create_catalog_variants") == 0


@pytest.mark.emulator(window_scale=0.01, job_latency_s=60)
def test_catalog_jobs_open_when_a_run_stops_are_asked_about_by_the_next_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    """SIGTERM while two create jobs run for longer than the grace: their records (and the 50
    not sent yet) wait on hold, and the next run tells what Klaviyo did with each job, then
    loads the records."""
    streams = {"products": PRODUCT_MAPPING}
    config = base_config(emulator, tmp_path / "state", streams, stop_grace_s=1)
    run = Running(config, tmp_path)
    run.write(singer_lines(stream_messages("products", PRODUCTS, [product(i) for i in range(250)])))
    deadline = time.monotonic() + 30
    while calls(emulator, "bulk_create_catalog_items") < 2:
        assert time.monotonic() < deadline, "two create jobs"
        time.sleep(0.05)
    run.signal(signal.SIGTERM)
    code, _, _ = run.finish()
    assert code == 128 + signal.SIGTERM
    assert run.summary()["streams"]["products"]["on_hold"] == 250

    emulator.configure(job_latency_s=None)
    rerun = run_target(config, "", tmp_path)
    assert rerun.exit_code == 0, rerun.stderr
    told = [line for line in rerun.stderr.splitlines() if "was in flight" in line]
    assert len(told) == 2
    assert all("catalog item create job" in line and "'products'" in line for line in told)
    assert rerun.stream("products")["loaded"] == 250
