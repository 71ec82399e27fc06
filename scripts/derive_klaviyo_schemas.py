"""Derive the compact request schemas the Klaviyo emulator validates against.

Reads Klaviyo's official OpenAPI spec (``stable.json``) and writes
``tests/emulator/klaviyo_schemas.json``: for each operation the emulator serves, its method,
path, rate limits (``x-klaviyo-ratelimit``), scopes (``x-klaviyo-scopes``), success statuses,
``page[size]`` bounds, the values ``sort``, ``include``, ``fields[...]`` and
``additional-fields[...]`` may take, and a self-contained JSON Schema (draft 7) of the request
body; and the method and path of every operation in the spec (served or not).

Only structure and types are kept (no descriptions, examples or titles). ``$ref`` s are inlined,
OpenAPI ``nullable`` becomes a JSON Schema ``null`` type, and structured objects get
``additionalProperties: false`` because Klaviyo's JSON:API rejects unknown fields
(Klaviyo rejects unknown attributes with 400). Free-form objects such as
``properties`` stay open.

Usage (from the repository root)::

    python scripts/derive_klaviyo_schemas.py [PATH_TO_STABLE_JSON] [--output PATH] [--check]

The output is deterministic (sorted keys), so re-running it is a no-op; ``--check`` exits 1
when the committed file differs from what the spec gives.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPEC = REPO_ROOT.parent / "shared" / "klaviyo-openapi" / "stable.json"
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "emulator" / "klaviyo_schemas.json"

# operationId -> (method, path): the endpoints target-klaviyo uses.
OPERATIONS: dict[str, tuple[str, str]] = {
    "get_accounts": ("GET", "/api/accounts"),
    "create_or_update_profile": ("POST", "/api/profile-import"),
    "get_profiles": ("GET", "/api/profiles"),
    "bulk_import_profiles": ("POST", "/api/profile-bulk-import-jobs"),
    "get_bulk_import_profiles_jobs": ("GET", "/api/profile-bulk-import-jobs"),
    "get_bulk_import_profiles_job": ("GET", "/api/profile-bulk-import-jobs/{job_id}"),
    "get_errors_for_bulk_import_profiles_job": (
        "GET",
        "/api/profile-bulk-import-jobs/{id}/import-errors",
    ),
    "get_lists": ("GET", "/api/lists"),
    "create_list": ("POST", "/api/lists"),
    "get_profile_ids_for_list": ("GET", "/api/lists/{id}/relationships/profiles"),
    "add_profiles_to_list": ("POST", "/api/lists/{id}/relationships/profiles"),
    "remove_profiles_from_list": ("DELETE", "/api/lists/{id}/relationships/profiles"),
    "create_event": ("POST", "/api/events"),
    "bulk_create_events": ("POST", "/api/event-bulk-create-jobs"),
    "bulk_subscribe_profiles": ("POST", "/api/profile-subscription-bulk-create-jobs"),
    "bulk_unsubscribe_profiles": ("POST", "/api/profile-subscription-bulk-delete-jobs"),
    "bulk_suppress_profiles": ("POST", "/api/profile-suppression-bulk-create-jobs"),
    "get_bulk_suppress_profiles_jobs": ("GET", "/api/profile-suppression-bulk-create-jobs"),
    "get_bulk_suppress_profiles_job": (
        "GET",
        "/api/profile-suppression-bulk-create-jobs/{job_id}",
    ),
    "bulk_unsuppress_profiles": ("POST", "/api/profile-suppression-bulk-delete-jobs"),
    "get_bulk_unsuppress_profiles_jobs": ("GET", "/api/profile-suppression-bulk-delete-jobs"),
    "get_bulk_unsuppress_profiles_job": (
        "GET",
        "/api/profile-suppression-bulk-delete-jobs/{job_id}",
    ),
    "request_profile_deletion": ("POST", "/api/data-privacy-deletion-jobs"),
    "bulk_create_catalog_items": ("POST", "/api/catalog-item-bulk-create-jobs"),
    "get_bulk_create_catalog_items_jobs": ("GET", "/api/catalog-item-bulk-create-jobs"),
    "get_bulk_create_catalog_items_job": ("GET", "/api/catalog-item-bulk-create-jobs/{job_id}"),
    "bulk_update_catalog_items": ("POST", "/api/catalog-item-bulk-update-jobs"),
    "get_bulk_update_catalog_items_jobs": ("GET", "/api/catalog-item-bulk-update-jobs"),
    "get_bulk_update_catalog_items_job": ("GET", "/api/catalog-item-bulk-update-jobs/{job_id}"),
    "bulk_delete_catalog_items": ("POST", "/api/catalog-item-bulk-delete-jobs"),
    "get_bulk_delete_catalog_items_jobs": ("GET", "/api/catalog-item-bulk-delete-jobs"),
    "get_bulk_delete_catalog_items_job": ("GET", "/api/catalog-item-bulk-delete-jobs/{job_id}"),
    "bulk_create_catalog_variants": ("POST", "/api/catalog-variant-bulk-create-jobs"),
    "get_bulk_create_variants_jobs": ("GET", "/api/catalog-variant-bulk-create-jobs"),
    "get_bulk_create_variants_job": ("GET", "/api/catalog-variant-bulk-create-jobs/{job_id}"),
    "bulk_update_catalog_variants": ("POST", "/api/catalog-variant-bulk-update-jobs"),
    "get_bulk_update_variants_jobs": ("GET", "/api/catalog-variant-bulk-update-jobs"),
    "get_bulk_update_variants_job": ("GET", "/api/catalog-variant-bulk-update-jobs/{job_id}"),
    "bulk_delete_catalog_variants": ("POST", "/api/catalog-variant-bulk-delete-jobs"),
    "get_bulk_delete_variants_jobs": ("GET", "/api/catalog-variant-bulk-delete-jobs"),
    "get_bulk_delete_variants_job": ("GET", "/api/catalog-variant-bulk-delete-jobs/{job_id}"),
    "bulk_create_catalog_categories": ("POST", "/api/catalog-category-bulk-create-jobs"),
    "get_bulk_create_categories_jobs": ("GET", "/api/catalog-category-bulk-create-jobs"),
    "get_bulk_create_categories_job": ("GET", "/api/catalog-category-bulk-create-jobs/{job_id}"),
    "bulk_update_catalog_categories": ("POST", "/api/catalog-category-bulk-update-jobs"),
    "get_bulk_update_categories_jobs": ("GET", "/api/catalog-category-bulk-update-jobs"),
    "get_bulk_update_categories_job": ("GET", "/api/catalog-category-bulk-update-jobs/{job_id}"),
    "bulk_delete_catalog_categories": ("POST", "/api/catalog-category-bulk-delete-jobs"),
    "get_bulk_delete_categories_jobs": ("GET", "/api/catalog-category-bulk-delete-jobs"),
    "get_bulk_delete_categories_job": ("GET", "/api/catalog-category-bulk-delete-jobs/{job_id}"),
    "get_catalog_items": ("GET", "/api/catalog-items"),
    "get_catalog_item": ("GET", "/api/catalog-items/{id}"),
    "get_catalog_variants": ("GET", "/api/catalog-variants"),
    "get_catalog_variant": ("GET", "/api/catalog-variants/{id}"),
    "get_catalog_categories": ("GET", "/api/catalog-categories"),
    "get_catalog_category": ("GET", "/api/catalog-categories/{id}"),
    "get_data_sources": ("GET", "/api/data-sources"),
    "create_data_source": ("POST", "/api/data-sources"),
    "get_data_source": ("GET", "/api/data-sources/{id}"),
    "delete_data_source": ("DELETE", "/api/data-sources/{id}"),
    "bulk_create_data_source_records": ("POST", "/api/data-source-record-bulk-create-jobs"),
}

MEDIA_TYPE = "application/vnd.api+json"

# Schema keywords carried over unchanged (structure, types and constraints). Everything else
# (description, example, title, default, readOnly, x-*, ...) is dropped.
KEPT_KEYWORDS = frozenset(
    {
        "type",
        "enum",
        "format",
        "required",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "pattern",
    }
)
RATE_UNITS = {"s": "burst", "m": "steady", "d": "daily"}


class SchemaError(Exception):
    """The spec does not have the shape this script expects."""


def _resolve_ref(ref: str, spec: dict[str, Any]) -> dict[str, Any]:
    if not ref.startswith("#/"):
        raise SchemaError(f"external $ref not supported: {ref}")
    node: Any = spec
    for part in ref[2:].split("/"):
        node = node[part]
    if not isinstance(node, dict):
        raise SchemaError(f"$ref {ref} does not point at a schema")
    return node


def _add_null(schema: dict[str, Any]) -> dict[str, Any]:
    """Turn OpenAPI ``nullable: true`` into a JSON Schema that also accepts null."""
    out = dict(schema)
    if "type" in out:
        types = out["type"] if isinstance(out["type"], list) else [out["type"]]
        if "null" not in types:
            out["type"] = [*types, "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    for combinator in ("oneOf", "anyOf"):
        if combinator in out:
            out[combinator] = [*out[combinator], {"type": "null"}]
            return out
    return {"anyOf": [out, {"type": "null"}]}


def compact_schema(node: Any, spec: dict[str, Any], stack: tuple[str, ...] = ()) -> Any:
    """Inline ``$ref`` s and keep only structural keywords of an OpenAPI schema object."""
    if not isinstance(node, dict):
        raise SchemaError(f"unexpected schema node: {node!r}")
    nullable = bool(node.get("nullable"))
    if "$ref" in node:
        ref = node["$ref"]
        if ref in stack:
            raise SchemaError(f"recursive schema through {ref}; inlining is not possible")
        inlined = compact_schema(_resolve_ref(ref, spec), spec, (*stack, ref))
        return _add_null(inlined) if nullable else inlined

    out: dict[str, Any] = {k: node[k] for k in sorted(node) if k in KEPT_KEYWORDS}
    if "properties" in node:
        out["properties"] = {
            name: compact_schema(sub, spec, stack)
            for name, sub in sorted(node["properties"].items())
        }
    if "items" in node:
        out["items"] = compact_schema(node["items"], spec, stack)
    for combinator in ("oneOf", "anyOf", "allOf"):
        if combinator in node:
            out[combinator] = [compact_schema(sub, spec, stack) for sub in node[combinator]]
    if "additionalProperties" in node:
        extra = node["additionalProperties"]
        out["additionalProperties"] = (
            extra if isinstance(extra, bool) else compact_schema(extra, spec, stack)
        )
    elif "properties" in node:
        # Klaviyo's JSON:API rejects unknown fields with 400
        # ("'first_name' is not a valid field for the resource 'profile'"). The spec never says
        # additionalProperties:false, so every structured object is closed here; free-form
        # objects (declared without "properties", e.g. custom `properties`) stay open.
        out["additionalProperties"] = False
    return _add_null(out) if nullable else out


def parse_rate_limit(raw: dict[str, str] | None) -> dict[str, int]:
    """``{"burst": "10/s", "steady": "150/m", "daily": "150/d"}`` -> counts per window."""
    limits: dict[str, int] = {}
    for value in (raw or {}).values():
        count, _, unit = value.partition("/")
        if unit not in RATE_UNITS:
            raise SchemaError(f"unknown rate limit unit in {value!r}")
        limits[RATE_UNITS[unit]] = int(count)
    return limits


def _page_size(operation: dict[str, Any], spec: dict[str, Any]) -> dict[str, int] | None:
    for raw in operation.get("parameters", []):
        param = _resolve_ref(raw["$ref"], spec) if "$ref" in raw else raw
        if param.get("name") == "page[size]" and param.get("in") == "query":
            schema = param.get("schema", {})
            return {k: int(schema[k]) for k in ("default", "minimum", "maximum") if k in schema}
    return None


def _query_options(operation: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    """The values the spec allows for ``sort``, ``include``, ``fields[TYPE]`` (sparse
    fieldsets) and ``additional-fields[TYPE]``: each parameter's ``enum``."""
    options: dict[str, Any] = {"sort": None, "include": None, "fields": {}, "additional_fields": {}}
    for raw in operation.get("parameters", []):
        param = _resolve_ref(raw["$ref"], spec) if "$ref" in raw else raw
        if param.get("in") != "query":
            continue
        name, schema = param["name"], param.get("schema", {})
        values = schema.get("enum") or schema.get("items", {}).get("enum")
        if name in ("sort", "include"):
            options[name] = list(values or [])
        elif name.startswith("fields[") and name.endswith("]"):
            options["fields"][name[len("fields[") : -1]] = list(values or [])
        elif name.startswith("additional-fields[") and name.endswith("]"):
            options["additional_fields"][name[len("additional-fields[") : -1]] = list(values or [])
    return options


