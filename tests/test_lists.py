"""List streams through the CLI against the emulator: insert, delete and mirror membership."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.support import (
    STRING,
    TargetRun,
    activate_version_message,
    base_config,
    record_message,
    run_target,
    schema_message,
    singer_lines,
    stream_messages,
)

STREAM = "audience"
PROPERTIES = {
    "email": STRING,
    "phone_number": STRING,
    "external_id": STRING,
    "first_name": STRING,
}


def person(name: str, **extra: Any) -> dict[str, Any]:
    return {"email": f"{name}@example.com", "first_name": name.title(), **extra}


def make_list(emulator: Any, name: str = "VIP") -> str:
    return str(emulator.store.create_list(name, None).id)


def load(
    emulator: Any,
    tmp_path: Path,
    mapping: dict[str, Any],
    messages: list[dict[str, Any]],
    *,
    state: str = "state",
    **settings: Any,
) -> TargetRun:
    """One run of the target; every record accounted for, Klaviyo's queued work applied."""
    config = base_config(emulator, tmp_path / state, {STREAM: mapping}, **settings)
    result = run_target(config, singer_lines(messages), tmp_path)
    assert result.exit_code == 0, result.stderr
    emulator.wait_idle()
    result.assert_accounted()
    return result


def records(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    return stream_messages(STREAM, PROPERTIES, rows)


def members(emulator: Any, list_id: str) -> set[str]:
    """The list's members, by email (or external_id for profiles without one)."""
    state = emulator.dump()
    by_id = {profile["id"]: profile["attributes"] for profile in state["profiles"]}
    return {
        by_id[pid]["email"] or f"external_id:{by_id[pid]['external_id']}"
        for pid in state["lists"][list_id]["members"]
    }


def consent(emulator: Any) -> dict[str, Any]:
    return {
        profile["attributes"]["email"]: profile["subscriptions"]
        for profile in emulator.dump()["profiles"]
    }


def calls(emulator: Any, operation: str) -> list[Any]:
    return [entry for entry in emulator.request_log if entry.operation == operation]


def lookups(emulator: Any) -> list[Any]:
    """get_profiles calls that resolve identities (not the start-up key check)."""
    return [entry for entry in calls(emulator, "get_profiles") if "filter=" in entry.query]


def emails(*names: str) -> set[str]:
    return {f"{name}@example.com" for name in names}


# -- insert ---------------------------------------------------------------------------------


def test_insert_upserts_and_adds_in_one_job(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    other = make_list(emulator, "Other")
    result = load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id},
        records(person("ann"), person("bob"), person("cat")),
    )

    assert members(emulator, list_id) == emails("ann", "bob", "cat")
    assert members(emulator, other) == set()
    names = {
        p["attributes"]["email"]: p["attributes"]["first_name"] for p in emulator.dump()["profiles"]
    }
    assert names == {"ann@example.com": "Ann", "bob@example.com": "Bob", "cat@example.com": "Cat"}
    stats = result.stream(STREAM)
    assert (stats["object"], stats["read"], stats["loaded"]) == ("list", 3, 3)
    # One bulk import job both upserted and added; no separate membership call.
    assert len(calls(emulator, "bulk_import_profiles")) == 1
    assert calls(emulator, "add_profiles_to_list") == []


def test_insert_rejects_a_record_without_identifier(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    result = load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id},
        records(person("ann"), {"first_name": "Nobody"}),
    )

    assert members(emulator, list_id) == emails("ann")
    stats = result.stream(STREAM)
    assert (stats["loaded"], stats["rejected"]) == (1, 1)
    [reject] = result.rejects()
    assert "no usable identifier" in reject["reason"]


def test_list_operations_leave_consent_alone(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    subscribed = load(
        emulator,
        tmp_path,
        {"object": "subscription"},
        stream_messages(STREAM, {"email": STRING}, [{"email": "ann@example.com"}]),
        state="subscribe",
    )
    assert subscribed.stream(STREAM)["loaded"] == 1
    before = consent(emulator)
    assert before["ann@example.com"]["email"]["marketing"]["consent"] == "SUBSCRIBED"

    load(emulator, tmp_path, {"object": "list", "list_id": list_id}, records(person("ann")))
    assert members(emulator, list_id) == emails("ann")
    assert consent(emulator) == before

    load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id, "behavior": "delete"},
        records({"email": "ann@example.com"}),
    )
    assert members(emulator, list_id) == set()
    assert consent(emulator) == before


