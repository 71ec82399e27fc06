"""A record that does not match its stream's schema is rejected with the reason; the run goes on."""

from __future__ import annotations

import random
from decimal import Decimal
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


# Records of a stream without stream maps skip singer-sdk's per-record path; with a stream map
# they take it. Either way an invalid record is rejected with the reason.
PATHS = {"direct": {}, "singer-sdk": {"stream_maps": {"customers": {"source": "'warehouse'"}}}}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("validate_records", [True, False])
def test_invalid_records_are_rejected_not_fatal(
    emulator: Any, tmp_path: Path, validate_records: bool, path: str
) -> None:
    config = base_config(
        emulator,
        tmp_path / "state",
        {"customers": {"object": "profile", "fields": {"external_id": "id"}}},
        validate_records=validate_records,
        **PATHS[path],
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


# -- the per-shape shortcut agrees with the full validator --------------------------------------

_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    7,
    -(2**70),
    1.5,
    Decimal("2.25"),
    Decimal("3"),
    "",
    "text",
    "2026-01-01T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-01-01",
    "12:30:00",
    {"a": 1},
    [1, "x"],
]
_TYPES = ["string", "integer", "number", "boolean", "null", "object", "array"]


def _random_column(rng: random.Random) -> dict[str, Any]:
    roll = rng.random()
    if roll < 0.1:
        return {}  # any value
    if roll < 0.2:
        return {"type": rng.choice(_TYPES), "minimum": 1}  # more than types: the full check
    kinds = rng.sample(_TYPES, rng.randint(1, 3))
    column: dict[str, Any] = {"type": kinds[0] if len(kinds) == 1 and rng.random() < 0.5 else kinds}
    if rng.random() < 0.4:
        column["format"] = rng.choice(["date-time", "date", "time", "email"])
    if rng.random() < 0.2:
        column["description"] = "a column"
    return column


def test_the_shape_shortcut_agrees_with_fastjsonschema() -> None:
    """Records of schemas that only constrain types are judged per shape; the verdict must be
    fastjsonschema's on every record, and a failure must carry fastjsonschema's reason."""
    import fastjsonschema

    from target_klaviyo.records.validation import DATE_FORMATS, RecordCheck, TypeShapes

    rng = random.Random(20261129)
    shortcuts = 0
    for _ in range(300):
        names = [f"c{i}" for i in range(rng.randint(1, 6))]
        schema: dict[str, Any] = {
            "type": "object",
            "properties": {name: _random_column(rng) for name in names},
        }
        if rng.random() < 0.3:
            schema["required"] = rng.sample(names, rng.randint(1, len(names)))
        if rng.random() < 0.3:
            schema["additionalProperties"] = False
        validator = RecordCheck(schema)
        shortcuts += TypeShapes.of(schema) is not None
        reference = fastjsonschema.compile(
            {
                **schema,
                "properties": {
                    name: {k: v for k, v in column.items() if k != "format" or v != "email"}
                    for name, column in schema["properties"].items()
                },
            },
            formats=DATE_FORMATS,
        )
        for _ in range(40):
            record = {name: rng.choice(_VALUES) for name in [*names, "extra"] if rng.random() < 0.8}
            for _ in range(2):  # the second time, the shape's verdict is a lookup
                try:
                    reference(record)
                    expected = None
                except fastjsonschema.JsonSchemaValueException as exc:
                    expected = f"does not match the stream's schema: {exc.message}"
                failure = validator.check(record)
                assert (failure[0] if failure else None) == expected, (schema, record)
    assert shortcuts > 150  # most of these schemas take the shortcut


def test_verdicts_are_kept_per_column_set_beyond_what_is_cached() -> None:
    """Records with many different sets of columns (sparse rows) and value types, more than
    are cached: each is judged on its own columns and values, whichever was seen first."""
    from target_klaviyo.records.validation import RecordCheck

    names = [f"c{i}" for i in range(10)]
    # Even columns hold integers, odd ones strings; nothing else is allowed.
    schema = {
        "type": "object",
        "properties": {
            n: {"type": "integer" if i % 2 == 0 else "string"} for i, n in enumerate(names)
        },
        "additionalProperties": False,
    }
    validator = RecordCheck(schema)
    rng = random.Random(7)
    judged = rejected = 0
    for round_ in range(4):
        for mask in range(1, 1 << len(names)):  # 1,023 column sets
            columns = [n for i, n in enumerate(names) if mask >> i & 1]
            # Every value an integer first (the same types, whatever the columns), then mixed.
            record = {n: 1 if round_ == 0 or rng.random() < 0.5 else "x" for n in columns}
            given = validator.verdicts_of(tuple(record)) if rng.random() < 0.5 else None
            failure = validator.check(record, given)
            wrong = [n for n, v in record.items() if isinstance(v, int) != (int(n[1:]) % 2 == 0)]
            assert (failure is None) == (not wrong), (record, failure)
            if failure is not None:
                assert wrong[0] in failure[0]
                rejected += 1
            judged += 1
    assert judged == 4 * 1023 and 0 < rejected < judged
