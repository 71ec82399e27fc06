"""The start-up check and user errors, through the CLI: exit 1 with one clear line, no traceback.

The start-up check (`--test-connection`; `dry_run` skips the network) and the exit codes, with
one clear message for bad config, credentials, unmapped streams and malformed input (README).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.emulator import Emulator
from tests.support import (
    INTEGER,
    STRING,
    TargetRun,
    base_config,
    run_target,
    singer_lines,
    state_message,
    stream_messages,
)

PROFILES = {"customers": {"object": "profile"}}


def customers_input(count: int = 2) -> str:
    records = [{"id": i, "email": f"user{i}@example.com"} for i in range(1, count + 1)]
    return singer_lines(
        stream_messages("customers", {"id": INTEGER, "email": STRING}, records, ["id"])
    )


def run(
    emulator: Emulator,
    tmp_path: Path,
    streams: dict[str, Any] = PROFILES,
    input_text: str | None = None,
    args: tuple[str, ...] = (),
    **settings: Any,
) -> TargetRun:
    config = base_config(emulator, tmp_path / "state", streams, **settings)
    text = customers_input() if input_text is None else input_text
    return run_target(config, text, tmp_path, args=args)


def error_lines(result: TargetRun) -> list[str]:
    return [line for line in result.stderr.splitlines() if "| ERROR" in line]


def assert_user_error(result: TargetRun, *fragments: str) -> str:
    """Exit 1, no traceback, and an ERROR line holding every fragment; return that line."""
    assert result.exit_code == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    for line in error_lines(result):
        if all(fragment in line for fragment in fragments):
            return line
    raise AssertionError(f"no ERROR line with {fragments}:\n{result.stderr}")


def operations(emulator: Emulator) -> list[str]:
    return [entry.operation for entry in emulator.request_log]


def loaded_nothing(emulator: Emulator) -> bool:
    return not emulator.dump()["profiles"]


# -- the key, its scopes, the public key ---------------------------------------------------------


def test_wrong_private_key(emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path, private_api_key="pk_wrong_0000")

    assert_user_error(result, "401", "private_api_key")
    assert len(error_lines(result)) == 1
    assert "pk_wrong_0000" not in result.stderr
    assert loaded_nothing(emulator)


def test_key_without_a_read_scope(emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_key("pk_events_only_1111", {"events:write"})

    result = run(emulator, tmp_path, private_api_key="pk_events_only_1111")

    assert_user_error(result, "403", "profiles:read")
    assert loaded_nothing(emulator)


def test_public_key_of_another_account(emulator: Emulator, tmp_path: Path) -> None:
    result = run(emulator, tmp_path, public_api_key="Zz9999")

    assert_user_error(result, "public_api_key", "Zz9999")
    assert loaded_nothing(emulator)


# -- lists -----------------------------------------------------------------------------------------


def test_list_id_that_does_not_exist(emulator: Emulator, tmp_path: Path) -> None:
    streams = {"customers": {"object": "list", "list_id": "NoSuch"}}

    result = run(emulator, tmp_path, streams)

    assert_user_error(result, "streams.customers.list_id", "NoSuch")
    assert loaded_nothing(emulator)


def test_list_name_shared_by_two_lists(emulator: Emulator, tmp_path: Path) -> None:
    first = emulator.store.create_list("VIP", None)
    second = emulator.store.create_list("VIP", None)
    streams = {"customers": {"object": "list", "list_name": "VIP"}}

    result = run(emulator, tmp_path, streams)

    line = assert_user_error(result, "streams.customers.list_name", "VIP")
    assert first.id in line and second.id in line
    assert loaded_nothing(emulator)


def test_create_list_creates_the_missing_list(emulator: Emulator, tmp_path: Path) -> None:
    streams = {"customers": {"object": "list", "list_name": "Newsletter", "create_list": True}}

    result = run(emulator, tmp_path, streams)

    assert result.exit_code == 0, result.stderr
    lists = [item for item in emulator.store.lists.values() if item.name == "Newsletter"]
    assert len(lists) == 1
    assert operations(emulator).count("create_list") == 1
    assert result.stream("customers")["loaded"] == 2


# -- settings --------------------------------------------------------------------------------------


def test_plain_http_to_a_remote_host_is_refused_before_any_request(
    emulator: Emulator, tmp_path: Path
) -> None:
    result = run(emulator, tmp_path, api_base_url="http://a.klaviyo.com")

    assert_user_error(result, "api_base_url", "http://a.klaviyo.com")
    assert emulator.request_log == []
    assert emulator.private_key not in result.stderr


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("default_phone_region", "XX"),
        ("default_phone_region", "usa"),
        ("max_retries", -1),
        ("request_timeout_s", 0),
        ("stop_grace_s", -5),
        ("lock_timeout_s", "soon"),
        ("revision", "2026-7-15"),
        ("api_base_url", "a.klaviyo.com"),
        ("ledger_url", "mysql://db/ledger"),
        ("ledger_schema", "target klaviyo"),
        ("skip_unchanged", "yes"),
    ],
)
def test_a_bad_setting_stops_the_run_before_any_request(
    emulator: Emulator, tmp_path: Path, setting: str, value: Any
) -> None:
    """SPEC §3.13: every setting is checked before any input: one line naming it, exit 1."""
    result = run(emulator, tmp_path, **{setting: value})

    line = assert_user_error(result, setting)
    assert len(error_lines(result)) <= 2, result.stderr  # the setting's line (and a summary)
    assert emulator.request_log == []
    assert loaded_nothing(emulator)
    assert str(value) in line  # the value it refused, too


def test_a_deletion_mapping_without_irreversible_stops_the_run(
    emulator: Emulator, tmp_path: Path
) -> None:
    streams = {"forget_me": {"object": "deletion"}}
    result = run(emulator, tmp_path, streams, input_text="")

    assert_user_error(result, "streams.forget_me.irreversible", "cannot be undone")
    assert emulator.request_log == []


def test_every_error_of_a_broken_streams_mapping_is_reported(
    emulator: Emulator, tmp_path: Path
) -> None:
    streams = {
        "customers": {"object": "profile", "feilds": {"email": "mail"}},
        "orders": {"object": "event"},
        "vip": {"object": "list"},
        "misc": {"object": "profil"},
    }

    result = run(emulator, tmp_path, streams)

    assert_user_error(result, "streams.customers", "feilds")
    assert_user_error(result, "streams.orders", "event_name")
    assert_user_error(result, "streams.vip", "list_id")
    assert_user_error(result, "streams.misc", "object")
    assert emulator.request_log == []


def test_unmapped_stream_fails_at_its_schema(emulator: Emulator, tmp_path: Path) -> None:
    lines = (
        singer_lines([state_message({"bookmark": 1})])
        + customers_input(1)
        + singer_lines(
            stream_messages("orders", {"id": INTEGER, "email": STRING}, [{"id": 1}], ["id"])
        )
    )

    result = run(emulator, tmp_path, input_text=lines)

    # SCHEMA of `orders` is line 4: STATE, customers SCHEMA, customers RECORD, orders SCHEMA.
    line = assert_user_error(result, "'orders'", "line 4", "customers")
    assert "no mapping" in line


def test_malformed_input_line_is_named(emulator: Emulator, tmp_path: Path) -> None:
    lines = customers_input(2) + '{"type": "RECORD", "stream": "customers", "record": {\n'

    result = run(emulator, tmp_path, input_text=lines)

    assert_user_error(result, "line 4")


# -- --test-connection and dry_run ----------------------------------------------------------------


def test_test_connection_ok(emulator: Emulator, tmp_path: Path) -> None:
    emulator.store.create_list("VIP", None)
    streams = {**PROFILES, "vip": {"object": "list", "list_name": "VIP"}}

    result = run(
        emulator,
        tmp_path,
        streams,
        input_text="",
        args=("--test-connection",),
        public_api_key=emulator.public_key,
    )

    assert result.exit_code == 0, result.stderr
    assert error_lines(result) == []
    # The key, the public key and the list were all checked.
    assert set(operations(emulator)) == {"get_profiles", "get_accounts", "get_lists"}


def test_dry_run_sends_nothing(emulator: Emulator, tmp_path: Path) -> None:
    streams = {**PROFILES, "vip": {"object": "list", "list_name": "VIP"}}
    lines = customers_input(3) + singer_lines(
        stream_messages("vip", {"id": INTEGER, "email": STRING}, [{"id": 9, "email": "v@x.io"}])
    )

    result = run(emulator, tmp_path, streams, input_text=lines, dry_run=True)

    assert result.exit_code == 0, result.stderr
    assert emulator.request_log == []
    assert (tmp_path / "state" / "dry_run.jsonl").exists()
