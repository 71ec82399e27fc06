"""The account's catalog: items, variants and categories, and the bulk jobs that create, update
and delete them (Klaviyo: catalogs API).

Ids are Klaviyo's compound ``$custom:::$default:::<external_id>`` (items, variants and
categories each have their own). Items belong to categories (many to many); a variant belongs
to one item. Each kind keeps its entries in creation order with stable positions, so cursors
stay valid while entries come and go.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .state import CatalogJob

RowError = tuple[str, str, str]  # (code, detail, pointer)

# Klaviyo: catalogs API: "the only supported integration type is `$custom`, and the only
# supported catalog type is `$default`"; ids are {integration}:::{catalog}:::{external_id}.
INTEGRATION_TYPE = "$custom"
CATALOG_TYPE = "$default"
ID_PREFIX = f"{INTEGRATION_TYPE}:::{CATALOG_TYPE}:::"

ITEM, VARIANT, CATEGORY = "item", "variant", "category"
KINDS = (ITEM, VARIANT, CATEGORY)
# Klaviyo's OpenAPI spec: the JSON:API type and the plural used in paths and bodies of each kind.
RESOURCE_TYPES = {ITEM: "catalog-item", VARIANT: "catalog-variant", CATEGORY: "catalog-category"}
PLURALS = {ITEM: "items", VARIANT: "variants", CATEGORY: "categories"}
PATHS = {ITEM: "catalog-items", VARIANT: "catalog-variants", CATEGORY: "catalog-categories"}
ACTIONS = ("create", "update", "delete")

# Klaviyo's OpenAPI spec: the attributes each kind stores (CatalogItemResponseObjectResource,
# CatalogVariantResponseObjectResource, CatalogCategoryResponseObjectResource), and the
# defaults of the create query objects (published: true, inventory_policy: 0).
ATTRIBUTES = {
    ITEM: (
        "title",
        "description",
        "price",
        "url",
        "image_full_url",
        "image_thumbnail_url",
        "images",
        "custom_metadata",
        "published",
    ),
    VARIANT: (
        "title",
        "description",
        "sku",
        "inventory_policy",
        "inventory_quantity",
        "price",
        "url",
        "image_full_url",
        "image_thumbnail_url",
        "images",
        "custom_metadata",
        "published",
    ),
    CATEGORY: ("name",),
}
DEFAULTS: dict[str, dict[str, Any]] = {
    ITEM: {"published": True},
    VARIANT: {"published": True, "inventory_policy": 0},
    CATEGORY: {},
}


def compound_id(external_id: str) -> str:
    return ID_PREFIX + external_id


def job_type(kind: str, action: str) -> str:
    """``catalog-item-bulk-create-job`` and the like (Klaviyo's OpenAPI spec)."""
    return f"{RESOURCE_TYPES[kind]}-bulk-{action}-job"


@dataclass
class Entry:
    """One catalog item, variant or category."""

    id: str
    external_id: str
    attributes: dict[str, Any]
    created: str
    updated: str
    position: int
    item_id: str | None = None  # a variant's item
    # Items: their categories; categories: their items; items: their variants (ordered sets).
    links: dict[str, None] = field(default_factory=dict)
    variants: dict[str, None] = field(default_factory=dict)

    def dump(self, kind: str) -> dict[str, Any]:
        out: dict[str, Any] = {"external_id": self.external_id, **self.attributes}
        if kind != CATEGORY:
            out["created"] = self.created
        out["updated"] = self.updated
        if kind == ITEM:
            out["categories"] = list(self.links)
            out["variants"] = list(self.variants)
        elif kind == VARIANT:
            out["item"] = self.item_id
        else:
            out["items"] = list(self.links)
        return out


class Collection:
    """The entries of one kind, by id and in creation order (None where one was deleted)."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.order: list[str | None] = []

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, entry_id: str) -> Entry | None:
        return self.entries.get(entry_id)

    def add(self, entry_id: str, external_id: str, stamp: str) -> Entry:
        entry = Entry(entry_id, external_id, {}, stamp, stamp, len(self.order))
        self.entries[entry_id] = entry
        self.order.append(entry_id)
        return entry

    def remove(self, entry: Entry) -> None:
        del self.entries[entry.id]
        self.order[entry.position] = None

    def at(self, position: int) -> Entry | None:
        entry_id = self.order[position]
        return None if entry_id is None else self.entries[entry_id]

    def scan(self) -> Iterator[Entry]:
        for entry_id in self.order:
            if entry_id is not None:
                yield self.entries[entry_id]


class Catalog:
    """Items, variants and categories, and the catalog jobs in progress."""

    # Klaviyo: catalogs API: "The maximum number of jobs in progress at one time is 500".
    MAX_JOBS_IN_PROGRESS = 500

    def __init__(self) -> None:
        self.collections = {kind: Collection() for kind in KINDS}
        self.open_jobs: set[str] = set()

    def dump(self) -> dict[str, Any]:
        return {
            PLURALS[kind]: {entry.id: entry.dump(kind) for entry in collection.scan()}
            for kind, collection in self.collections.items()
        }

    # -- applying a job's rows ----------------------------------------------------------------

    def apply(self, job: CatalogJob, index: int, row: dict[str, Any], stamp: str) -> None:
        base = f"/data/attributes/{PLURALS[job.kind]}/data/{index}"
        actions: dict[str, Callable[[str, dict[str, Any], str, str], RowError | None]] = {
            "create": self._create,
            "update": self._update,
            "delete": self._delete,
        }
        error = actions[job.action](job.kind, row, base, stamp)
        if error is None:
            job.completed_count += 1
            entry_id = row.get("id") or compound_id(row["attributes"]["external_id"])
            job.resource_ids.append(entry_id)
            return
        code, detail, pointer = error
        # Klaviyo's OpenAPI spec: APIJobErrorPayload (id, code, title, detail, source.pointer);
        # the pointer names the row of the request.
        job.errors.append(
            {
                "id": str(uuid.uuid4()),
                "code": code,
                "title": "Conflict." if code == "conflict" else "Not found.",
                "detail": detail,
                "source": {"pointer": pointer},
            }
        )
        job.failed_count += 1

    def _create(self, kind: str, row: dict[str, Any], base: str, stamp: str) -> RowError | None:
        attributes = row["attributes"]
        entry_id = compound_id(attributes["external_id"])
        collection = self.collections[kind]
        if entry_id in collection.entries:
            # Klaviyo: catalogs API: create makes new resources, update and delete act on
            # existing ones: an existing id fails a create row, a missing one an update or delete
            # row, and the rest of the job applies (the job's errors; codes and texts are the
            # emulator's, Klaviyo documents none).
            label = RESOURCE_TYPES[kind].replace("-", " ")
            detail = f"A {label} with id '{entry_id}' already exists."
            return "conflict", detail, f"{base}/attributes/external_id"
        related = self._related(kind, row, base)
        if isinstance(related, tuple):
            return related
        entry = collection.add(entry_id, attributes["external_id"], stamp)
        entry.attributes = {**dict.fromkeys(ATTRIBUTES[kind]), **DEFAULTS[kind]}
        entry.attributes.update({k: v for k, v in attributes.items() if k in ATTRIBUTES[kind]})
        self._relate(kind, entry, related)
        return None

    def _update(self, kind: str, row: dict[str, Any], base: str, stamp: str) -> RowError | None:
        entry = self.collections[kind].get(row["id"])
        if entry is None:
            return "not_found", _missing(kind, row["id"]), f"{base}/id"
        related = self._related(kind, row, base)
        if isinstance(related, tuple):
            return related
        # Emulator choice: an attribute given (null included) replaces the stored value; one
        # left out is unchanged.
        entry.attributes.update(
            {k: v for k, v in row["attributes"].items() if k in ATTRIBUTES[kind]}
        )
        entry.updated = stamp
        self._relate(kind, entry, related)
        return None

    def _delete(self, kind: str, row: dict[str, Any], base: str, stamp: str) -> RowError | None:
        entry = self.collections[kind].get(row["id"])
        if entry is None:
            return "not_found", _missing(kind, row["id"]), f"{base}/id"
        self.remove(kind, entry)
        return None

    def remove(self, kind: str, entry: Entry) -> None:
        items = self.collections[ITEM]
        if kind == ITEM:
            for category_id in entry.links:
                self.collections[CATEGORY].entries[category_id].links.pop(entry.id, None)
            # Emulator choice: a variant cannot outlive its item; they go with it.
            variants = self.collections[VARIANT]
            for variant_id in list(entry.variants):
                variants.remove(variants.entries[variant_id])
        elif kind == VARIANT and entry.item_id in items.entries:
            items.entries[entry.item_id].variants.pop(entry.id, None)
        elif kind == CATEGORY:
            for item_id in entry.links:
                items.entries[item_id].links.pop(entry.id, None)
        self.collections[kind].remove(entry)

    def _related(self, kind: str, row: dict[str, Any], base: str) -> list[str] | RowError | None:
        """The ids a row relates its entry to (an item's categories, a category's items, a
        variant's item), None when it names none, or the error for one that does not exist."""
        relationships = row.get("relationships") or {}
        if kind == VARIANT:
            data = (relationships.get("item") or {}).get("data")
            if data is None:
                return None
            if data["id"] not in self.collections[ITEM].entries:
                # Klaviyo: catalogs API: a variant belongs to an existing item.
                return (
                    "not_found",
                    _missing(ITEM, data["id"]),
                    f"{base}/relationships/item/data/id",
                )
            return [data["id"]]
        name, other = ("categories", CATEGORY) if kind == ITEM else ("items", ITEM)
        if name not in relationships:
            return None
        ids = [item["id"] for item in relationships[name].get("data") or []]
        existing = self.collections[other].entries
        for position, related_id in enumerate(ids):
            if related_id not in existing:
                # Emulator choice: an item's categories (a category's items) must exist; the
                # row fails like a variant without its item.
                pointer = f"{base}/relationships/{name}/data/{position}/id"
                return "not_found", _missing(other, related_id), pointer
        return ids

    def _relate(self, kind: str, entry: Entry, related: list[str] | None) -> None:
        if related is None:
            return
        if kind == VARIANT:
            entry.item_id = related[0]
            self.collections[ITEM].entries[related[0]].variants[entry.id] = None
            return
        # An update's relationship replaces the set (Klaviyo's OpenAPI spec: "A list of catalog
        # category IDs representing the categories the item is in").
        other = self.collections[CATEGORY if kind == ITEM else ITEM].entries
        for old in entry.links:
            if old in other:
                other[old].links.pop(entry.id, None)
        entry.links = dict.fromkeys(related)
        for new in related:
            other[new].links[entry.id] = None


def _missing(kind: str, entry_id: str) -> str:
    return f"A {RESOURCE_TYPES[kind].replace('-', ' ')} with id '{entry_id}' does not exist."
