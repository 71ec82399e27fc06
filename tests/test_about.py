"""`--about` reads well as the Hub page, and the root meltano.yml agrees with it and the README.

`tests/plugin_definitions.py` says how the three descriptions of the settings relate;
`tests/test_hub.py` checks the Hub definition.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import yaml

from tests.plugin_definitions import (
    HUB_DEFINITION,
    NOT_IN_MELTANO_SCHEMA,
    OWN_SETTINGS_SOURCE,
    REPO,
    about,
    about_settings,
    as_yaml,
    expected_setting,
    hub_definition,
    json_type,
    meltano_yml_loader,
    settings_by_name,
)

# Built-in singer-sdk settings the target shows without a title of its own (none today: it
# restates load_method with one).
SDK_SETTINGS_WITHOUT_TITLE: set[str] = set()


def loader_settings() -> dict[str, dict[str, Any]]:
    return settings_by_name(meltano_yml_loader())


# -- --about as the Hub page ----------------------------------------------------------------------


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


def test_every_setting_in_about_has_a_title_and_a_description() -> None:
    untitled = sorted(name for name, schema in about_settings().items() if not schema.get("title"))
    assert set(untitled) <= SDK_SETTINGS_WITHOUT_TITLE, (
        f"settings without a title in --about: {sorted(set(untitled) - SDK_SETTINGS_WITHOUT_TITLE)}"
        f" (give each a title in {OWN_SETTINGS_SOURCE})"
    )
    assert set(untitled) == SDK_SETTINGS_WITHOUT_TITLE, (
        f"{sorted(SDK_SETTINGS_WITHOUT_TITLE - set(untitled))} now have a title: "
        "drop them from SDK_SETTINGS_WITHOUT_TITLE"
    )
    undescribed = sorted(n for n, s in about_settings().items() if not s.get("description"))
    assert not undescribed, f"settings without a description in --about: {undescribed}"


# Names of files, placeholders such as <state_dir> and snake_case names are code: outside
# backticks a Markdown renderer (the Hub page, PyPI, GitHub) mangles them - `<key>` vanishes as
# an HTML tag, `a_b_c` may turn italic - and a reader cannot tell them from prose.
FILE_NAME = re.compile(r"[\w<>./-]*\w\.(?:json|jsonl|ya?ml|csv|toml|db|sqlite3?|singer|log|txt)\b")
PLACEHOLDER = re.compile(r"<[^>\s]+>")
SNAKE_CASE = re.compile(r"\b[A-Za-z0-9]+_[A-Za-z0-9_]+\b")


def rendering_problems(description: str) -> list[str]:
    """What would read badly once the description is rendered as Markdown."""
    problems = []
    if description.count("`") % 2:
        problems.append("an unpaired backtick")
    prose = re.sub(r"`[^`]*`", " ", description)
    prose = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", prose)  # a link's text only
    prose = re.sub(r"https?://\S+", " ", prose)
    problems += [f"file name {m!r} outside backticks" for m in FILE_NAME.findall(prose)]
    prose = FILE_NAME.sub(" ", prose)
    problems += [f"placeholder {m!r} outside backticks" for m in PLACEHOLDER.findall(prose)]
    prose = PLACEHOLDER.sub(" ", prose)
    problems += [f"identifier {m!r} outside backticks" for m in SNAKE_CASE.findall(prose)]
    if not description.rstrip().endswith((".", ")")):
        problems.append("no full stop at the end")
    return problems


def test_about_descriptions_read_well_rendered() -> None:
    streams = about_settings()["streams"]
    mapping_keys = streams["additionalProperties"]["properties"]
    described = {name: schema["description"] for name, schema in about_settings().items()}
    described |= {f"streams.*.{key}": schema["description"] for key, schema in mapping_keys.items()}
    problems = {name: rendering_problems(text) for name, text in described.items()}
    problems = {name: found for name, found in problems.items() if found}
    assert not problems, (
        f"descriptions in {OWN_SETTINGS_SOURCE} or target_klaviyo/streams.py (MAPPING_SCHEMA) "
        f"that render badly: {problems}"
    )


@pytest.mark.parametrize(
    ("description", "expected"),
    [
        ("Writes `last_run.json` under `state_dir`.", []),
        ("Writes last_run.json.", ["file name 'last_run.json' outside backticks"]),
        (
            "Default: <state_dir>/rejects.jsonl.",
            ["file name '<state_dir>/rejects.jsonl' outside backticks"],
        ),
        (
            "Waits (0: do not wait) for <key> or max_retries.",
            [
                "placeholder '<key>' outside backticks",
                "identifier 'max_retries' outside backticks",
            ],
        ),
        ("See [Stream Maps](https://sdk.meltano.com/en/latest/stream_maps.html).", []),
        ("Sent as `revision", ["an unpaired backtick", "no full stop at the end"]),
    ],
)
def test_rendering_problems(description: str, expected: list[str]) -> None:
    assert rendering_problems(description) == expected


def test_no_setting_is_a_decimal() -> None:
    """Meltano 4.4.1 crashes on a `kind: decimal` setting set from an environment variable
    (tests/test_meltano_hub.py sets every setting that way)."""
    numbers = [n for n, s in about_settings().items() if json_type(s) == "number"]
    assert not numbers, (
        f"--about settings of JSON type number: {numbers}; Meltano would need kind decimal, "
        f"which it cannot pass from the environment - make them integers in {OWN_SETTINGS_SOURCE}"
    )
    for where, plugin in (
        ("meltano.yml", meltano_yml_loader()),
        (HUB_DEFINITION.name, hub_definition()),
    ):
        decimals = [s["name"] for s in plugin["settings"] if s.get("kind") == "decimal"]
        assert not decimals, f"{where}: settings of kind decimal: {decimals}"


# -- the root meltano.yml -------------------------------------------------------------------------


def test_meltano_yml_lists_exactly_the_settings_of_about() -> None:
    in_about, in_meltano = set(about_settings()), set(loader_settings())
    missing = sorted(in_about - in_meltano)
    assert not missing, (
        f"settings of --about missing from meltano.yml: {missing}; add under the loader's "
        "settings:\n"
        + as_yaml([expected_setting(n, about_settings()[n], hub=False) for n in missing])
    )
    extra = sorted(in_meltano - in_about)
    assert not extra, (
        f"settings in meltano.yml that --about lacks: {extra}; remove them from meltano.yml, or "
        f"define them in {OWN_SETTINGS_SOURCE}"
    )


def test_meltano_yml_settings_copy_about() -> None:
    """Kind, label (the title), description, default value, options and secrecy: meltano.yml
    says what --about says, so `meltano config list` shows the Hub page's text."""
    differences = []
    for name, schema in about_settings().items():
        expected = expected_setting(name, schema, hub=False)
        actual = dict(sorted(loader_settings()[name].items()))
        if actual != expected:
            differences.append((name, actual, expected))
    assert not differences, "meltano.yml settings that differ from --about:\n" + "\n".join(
        f"- {name}: meltano.yml has\n{as_yaml([actual])}  --about makes it\n{as_yaml([expected])}"
        for name, actual, expected in differences
    )


