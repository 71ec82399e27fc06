"""`--about`, meltano.yml's loader definition and the README agree on the settings."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent

# meltano.yml's setting kinds for the JSON types `--about` reports.
KIND_FOR_TYPE = {
    "string": {"string", "options"},
    "integer": {"integer"},
    "number": {"decimal"},
    "boolean": {"boolean"},
    "object": {"object"},
    "array": {"array"},
}
# Capabilities the SDK prints that Meltano's meltano.yml schema does not accept for loaders.
NOT_IN_MELTANO_SCHEMA = {"validate-records"}
# Capabilities the target has that singer-sdk only prints when the Target class declares them.
ONLY_IN_MELTANO_YML = {"activate-version"}


@cache
def about() -> dict[str, Any]:
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


@cache
def loader() -> dict[str, Any]:
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    loaders = [p for p in project["plugins"]["loaders"] if p["name"] == "target-klaviyo"]
    assert len(loaders) == 1, "meltano.yml needs exactly one target-klaviyo loader"
    return loaders[0]


def about_settings() -> dict[str, dict[str, Any]]:
    return about()["settings"]["properties"]


def loader_settings() -> dict[str, dict[str, Any]]:
    return {setting["name"]: setting for setting in loader()["settings"]}


def json_type(schema: dict[str, Any]) -> str:
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    concrete = [t for t in types if t != "null"]
    assert len(concrete) == 1, schema
    return concrete[0]


def test_about_json_describes_the_target() -> None:
    info = about()
    assert info["name"] == "target-klaviyo"
    assert info["description"]
    assert info["sdk_version"].startswith("0.54.")
    assert "private_api_key" in info["settings"]["required"]
    assert "streams" in info["settings"]["required"]


def test_about_markdown_lists_every_setting() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "target_klaviyo", "--about", "--format", "markdown"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in about_settings():
        assert f"| {name} " in proc.stdout, name


def test_meltano_yml_lists_exactly_the_settings_of_about() -> None:
    in_about, in_meltano = set(about_settings()), set(loader_settings())
    assert not in_about - in_meltano, f"missing from meltano.yml: {sorted(in_about - in_meltano)}"
    assert not in_meltano - in_about, f"not in --about: {sorted(in_meltano - in_about)}"


def test_meltano_yml_settings_have_kind_label_description_and_matching_defaults() -> None:
    for name, schema in about_settings().items():
        setting = loader_settings()[name]
        assert setting.get("label"), f"{name}: no label"
        assert setting.get("description"), f"{name}: no description"
        kind = setting.get("kind")
        assert kind not in ("password", "hidden"), f"{name}: deprecated kind {kind}"
        expected = KIND_FOR_TYPE[json_type(schema)]
        assert kind in expected, f"{name}: kind {kind!r}, --about type needs one of {expected}"
        if "default" in schema and schema["default"] is not None:
            assert setting.get("value") == schema["default"], f"{name}: default differs"
        if "enum" in schema:
            assert kind == "options", name
            assert [o["value"] for o in setting["options"]] == schema["enum"], name


def test_private_api_key_is_secret_in_about_and_sensitive_in_meltano_yml() -> None:
    assert about_settings()["private_api_key"].get("secret") is True
    assert about_settings()["private_api_key"].get("writeOnly") is True
    assert loader_settings()["private_api_key"].get("sensitive") is True
    # And only secrets are sensitive: both sides agree on every setting.
    for name, schema in about_settings().items():
        assert bool(schema.get("secret")) == bool(loader_settings()[name].get("sensitive")), name


def test_meltano_yml_loader_definition_is_fit_for_the_hub() -> None:
    plugin = loader()
    assert plugin["namespace"] == "target_klaviyo"
    assert plugin["pip_url"] == "-e ."
    assert plugin["executable"] == "target-klaviyo"
    assert plugin.get("label") and plugin.get("description")
    assert plugin["settings_group_validation"] == [["private_api_key", "streams"]]
    assert sorted(plugin["settings_group_validation"][0]) == sorted(about()["settings"]["required"])


def test_meltano_yml_capabilities_match_about() -> None:
    in_meltano = set(loader()["capabilities"])
    in_about = set(about()["capabilities"])
    assert not in_meltano & NOT_IN_MELTANO_SCHEMA
    assert in_about - NOT_IN_MELTANO_SCHEMA <= in_meltano, in_about - in_meltano
    assert in_meltano - in_about <= ONLY_IN_MELTANO_YML, in_meltano - in_about
    assert {"about", "stream-maps", "schema-flattening", "structured-logging"} <= in_meltano
    assert "activate-version" in in_meltano


def test_meltano_yml_is_a_project_file() -> None:
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    assert project["default_environment"] in {env["name"] for env in project["environments"]}
    assert project["project_id"]
    assert "version" not in project  # deprecated in Meltano 4


def readme_setting_names(text: str) -> set[str] | None:
    """Setting names in the first column of the README's settings table(s), or None if none.

    A settings table is a Markdown table whose header's first cell says "setting" (or "name").
    """
    names: set[str] = set()
    found = False
    lines = text.splitlines()
    for index, line in enumerate(lines):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        is_header = (
            line.lstrip().startswith("|")
            and cells[0].lower().strip("*` ") in {"setting", "settings", "name"}
            and index + 1 < len(lines)
            and re.match(r"^\s*\|?\s*:?-{3,}", lines[index + 1])
        )
        if not is_header:
            continue
        found = True
        for row in lines[index + 2 :]:
            if not row.lstrip().startswith("|"):
                break
            first = row.strip().strip("|").split("|")[0]
            names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", first.replace("`", " ")))
    return names if found else None


def own_settings() -> set[str]:
    """The settings target-klaviyo defines (the rest of `--about` are singer-sdk built-ins)."""
    from target_klaviyo.settings import CONFIG_SCHEMA

    return set(CONFIG_SCHEMA["properties"])


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme_setting_names(readme)
    settings = sorted(about_settings())
    assert own_settings() <= set(settings)
    if table is not None:
        # The target's own settings belong in the settings table; the SDK's built-in ones
        # (batch_size_rows, stream_maps, flattening_*, ...) may be named in the prose next to it.
        missing = [
            name
            for name in settings
            if name not in table
            and (name in own_settings() or not re.search(rf"\b{name}\b", readme))
        ]
        where = "the README's settings table (SDK built-ins: anywhere in the README)"
    else:
        # No settings table yet: at least every name must appear somewhere in the README.
        missing = [name for name in settings if not re.search(rf"\b{name}\b", readme)]
        where = "README.md"
    assert not missing, f"settings missing from {where}: {missing}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("| setting | type |\n|---|---|\n| `a_b` | str |\n| `c` (x) | int |\n", {"a_b", "c", "x"}),
        ("| Name | Required |\n| :--- | --- |\n| d | no |\ntext\n| e | no |\n", {"d"}),
        ("no table here", None),
    ],
)
def test_readme_table_parser(text: str, expected: set[str] | None) -> None:
    assert readme_setting_names(text) == expected
