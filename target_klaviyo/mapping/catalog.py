"""Catalog items, variants and categories: a record becomes the attributes of one catalog
entry and the external ids it relates to.

Klaviyo's catalog ids are `$custom:::$default:::<external_id>` ("the only supported
integration type is `$custom`, and the only supported catalog type is `$default`":
https://developers.klaviyo.com/en/reference/catalogs_api_overview). Which request carries an
entry (create or update) is decided when it is sent; the mapping gives what both need.

Columns: `fields` maps a catalog field from a column; a column named like a catalog field maps
to it without being listed. `properties` (default "all": every other column, `_sdc_*` and
`exclude` left out) become keys of `custom_metadata`, beside the keys of a column mapped to
`custom_metadata` itself (categories have no `custom_metadata`). The relationships are
columns of external ids: a variant's `item`, an item's `categories` (a list), a category's
`items` (a list).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

from target_klaviyo.mapping.identity import Rejection, blank, show
from target_klaviyo.mapping.profile import PropertyPlan
from target_klaviyo.mapping.values import encode, encode_sorted, to_json
from target_klaviyo.streams import CATALOG_FIELDS, StreamMapping

ID_PREFIX = "$custom:::$default:::"

# object -> (the JSON:API type of its entries, the plural of request bodies, what it relates to:
# (relationship field, JSON:API type of the related entries, whether it is a list)).
RESOURCE_TYPES = {
    "catalog_item": "catalog-item",
    "catalog_variant": "catalog-variant",
    "catalog_category": "catalog-category",
}
PLURALS = {"catalog_item": "items", "catalog_variant": "variants", "catalog_category": "categories"}
# The ledger's kind of each object's ids.
KINDS = {"catalog_item": "item", "catalog_variant": "variant", "catalog_category": "category"}
RELATIONSHIPS: dict[str, tuple[str, str, bool]] = {
    "catalog_item": ("categories", "catalog-category", True),
    "catalog_variant": ("item", "catalog-item", False),
    "catalog_category": ("items", "catalog-item", True),
}

# Klaviyo's OpenAPI spec: the attributes a create requires (CatalogItemCreateQueryResourceObject
# and the like). Every record must carry them: whether it is sent as a create or an update is
# the target's choice, and a record's outcome must not depend on it.
REQUIRED: dict[str, tuple[str, ...]] = {
    "catalog_item": ("title", "description", "url"),
    "catalog_variant": ("title", "description", "sku", "inventory_quantity", "price", "url"),
    "catalog_category": ("name",),
}
# The value types of the spec's attributes.
TEXT = frozenset(
    {"title", "description", "url", "image_full_url", "image_thumbnail_url", "sku", "name"}
)
NUMBERS = frozenset({"price", "inventory_quantity"})
# Klaviyo: catalogs API: custom_metadata "May not exceed 100kb" (stricter decimal reading).
MAX_METADATA_BYTES = 100_000
INVENTORY_POLICIES = (0, 1, 2)


def compound_id(external_id: str) -> str:
    return ID_PREFIX + external_id


class CatalogEntry(NamedTuple):
    external_id: str
    attributes: dict[str, Any]  # without external_id
    related: list[str] | None  # compound ids of the relationship, None when not mapped


class CatalogMapper:
    """One stream's records as catalog entries of one object."""

    def __init__(
        self, obj: str, mapping: StreamMapping, schema_properties: Collection[str]
    ) -> None:
        self.object = obj
        allowed = CATALOG_FIELDS[obj]
        exclude = mapping.exclude
        plan = {field: column for field, column in mapping.fields.items() if column not in exclude}
        used = set(mapping.fields.values())
        for field in sorted(allowed):
            if field in schema_properties and not ({field} & (plan.keys() | exclude | used)):
                plan[field] = field
        self.relationship, self.related_type, self.related_list = RELATIONSHIPS[obj]
        self.related_column = plan.pop(self.relationship, None)
        self.external_id_column = plan.pop("external_id", None)
        self.fields = plan  # catalog attribute -> column
        self.metadata: PropertyPlan | None = None
        if "custom_metadata" in allowed:
            skip = {*plan.values(), *used}
            for column in (self.related_column, self.external_id_column):
                if column is not None:
                    skip.add(column)
            # The renames of `properties.<name>` have no meaning here: catalog fields only.
            self.metadata = PropertyPlan(mapping.properties, schema_properties, skip, exclude, {})
        self.required = REQUIRED[obj]

    def map(self, record: dict[str, Any]) -> CatalogEntry:
        """The entry of one record. Raises Rejection."""
        external_id = _text_id(record.get(self.external_id_column or ""), "external_id")
        attributes: dict[str, Any] = {}
        for field, column in self.fields.items():
            raw = record.get(column)
            if raw is None:
                continue
            attributes[field] = _value(field, raw, column)
        if self.metadata is not None:
            extra = {
                name: value
                for name, column in self.metadata.plan(record)
                if (value := to_json(record[column])) is not None
            }
            if extra:
                attributes["custom_metadata"] = {**attributes.get("custom_metadata", {}), **extra}
            if "custom_metadata" in attributes:
                size = len(encode(attributes["custom_metadata"]))
                if size > MAX_METADATA_BYTES:
                    raise Rejection(
                        f"custom_metadata is {size:,} bytes: over Klaviyo's 100 KB "
                        f"({MAX_METADATA_BYTES:,} bytes) limit"
                    )
        missing = [field for field in self.required if field not in attributes]
        if missing:
            names = ", ".join(
                f"{field} ({self.fields.get(field, 'not mapped')})" for field in missing
            )
            raise Rejection(f"{self.object} {external_id!r} has no {names}: Klaviyo requires it")
        related = None
        if self.related_column is not None:
            raw = record.get(self.related_column)
            if self.related_list:
                related = [compound_id(_text_id(value, self.relationship)) for value in _many(raw)]
            elif blank(raw):
                raise Rejection(
                    f"variant {external_id!r} has no item ({self.related_column} is empty)"
                )
            else:
                related = [compound_id(_text_id(raw, self.relationship))]
        elif not self.related_list:
            # Klaviyo's OpenAPI spec: a variant is created with its item (a required
            # relationship).
            raise Rejection(
                f"variant {external_id!r} has no item: map fields.item to the column holding "
                "the item's external id"
            )
        return CatalogEntry(external_id, attributes, related)

    # -- request bodies -------------------------------------------------------------------

    def relationships(self, related: list[str] | None, *, create: bool) -> dict[str, Any]:
        if related is None or (not create and self.object == "catalog_variant"):
            # A variant's item is set when it is created; an update cannot move it (spec:
            # CatalogVariantUpdateQueryResourceObject has no relationships).
            return {}
        data: Any = [{"type": self.related_type, "id": i} for i in related]
        if not self.related_list:
            data = data[0]
        return {"relationships": {self.relationship: {"data": data}}}

    def create(self, entry: CatalogEntry) -> dict[str, Any]:
        return {
            "type": RESOURCE_TYPES[self.object],
            "attributes": {"external_id": entry.external_id, **entry.attributes},
            **self.relationships(entry.related, create=True),
        }

    def update(self, entry: CatalogEntry) -> dict[str, Any]:
        return {
            "type": RESOURCE_TYPES[self.object],
            "id": compound_id(entry.external_id),
            "attributes": entry.attributes,
            **self.relationships(entry.related, create=False),
        }