def test_private_api_key_is_secret_in_about_and_sensitive_in_meltano_yml() -> None:
    assert about_settings()["private_api_key"].get("secret") is True
    assert about_settings()["private_api_key"].get("writeOnly") is True
    assert loader_settings()["private_api_key"].get("sensitive") is True
    # And only secrets are sensitive: both sides agree on every setting.
    for name, schema in about_settings().items():
        assert bool(schema.get("secret")) == bool(loader_settings()[name].get("sensitive")), name


def test_meltano_yml_loader_is_the_hub_definition_installed_from_the_checkout() -> None:
    plugin, hub = meltano_yml_loader(), hub_definition()
    assert plugin["pip_url"] == "-e ."
    for key in ("namespace", "executable", "label", "description", "settings_group_validation"):
        assert plugin[key] == hub[key], f"meltano.yml {key} {plugin[key]!r} != Hub's {hub[key]!r}"
    assert plugin["settings_group_validation"] == [sorted(about()["settings"]["required"])]


def test_meltano_yml_capabilities_match_about() -> None:
    in_meltano = set(meltano_yml_loader()["capabilities"])
    in_about = set(about()["capabilities"])
    assert in_meltano == in_about - NOT_IN_MELTANO_SCHEMA
    assert {"about", "stream-maps", "schema-flattening", "structured-logging"} <= in_meltano
    assert "activate-version" in in_meltano


def test_meltano_yml_is_a_project_file() -> None:
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    assert project["default_environment"] in {env["name"] for env in project["environments"]}
    assert project["project_id"]
    assert "version" not in project  # deprecated in Meltano 4


# -- the README -----------------------------------------------------------------------------------


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
