"""The derived operation table (``klaviyo_schemas.json``) and request-body validation.

Validation runs in two steps: a compiled ``fastjsonschema`` validator answers "valid?" fast
(bulk bodies are up to 5 MB), and only for an invalid body does ``jsonschema`` walk it again to
report every error with a JSON pointer, the way Klaviyo's 400s name the offending field.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from .rules import is_date, parse_datetime

try:  # fastjsonschema is a test extra; fall back to jsonschema alone without it.
    import fastjsonschema

    HAVE_FASTJSONSCHEMA = True
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_FASTJSONSCHEMA = False

SCHEMA_FILE = Path(__file__).with_name("klaviyo_schemas.json")


def _datetime_ok(value: Any) -> bool:
    return not isinstance(value, str) or parse_datetime(value) is not None


def _date_ok(value: Any) -> bool:
    return not isinstance(value, str) or is_date(value)


FORMAT_CHECKS: dict[str, Callable[[Any], bool]] = {"date-time": _datetime_ok, "date": _date_ok}


def _format_checker() -> jsonschema.FormatChecker:
    checker = jsonschema.FormatChecker(formats=())
    for name, check in FORMAT_CHECKS.items():
        checker.checks(name)(check)
    return checker


@dataclass
class Operation:
    """One Klaviyo operation as derived from the OpenAPI spec."""

    operation_id: str
    method: str
    path: str
    rate_limit: dict[str, int]
    scopes: frozenset[str]
    success_status: tuple[int, ...]
    page_size: dict[str, int] | None
    request_schema: dict[str, Any] | None
    # The spec's allowed values of sort / include (None: the parameter does not exist),
    # fields[TYPE] and additional-fields[TYPE] (TYPE -> values).
    sorts: tuple[str, ...] | None = None
    includes: tuple[str, ...] | None = None
    fields: dict[str, frozenset[str]] = field(default_factory=dict)
    additional_fields: dict[str, frozenset[str]] = field(default_factory=dict)
    path_regex: re.Pattern[str] = field(init=False)
    _fast: Callable[[Any], Any] | None = field(default=None, init=False, repr=False)
    _slow: jsonschema.Draft7Validator | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.path_regex = compile_path(self.path)

    def body_errors(self, body: Any) -> list[tuple[str, str]]:
        """Schema violations of a request body as ``(pointer, detail)``; empty when valid."""
        if self.request_schema is None:
            return []
        if self._slow is None:
            self._slow = jsonschema.Draft7Validator(
                self.request_schema, format_checker=_format_checker()
            )
            if HAVE_FASTJSONSCHEMA:
                self._fast = fastjsonschema.compile(self.request_schema, formats=FORMAT_CHECKS)
        if self._fast is not None:
            try:
                self._fast(body)
            except fastjsonschema.JsonSchemaException:
                pass
            else:
                return []
        errors: list[tuple[str, str]] = []
        for error in sorted(self._slow.iter_errors(body), key=lambda e: list(e.absolute_path)):
            errors.extend(_describe(error, body))
        return errors


def _pointer(parts: list[Any]) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def _resource_type(body: Any, parts: list[Any]) -> str | None:
    """The JSON:API ``type`` of the innermost resource object on the path to an error."""
    node, found = body, None
    for part in parts:
        if isinstance(node, dict) and isinstance(node.get("type"), str) and "attributes" in node:
            found = node["type"]
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            break
    if isinstance(node, dict) and isinstance(node.get("type"), str) and "attributes" in node:
        found = node["type"]
    return found


_TYPE_NAMES = {
    "string": "a string",
    "number": "a number",
    "integer": "an integer",
    "boolean": "a boolean",
    "object": "an object",
    "array": "an array",
    "null": "null",
}


def _describe(error: jsonschema.ValidationError, body: Any) -> list[tuple[str, str]]:
    """Klaviyo-style details for one jsonschema error (Klaviyo: API overview)."""
    path = list(error.absolute_path)
    where = _pointer(path)
    name = str(path[-1]) if path else "body"
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        known = set(error.schema.get("properties", {}))
        resource = _resource_type(body, path) or "request"
        return [
            (
                _pointer([*path, extra]),
                # Klaviyo: API overview: "'first_name' is not a valid field for the resource
                # 'profile'"
                f"'{extra}' is not a valid field for the resource '{resource}'.",
            )
            for extra in sorted(k for k in error.instance if k not in known)
        ]
    if error.validator == "required" and isinstance(error.instance, dict):
        return [
            (_pointer([*path, missing]), f"'{missing}' is a required field.")
            for missing in error.validator_value
            if missing not in error.instance
        ]
    if error.validator == "type":
        expected = error.validator_value
        names = [expected] if isinstance(expected, str) else list(expected)
        wanted = " or ".join(_TYPE_NAMES.get(n, n) for n in names)
        return [(where, f"'{name}' must be {wanted}.")]
    if error.validator == "enum":
        choices = ", ".join(repr(c) for c in error.validator_value if c is not None)
        return [
            (where, f"{error.instance!r} is not a valid choice for '{name}'. Valid: {choices}.")
        ]
    if error.validator == "format":
        return [(where, f"'{name}' is not a valid {error.validator_value}: {error.instance!r}.")]
    if error.validator in ("oneOf", "anyOf"):
        return [(where, f"Invalid value for '{name}'.")]
    return [(where, error.message)]


def compile_path(path: str) -> re.Pattern[str]:
    """A spec path (``/api/lists/{id}``) as a regex with a named group per parameter."""
    pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(path))
    return re.compile(f"^{pattern}$")


@functools.cache
def _derived(path: Path) -> dict[str, Any]:
    return dict(json.loads(path.read_text(encoding="utf-8")))


@functools.cache
def load_operations(path: Path = SCHEMA_FILE) -> dict[str, Operation]:
    """The operations served; cached so compiled validators are shared by every emulator."""
    operations: dict[str, Operation] = {}
    for op_id, entry in _derived(path)["operations"].items():
        query = entry["query"]
        operations[op_id] = Operation(
            operation_id=op_id,
            method=entry["method"],
            path=entry["path"],
            rate_limit=dict(entry["rate_limit"]),
            scopes=frozenset(entry["scopes"]),
            success_status=tuple(entry["success_status"]),
            page_size=entry["page_size"],
            request_schema=entry["request_schema"],
            sorts=None if query["sort"] is None else tuple(query["sort"]),
            includes=None if query["include"] is None else tuple(query["include"]),
            fields={kind: frozenset(names) for kind, names in query["fields"].items()},
            additional_fields={
                kind: frozenset(names) for kind, names in query["additional_fields"].items()
            },
        )
    return operations


def load_spec_routes(path: Path = SCHEMA_FILE) -> dict[str, tuple[str, str]]:
    """Every operation in the spec, served or not: operationId -> (method, path)."""
    return {
        op_id: (entry["method"], entry["path"])
        for op_id, entry in _derived(path)["spec_operations"].items()
    }
