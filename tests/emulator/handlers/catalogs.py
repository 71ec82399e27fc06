"""Catalogs: bulk create / update / delete jobs of items, variants and categories, each job and
the job lists, and the items, variants and categories themselves (Klaviyo: catalogs API).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import paging
from ..calls import Backend, Call, Handler, Reply, not_found
from ..catalog import (
    ACTIONS,
    CATEGORY,
    ITEM,
    KINDS,
    PLURALS,
    VARIANT,
    Catalog,
    Entry,
    job_type,
)
from ..filters import BOOLEAN, STRING, Condition
from ..resources import catalog_job_resource, catalog_resource
from ..state import CatalogJob, Job, iso, new_ulid, now_utc
from . import bulk_jobs

# Klaviyo's OpenAPI spec: the operationIds of the job endpoints.
_JOB_NAMES = {ITEM: "catalog_items", VARIANT: "variants", CATEGORY: "categories"}
_LABELS = {ITEM: "Catalog item", VARIANT: "Catalog variant", CATEGORY: "Catalog category"}

# Klaviyo's OpenAPI spec: the filters of get_catalog_items, get_catalog_variants and
# get_catalog_categories ("Allowed field(s)/operator(s)").
FILTERS: dict[str, dict[str, tuple[str, frozenset[str]]]] = {
    ITEM: {
        "ids": (STRING, frozenset({"any"})),
        "category.id": (STRING, frozenset({"equals"})),
        "title": (STRING, frozenset({"contains"})),
        "published": (BOOLEAN, frozenset({"equals"})),
    },
    VARIANT: {
        "ids": (STRING, frozenset({"any"})),
        "item.id": (STRING, frozenset({"equals"})),
        "sku": (STRING, frozenset({"equals"})),
        "title": (STRING, frozenset({"contains"})),
        "published": (BOOLEAN, frozenset({"equals"})),
    },
    CATEGORY: {
        "ids": (STRING, frozenset({"any"})),
        "item.id": (STRING, frozenset({"equals"})),
        "name": (STRING, frozenset({"contains"})),
    },
}


# -- bulk jobs ----------------------------------------------------------------------------------


def _bulk(kind: str, action: str) -> Handler:
    def handler(backend: Backend, call: Call) -> Reply:
        rows = call.body["data"]["attributes"][PLURALS[kind]]["data"]
        store = backend.store
        with store.lock:
            if len(store.catalog.open_jobs) >= Catalog.MAX_JOBS_IN_PROGRESS:
                raise bulk_jobs.too_many_in_progress(Catalog.MAX_JOBS_IN_PROGRESS)
            job = CatalogJob(
                id=new_ulid(),
                created_at=iso(now_utc()),
                rows=list(rows),
                kind=kind,
                action=action,
            )
            store.catalog.open_jobs.add(job.id)
            bulk_jobs.submit(backend, call, job.type, job)
            resource = catalog_job_resource(job, call.base_url)
        # Klaviyo: catalogs API: 202 with the job; its errors say which rows failed.
        return Reply(202, {"data": resource, "links": {"self": call.url}})

    return handler


def _get_job(kind: str, action: str) -> Handler:
    def handler(backend: Backend, call: Call) -> Reply:
        store = backend.store
        with store.lock:
            job = bulk_jobs.find(store, _job_type(kind, action), call, f"{_LABELS[kind]} job")
            assert isinstance(job, CatalogJob)
            document: dict[str, Any] = {
                "data": catalog_job_resource(job, call.base_url),
                "links": {"self": call.url},
            }
            if PLURALS[kind] in call.options.include:
                # The spec's include=items (variants, categories): those the job created or
                # updated, as they are now.
                collection = store.catalog.collections[kind]
                found = (collection.get(entry_id) for entry_id in dict.fromkeys(job.resource_ids))
                document["included"] = [
                    catalog_resource(kind, entry, call.base_url) for entry in found if entry
                ]
        return Reply(200, document)

    return handler


def _list_jobs(kind: str, action: str) -> Handler:
    def handler(backend: Backend, call: Call) -> Reply:
        document = bulk_jobs.list_jobs(
            backend.store,
            call,
            _job_type(kind, action),
            bulk_jobs.status_filter(),
            _render_job,
            _job_fields,
        )
        return Reply(200, document)

    return handler


def _job_type(kind: str, action: str) -> str:
    return job_type(kind, action)


def _render_job(job: Any, base_url: str) -> dict[str, Any]:
    assert isinstance(job, CatalogJob)
    return catalog_job_resource(job, base_url)


def _job_fields(job: Job) -> dict[str, Any]:
    return {"status": job.status}


# -- items, variants, categories ----------------------------------------------------------------


def _get_many(kind: str) -> Handler:
    def handler(backend: Backend, call: Call) -> Reply:
        size = paging.page_size(call)
        start = paging.cursor_given(call)
        conditions = paging.filters(call, FILTERS[kind])
        descending = call.options.sort == "-created"
        include = "variants" in call.options.include
        catalog = backend.store.catalog
        with backend.store.lock:
            collection = catalog.collections[kind]
            order = _candidates(catalog, kind, conditions)
            checks = [check for c in conditions if (check := _check(c)) is not None]

            def keep(position: int) -> bool:
                entry = collection.at(position)
                return entry is not None and all(check(entry) for check in checks)

            # Entries in creation order (sort=created): a cursor is a position in it.
            positions, next_position, prev_position = paging.page(
                order[::-1] if descending else order, start, size, keep, descending=descending
            )
            entries = [collection.entries[str(collection.order[p])] for p in positions]
            document: dict[str, Any] = {
                "data": [catalog_resource(kind, e, call.base_url, include) for e in entries],
                "links": paging.links(call, next_position, prev_position),
            }
            if include:
                document["included"] = _variants_of(catalog, entries, call.base_url)
        return Reply(200, document)

    return handler


def _get_one(kind: str) -> Handler:
    def handler(backend: Backend, call: Call) -> Reply:
        catalog = backend.store.catalog
        include = "variants" in call.options.include
        with backend.store.lock:
            entry = catalog.collections[kind].get(call.params["id"])
            if entry is None:
                raise not_found(f"{_LABELS[kind]} '{call.params['id']}' does not exist.")
            document: dict[str, Any] = {
                "data": catalog_resource(kind, entry, call.base_url, include),
                "links": {"self": call.url},
            }
            if include:
                document["included"] = _variants_of(catalog, [entry], call.base_url)
        return Reply(200, document)

    return handler


def _variants_of(catalog: Catalog, items: list[Entry], base_url: str) -> list[dict[str, Any]]:
    variants = catalog.collections[VARIANT].entries
    return [
        catalog_resource(VARIANT, variants[variant_id], base_url)
        for item in items
        for variant_id in item.variants
    ]


def _candidates(catalog: Catalog, kind: str, conditions: list[Condition]) -> range | list[int]:
    """Positions (creation order) of the entries the id and relationship conditions select."""
    collection = catalog.collections[kind]
    selected: set[int] | None = None
    for condition in conditions:
        ids: Any
        if condition.field == "ids":
            ids = condition.value
        elif condition.field == "category.id":
            category = catalog.collections[CATEGORY].get(condition.value)
            ids = category.links if category else ()
        elif condition.field == "item.id":
            item = catalog.collections[ITEM].get(condition.value)
            ids = () if item is None else item.variants if kind == VARIANT else item.links
        else:
            continue
        found = {
            entry.position for entry_id in ids if (entry := collection.get(entry_id)) is not None
        }
        selected = found if selected is None else selected & found
    return range(len(collection.order)) if selected is None else sorted(selected)


def _check(condition: Condition) -> Callable[[Entry], bool] | None:
    """The attribute test of a condition (None for the id and relationship conditions)."""
    name, value = condition.field, condition.value
    if name in ("ids", "category.id", "item.id"):
        return None
    if condition.operator == "contains":
        # Emulator choice: a case-sensitive substring.
        return lambda entry: (
            isinstance(entry.attributes.get(name), str) and (value in entry.attributes[name])
        )
    return lambda entry: entry.attributes.get(name) == value


# -- the route table ----------------------------------------------------------------------------


def _routes() -> dict[str, Handler]:
    routes: dict[str, Handler] = {}
    for kind in KINDS:
        for action in ACTIONS:
            routes[f"bulk_{action}_catalog_{PLURALS[kind]}"] = _bulk(kind, action)
            name = f"get_bulk_{action}_{_JOB_NAMES[kind]}"
            routes[f"{name}_job"] = _get_job(kind, action)
            routes[f"{name}_jobs"] = _list_jobs(kind, action)
    routes.update(
        get_catalog_items=_get_many(ITEM),
        get_catalog_item=_get_one(ITEM),
        get_catalog_variants=_get_many(VARIANT),
        get_catalog_variant=_get_one(VARIANT),
        get_catalog_categories=_get_many(CATEGORY),
        get_catalog_category=_get_one(CATEGORY),
    )
    return routes


ROUTES = _routes()
