"""hub/target-klaviyo.yml passes Meltano Hub's own checks and says what `--about` says.

The Hub's schemas and yamllint rules are copied in tests/data/meltano_hub/ (see its README);
they are first shown to accept two real Hub loaders and to reject what the issue found wrong with
the loader of meltano.yml, then applied to the Hub definition. `tests/plugin_definitions.py`
says how the definitions relate to `--about`.
"""

from __future__ import annotations

import itertools
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from jsonschema import Draft7Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7
from yamllint import linter
from yamllint.config import YamlLintConfig

from target_klaviyo.settings import Settings
from tests.plugin_definitions import (
    HUB_DEFINITION,
    OWN_SETTINGS_SOURCE,
    REPO,
    about,
    about_settings,
    as_yaml,
    expected_setting,
    hub_definition,
    meltano_yml_loader,
    pyproject,
    settings_by_name,
)

HUB_CHECKS = REPO / "tests" / "data" / "meltano_hub"
REAL_HUB_LOADERS = sorted((HUB_CHECKS / "loaders").glob("*/*.yml"))
HUB_FILE = HUB_DEFINITION.relative_to(REPO)


# -- the Hub's checks -----------------------------------------------------------------------------


@cache
def hub_validator() -> Draft7Validator:
    """loaders.schema.json, with every Hub schema registered under its `$id` (as the Hub's
    utility_scripts/plugin_definitions/plugin_schema_validate.py registers them)."""
    resources = []
    for path in sorted((HUB_CHECKS / "schemas").glob("*/*.schema.json")):
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema, DRAFT7)))
    loaders = json.loads(
        (HUB_CHECKS / "schemas/plugin_definitions/loaders.schema.json").read_text()
    )
    return Draft7Validator(loaders, registry=Registry().with_resources(resources))


def schema_errors(definition: dict[str, Any]) -> list[str]:
    errors = hub_validator().iter_errors(definition)
    return sorted(f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errors)


def yamllint_problems(path: Path) -> list[str]:
    config = YamlLintConfig(file=str(HUB_CHECKS / "yamllint.yaml"))
    with path.open() as handle:
        problems = linter.run(handle, config, str(path))
        return [f"{p.line}:{p.column} {p.message} ({p.rule})" for p in problems]


def unsorted_settings(definition: dict[str, Any]) -> list[str]:
    """The Hub keeps settings sorted by name (its yamllint sorts keys, not list items)."""
    names = [setting["name"] for setting in definition["settings"]]
    return [f"{a} before {b}" for a, b in itertools.pairwise(names) if a > b]


@pytest.mark.parametrize("path", REAL_HUB_LOADERS, ids=lambda p: f"{p.parent.name}--{p.stem}")
def test_hub_checks_accept_real_hub_loaders(path: Path) -> None:
    definition = yaml.safe_load(path.read_text())
    assert schema_errors(definition) == []
    assert yamllint_problems(path) == []
    assert unsorted_settings(definition) == []


def test_hub_checks_reject_the_loader_of_meltano_yml(tmp_path: Path) -> None:
    """What the issue found, pasting meltano.yml's loader into the Hub: `variant` and `quality`
    are required, and keys must be in sorted order."""
    loader = meltano_yml_loader()
    assert schema_errors(loader) == [
        "<root>: 'quality' is a required property",
        "<root>: 'variant' is a required property",
    ]
    pasted = tmp_path / "pasted.yml"
    pasted.write_text(yaml.safe_dump(loader, sort_keys=False, width=10_000))
    assert any("(key-ordering)" in problem for problem in yamllint_problems(pasted))


def test_hub_definition_passes_the_hub_schema() -> None:
    assert schema_errors(hub_definition()) == []


def test_hub_definition_passes_the_hub_yamllint() -> None:
    assert yamllint_problems(HUB_DEFINITION) == []


def test_hub_definition_settings_are_sorted_by_name() -> None:
    assert unsorted_settings(hub_definition()) == []


# -- the Hub definition against --about -----------------------------------------------------------


def test_hub_definition_lists_exactly_the_settings_of_about() -> None:
    in_about, in_hub = set(about_settings()), set(settings_by_name(hub_definition()))
    missing = sorted(in_about - in_hub)
    assert not missing, (
        f"settings of --about missing from {HUB_FILE}: {missing}; add (in name order):\n"
        + as_yaml([expected_setting(name, about_settings()[name], hub=True) for name in missing])
    )
    extra = sorted(in_hub - in_about)
    assert not extra, (
        f"settings in {HUB_FILE} that --about lacks: {extra}; remove them from {HUB_FILE}, or "
        f"define them in {OWN_SETTINGS_SOURCE}"
    )


def test_hub_definition_settings_copy_about() -> None:
    """Kind (a secret is `kind: password`, `sensitive: true`), label (the title), description,
    default value and options: what the Hub's weekly rebuild from --about would show."""
    hub = settings_by_name(hub_definition())
    differences = []
    for name, schema in about_settings().items():
        expected = expected_setting(name, schema, hub=True)
        if hub[name] != expected:
            differences.append((name, hub[name], expected))
    assert not differences, f"{HUB_FILE} settings that differ from --about:\n" + "\n".join(
        f"- {name}: {HUB_FILE} has\n{as_yaml([actual])}  --about makes it\n{as_yaml([expected])}"
        for name, actual, expected in differences
    )