# -- delete ---------------------------------------------------------------------------------


def test_delete_removes_members_and_counts_unknown_identities_unchanged(
    emulator: Any, tmp_path: Path
) -> None:
    list_id = make_list(emulator)
    load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id},
        records(
            person("ann"),
            person("bob"),
            person("cat"),
            person("dan", external_id="cust-4"),
            {"phone_number": "+14155552671", "external_id": "cust-5"},
        ),
    )
    assert members(emulator, list_id) == {*emails("ann", "bob", "cat", "dan"), "external_id:cust-5"}
    before = len(emulator.request_log)

    result = load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id, "behavior": "delete"},
        records(
            {"email": "BOB@example.com "},  # normalised like every email
            {"email": "zed@example.com"},  # unknown to Klaviyo
            {"external_id": "cust-4"},  # resolved by external_id
            {"phone_number": "+1 415 555 2671"},  # resolved by phone_number
            {"first_name": "no identifier"},
        ),
    )

    assert members(emulator, list_id) == emails("ann", "cat")
    assert {p["attributes"]["email"] for p in emulator.dump()["profiles"]} >= emails("bob", "dan")
    stats = result.stream(STREAM)
    assert (stats["read"], stats["loaded"], stats["unchanged"], stats["rejected"]) == (5, 3, 1, 1)
    log = emulator.request_log[before:]
    removals = [entry for entry in log if entry.operation == "remove_profiles_from_list"]
    assert [entry.items for entry in removals] == [3]
    assert not [entry for entry in log if entry.operation == "bulk_import_profiles"]
    # One lookup per identifier type, each with at most 100 values per page.
    filters = [
        entry.query
        for entry in log
        if entry.operation == "get_profiles" and "filter=" in entry.query
    ]
    assert len(filters) == 3
    assert all("page%5Bsize%5D=100" in query or "page[size]=100" in query for query in filters)


def test_delete_is_never_skipped_and_a_removed_member_can_come_back(
    emulator: Any, tmp_path: Path
) -> None:
    list_id = make_list(emulator)
    insert = {"object": "list", "list_id": list_id}
    delete = {"object": "list", "list_id": list_id, "behavior": "delete"}
    load(emulator, tmp_path, insert, records(person("ann"), person("bob")))
    load(emulator, tmp_path, delete, records({"email": "ann@example.com"}))
    assert members(emulator, list_id) == emails("bob")

    # The same insert again: bob is unchanged, ann was removed and is added again.
    again = load(emulator, tmp_path, insert, records(person("ann"), person("bob")))
    assert members(emulator, list_id) == emails("ann", "bob")
    assert (again.stream(STREAM)["loaded"], again.stream(STREAM)["unchanged"]) == (1, 1)

    # A delete is always resolved and sent, even when the same record was sent before.
    load(emulator, tmp_path, delete, records({"email": "ann@example.com"}))
    assert members(emulator, list_id) == emails("bob")
    emulator.store.lists[list_id].add(
        next(
            p["id"]
            for p in emulator.dump()["profiles"]
            if p["attributes"]["email"] == "ann@example.com"
        ),
        "2026-01-01T00:00:00+00:00",
    )
    repeat = load(emulator, tmp_path, delete, records({"email": "ann@example.com"}))
    assert repeat.stream(STREAM)["loaded"] == 1
    assert members(emulator, list_id) == emails("bob")


def test_filter_values_with_quotes_and_backslashes(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    tricky = 'cust "7" \\ back,slash]'
    load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id},
        records(person("ann"), {"external_id": tricky}, {"external_id": "cust-8"}),
    )
    assert members(emulator, list_id) == {
        *emails("ann"),
        f"external_id:{tricky}",
        "external_id:cust-8",
    }

    result = load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id, "behavior": "delete"},
        records({"external_id": tricky}),
    )
    assert members(emulator, list_id) == {*emails("ann"), "external_id:cust-8"}
    assert result.stream(STREAM)["loaded"] == 1