def spec_routes(spec: dict[str, Any]) -> dict[str, dict[str, str]]:
    """Every operation of the spec, served or not: operationId -> method and path."""
    routes: dict[str, dict[str, str]] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and "operationId" in operation:
                routes[operation["operationId"]] = {"method": method.upper(), "path": path}
    return dict(sorted(routes.items()))


def derive(spec: dict[str, Any], spec_bytes: bytes) -> dict[str, Any]:
    operations: dict[str, Any] = {}
    found: dict[str, tuple[str, str, dict[str, Any]]] = {}
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if isinstance(operation, dict) and operation.get("operationId") in OPERATIONS:
                found[operation["operationId"]] = (method.upper(), path, operation)

    for operation_id, (method, path) in sorted(OPERATIONS.items()):
        if operation_id not in found:
            raise SchemaError(f"operation {operation_id} not found in the spec")
        spec_method, spec_path, operation = found[operation_id]
        if (spec_method, spec_path) != (method, path):
            raise SchemaError(
                f"{operation_id} is {spec_method} {spec_path} in the spec, expected {method} {path}"
            )
        request_schema = None
        body = operation.get("requestBody")
        if body:
            content = body.get("content", {})
            if MEDIA_TYPE not in content:
                raise SchemaError(f"{operation_id}: no {MEDIA_TYPE} request body")
            request_schema = compact_schema(content[MEDIA_TYPE]["schema"], spec)
            request_schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        operations[operation_id] = {
            "operationId": operation_id,
            "method": method,
            "path": path,
            "rate_limit": parse_rate_limit(operation.get("x-klaviyo-ratelimit")),
            "scopes": sorted(operation.get("x-klaviyo-scopes", [])),
            "success_status": sorted(
                int(code) for code in operation["responses"] if code.isdigit() and code[0] == "2"
            ),
            "page_size": _page_size(operation, spec),
            "query": _query_options(operation, spec),
            "request_body_required": bool(body and body.get("required", False)),
            "request_schema": request_schema,
        }
    return {
        "source": {
            "file": "klaviyo/openapi openapi/stable.json",
            "revision": spec["info"]["version"],
            "sha256": hashlib.sha256(spec_bytes).hexdigest(),
        },
        "operations": operations,
        "spec_operations": spec_routes(spec),
    }


def render(derived: dict[str, Any]) -> str:
    return json.dumps(derived, indent=1, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "spec",
        nargs="?",
        type=Path,
        default=DEFAULT_SPEC,
        help=f"path to Klaviyo's stable.json (default: {DEFAULT_SPEC})",
    )
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the output file is out of date",
    )
    args = parser.parse_args(argv)

    spec_bytes = args.spec.read_bytes()
    text = render(derive(json.loads(spec_bytes), spec_bytes))
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; re-run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output} ({len(text)} bytes, {len(OPERATIONS)} operations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
