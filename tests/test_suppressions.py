"""Suppression streams through the CLI against the emulator: bulk suppress and unsuppress jobs,
settled per email by what Klaviyo shows afterwards."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import requests

from target_klaviyo.klaviyo.operations import OPERATIONS, L
from tests.emulator import Emulator
from tests.support import (
    STRING,
    TargetRun,
    base_config,
    run_target,
    singer_lines,
    stream_messages,
)

STREAM = "do_not_contact"
PROPERTIES = {"email": STRING, "note": STRING}
SCHEMAS = Path(__file__).parent / "emulator" / "klaviyo_schemas.json"
PAST = "2020-01-01T00:00:00+00:00"


def load(
    emulator: Emulator,
    tmp_path: Path,
    rows: list[dict[str, Any]],
    mapping: dict[str, Any] | None = None,
    **settings: Any,
) -> TargetRun:
    streams = {STREAM: mapping or {"object": "suppression"}}
    config = base_config(emulator, tmp_path / "state", streams, **settings)
    result = run_target(config, singer_lines(stream_messages(STREAM, PROPERTIES, rows)), tmp_path)
    assert result.exit_code == 0, result.stderr
    assert emulator.wait_idle()
    result.assert_accounted()
    return result


def by_email(emulator: Emulator) -> dict[str, dict[str, Any]]:
    return {p["attributes"]["email"]: p for p in emulator.dump()["profiles"]}


def shown_suppressions(emulator: Emulator, email: str) -> list[str]:
    """The reasons Klaviyo shows under subscriptions.email.marketing.suppression."""
    response = emulator_get(
        emulator,
        "/api/profiles",
        {"filter": f'equals(email,"{email}")', "additional-fields[profile]": "subscriptions"},
    )
    (profile,) = response["data"]
    marketing = profile["attributes"]["subscriptions"]["email"]["marketing"]
    return [entry["reason"] for entry in marketing["suppression"]]


def emulator_get(emulator: Emulator, path: str, params: dict[str, str]) -> dict[str, Any]:
    response = requests.get(
        emulator.base_url + path,
        params=params,
        headers={
            "Authorization": f"Klaviyo-API-Key {emulator.private_key}",
            "revision": "2026-07-15",
        },
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def calls(emulator: Emulator, operation: str) -> list[Any]:
    return [entry for entry in emulator.request_log if entry.operation == operation]


def test_operations_have_the_spec_tiers_and_scopes() -> None:
    derived = json.loads(SCHEMAS.read_text())["operations"]
    for name in (
        "bulk_suppress_profiles",
        "bulk_unsuppress_profiles",
        "get_bulk_suppress_profiles_jobs",
        "get_bulk_suppress_profiles_job",
        "get_bulk_unsuppress_profiles_jobs",
        "get_bulk_unsuppress_profiles_job",
    ):
        operation = OPERATIONS[name]
        assert operation.tier == L
        spec = derived[name]
        assert (operation.method, operation.scopes) == (spec["method"], tuple(spec["scopes"]))
        assert operation.path == spec["path"].replace("{job_id}", "{id}")
        assert spec["rate_limit"] == {"burst": 75, "steady": 750}


def test_suppress_emails_in_requests_of_100_without_touching_lists_or_consent(
    emulator: Emulator, tmp_path: Path
) -> None:
    newsletter = emulator.store.create_list("Newsletter", None)
    emulator.store.upsert({"email": "member@example.com"}, stamp=PAST)
    member = by_email(emulator)["member@example.com"]
    newsletter.add(member["id"], PAST)
    emulator.store.profiles[member["id"]].subscriptions["email"] = {
        "marketing": {"consent": "SUBSCRIBED", "last_updated": PAST}
    }
    rows = [{"email": f" User{i}@Example.com "} for i in range(249)]
    rows += [{"email": "member@example.com"}, {"email": "not-an-email"}, {"email": None}]

    result = load(emulator, tmp_path, rows)

    stats = result.stream(STREAM)
    assert (stats["object"], stats["read"], stats["loaded"], stats["rejected"]) == (
        "suppression",
        252,
        250,
        2,
    )
    reasons = sorted(reject["reason"] for reject in result.rejects())
    assert reasons == [
        "a suppression needs an email (column 'email' is empty)",
        "email 'not-an-email' is not a valid address",
    ]
    assert sorted(entry.items for entry in calls(emulator, "bulk_suppress_profiles")) == [
        50,
        100,
        100,
    ]
    profiles = by_email(emulator)
    assert "user0@example.com" in profiles and "User0@Example.com" not in profiles
    assert shown_suppressions(emulator, "user7@example.com") == ["USER_SUPPRESSED"]
    assert shown_suppressions(emulator, "member@example.com") == ["USER_SUPPRESSED"]
    # Suppression never touches list membership or consent.
    member = profiles["member@example.com"]
    assert member["lists"] == [newsletter.id]
    assert member["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"


def test_an_email_suppressed_before_is_unchanged(emulator: Emulator, tmp_path: Path) -> None:
    emulator.suppress("old@example.com", "USER_SUPPRESSED", PAST)

    result = load(emulator, tmp_path, [{"email": "old@example.com"}, {"email": "new@example.com"}])

    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["unchanged"]) == (1, 1)
    assert any("already suppressed (1)" in note for note in result.summary["notes"])


def test_unsuppress_lifts_only_user_suppressed_and_says_why_the_rest_stay(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.suppress("lifted@example.com", "USER_SUPPRESSED", PAST)
    emulator.suppress("bounced@example.com", "HARD_BOUNCE", PAST)
    emulator.suppress("both@example.com", "USER_SUPPRESSED", PAST)
    emulator.suppress("both@example.com", "INVALID_EMAIL", PAST)
    rows = [
        {"email": "lifted@example.com"},
        {"email": "bounced@example.com"},
        {"email": "both@example.com"},
        {"email": "nobody@example.com"},
    ]

    result = load(emulator, tmp_path, rows, {"object": "suppression", "behavior": "unsuppress"})

    stats = result.stream(STREAM)
    # An email that stays suppressed for another reason is unchanged, with the reason (its
    # USER_SUPPRESSED, if any, is lifted all the same).
    assert (stats["read"], stats["loaded"], stats["unchanged"]) == (4, 1, 3)
    assert shown_suppressions(emulator, "lifted@example.com") == []
    assert shown_suppressions(emulator, "bounced@example.com") == ["HARD_BOUNCE"]
    assert shown_suppressions(emulator, "both@example.com") == ["INVALID_EMAIL"]
    (note,) = [n for n in result.summary["notes"] if "unsuppress" in n]
    assert "still suppressed for HARD_BOUNCE (unsuppress lifts only USER_SUPPRESSED) (1)" in note
    assert "still suppressed for INVALID_EMAIL (unsuppress lifts only USER_SUPPRESSED) (1)" in note
    assert "Klaviyo has no profile with this email (1)" in note
    assert len(calls(emulator, "bulk_unsuppress_profiles")) == 1


def test_a_second_run_sends_nothing_unchanged(emulator: Emulator, tmp_path: Path) -> None:
    rows = [{"email": "a@example.com"}, {"email": "b@example.com"}]
    load(emulator, tmp_path, rows)

    again = load(emulator, tmp_path, rows)

    assert again.stream(STREAM)["unchanged"] == 2
    assert len(calls(emulator, "bulk_suppress_profiles")) == 1


@pytest.mark.emulator(window_scale=0.01)
def test_refused_requests_go_on_hold_and_are_replayed(emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_fault("503", "bulk_suppress_profiles", count=None)
    rows = [{"email": "a@example.com"}, {"email": "b@example.com"}]

    first = load(emulator, tmp_path, rows, max_retries=0)

    assert first.stream(STREAM)["on_hold"] == 2
    emulator.clear_faults()
    second = load(emulator, tmp_path, [])
    stats = second.stream(STREAM)
    assert (stats["replayed"], stats["loaded"]) == (2, 2)
    assert shown_suppressions(emulator, "a@example.com") == ["USER_SUPPRESSED"]


def test_dry_run_plans_the_requests(emulator: Emulator, tmp_path: Path) -> None:
    streams = {STREAM: {"object": "suppression"}}
    config = base_config(emulator, tmp_path / "state", streams, dry_run=True)
    rows = [{"email": "a@example.com"}]
    result = run_target(config, singer_lines(stream_messages(STREAM, PROPERTIES, rows)), tmp_path)

    assert result.exit_code == 0, result.stderr
    plan = [
        json.loads(line) for line in (tmp_path / "state" / "dry_run.jsonl").read_text().splitlines()
    ]
    assert [(line["operation"], line["items"]) for line in plan] == [("bulk_suppress_profiles", 1)]
    assert plan[0]["body"]["data"]["attributes"]["profiles"]["data"][0]["attributes"] == {
        "email": "a@example.com"
    }
    assert emulator.request_log == []


def test_test_connection_names_the_missing_scope(emulator: Emulator, tmp_path: Path) -> None:
    emulator.add_key("pk_profiles_only_2222", {"profiles:read", "profiles:write"})
    streams = {STREAM: {"object": "suppression", "behavior": "unsuppress"}}
    config = base_config(
        emulator, tmp_path / "state", streams, private_api_key="pk_profiles_only_2222"
    )

    result = run_target(config, "", tmp_path, args=("--test-connection",))

    assert result.exit_code == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "| ERROR" in line]
    assert len(errors) == 1 and "subscriptions:read" in errors[0], result.stderr
    assert "pk_profiles_only_2222" not in result.stderr


def test_unsuppress_outcome_does_not_depend_on_the_other_emails_of_the_job(
    emulator: Emulator, tmp_path: Path
) -> None:
    emulator.suppress("both@example.com", "USER_SUPPRESSED", PAST)
    emulator.suppress("both@example.com", "INVALID_EMAIL", PAST)
    mapping = {"object": "suppression", "behavior": "unsuppress"}

    result = load(emulator, tmp_path, [{"email": "both@example.com"}], mapping)

    # Klaviyo lifted USER_SUPPRESSED and skipped nothing; the email stays suppressed all the same.
    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["unchanged"]) == (0, 1)
    assert shown_suppressions(emulator, "both@example.com") == ["INVALID_EMAIL"]
    assert any("still suppressed for INVALID_EMAIL" in note for note in result.summary["notes"])
