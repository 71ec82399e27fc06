"""The loader's three descriptions of itself and the rules that tie them together.

- `target-klaviyo --about --format json`: the settings as the target defines them
  (`target_klaviyo/settings.py` CONFIG_SCHEMA, plus singer-sdk's built-in settings). Meltano Hub
  rebuilds the settings of SDK-based loaders from it every week, so it is what the Hub page shows.
- The root `meltano.yml`: the loader as Meltano (4.4.1) reads it, for working in this repository.
- `hub/target-klaviyo.yml`: the definition submitted to Meltano Hub and used with
  `meltano add target-klaviyo --from-ref`.

`--about` is the source: the other two copy its names, titles (as labels), descriptions,
defaults (as values) and secrets, and choose a Meltano `kind` for each JSON type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import yaml

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parent.parent
MELTANO_YML = REPO / "meltano.yml"
HUB_DEFINITION = REPO / "hub" / "target-klaviyo.yml"
OWN_SETTINGS_SOURCE = "target_klaviyo/settings.py (CONFIG_SCHEMA)"

# Capabilities singer-sdk prints that Meltano's own meltano.yml schema does not accept for
# loaders (the Hub's loaders_specific.schema.json does).
NOT_IN_MELTANO_SCHEMA = {"validate-records"}


@cache
def pyproject() -> dict[str, Any]:
    """pyproject.toml: the package's name, version (the one place it lives) and URLs."""
    return tomllib.loads((REPO / "pyproject.toml").read_text())


@cache
def about() -> dict[str, Any]:
    """`python -m target_klaviyo --about --format json`, run from this repository."""
    proc = subprocess.run(
        [sys.executable, "-m", "target_klaviyo", "--about", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def about_settings() -> dict[str, dict[str, Any]]:
    return about()["settings"]["properties"]


@cache
def meltano_yml_loader() -> dict[str, Any]:
    project = yaml.safe_load(MELTANO_YML.read_text())
    loaders = [p for p in project["plugins"]["loaders"] if p["name"] == "target-klaviyo"]
    assert len(loaders) == 1, "meltano.yml needs exactly one target-klaviyo loader"
    return loaders[0]


@cache
def hub_definition() -> dict[str, Any]:
    return yaml.safe_load(HUB_DEFINITION.read_text())


def settings_by_name(plugin: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {setting["name"]: setting for setting in plugin["settings"]}


def json_type(schema: dict[str, Any]) -> str:
    """The one JSON type of a setting, `null` aside (singer-sdk's built-ins allow null)."""
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    concrete = [t for t in types if t != "null"]
    assert len(concrete) == 1, schema
    return concrete[0]


# Meltano's kind for each JSON type. No setting may be `decimal`: Meltano 4.4.1 reads a decimal
# setting from an environment variable as decimal.Decimal and then fails to serialise the
# config ("Object of type Decimal is not JSON serializable") in `meltano invoke`, `meltano run`
# and `meltano config print`.
KIND_FOR_JSON_TYPE = {
    "string": "string",
    "integer": "integer",
    "boolean": "boolean",
    "object": "object",
    "array": "array",
}


def meltano_yml_kind(schema: dict[str, Any]) -> str:
    """meltano.yml's kind: Meltano 4 marks secrets `sensitive: true` on a `string` (its
    `password` kind is deprecated there)."""
    if "enum" in schema:
        return "options"
    return KIND_FOR_JSON_TYPE[json_type(schema)]


def hub_kind(schema: dict[str, Any]) -> str:
    """The Hub's kind: as the Hub writes loaders, a secret is `kind: password` (with
    `sensitive: true`)."""
    if schema.get("secret") and json_type(schema) == "string":
        return "password"
    return meltano_yml_kind(schema)


def option_label(value: str) -> str:
    return value.replace("-", " ").replace("_", " ").title()


def expected_setting(name: str, schema: dict[str, Any], *, hub: bool) -> dict[str, Any]:
    """The entry a definition should hold for one `--about` setting (keys sorted, as the Hub
    writes them). `label` falls back to the name for the few singer-sdk settings without a
    title."""
    entry: dict[str, Any] = {
        "name": name,
        "kind": hub_kind(schema) if hub else meltano_yml_kind(schema),
        "label": schema.get("title") or option_label(name),
        "description": schema.get("description", ""),
    }
    if schema.get("default") is not None:
        entry["value"] = schema["default"]
    if "enum" in schema:
        entry["options"] = [{"label": option_label(v), "value": v} for v in schema["enum"]]
    if schema.get("secret"):
        entry["sensitive"] = True
    return dict(sorted(entry.items()))


def as_yaml(entries: list[dict[str, Any]]) -> str:
    """Entries as they would be pasted into a definition's `settings:` list."""
    return yaml.safe_dump(entries, sort_keys=True, width=10_000, allow_unicode=True)