def test_delete_resolves_more_than_a_hundred_identities(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    people = [person(f"p{i:03d}") for i in range(250)]
    load(emulator, tmp_path, {"object": "list", "list_id": list_id}, records(*people))
    assert len(members(emulator, list_id)) == 250
    before = len(emulator.request_log)

    result = load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": list_id, "behavior": "delete"},
        records(*({"email": p["email"]} for p in people[:240])),
    )
    assert members(emulator, list_id) == {p["email"] for p in people[240:]}
    assert result.stream(STREAM)["loaded"] == 240
    log = emulator.request_log[before:]
    assert len([e for e in log if e.operation == "get_profiles" and "filter=" in e.query]) == 3
    assert [e.items for e in log if e.operation == "remove_profiles_from_list"] == [240]


# -- list_name and create_list -------------------------------------------------------------


def test_list_name_is_resolved_at_start_up(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator, "Newsletter")
    make_list(emulator, "Newsletter 2")
    load(
        emulator,
        tmp_path,
        {"object": "list", "list_name": "Newsletter"},
        records(person("ann")),
    )
    assert members(emulator, list_id) == emails("ann")
    assert calls(emulator, "create_list") == []


def test_create_list_creates_a_missing_list_once(emulator: Any, tmp_path: Path) -> None:
    mapping = {"object": "list", "list_name": "Winback", "create_list": True}
    load(emulator, tmp_path, mapping, records(person("ann")))
    load(emulator, tmp_path, mapping, records(person("bob")))

    lists = {item["name"]: list_id for list_id, item in emulator.dump()["lists"].items()}
    assert list(lists) == ["Winback"]
    assert members(emulator, lists["Winback"]) == emails("ann", "bob")
    assert len(calls(emulator, "create_list")) == 1


def test_missing_list_name_without_create_list_fails_clearly(emulator: Any, tmp_path: Path) -> None:
    config = base_config(
        emulator, tmp_path / "state", {STREAM: {"object": "list", "list_name": "Nope"}}
    )
    result = run_target(config, singer_lines(records(person("ann"))), tmp_path)
    assert result.exit_code != 0
    assert "no list named 'Nope'" in result.stderr
    assert "Traceback" not in result.stderr


# -- mirror ---------------------------------------------------------------------------------


def full_sync(version: int, *rows: dict[str, Any]) -> list[dict[str, Any]]:
    """A tap's full-table sync: ACTIVATE_VERSION, the records, ACTIVATE_VERSION."""
    return [
        schema_message(STREAM, PROPERTIES),
        activate_version_message(STREAM, version),
        *(record_message(STREAM, row, version) for row in rows),
        activate_version_message(STREAM, version),
    ]


def notes(result: TargetRun) -> list[str]:
    return list(result.summary.get("notes", []))


def test_mirror_over_two_runs_with_activate_version(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    outsider = make_list(emulator, "Outsider")
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_max_removal_ratio": 1,
    }
    # A member added by someone else is not the target's to remove.
    load(
        emulator,
        tmp_path,
        {"object": "list", "list_id": outsider},
        records(person("eve")),
        state="other",
    )
    eve = next(
        p["id"]
        for p in emulator.dump()["profiles"]
        if p["attributes"]["email"] == "eve@example.com"
    )
    emulator.store.lists[list_id].add(eve, "2026-01-01T00:00:00+00:00")

    first = load(
        emulator, tmp_path, mapping, full_sync(1, person("ann"), person("bob"), person("cat"))
    )
    assert members(emulator, list_id) == emails("ann", "bob", "cat", "eve")
    assert first.stream(STREAM)["loaded"] == 3
    assert calls(emulator, "remove_profiles_from_list") == []

    second = load(
        emulator, tmp_path, mapping, full_sync(2, person("ann"), person("bob"), person("dan"))
    )
    assert members(emulator, list_id) == emails("ann", "bob", "dan", "eve")
    stats = second.stream(STREAM)
    # Removals are not records: read counts the three records of the pass only.
    assert (stats["read"], stats["loaded"], stats["unchanged"]) == (3, 1, 2)
    assert any("removed 1 members" in note for note in notes(second)), notes(second)
    assert "removed 1 members" in second.stderr

    # A removed member that comes back is added again (not skipped as unchanged).
    third = load(
        emulator,
        tmp_path,
        mapping,
        full_sync(3, person("ann"), person("bob"), person("cat"), person("dan")),
    )
    assert members(emulator, list_id) == emails("ann", "bob", "cat", "dan", "eve")
    assert (third.stream(STREAM)["loaded"], third.stream(STREAM)["unchanged"]) == (1, 3)


