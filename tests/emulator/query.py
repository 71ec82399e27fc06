"""``sort``, ``include``, sparse fieldsets (``fields[TYPE]``) and ``additional-fields[TYPE]``:
the values each operation's spec parameters allow (``klaviyo_schemas.json``, ``query``), checked
before the endpoint runs, and sparse fieldsets applied to the answer.

Klaviyo: rate limits and errors: a query parameter Klaviyo refuses is a 400 with
``source.parameter``; the
spec lists each operation's sort fields, includable relationships and fields per resource type.
"""

from __future__ import annotations

from typing import Any

from .calls import QueryOptions, bad_parameter
from .schemas import Operation


def query_options(operation: Operation, query: dict[str, str]) -> QueryOptions:
    sort = query.get("sort")
    if sort is not None:
        allowed = operation.sorts
        if not allowed:
            raise bad_parameter("sort", "Sorting is not supported by this endpoint.")
        if sort not in allowed:
            raise bad_parameter(
                "sort", f"'{sort}' is not a valid sort field. Valid: {', '.join(allowed)}."
            )
    include: frozenset[str] = frozenset()
    if "include" in query:
        if not operation.includes:
            raise bad_parameter("include", "Including related resources is not supported here.")
        include = frozenset(_values("include", query["include"], frozenset(operation.includes)))
    fields: dict[str, tuple[str, ...]] = {}
    additional: dict[str, frozenset[str]] = {}
    for name, raw in query.items():
        for prefix, allowed_by_type in (
            ("fields[", operation.fields),
            ("additional-fields[", operation.additional_fields),
        ):
            if not (name.startswith(prefix) and name.endswith("]")):
                continue
            kind = name[len(prefix) : -1]
            if kind not in allowed_by_type:
                raise bad_parameter(name, f"'{kind}' is not a valid resource type for '{name}'.")
            values = _values(name, raw, allowed_by_type[kind], resource=kind)
            if prefix == "fields[":
                fields[kind] = tuple(values)
            else:
                additional[kind] = frozenset(values)
    return QueryOptions(sort, include, fields, additional)


def _values(
    parameter: str, raw: str, allowed: frozenset[str], resource: str | None = None
) -> list[str]:
    """A comma-separated parameter value, each item one of ``allowed``."""
    values = [value.strip() for value in raw.split(",")]
    for value in values:
        if not value:
            raise bad_parameter(parameter, f"'{parameter}' must not hold an empty value.")
        if value not in allowed:
            if resource is not None:
                # Klaviyo: API overview: "'first_name' is not a valid field for the resource
                # 'profile'"
                detail = f"'{value}' is not a valid field for the resource '{resource}'."
            else:
                detail = f"'{value}' is not a valid value for '{parameter}'."
            raise bad_parameter(parameter, detail)
    return values


def apply_fieldsets(document: Any, fields: dict[str, tuple[str, ...]]) -> None:
    """Keep only the requested attributes (dotted names reach into objects, e.g.
    ``location.city``) of each resource in ``data`` and ``included`` whose type was named."""
    if not fields or not isinstance(document, dict):
        return
    trees = {kind: _tree(names) for kind, names in fields.items()}
    data = document.get("data")
    resources = [*(data if isinstance(data, list) else [data]), *document.get("included", [])]
    for resource in resources:
        if not isinstance(resource, dict):
            continue
        tree = trees.get(resource.get("type", ""))
        attributes = resource.get("attributes")
        if tree is not None and isinstance(attributes, dict):
            resource["attributes"] = _trim(attributes, tree)


def _tree(names: tuple[str, ...]) -> dict[str, Any]:
    """``("email", "location.city")`` -> ``{"email": {}, "location": {"city": {}}}``; an empty
    node keeps the whole value."""
    tree: dict[str, Any] = {}
    for name in names:
        node = tree
        parts = name.split(".")
        for depth, part in enumerate(parts):
            if part in node and not node[part]:
                break  # an ancestor is kept whole
            child = node.setdefault(part, {})
            if depth == len(parts) - 1:
                child.clear()
            node = child
    return tree


def _trim(value: dict[str, Any], tree: dict[str, Any]) -> dict[str, Any]:
    kept: dict[str, Any] = {}
    for name, subtree in tree.items():
        if name not in value:
            continue
        item = value[name]
        kept[name] = _trim(item, subtree) if subtree and isinstance(item, dict) else item
    return kept