def entry_payload(entry: CatalogEntry) -> dict[str, Any]:
    """What a mapped record carries to its request (and skip_unchanged compares)."""
    return {"attributes": entry.attributes, "related": entry.related}


def entry_of(external_id: str, payload: dict[str, Any]) -> CatalogEntry:
    return CatalogEntry(external_id, payload["attributes"], payload["related"])


def payload_size(payload: dict[str, Any]) -> int:
    return len(encode_sorted(payload)) + 2 * len(ID_PREFIX) + 64  # with its id and type


def _text_id(raw: Any, what: str) -> str:
    value = to_json(raw)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)) or blank(value):
        raise Rejection(f"{what} is missing or not a text or number: {show(raw)}")
    text = str(value).strip()
    if not text:
        raise Rejection(f"{what} is empty")
    return text


def _many(raw: Any) -> Iterable[Any]:
    if raw is None:
        return []
    if isinstance(raw, (list, tuple)):
        return [value for value in raw if not blank(value)]
    return [raw]


def _value(field: str, raw: Any, column: str) -> Any:
    """A catalog attribute of the spec's type, or a Rejection naming the column."""
    value = to_json(raw)
    if field in TEXT:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise Rejection(f"{field} ({column}) must be text, not {show(raw)}")
        return value
    if field in NUMBERS:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise Rejection(f"{field} ({column}) must be a number, not {show(raw)}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise Rejection(f"{field} ({column}) must be a number, not {show(raw)}")
        return value
    if field == "published":
        if not isinstance(value, bool):
            raise Rejection(f"published ({column}) must be true or false, not {show(raw)}")
        return value
    if field == "inventory_policy":
        if value not in INVENTORY_POLICIES or isinstance(value, bool):
            raise Rejection(f"inventory_policy ({column}) must be 0, 1 or 2, not {show(raw)}")
        return value
    if field == "images":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise Rejection(f"images ({column}) must be a list of URLs, not {show(raw)}")
        return value
    if field == "custom_metadata":
        if not isinstance(value, dict):
            raise Rejection(f"custom_metadata ({column}) must be an object, not {show(raw)}")
        return value
    return value


def external_id_of(mapper: CatalogMapper, record: dict[str, Any]) -> str:
    """The external id of a record (a delete needs nothing else). Raises Rejection."""
    return _text_id(record.get(mapper.external_id_column or ""), "external_id")
