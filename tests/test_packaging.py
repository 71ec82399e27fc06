"""What PyPI gets: the sdist and wheel built from this checkout (as .github/workflows/package.yml
builds them, here without build isolation so that no network is needed), checked by twine; the
wheel holds the package and nothing of the tests; the version lives in pyproject.toml alone; the
release workflow publishes only a tag that names that version with a dated CHANGELOG section.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

from tests.plugin_definitions import REPO, pyproject

WORKFLOWS = REPO / ".github" / "workflows"


def project_version() -> str:
    return str(pyproject()["project"]["version"])


@pytest.fixture(scope="module")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`python -m build` of this checkout: {"sdist": path, "wheel": path}."""
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=out,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = {p.name: p for p in out.iterdir()}
    name = "target_klaviyo-" + project_version()
    assert sorted(built) == [f"{name}-py3-none-any.whl", f"{name}.tar.gz"], sorted(built)
    return {"sdist": built[f"{name}.tar.gz"], "wheel": built[f"{name}-py3-none-any.whl"]}


def test_sdist_and_wheel_pass_twine_check(dists: dict[str, Path]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, dists.values())],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("PASSED") == 2, proc.stdout


def test_wheel_holds_the_package_and_nothing_of_the_tests(dists: dict[str, Path]) -> None:
    info = f"target_klaviyo-{project_version()}.dist-info/"
    with zipfile.ZipFile(dists["wheel"]) as wheel:
        names = wheel.namelist()
        metadata = Parser().parsestr(wheel.read(info + "METADATA").decode())
        entry_points = wheel.read(info + "entry_points.txt").decode()
    outside = [n for n in names if not n.startswith(("target_klaviyo/", info))]
    assert not outside, f"the wheel holds more than the package: {outside}"
    sources = sorted(
        path.relative_to(REPO).as_posix()
        for path in (REPO / "target_klaviyo").rglob("*.py")
        if "__pycache__" not in path.parts
    )
    missing = sorted(set(sources) - set(names))
    assert not missing, f"package modules missing from the wheel: {missing}"
    assert info + "licenses/LICENSE" in names
    assert "target-klaviyo = target_klaviyo.target:TargetKlaviyo.cli" in entry_points

    project = pyproject()["project"]
    assert metadata["Name"] == "target-klaviyo"
    assert metadata["Version"] == project_version()
    assert metadata["Requires-Python"] == ">=3.10"
    assert metadata["License-Expression"] == "Apache-2.0"
    assert metadata["Description-Content-Type"] == "text/markdown"
    assert str(metadata.get_payload()).startswith("# target-klaviyo"), "the README, as description"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls == project["urls"]
    assert "postgres" in metadata.get_all("Provides-Extra", [])
    requires = metadata.get_all("Requires-Dist", [])
    assert any(r.startswith("singer-sdk[msgspec]") for r in requires), requires


def test_sdist_holds_the_sources_the_tests_and_the_hub_definition(dists: dict[str, Path]) -> None:
    root = f"target_klaviyo-{project_version()}/"
    with tarfile.open(dists["sdist"]) as sdist:
        names = {member.name.removeprefix(root) for member in sdist.getmembers()}
    for expected in (
        "pyproject.toml",
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "hub/target-klaviyo.yml",
        "target_klaviyo/target.py",
        "tests/conftest.py",
        "tests/emulator/server.py",
    ):
        assert expected in names, expected
    unwanted = [n for n in names if n.split("/")[0] in {".git", ".venv"} or "__pycache__" in n]
    assert not unwanted, unwanted


def test_version_lives_in_pyproject_toml_alone() -> None:
    """The target reports the installed package's version (singer-sdk reads it with
    importlib.metadata); no module spells it out, and the changelog's newest section is it."""
    spelled = [
        str(path.relative_to(REPO))
        for path in (REPO / "target_klaviyo").rglob("*.py")
        if re.search(r"^__version__\s*=", path.read_text(), flags=re.M)
    ]
    assert not spelled, f"modules that set __version__: {spelled}"
    changelog = (REPO / "CHANGELOG.md").read_text()
    sections = re.findall(r"^## \[([^\]]+)\] - (.+)$", changelog, flags=re.M)
    assert sections, "CHANGELOG.md has no '## [<version>] - <date>' section"
    newest, date = sections[0]
    assert newest == project_version(), "CHANGELOG.md's newest section is not pyproject's version"
    assert date == "Unreleased" or re.fullmatch(r"\d{4}-\d{2}-\d{2}", date), date


# -- the workflows --------------------------------------------------------------------------------


def workflow(name: str) -> dict:
    document = yaml.safe_load((WORKFLOWS / name).read_text())
    document["on"] = document.pop(True, document.get("on"))  # YAML 1.1 reads `on:` as True
    return document


def test_ci_builds_and_checks_the_distributions_as_the_release_does() -> None:
    package = workflow("package.yml")
    assert "workflow_call" in package["on"]
    steps = [step.get("run", "") for step in package["jobs"]["build"]["steps"]]
    assert "python -m build" in steps
    assert "python -m twine check --strict dist/*" in steps
    assert workflow("ci.yml")["jobs"]["package"]["uses"] == "./.github/workflows/package.yml"
    assert workflow("release.yml")["jobs"]["package"]["uses"] == "./.github/workflows/package.yml"


def test_release_publishes_tags_with_trusted_publishing() -> None:
    release = workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    assert release["permissions"] == {"contents": "read"}
    publish = release["jobs"]["publish"]
    assert publish["needs"] == "package"
    assert release["jobs"]["package"]["needs"] == "version"
    assert publish["permissions"] == {"id-token": "write"}
    assert publish["environment"]["name"] == "pypi"
    (publisher,) = [s for s in publish["steps"] if "gh-action-pypi-publish" in s.get("uses", "")]
    assert "with" not in publisher, "trusted publishing needs no password or token"


def version_check_script() -> str:
    """The run script of release.yml's step that checks the tag (executed below)."""
    steps = workflow("release.yml")["jobs"]["version"]["steps"]
    name = "The tag, pyproject.toml and CHANGELOG.md agree"
    (step,) = [s for s in steps if s.get("name") == name]
    return step["run"]


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the script uses tomllib (Python 3.11+)")
@pytest.mark.parametrize(
    ("tag", "section", "verdict"),
    [
        ("v1.2.3", "## [1.2.3] - 2026-12-24", "releasing 1.2.3"),
        ("v1.2.4", "## [1.2.3] - 2026-12-24", "does not name the version in pyproject.toml"),
        ("1.2.3", "## [1.2.3] - 2026-12-24", "does not name the version in pyproject.toml"),
        ("v1.2.3", "## [1.2.3] - Unreleased", "CHANGELOG.md has no section '## [1.2.3]"),
    ],
)
def test_release_version_check(tmp_path: Path, tag: str, section: str, verdict: str) -> None:
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\nversion = "1.2.3"\n')
    (tmp_path / "CHANGELOG.md").write_text(f"# Changelog\n\n{section}\n\n- Things.\n")
    python_dir = str(Path(sys.executable).parent)
    proc = subprocess.run(
        ["bash", "-e", "-c", version_check_script()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "TAG": tag, "PATH": python_dir + os.pathsep + os.environ["PATH"]},
    )
    assert verdict in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert (proc.returncode == 0) == verdict.startswith("releasing")