def test_secrets_are_passwords_in_the_hub_definition_and_sensitive_everywhere() -> None:
    hub = settings_by_name(hub_definition())
    secrets = sorted(name for name, schema in about_settings().items() if schema.get("secret"))
    assert "private_api_key" in secrets
    assert sorted(name for name, s in hub.items() if s.get("sensitive")) == secrets
    assert sorted(name for name, s in hub.items() if s["kind"] == "password") == secrets
    meltano = settings_by_name(meltano_yml_loader())
    assert sorted(name for name, s in meltano.items() if s.get("sensitive")) == secrets


def test_hub_definition_describes_the_plugin() -> None:
    hub, info, project = hub_definition(), about(), pyproject()["project"]
    homepage = project["urls"]["Homepage"]
    assert hub["name"] == info["name"] == project["name"]
    assert hub["namespace"] == hub["name"].replace("-", "_")
    assert hub["executable"] in project["scripts"]
    # A Hub user installs the release from PyPI.
    assert hub["pip_url"] == project["name"]
    # The Hub names a variant after the owner of the repository it lives in.
    assert hub["repo"] == homepage
    assert hub["variant"] == homepage.rstrip("/").split("/")[-2].lower()
    assert hub["capabilities"] == sorted(info["capabilities"])  # validate-records included
    assert hub["supported_python_versions"] == info["supported_python_versions"]
    assert hub["settings_group_validation"] == [sorted(info["settings"]["required"])]
    assert "meltano_sdk" in hub["keywords"]
    assert hub["label"] == meltano_yml_loader()["label"] == "Klaviyo"
    assert hub["description"] == meltano_yml_loader()["description"]


# -- what the Hub page and the README tell a user -------------------------------------------------


def yaml_blocks(markdown: str) -> list[Any]:
    return [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", markdown, flags=re.S)]


def loaders_in(block: Any) -> list[dict[str, Any]]:
    if not isinstance(block, dict):
        return []
    return [p for p in block.get("plugins", {}).get("loaders", []) if p["name"] == "target-klaviyo"]


def assert_working_config(config: dict[str, Any], where: str) -> None:
    """The config passes --about's schema (as singer-sdk checks it) and the target's own checks,
    once the private key is added (it belongs in the environment, not in the example)."""
    assert "private_api_key" not in config, f"{where}: the example puts the key in meltano.yml"
    full = {**config, "private_api_key": "pk_example"}
    schema = about()["settings"]
    errors = [
        e.message for e in jsonschema.validators.validator_for(schema)(schema).iter_errors(full)
    ]
    assert not errors, f"{where}: {errors}"
    settings = Settings.from_config(full)
    assert settings.streams, where


def test_hub_usage_example_is_a_working_config() -> None:
    loaders = [p for block in yaml_blocks(hub_definition()["usage"]) for p in loaders_in(block)]
    assert len(loaders) == 1, "the Hub page's usage shows one target-klaviyo loader"
    assert loaders[0]["variant"] == hub_definition()["variant"]
    assert_working_config(loaders[0]["config"], f"{HUB_FILE} usage")


def readme_meltano_section() -> str:
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^## Meltano\n(.*?)(?=^## )", readme, flags=re.S | re.M)
    assert match, "README.md has no '## Meltano' section"
    return match.group(1)


def test_readme_meltano_example_is_a_working_config() -> None:
    loaders = [p for block in yaml_blocks(readme_meltano_section()) for p in loaders_in(block)]
    assert len(loaders) == 1, "the README's Meltano section shows one target-klaviyo loader"
    assert loaders[0]["variant"] == hub_definition()["variant"]
    assert loaders[0]["pip_url"] == hub_definition()["pip_url"]
    assert_working_config(loaders[0]["config"], "README.md, Meltano")


# Meltano 3 spellings that Meltano 4.4.1 reads differently: `meltano config <plugin> list`
# fails, and `meltano add loader <name>` takes "loader" for a plugin name (with --from-ref it
# adds the definition a second time, as a utility).
MELTANO_3_COMMANDS = re.compile(
    r"meltano config [\w-]+ (?:list|set|unset|reset|test)\b"
    r"|meltano add (?:extractors?|loaders?|utilit(?:y|ies)|mappers?|orchestrators?|transformers?)\b"
)


def test_readme_and_hub_page_show_meltano_4_commands() -> None:
    texts = {
        "README.md": (REPO / "README.md").read_text(),
        **{f"{HUB_FILE} {key}": hub_definition()[key] for key in ("next_steps", "usage", "prereq")},
        f"{HUB_FILE} settings_preamble": hub_definition()["settings_preamble"],
    }
    for where, text in texts.items():
        assert not MELTANO_3_COMMANDS.findall(text), (where, MELTANO_3_COMMANDS.findall(text))
    meltano = readme_meltano_section()
    assert "meltano add target-klaviyo" in meltano
    assert "meltano config list target-klaviyo" in meltano


@pytest.mark.parametrize(
    ("command", "meltano_3"),
    [
        ("meltano config target-klaviyo list", True),
        ("meltano add loader target-klaviyo --from-ref hub.yml", True),
        ("meltano config list target-klaviyo", False),
        ("meltano add target-klaviyo --from-ref hub.yml", False),
    ],
)
def test_meltano_3_commands_pattern(command: str, meltano_3: bool) -> None:
    assert bool(MELTANO_3_COMMANDS.search(command)) == meltano_3


def test_readme_quick_start_installs_from_pypi() -> None:
    readme = (REPO / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "pip install target-klaviyo" in quick_start
