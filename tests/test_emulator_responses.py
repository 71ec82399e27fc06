"""Every answer of the served operations has the shape of the spec's response schema for its
status (``4XX``: the JSON:API ``ClientError``), with no attribute the spec does not declare.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from typing import Any

import jsonschema
import pytest

from tests.emulator import Emulator
from tests.emulator import client as kl
from tests.emulator.client import Client
from tests.support import REPO

SPEC = REPO.parent / "shared" / "klaviyo-openapi" / "stable.json"
pytestmark = pytest.mark.skipif(
    not SPEC.exists(), reason=f"Klaviyo's OpenAPI spec not found at {SPEC}"
)


@functools.cache
def spec() -> dict[str, Any]:
    return dict(json.loads(SPEC.read_text(encoding="utf-8")))


@functools.cache
def derive_module() -> Any:
    path = REPO / "scripts" / "derive_klaviyo_schemas.py"
    loaded = importlib.util.spec_from_file_location("derive_klaviyo_schemas", path)
    assert loaded is not None and loaded.loader is not None
    module = importlib.util.module_from_spec(loaded)
    sys.modules[loaded.name] = module
    loaded.loader.exec_module(module)
    return module


def _merge(left: dict[str, Any], right: dict[str, Any]) -> dict[str, Any]:
    """Two object schemas of an ``allOf`` as one closed object with both sets of properties."""
    if "properties" not in left or "properties" not in right:
        return right if "properties" in right else left
    properties = dict(left["properties"])
    for name, schema in right["properties"].items():
        properties[name] = _merge(properties[name], schema) if name in properties else schema
    merged = {**left, **right, "properties": properties}
    merged["required"] = sorted({*left.get("required", []), *right.get("required", [])})
    return merged


def _strict(node: Any, key: str = "") -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {name: _strict(value, name) for name, value in node.items()}
    if "allOf" in node:
        parts = node.pop("allOf")
        merged = parts[0]
        for part in parts[1:]:
            merged = _merge(merged, part)
        node = {**node, **merged}
    if key == "errors" and "items" in node:
        # Klaviyo: rate limits and errors: Klaviyo's error objects also carry status, links and meta
        # (e.g. meta.duplicate_profile_id), which the spec's ClientError leaves out.
        node["items"]["properties"].update(
            status={"type": "integer"}, links={"type": "object"}, meta={"type": "object"}
        )
    if key == "links" and "prev" in node.get("properties", {}):
        # Emulator choice: a page without a next / previous page says so with null (the
        # spec declares both optional strings; the official SDK takes either).
        for name in ("next", "prev"):
            node["properties"][name] = {"type": ["string", "null"]}
    return node


@functools.cache
def response_schema(operation_id: str, status: int) -> dict[str, Any]:
    document = spec()
    for item in document["paths"].values():
        for operation in item.values():
            if isinstance(operation, dict) and operation.get("operationId") == operation_id:
                responses = operation["responses"]
                response = responses.get(str(status)) or responses[f"{str(status)[0]}XX"]
                if "$ref" in response:
                    response = document["components"]["responses"][response["$ref"].split("/")[-1]]
                raw = response["content"]["application/vnd.api+json"]["schema"]
                return dict(_strict(derive_module().compact_schema(raw, document)))
    raise KeyError(operation_id)


def check(operation_id: str, response: Any) -> dict[str, Any]:
    """The answer's JSON, after checking it against the spec's schema for its status."""
    document = response.json()
    schema = response_schema(operation_id, response.status_code)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(document), key=lambda e: list(e.path)
    )
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:10])
    return dict(document)


@pytest.fixture
def api(emulator: Emulator) -> Client:
    return Client(emulator.base_url, emulator.private_key)


@pytest.mark.emulator(throttle=False, job_delay_s=0, supported_regions={"US"})
def test_answers_match_the_spec_response_schemas(emulator: Emulator, api: Client) -> None:
    check("get_accounts", api.get("/api/accounts"))
    listed = check("create_list", api.post("/api/lists", kl.create_list("VIP")))
    list_id = listed["data"]["id"]
    everything = "subscriptions,predictive_analytics"
    created = api.request(
        "POST",
        "/api/profile-import",
        kl.profile_import({"email": "ann@example.com", "location": {"city": "Oslo"}}),
        params={"additional-fields[profile]": everything},
    )
    assert created.status_code == 201
    check("create_or_update_profile", created)
    updated = api.post("/api/profile-import", kl.profile_import({"email": "ann@example.com"}))
    assert updated.status_code == 200
    check("create_or_update_profile", updated)

    row = kl.consent_row(email="ann@example.com", phone="+14155550101", channels=("email", "sms"))
    assert api.post("/api/profile-subscription-bulk-create-jobs", kl.subscribe([row])).ok
    gone = kl.consent_row(email="bob@example.com", consent="UNSUBSCRIBED")
    assert api.post("/api/profile-subscription-bulk-delete-jobs", kl.unsubscribe([gone])).ok
    assert emulator.wait_idle(10)
    profiles = api.request(
        "GET",
        "/api/profiles",
        params={"additional-fields[profile]": everything, "include": "push-tokens"},
    )
    assert len(check("get_profiles", profiles)["data"]) == 2

    rows = [kl.profile({"email": "cy@example.com"}), kl.profile({"phone_number": "+447911123456"})]
    job = check(
        "bulk_import_profiles",
        api.post("/api/profile-bulk-import-jobs", kl.bulk_import(rows, lists=[list_id])),
    )
    job_id = job["data"]["id"]
    assert emulator.wait_idle(10)
    one = api.get(f"/api/profile-bulk-import-jobs/{job_id}", include="lists")
    assert check("get_bulk_import_profiles_job", one)["included"][0]["id"] == list_id
    check("get_bulk_import_profiles_jobs", api.get("/api/profile-bulk-import-jobs"))
    errors = api.get(f"/api/profile-bulk-import-jobs/{job_id}/import-errors")
    assert len(check("get_errors_for_bulk_import_profiles_job", errors)["data"]) == 1
    check("get_lists", api.get("/api/lists", include="tags,flow-triggers"))
    members = api.get(f"/api/lists/{list_id}/relationships/profiles")
    assert len(check("get_profile_ids_for_list", members)["data"]) == 1


def test_error_answers_are_the_spec_client_error(emulator: Emulator, api: Client) -> None:
    emulator.expect_violations(2)
    bad = api.post("/api/profile-import", kl.profile_import({"email": "not-an-email"}))
    assert bad.status_code == 400
    check("create_or_update_profile", bad)
    assert api.get("/api/profiles", sort="name").status_code == 400
    missing = api.get("/api/profile-bulk-import-jobs/01NOPE")
    assert missing.status_code == 404
    check("get_bulk_import_profiles_job", missing)
    emulator.add_fault("429", operation="get_lists")
    throttled = api.get("/api/lists")
    assert throttled.status_code == 429
    check("get_lists", throttled)
    not_emulated = api.get("/api/lists/AbC123")
    assert not_emulated.status_code == 501
    check("get_list", not_emulated)
