"""End to end, the way users run it: `meltano run tap-postgres target-klaviyo`.

A real PostgreSQL (a schema of its own in the database `test`), the real tap-postgres from PyPI,
Meltano 4.4.1 driving both, and the Klaviyo emulator as the API. Two runs: the first loads
everything; the second, after new and changed rows, must send only those (the tap's bookmarks
make the round trip target -> Meltano -> tap as STATE).

Meltano runs from a cached venv of its own (tests/meltano_project.py). `meltano install` puts
tap-postgres and this repository (`pip_url: -e <repo>`) into the temporary project's `.meltano/`.

Skipped when PostgreSQL is not reachable, except with CI=true, where that is a failure.
Set TARGET_KLAVIYO_E2E_LOGS=<dir> to keep the full output of every Meltano command.
"""

from __future__ import annotations

import json
import shutil
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
from tests.postgres import PostgresSettings, Schema, require_postgres, temporary_schema

pytestmark = [pytest.mark.postgres, pytest.mark.meltano]


# -- the source data ----------------------------------------------------------------------------

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


def at(day: int, hour: int = 9) -> datetime:
    return datetime(2026, 11, day, hour, 0, tzinfo=timezone.utc)


def customer(
    id_: int,
    email: str | None,
    phone: str | None,
    first: str,
    last: str,
    city: str | None,
    day: int,
) -> dict[str, Any]:
    return {
        "id": id_,
        "email": email,
        "phone": phone,
        "first_name": first,
        "last_name": last,
        "city": city,
        "updated_at": at(day),
    }


def order(order_id: str, email: str, total: str, currency: str, day: int) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "customer_email": email,
        "total": Decimal(total),
        "currency": currency,
        "ordered_at": at(day),
    }


# First run. The rows with the latest replication key (customer 5, order A-1004, the newsletter
# row of 3 Nov) are read again by the second run: the SDK's incremental replication starts at the
# bookmark inclusively. skip_unchanged must then count them unchanged and not resend them.
CUSTOMERS = [
    customer(1, "Ada.Lovelace@Example.com ", "+44 20 7946 0018", "Ada", "Lovelace", "London", 1),
    customer(2, "grace@example.com", "(415) 555-2671", "Grace", "Hopper", "Arlington", 2),
    # A UK national number is not valid in the default region (US): dropped with a warning,
    # the profile still loads on its email.
    customer(3, "alan@example.com", "020 7946 0991", "Alan", "Turing", "Manchester", 3),
    customer(4, "katherine@example.com", None, "Katherine", "Johnson", None, 4),
    customer(5, None, "+1 650-253-0000", "Margaret", "Hamilton", "Boston", 5),
]
ORDERS = [
    order("A-1001", "ada.lovelace@example.com", "120.50", "GBP", 1),
    order("A-1002", "grace@example.com", "35.00", "USD", 2),
    order("A-1003", "ada.lovelace@example.com", "10.00", "GBP", 3),
    order("A-1004", "newcomer@example.com", "5.25", "USD", 4),
]
NEWSLETTER = [
    {"email": "ada.lovelace@example.com", "updated_at": at(1)},
    {"email": "grace@example.com", "updated_at": at(2)},
    {"email": "katherine@example.com", "updated_at": at(3)},
]
# Second run: new rows and one changed customer.
NEW_CUSTOMERS = [
    customer(6, "dorothy@example.com", "+1 (202) 456-1111", "Dorothy", "Vaughan", "Hampton", 20),
    customer(7, "mary@example.com", None, "Mary", "Jackson", None, 21),
]
CHANGED_CUSTOMER = {"id": 2, "first_name": "Grace B.", "city": "New York", "updated_at": at(22)}
NEW_ORDERS = [
    order("A-1005", "grace@example.com", "99.99", "USD", 20),
    order("A-1006", "mary@example.com", "12.00", "EUR", 21),
]
NEW_NEWSLETTER = [{"email": "mary@example.com", "updated_at": at(20)}]


# -- the Meltano project ------------------------------------------------------------------------


def repo_loader_definition() -> dict[str, Any]:
    """The loader exactly as the repository's meltano.yml defines it (settings, capabilities)."""
    project = yaml.safe_load((REPO / "meltano.yml").read_text())
    (plugin,) = [p for p in project["plugins"]["loaders"] if p["name"] == "target-klaviyo"]
    return dict(plugin)


