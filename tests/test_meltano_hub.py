"""Meltano 4.4.1 with the loader the way Hub users get it, and with every setting from the
environment.

1. A scratch project adds the loader from the Hub definition (`meltano add target-klaviyo
   --from-ref`), configures it with `meltano config set` as the README says, installs it and
   runs `meltano run tap-postgres target-klaviyo` into the Klaviyo emulator.
2. Every setting `--about` lists is set from a `TARGET_KLAVIYO_*` environment variable: Meltano
   4.4.1 crashed in `meltano config print`, `meltano invoke` and `meltano run` ("Decimal is not
   JSON serializable") when a `kind: decimal` setting came from the environment. A number inside
   `streams` (`mirror_max_removal_ratio`) rides along in its JSON.

Meltano, tap-postgres and PostgreSQL as in tests/test_meltano_e2e.py (tests/meltano_project.py).
Skipped when PostgreSQL is not reachable, except with CI=true, where that is a failure.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.emulator import Emulator
from tests.meltano_project import (
    INSTALL_TIMEOUT_S,
    REPO,
    RUN_TIMEOUT_S,
    clean_env,
    meltano_executable,
    run,
    tail,
    tap_postgres_extractor,
)
from tests.plugin_definitions import (
    HUB_DEFINITION,
    about_settings,
    meltano_yml_loader,
    pyproject,
)
from tests.postgres import PostgresSettings, Schema, require_postgres, schema_name, temporary_schema

pytestmark = [pytest.mark.postgres, pytest.mark.meltano]

TABLES = """
create table customers (
    id integer primary key,
    email text,
    phone text,
    first_name text,
    last_name text,
    city text,
    updated_at timestamptz not null
);
create table orders (
    order_id text primary key,
    customer_email text,
    total numeric(12, 2),
    currency text,
    ordered_at timestamptz not null
);
create table newsletter (
    email text primary key,
    updated_at timestamptz not null
);
"""
REPLICATION_KEYS = {"customers": "updated_at", "orders": "ordered_at", "newsletter": "updated_at"}


def at(day: int) -> datetime:
    return datetime(2026, 11, day, 9, 0, tzinfo=timezone.utc)


CUSTOMERS = [
    # A national number: valid only with default_phone_region US.
    {"id": 1, "email": "ada@example.com", "phone": "(415) 555-2671", "first_name": "Ada",
     "last_name": "Lovelace", "city": "London", "updated_at": at(1)},
    {"id": 2, "email": "grace@example.com", "phone": None, "first_name": "Grace",
     "last_name": "Hopper", "city": "Arlington", "updated_at": at(2)},
    # No usable identifier: rejected, into the rejects file.
    {"id": 3, "email": "not an email", "phone": None, "first_name": "Nobody",
     "last_name": "Known", "city": None, "updated_at": at(3)},
]  # fmt: skip
ORDERS = [
    {"order_id": "A-1", "customer_email": "ada@example.com", "total": Decimal("120.50"),
     "currency": "GBP", "ordered_at": at(4)},
    {"order_id": "A-2", "customer_email": "grace@example.com", "total": Decimal("35.00"),
     "currency": "USD", "ordered_at": at(5)},
]  # fmt: skip
NEWSLETTER = [
    {"email": "ada@example.com", "updated_at": at(6)},
    {"email": "grace@example.com", "updated_at": at(7)},
]


def stream_mappings(schema: str) -> dict[str, Any]:
    return {
        f"{schema}-customers": {
            "object": "profile",
            "fields": {"phone_number": "phone", "external_id": "id"},
        },
        f"{schema}-orders": {
            "object": "event",
            "event_name": "Placed Order",
            "fields": {"email": "customer_email"},
            "time_field": "ordered_at",
            "value_field": "total",
            "value_currency_field": "currency",
        },
        f"{schema}-newsletter": {
            "object": "list",
            "list_name": "Newsletter",
            "create_list": True,
            "behavior": "mirror",
            "mirror_on": "end_of_stream",
            "mirror_max_removal_ratio": 0.5,  # a number inside the JSON of an object setting
            "properties": [],
        },
    }


@pytest.fixture
def pg_schema() -> Iterator[tuple[PostgresSettings, Schema]]:
    settings = PostgresSettings.from_env()
    require_postgres(settings)
    with temporary_schema(settings, prefix="tk_hub") as schema:
        schema.execute(TABLES)
        schema.insert("customers", CUSTOMERS)
        schema.insert("orders", ORDERS)
        schema.insert("newsletter", NEWSLETTER)
        yield settings, schema


def write_project(project: Path, extractors: list[Any], loaders: list[Any]) -> None:
    plugins: dict[str, Any] = {"extractors": extractors}
    if loaders:
        plugins["loaders"] = loaders
    document = {
        "project_id": "target-klaviyo-hub-test",
        "default_environment": "test",
        "send_anonymous_usage_stats": False,
        "environments": [{"name": "test"}],
        "plugins": plugins,
    }
    project.mkdir(parents=True, exist_ok=True)
    (project / "meltano.yml").write_text(yaml.safe_dump(document, sort_keys=False))


def last_run(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "last_run.json"
    assert path.exists(), f"the target wrote no {path}"
    return json.loads(path.read_text())


def outcomes(summary: dict[str, Any], stream: str) -> dict[str, int]:
    stats = summary["streams"][stream]
    return {key: stats[key] for key in ("read", "loaded", "rejected", "on_hold")}


def profiles_by_email(dump: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        p["attributes"]["email"]: p["attributes"]
        for p in dump["profiles"]
        if p["attributes"].get("email")
    }


def newsletter_members(dump: dict[str, Any]) -> set[str]:
    (newsletter,) = [item for item in dump["lists"].values() if item["name"] == "Newsletter"]
    emails = {p["id"]: p["attributes"]["email"] for p in dump["profiles"]}
    return {emails[member] for member in newsletter["members"]}


def json_document(output: str) -> Any:
    """The JSON document a command printed among Meltano's log lines (from a line `{` to the
    last line `}`)."""
    lines = output.splitlines()
    start = lines.index("{")
    end = len(lines) - lines[::-1].index("}")
    return json.loads("\n".join(lines[start:end]))


def assert_loaded(summary: dict[str, Any], schema: str, emulator: Emulator) -> dict[str, Any]:
    """What both tests load: two profiles (the third rejected), two events, two list members."""
    assert outcomes(summary, f"{schema}-customers") == {
        "read": 3,
        "loaded": 2,
        "rejected": 1,
        "on_hold": 0,
    }, summary
    assert outcomes(summary, f"{schema}-orders") == {
        "read": 2,
        "loaded": 2,
        "rejected": 0,
        "on_hold": 0,
    }, summary
    assert outcomes(summary, f"{schema}-newsletter") == {
        "read": 2,
        "loaded": 2,
        "rejected": 0,
        "on_hold": 0,
    }, summary
    dump = emulator.dump()
    profiles = profiles_by_email(dump)
    assert sorted(profiles) == ["ada@example.com", "grace@example.com"], profiles
    assert profiles["ada@example.com"]["phone_number"] == "+14155552671"  # default_phone_region
    assert sorted(float(event["value"]) for event in dump["events"]) == [35.0, 120.5]
    assert newsletter_members(dump) == {"ada@example.com", "grace@example.com"}
    assert emulator.unexpected_violations() is None, emulator.unexpected_violations()
    return dump


# -- 1. added from the Hub definition -------------------------------------------------------------


def hub_definition_installing_the_checkout(directory: Path) -> Path:
    """hub/target-klaviyo.yml with `pip_url` pointing at this checkout.

    The Hub definition installs the release from PyPI (`pip_url: target-klaviyo`); the code under
    test is this checkout, which PyPI does not have. A plain path (not `-e`) makes Meltano build
    and install a wheel from it, so the loader runs from what the wheel holds, as it would from
    a release. Everything else in the definition is used as the Hub would serve it.
    """
    text = HUB_DEFINITION.read_text()
    assert text.count("\npip_url: target-klaviyo\n") == 1, "hub definition's pip_url changed"
    copy = directory / "target-klaviyo.yml"
    copy.write_text(text.replace("\npip_url: target-klaviyo\n", f"\npip_url: {REPO}\n"))
    return copy


def test_hub_user_adds_configures_installs_and_runs_the_loader(
    pg_schema: tuple[PostgresSettings, Schema], tmp_path: Path
) -> None:
    pg, schema = pg_schema
    meltano = meltano_executable()
    project = tmp_path / "project"
    state_dir = tmp_path / "klaviyo-state"
    write_project(project, [tap_postgres_extractor(pg, schema.name, REPLICATION_KEYS)], [])
    definition = hub_definition_installing_the_checkout(tmp_path)
    env = clean_env()

    def meltano_(*args: str, what: str, timeout: float = 120) -> str:
        return run([meltano, *args], cwd=project, env=env, timeout=timeout, what=what).stdout

    with Emulator(window_scale=0.01, job_delay_s=0.01) as emulator:
        meltano_(
            "add",
            "target-klaviyo",
            "--from-ref",
            str(definition),
            what="meltano add target-klaviyo --from-ref",
            timeout=INSTALL_TIMEOUT_S,
        )
        plugins = yaml.safe_load((project / "meltano.yml").read_text())["plugins"]
        assert sorted(plugins) == ["extractors", "loaders"], plugins  # a loader, nothing else
        (loader,) = plugins["loaders"]
        assert loader["name"] == "target-klaviyo"
        assert loader["variant"] == "target-klaviyo"
        assert loader["pip_url"] == str(REPO)
        assert len(loader["settings"]) == len(about_settings())

        # Configured as the README says: the key with `meltano config set`, which keeps a
        # sensitive setting out of meltano.yml, in the project's .env.
        meltano_(
            "config",
            "set",
            "target-klaviyo",
            "private_api_key",
            emulator.private_key,
            what="meltano config set private_api_key",
        )
        assert emulator.private_key not in (project / "meltano.yml").read_text()
        dotenv = (project / ".env").read_text()
        assert f"TARGET_KLAVIYO_PRIVATE_API_KEY='{emulator.private_key}'" in dotenv, dotenv
        for name, value in [
            ("api_base_url", emulator.base_url),
            ("state_dir", str(state_dir)),
            ("default_phone_region", "US"),
            ("progress_interval_s", "0"),
            ("streams", json.dumps(stream_mappings(schema.name))),
        ]:
            meltano_("config", "set", "target-klaviyo", name, value, what=f"config set {name}")
        listing = meltano_("config", "list", "target-klaviyo", what="meltano config list")
        assert "deprecat" not in listing.lower(), tail(listing)
        assert "Required settings: private_api_key, streams" in listing, tail(listing)

        meltano_("install", what="meltano install", timeout=INSTALL_TIMEOUT_S)

        about = json_document(
            meltano_("invoke", "target-klaviyo", "--about", "--format", "json", what="--about")
        )
        assert about["name"] == "target-klaviyo"
        assert about["version"] == pyproject()["project"]["version"]  # installed, not editable
        check = meltano_("invoke", "target-klaviyo", "--test-connection", what="--test-connection")
        assert emulator.private_key not in check

        run_output = meltano_(
            "run", "tap-postgres", "target-klaviyo", what="meltano run", timeout=RUN_TIMEOUT_S
        )
        assert emulator.wait_idle(30)
        assert_loaded(last_run(state_dir), schema.name, emulator)
        assert emulator.private_key not in run_output


# -- 2. every setting from the environment --------------------------------------------------------


def values_from_environment(
    emulator: Emulator, pg: PostgresSettings, schema: str, ledger_schema: str, tmp_path: Path
) -> dict[str, Any]:
    """A value for every setting, each of them usable in one run."""
    defaults = {name: s["default"] for name, s in about_settings().items() if "default" in s}
    return {
        "private_api_key": emulator.private_key,
        "public_api_key": emulator.public_key,
        "api_base_url": emulator.base_url,
        "revision": defaults["revision"],
        "default_phone_region": "US",
        "state_dir": str(tmp_path / "state-from-env"),
        "rejects_path": str(tmp_path / "rejects-from-env.jsonl"),
        "max_retries": 2,
        "skip_unchanged": True,
        "dry_run": False,
        "streams": stream_mappings(schema),
        "ledger_url": pg.url(),
        "ledger_schema": ledger_schema,
        "lock_timeout_s": 5,
        "stop_grace_s": 10,
        "request_timeout_s": 30,
        "job_timeout_s": 600,
        "max_jobs_in_flight": 10,
        "progress_interval_s": 0,
        # singer-sdk's built-in settings
        "add_record_metadata": False,
        "load_method": "append-only",
        "batch_size_rows": 100,
        "process_activate_version_messages": True,
        "validate_records": True,
        "stream_maps": {
            f"{schema}-customers": {
                "city": "__NULL__",
                "last_name": "last_name + config['last_name_suffix']",
            }
        },
        "stream_map_config": {"last_name_suffix": " (from a stream map)"},
        "faker_config": {"seed": 1, "locale": "en_US"},
        "flattening_enabled": True,
        "flattening_max_depth": 1,
        "flattening_max_key_length": 255,
        "flattening_separator": "__",
    }


def environment_variable(value: Any) -> str:
    """How a user writes a value in the environment: JSON for objects, `true`/`false`."""
    if isinstance(value, (dict, list, bool)):
        return json.dumps(value)
    return str(value)


def test_every_setting_from_the_environment(
    pg_schema: tuple[PostgresSettings, Schema], tmp_path: Path
) -> None:
    pg, schema = pg_schema
    meltano = meltano_executable()
    project = tmp_path / "project"
    loader = dict(meltano_yml_loader())  # the repository's definition, config-free
    # The checkout, editable, with psycopg for the ledger in PostgreSQL (ledger_url).
    loader["pip_url"] = f"-e {REPO}[postgres]"
    write_project(project, [tap_postgres_extractor(pg, schema.name, REPLICATION_KEYS)], [loader])

    with (
        Emulator(window_scale=0.01, job_delay_s=0.01) as emulator,
        schema_name(pg, prefix="tk_hub_ledger") as ledger_schema,
    ):
        values = values_from_environment(emulator, pg, schema.name, ledger_schema, tmp_path)
        unvalued = sorted(set(about_settings()) - set(values))
        assert not unvalued, (
            f"settings of --about without a value in values_from_environment(): {unvalued}; "
            "give each one there, so that Meltano is shown to pass it from the environment"
        )
        env = clean_env(
            **{
                f"TARGET_KLAVIYO_{name.upper()}": environment_variable(v)
                for name, v in values.items()
            }
        )

        def meltano_(*args: str, what: str, timeout: float = 120) -> str:
            return run([meltano, *args], cwd=project, env=env, timeout=timeout, what=what).stdout

        meltano_("install", what="meltano install", timeout=INSTALL_TIMEOUT_S)

        config = json_document(
            meltano_("config", "print", "target-klaviyo", what="meltano config print")
        )
        sensitive = {s["name"] for s in loader["settings"] if s.get("sensitive")}
        for name, value in values.items():
            expected = "*****" if name in sensitive else value  # config print redacts secrets
            assert config.get(name) == expected, (name, config.get(name), expected)

        about = json_document(
            meltano_("invoke", "target-klaviyo", "--about", "--format", "json", what="--about")
        )
        assert about["name"] == "target-klaviyo"

        run_output = meltano_(
            "run", "tap-postgres", "target-klaviyo", what="meltano run", timeout=RUN_TIMEOUT_S
        )
        assert emulator.wait_idle(30)
        state_dir = Path(values["state_dir"])
        dump = assert_loaded(last_run(state_dir), schema.name, emulator)
        # The settings took effect, not only their defaults: the rejects file where
        # rejects_path says, the stream maps with their config, the public key checked.
        rejects = Path(values["rejects_path"]).read_text().splitlines()
        assert len(rejects) == 1 and "not an email" in rejects[0], rejects
        ada = profiles_by_email(dump)["ada@example.com"]
        assert ada["last_name"] == "Lovelace (from a stream map)"
        assert ada["location"]["city"] is None
        assert any(entry.operation == "get_accounts" for entry in emulator.request_log)
        assert emulator.private_key not in run_output
