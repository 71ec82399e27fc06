"""Subscription streams through the CLI against the emulator: explicit consent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import (
    DATETIME,
    STRING,
    TargetRun,
    base_config,
    run_target,
    singer_lines,
    stream_messages,
)

STREAM = "consents"
PROPERTIES = {"email": STRING, "phone_number": STRING, "consented_at": DATETIME}


def load(
    emulator: Any,
    tmp_path: Path,
    mapping: dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    state: str = "state",
    **settings: Any,
) -> TargetRun:
    config = base_config(emulator, tmp_path / state, {STREAM: mapping}, **settings)
    messages = stream_messages(STREAM, PROPERTIES, rows)
    result = run_target(config, singer_lines(messages), tmp_path)
    assert result.exit_code == 0, result.stderr
    emulator.wait_idle()
    result.assert_accounted()
    return result


def profiles(emulator: Any) -> dict[str, dict[str, Any]]:
    """Profiles by email (or phone number when they have no email)."""
    return {
        profile["attributes"]["email"] or profile["attributes"]["phone_number"]: profile
        for profile in emulator.dump()["profiles"]
    }


def calls(emulator: Any, operation: str) -> list[Any]:
    return [entry for entry in emulator.request_log if entry.operation == operation]


def test_subscribe_email(emulator: Any, tmp_path: Path) -> None:
    result = load(
        emulator,
        tmp_path,
        {"object": "subscription"},
        [{"email": " Ann@Example.com"}, {"email": "bob@example.com"}],
    )

    found = profiles(emulator)
    assert set(found) == {"ann@example.com", "bob@example.com"}
    for profile in found.values():
        marketing = profile["subscriptions"]["email"]["marketing"]
        assert marketing["consent"] == "SUBSCRIBED"
        assert marketing["method_detail"] == "target-klaviyo"
        assert marketing["historical_import"] is False
        assert marketing["list_id"] is None
        # SMS consent is not touched by an email subscription.
        assert profile["subscriptions"]["sms"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
    stats = result.stream(STREAM)
    assert (stats["object"], stats["read"], stats["loaded"]) == ("subscription", 2, 2)
    assert [entry.items for entry in calls(emulator, "bulk_subscribe_profiles")] == [2]


def test_subscribe_sms_with_phone_into_a_list(emulator: Any, tmp_path: Path) -> None:
    list_id = str(emulator.store.create_list("SMS club", None).id)
    load(
        emulator,
        tmp_path,
        {"object": "subscription", "channels": ["sms"], "list_name": "SMS club"},
        [{"phone_number": "(415) 555-2671"}, {"phone_number": "+44 20 7946 0958"}],
        default_phone_region="US",
    )

    found = profiles(emulator)
    assert set(found) == {"+14155552671", "+442079460958"}
    for profile in found.values():
        marketing = profile["subscriptions"]["sms"]["marketing"]
        assert (marketing["consent"], marketing["list_id"]) == ("SUBSCRIBED", list_id)
        assert profile["subscriptions"]["email"]["marketing"]["consent"] == "NEVER_SUBSCRIBED"
        assert profile["lists"] == [list_id]


def test_subscribe_both_channels_with_historical_import(emulator: Any, tmp_path: Path) -> None:
    load(
        emulator,
        tmp_path,
        {
            "object": "subscription",
            "channels": ["email", "sms"],
            "historical_import": True,
            "consented_at_field": "consented_at",
        },
        [
            {
                "email": "ann@example.com",
                "phone_number": "+14155552671",
                "consented_at": "2024-01-15T10:30:00+02:00",
            }
        ],
    )

    subscriptions = profiles(emulator)["ann@example.com"]["subscriptions"]
    for channel in ("email", "sms"):
        marketing = subscriptions[channel]["marketing"]
        assert marketing["consent"] == "SUBSCRIBED"
        assert marketing["historical_import"] is True
        assert marketing["consented_at"].startswith("2024-01-15T08:30:00")


def test_subscribe_without_historical_import_ignores_consented_at(
    emulator: Any, tmp_path: Path
) -> None:
    load(
        emulator,
        tmp_path,
        {"object": "subscription", "consented_at_field": "consented_at"},
        [{"email": "ann@example.com", "consented_at": "2024-01-15T10:30:00Z"}],
    )
    marketing = profiles(emulator)["ann@example.com"]["subscriptions"]["email"]["marketing"]
    # Klaviyo refuses consented_at without historical_import: the receive time applies.
    assert marketing["consent"] == "SUBSCRIBED"
    assert marketing["historical_import"] is False
    assert not marketing["consented_at"].startswith("2024-01-15")


def test_historical_import_rejects_a_missing_or_future_consent_time(
    emulator: Any, tmp_path: Path
) -> None:
    result = load(
        emulator,
        tmp_path,
        {
            "object": "subscription",
            "historical_import": True,
            "consented_at_field": "consented_at",
        },
        [
            {"email": "ann@example.com", "consented_at": "2024-01-15T10:30:00Z"},
            {"email": "bob@example.com", "consented_at": None},
            {"email": "cat@example.com", "consented_at": "2999-01-01T00:00:00Z"},
        ],
    )
    assert set(profiles(emulator)) == {"ann@example.com"}
    assert (result.stream(STREAM)["loaded"], result.stream(STREAM)["rejected"]) == (1, 2)
    reasons = sorted(reject["reason"] for reject in result.rejects())
    assert "is null" in reasons[0] or "is null" in reasons[1]
    assert any("in the future" in reason for reason in reasons)


def test_unsubscribe(emulator: Any, tmp_path: Path) -> None:
    rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    load(emulator, tmp_path, {"object": "subscription"}, rows)
    assert all(
        p["subscriptions"]["email"]["marketing"]["consent"] == "SUBSCRIBED"
        for p in profiles(emulator).values()
    )

    result = load(
        emulator,
        tmp_path,
        {"object": "subscription", "behavior": "unsubscribe"},
        rows[:1],
    )
    found = profiles(emulator)
    assert found["ann@example.com"]["subscriptions"]["email"]["marketing"]["consent"] == (
        "UNSUBSCRIBED"
    )
    assert found["bob@example.com"]["subscriptions"]["email"]["marketing"]["consent"] == (
        "SUBSCRIBED"
    )
    assert result.stream(STREAM)["loaded"] == 1
    assert [entry.items for entry in calls(emulator, "bulk_unsubscribe_profiles")] == [1]

    # Subscribing again after the unsubscribe is sent, not skipped as unchanged.
    again = load(emulator, tmp_path, {"object": "subscription"}, rows[:1])
    assert again.stream(STREAM)["loaded"] == 1
    assert profiles(emulator)["ann@example.com"]["subscriptions"]["email"]["marketing"][
        "consent"
    ] == ("SUBSCRIBED")


def test_unchanged_subscriptions_are_skipped(emulator: Any, tmp_path: Path) -> None:
    rows = [{"email": "ann@example.com"}, {"email": "bob@example.com"}]
    load(emulator, tmp_path, {"object": "subscription"}, rows)
    again = load(emulator, tmp_path, {"object": "subscription"}, rows)
    assert (again.stream(STREAM)["loaded"], again.stream(STREAM)["unchanged"]) == (0, 2)
    assert len(calls(emulator, "bulk_subscribe_profiles")) == 1


def test_requests_are_cut_at_klaviyo_item_limits(emulator: Any, tmp_path: Path) -> None:
    rows = [{"email": f"p{i:04d}@example.com"} for i in range(2_500)]
    subscribed = load(emulator, tmp_path, {"object": "subscription"}, rows)
    assert subscribed.stream(STREAM)["loaded"] == 2_500
    assert sorted(e.items for e in calls(emulator, "bulk_subscribe_profiles")) == [
        500,
        1_000,
        1_000,
    ]

    unsubscribed = load(
        emulator, tmp_path, {"object": "subscription", "behavior": "unsubscribe"}, rows[:250]
    )
    assert unsubscribed.stream(STREAM)["loaded"] == 250
    assert sorted(e.items for e in calls(emulator, "bulk_unsubscribe_profiles")) == [50, 100, 100]
    consents = [
        p["subscriptions"]["email"]["marketing"]["consent"] for p in profiles(emulator).values()
    ]
    assert consents.count("UNSUBSCRIBED") == 250
    assert consents.count("SUBSCRIBED") == 2_250


def test_records_without_a_usable_identifier_are_rejected(emulator: Any, tmp_path: Path) -> None:
    result = load(
        emulator,
        tmp_path,
        {"object": "subscription", "channels": ["email", "sms"]},
        [
            {"email": "ann@example.com", "phone_number": "+14155552671"},
            {"email": None, "phone_number": "  "},
            {"email": "bob@example.com"},  # sms needs a phone number
            {"email": "not an email", "phone_number": "+14155552672"},
        ],
    )
    assert set(profiles(emulator)) == {"ann@example.com"}
    stats = result.stream(STREAM)
    assert (stats["read"], stats["loaded"], stats["rejected"]) == (4, 1, 3)
    reasons = [reject["reason"] for reject in result.rejects()]
    assert "subscriptions need email or phone_number" in reasons
    assert "an sms subscription needs a phone_number" in reasons
    assert any("is not a valid address" in reason for reason in reasons)
    assert all(reject["stream"] == STREAM for reject in result.rejects())


def test_a_row_klaviyo_refuses_is_rejected_and_the_rest_resent(
    emulator: Any, tmp_path: Path
) -> None:
    # Klaviyo refuses an SMS consent for a region the account cannot send to.
    emulator.expect_violations(1)
    result = load(
        emulator,
        tmp_path,
        {"object": "subscription", "channels": ["sms"]},
        [{"phone_number": "+14155552671"}, {"phone_number": "+8613800138000"}],
    )
    assert set(profiles(emulator)) == {"+14155552671"}
    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (1, 1)
    [reject] = result.rejects()
    assert reject["reason"].startswith("Klaviyo: ")
    assert [e.items for e in calls(emulator, "bulk_subscribe_profiles")] == [2, 1]