def write_project(
    project: Path,
    pg: PostgresSettings,
    schema: str,
    emulator: Emulator,
    state_dir: Path,
    ledger: dict[str, str] | None = None,
) -> None:
    loader = repo_loader_definition()
    # The ledger in PostgreSQL needs the `postgres` extra (psycopg), as the README says.
    loader["pip_url"] = f"-e {REPO}[postgres]" if ledger else f"-e {REPO}"
    loader["config"] = {
        **(ledger or {}),
        "api_base_url": emulator.base_url,
        "state_dir": str(state_dir),
        "default_phone_region": "US",
        "progress_interval_s": 0,
        "streams": {
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
                "properties": [],
            },
        },
    }
    document = {
        "project_id": "target-klaviyo-e2e",
        "default_environment": "test",
        "send_anonymous_usage_stats": False,
        "environments": [{"name": "test"}],
        "plugins": {
            "extractors": [
                tap_postgres_extractor(
                    pg,
                    schema,
                    {"customers": "updated_at", "orders": "ordered_at", "newsletter": "updated_at"},
                )
            ],
            "loaders": [loader],
        },
    }
    project.mkdir(parents=True, exist_ok=True)
    (project / "meltano.yml").write_text(yaml.safe_dump(document, sort_keys=False))


# -- checks -------------------------------------------------------------------------------------