def test_mirror_two_passes_in_one_input(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_max_removal_ratio": 1,
    }
    messages = full_sync(1, person("ann"), person("bob"), person("cat"))
    messages += full_sync(2, person("ann"), person("bob"), person("dan"))[1:]
    result = load(emulator, tmp_path, mapping, messages)
    assert members(emulator, list_id) == emails("ann", "bob", "dan")
    assert result.stream(STREAM)["read"] == 6


def test_mirror_on_end_of_stream(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_on": "end_of_stream",
        "mirror_max_removal_ratio": 1,
    }
    load(emulator, tmp_path, mapping, records(person("ann"), person("bob"), person("cat")))
    assert members(emulator, list_id) == emails("ann", "bob", "cat")

    # ACTIVATE_VERSION does not end a pass here: only the end of the stream does.
    messages = records(person("ann"), person("bob"))
    messages.insert(2, activate_version_message(STREAM, 7))
    messages.append(record_message(STREAM, person("dan")))
    result = load(emulator, tmp_path, mapping, messages)
    assert members(emulator, list_id) == emails("ann", "bob", "dan")
    assert any("removed 1 members" in note for note in notes(result))


def test_mirror_without_a_pass_end_removes_nothing(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_max_removal_ratio": 1,
    }
    load(emulator, tmp_path, mapping, full_sync(1, person("ann"), person("bob")))
    # An incremental run: records but no closing ACTIVATE_VERSION.
    load(emulator, tmp_path, mapping, records(person("cat")))
    # Only the tap's start-of-sync marker: no records, so no pass to complete.
    load(
        emulator,
        tmp_path,
        mapping,
        [schema_message(STREAM, PROPERTIES), activate_version_message(STREAM, 3)],
    )
    assert members(emulator, list_id) == emails("ann", "bob", "cat")
    assert calls(emulator, "remove_profiles_from_list") == []


def test_mirror_guard_removes_nothing_when_too_many_are_missing(
    emulator: Any, tmp_path: Path
) -> None:
    list_id = make_list(emulator)
    mapping = {"object": "list", "list_id": list_id, "behavior": "mirror"}
    everyone = [person(name) for name in ("ann", "bob", "cat", "dan", "eve")]
    load(emulator, tmp_path, mapping, full_sync(1, *everyone))

    result = load(emulator, tmp_path, mapping, full_sync(2, person("ann")))
    assert members(emulator, list_id) == emails("ann", "bob", "cat", "dan", "eve")
    assert calls(emulator, "remove_profiles_from_list") == []
    [note] = notes(result)
    assert "4 of 5 tracked members (80%) missing from this pass" in note
    assert "mirror_max_removal_ratio 0.2; nothing removed" in note
    assert "nothing removed" in result.stderr
    assert result.stream(STREAM)["read"] == 1


def test_mirror_dry_run_plans_removals_without_changing_anything(
    emulator: Any, tmp_path: Path
) -> None:
    list_id = make_list(emulator)
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_max_removal_ratio": 1,
    }
    load(emulator, tmp_path, mapping, full_sync(1, person("ann"), person("bob"), person("cat")))
    sent = len(emulator.request_log)

    config = base_config(emulator, tmp_path / "state", {STREAM: mapping}, dry_run=True)
    dry = run_target(config, singer_lines(full_sync(2, person("ann"), person("bob"))), tmp_path)
    assert dry.exit_code == 0, dry.stderr
    assert len(emulator.request_log) == sent
    assert "1 tracked members missing from this pass would be removed" in dry.stderr
    assert members(emulator, list_id) == emails("ann", "bob", "cat")

    # The dry run left the ledger as it was: the real pass removes cat.
    load(emulator, tmp_path, mapping, full_sync(2, person("ann"), person("bob")))
    assert members(emulator, list_id) == emails("ann", "bob")


def test_mirror_accepts_a_fractional_removal_ratio(emulator: Any, tmp_path: Path) -> None:
    list_id = make_list(emulator)
    mapping = {
        "object": "list",
        "list_id": list_id,
        "behavior": "mirror",
        "mirror_max_removal_ratio": 0.5,
    }
    load(emulator, tmp_path, mapping, full_sync(1, person("ann"), person("bob"), person("cat")))
    result = load(emulator, tmp_path, mapping, full_sync(2, person("ann"), person("bob")))
    assert members(emulator, list_id) == emails("ann", "bob")
    assert any("removed 1 members" in note for note in notes(result))
