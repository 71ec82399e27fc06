"""A record that does not match its stream's schema is rejected with the reason; the run goes on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    DATETIME,
    INTEGER,
    STRING,
    base_config,
    run_target,
    singer_lines,
    stream_messages,
)

SCHEMA = {"id": INTEGER, "email": STRING, "updated": DATETIME}
RECORDS = [
    {"id": 1, "email": "a@example.com", "updated": "2026-01-01T00:00:00Z"},
    {"id": "two", "email": "b@example.com", "updated": "2026-01-01T00:00:00Z"},
    {"id": 3, "email": "c@example.com", "updated": "not a time"},
    {"id": 4, "email": "d@example.com", "updated": "2026-01-02T03:04:05+02:00"},
]


@pytest.mark.parametrize("validate_records", [True, False])
def test_invalid_records_are_rejected_not_fatal(
    emulator: Any, tmp_path: Path, validate_records: bool
) -> None:
    config = base_config(
        emulator,
        tmp_path / "state",
        {"customers": {"object": "profile", "fields": {"external_id": "id"}}},
        validate_records=validate_records,
    )
    run = run_target(
        config, singer_lines(stream_messages("customers", SCHEMA, RECORDS, ["id"])), tmp_path
    )
    assert run.exit_code == 0, run.stderr
    run.assert_accounted()
    assert "Traceback" not in run.stderr
    emulator.wait_idle()
    loaded = {p["attributes"]["email"] for p in emulator.dump()["profiles"]}
    if validate_records:
        assert loaded == {"a@example.com", "d@example.com"}
        reasons = {r["record"]["email"]: r["reason"] for r in run.rejects()}
        assert set(reasons) == {"b@example.com", "c@example.com"}
        assert "id must be integer" in reasons["b@example.com"]
        assert "updated must be date-time" in reasons["c@example.com"]
        # The rejects file keeps the value as received, for the user to fix.
        assert [r["record"]["updated"] for r in run.rejects() if r["record"]["id"] == 3] == [
            "not a time"
        ]
    else:
        # Without validation the rows go out; an unparsable timestamp becomes null.
        assert loaded == {"a@example.com", "b@example.com", "c@example.com", "d@example.com"}