def last_run(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "last_run.json"
    assert path.exists(), f"the target wrote no {path}"
    return json.loads(path.read_text())


def assert_accounted(summary: dict[str, Any]) -> None:
    for name, stats in summary["streams"].items():
        outcomes = stats["loaded"] + stats["unchanged"] + stats["rejected"] + stats["on_hold"]
        assert stats["read"] == outcomes, (
            f"{name}: read != loaded+unchanged+rejected+on_hold: {stats}"
        )


def stream_stats(summary: dict[str, Any], stream: str) -> dict[str, int]:
    assert stream in summary["streams"], f"{stream} missing from last_run.json: {summary}"
    stats = summary["streams"][stream]
    return {key: stats[key] for key in ("read", "loaded", "unchanged", "rejected", "on_hold")}


def profiles_by(dump: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    return {
        p["attributes"][key]: p["attributes"]
        for p in dump["profiles"]
        if p["attributes"].get(key) is not None
    }


def newsletter_members(dump: dict[str, Any]) -> set[str]:
    lists = [item for item in dump["lists"].values() if item["name"] == "Newsletter"]
    assert len(lists) == 1, f"lists named Newsletter: {lists}"
    emails = {p["id"]: p["attributes"]["email"] for p in dump["profiles"]}
    return {emails[member] for member in lists[0]["members"]}


def items_sent(emulator: Emulator, since: int, operations: set[str]) -> int:
    """Profiles / events / ids in the accepted requests of `operations` after log entry `since`."""
    return sum(
        entry.items
        for entry in emulator.request_log[since:]
        if entry.operation in operations and 200 <= entry.status < 300
    )


def assert_bookmarks(output: str, expected: dict[str, tuple[str, str]]) -> None:
    """`meltano state get` printed the target's last STATE: the tap's bookmark per stream."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no state in `meltano state get` output:\n{tail(output)}"
    bookmarks = json.loads(lines[-1])["singer_state"]["bookmarks"]
    for stream, (key, value) in expected.items():
        assert bookmarks[stream]["replication_key"] == key, bookmarks
        assert bookmarks[stream]["replication_key_value"].startswith(value), bookmarks


PROFILE_WRITES = {"bulk_import_profiles", "create_or_update_profile"}
EVENT_WRITES = {"bulk_create_events", "create_event"}


# -- the test -----------------------------------------------------------------------------------


@pytest.fixture
def pg_schema() -> Iterator[tuple[PostgresSettings, Schema]]:
    settings = PostgresSettings.from_env()
    require_postgres(settings)
    with temporary_schema(settings) as schema:
        schema.execute(TABLES)
        yield settings, schema


@pytest.mark.parametrize("ledger_in", ["sqlite", "postgresql"])
def test_meltano_run_tap_postgres_to_target_klaviyo(
    pg_schema: tuple[PostgresSettings, Schema], tmp_path: Path, ledger_in: str
) -> None:
    """The same pipeline twice; with the ledger in PostgreSQL (the same server the tap reads,
    as Meltano's own system database could host it) the worker's disk is gone in between."""
    pg, schema = pg_schema
    ledger = (
        {"ledger_url": pg.url(), "ledger_schema": f"{schema.name}_ledger"}
        if ledger_in == "postgresql"
        else None
    )
    schema.insert("customers", CUSTOMERS)
    schema.insert("orders", ORDERS)
    schema.insert("newsletter", NEWSLETTER)
    customers, orders, newsletter = (
        f"{schema.name}-customers",
        f"{schema.name}-orders",
        f"{schema.name}-newsletter",
    )

    meltano = meltano_executable()

    with Emulator(window_scale=0.01, job_delay_s=0.01) as emulator:
        project = tmp_path / "project"
        state_dir = tmp_path / "klaviyo-state"
        write_project(project, pg, schema.name, emulator, state_dir, ledger)
        # The key comes from the environment, as the README recommends, not from meltano.yml.
        env = clean_env(TARGET_KLAVIYO_PRIVATE_API_KEY=emulator.private_key)

        run(
            [meltano, "install"],
            cwd=project,
            env=env,
            timeout=INSTALL_TIMEOUT_S,
            what="meltano install",
        )

        # -- first run: everything -------------------------------------------------------------
        first = run(
            [meltano, "run", "tap-postgres", "target-klaviyo"],
            cwd=project,
            env=env,
            timeout=RUN_TIMEOUT_S,
            what="meltano run (first)",
        )
        assert emulator.wait_idle(30)
        summary = last_run(state_dir)
        context = f"\nlast_run.json: {json.dumps(summary)}\nmeltano:\n{tail(first.stdout)}"
        assert_accounted(summary)
        assert stream_stats(summary, customers) == {
            "read": 5,
            "loaded": 5,
            "unchanged": 0,
            "rejected": 0,
            "on_hold": 0,
        }, context
        assert summary["streams"][customers]["warnings"] == 1, context  # Alan's phone
        assert stream_stats(summary, orders) == {
            "read": 4,
            "loaded": 4,
            "unchanged": 0,
            "rejected": 0,
            "on_hold": 0,
        }, context
        assert stream_stats(summary, newsletter) == {
            "read": 3,
            "loaded": 3,
            "unchanged": 0,
            "rejected": 0,
            "on_hold": 0,
        }, context

        dump = emulator.dump()
        by_id = profiles_by(dump, "external_id")
        assert sorted(by_id) == ["1", "2", "3", "4", "5"], context
        assert by_id["1"]["email"] == "ada.lovelace@example.com"
        assert by_id["1"]["phone_number"] == "+442079460018"
        assert by_id["1"]["location"]["city"] == "London"
        assert by_id["2"]["phone_number"] == "+14155552671"
        assert by_id["3"]["phone_number"] is None  # invalid in region US: dropped, not garbled
        assert by_id["3"]["email"] == "alan@example.com"
        assert by_id["5"]["phone_number"] == "+16502530000"
        assert by_id["5"]["email"] is None
        for attributes in by_id.values():
            phone = attributes["phone_number"]
            assert phone is None or (phone.startswith("+") and phone[1:].isdigit()), phone

        events = dump["events"]
        assert len(events) == 4, events
        assert {event["metric"] for event in events} == {"Placed Order"}
        assert sorted(float(event["value"]) for event in events) == [5.25, 10.0, 35.0, 120.5]
        assert {event["value_currency"] for event in events} == {"GBP", "USD"}
        assert "newcomer@example.com" in profiles_by(dump, "email")  # the event made the profile
        assert newsletter_members(dump) == {
            "ada.lovelace@example.com",
            "grace@example.com",
            "katherine@example.com",
        }
        assert emulator.unexpected_violations() is None, emulator.unexpected_violations()
        assert emulator.private_key not in first.stdout  # the key is never logged

        state = run(
            [meltano, "state", "get", "test:tap-postgres-to-target-klaviyo"],
            cwd=project,
            env=env,
            timeout=120,
            what="meltano state get",
        )
        assert_bookmarks(
            state.stdout,
            {
                customers: ("updated_at", "2026-11-05T09:00:00"),
                orders: ("ordered_at", "2026-11-04T09:00:00"),
                newsletter: ("updated_at", "2026-11-03T09:00:00"),
            },
        )

        # -- second run: only new and changed rows ---------------------------------------------
        schema.insert("customers", NEW_CUSTOMERS)
        schema.execute(
            "update customers set first_name = %s, city = %s, updated_at = %s where id = %s",
            [
                CHANGED_CUSTOMER["first_name"],
                CHANGED_CUSTOMER["city"],
                CHANGED_CUSTOMER["updated_at"],
                CHANGED_CUSTOMER["id"],
            ],
        )
        schema.insert("orders", NEW_ORDERS)
        schema.insert("newsletter", NEW_NEWSLETTER)
        log_mark = len(emulator.request_log)
        if ledger is not None:
            shutil.rmtree(state_dir)  # a fresh worker: only the ledger in PostgreSQL remains

        second = run(
            [meltano, "run", "tap-postgres", "target-klaviyo"],
            cwd=project,
            env=env,
            timeout=RUN_TIMEOUT_S,
            what="meltano run (second)",
        )
        assert emulator.wait_idle(30)
        summary = last_run(state_dir)
        context = f"\nlast_run.json: {json.dumps(summary)}\nmeltano:\n{tail(second.stdout)}"
        assert_accounted(summary)
        # read = the new/changed rows + the one row at the bookmark (read again, unchanged).
        assert stream_stats(summary, customers) == {
            "read": 4,
            "loaded": 3,
            "unchanged": 1,
            "rejected": 0,
            "on_hold": 0,
        }, context
        assert stream_stats(summary, orders) == {
            "read": 3,
            "loaded": 2,
            "unchanged": 1,
            "rejected": 0,
            "on_hold": 0,
        }, context
        assert stream_stats(summary, newsletter) == {
            "read": 2,
            "loaded": 1,
            "unchanged": 1,
            "rejected": 0,
            "on_hold": 0,
        }, context
        # What reached the API in the second run: only those rows.
        assert items_sent(emulator, log_mark, EVENT_WRITES) == 2, context
        assert items_sent(emulator, log_mark, PROFILE_WRITES) == 3 + 1, context  # + Mary's list row

        dump = emulator.dump()
        by_id = profiles_by(dump, "external_id")
        assert sorted(by_id) == ["1", "2", "3", "4", "5", "6", "7"], context
        assert by_id["2"]["first_name"] == "Grace B."
        assert by_id["2"]["location"]["city"] == "New York"
        assert by_id["6"]["phone_number"] == "+12024561111"
        assert len(dump["events"]) == 6, dump["events"]
        assert newsletter_members(dump) == {
            "ada.lovelace@example.com",
            "grace@example.com",
            "katherine@example.com",
            "mary@example.com",
        }
        assert emulator.unexpected_violations() is None, emulator.unexpected_violations()


def test_repository_meltano_yml_is_valid_for_meltano(tmp_path: Path) -> None:
    """The repository's meltano.yml passes Meltano 4.4.1's own JSON schema (what
    check-jsonschema's `check-meltano` uses) and loads in Meltano without deprecation warnings."""
    meltano = meltano_executable()
    python = meltano.with_name("python")
    check = (
        "import json, sys, yaml, jsonschema; from importlib.resources import files; "
        "schema = json.loads(files('meltano.schemas').joinpath('meltano.schema.json').read_text());"
        "errors = [f'{list(e.absolute_path)}: {e.message}' for e in "
        "jsonschema.validators.validator_for(schema)(schema).iter_errors("
        "yaml.safe_load(open(sys.argv[1])))];"
        "print(*errors, sep='\\n'); sys.exit(1 if errors else 0)"
    )
    run(
        [python, "-c", check, REPO / "meltano.yml"],
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
        what="meltano.yml against Meltano's schema",
    )
    shutil.copy(REPO / "meltano.yml", tmp_path / "meltano.yml")
    listing = run(
        [meltano, "config", "list", "target-klaviyo"],
        cwd=tmp_path,
        env=clean_env(),
        timeout=120,
        what="meltano config list target-klaviyo",
    )
    assert "deprecat" not in listing.stdout.lower(), tail(listing.stdout)
    assert "Required settings: private_api_key, streams" in listing.stdout, tail(listing.stdout)
