"""Record mapping: values, identity, profiles, events and subscriptions (no network)."""

from __future__ import annotations

import base64
import enum
import json
import random
import uuid
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from target_klaviyo.mapping import (
    EventMapper,
    Identity,
    ProfileMapper,
    Rejection,
    SubscriptionMapper,
    encode,
    encode_sorted,
    encoded_size,
    normalise_email,
    normalise_external_id,
    normalise_phone,
    record_hash,
    resolve_identity,
    to_json,
)
from target_klaviyo.mapping.values import format_datetime, format_seconds
from target_klaviyo.streams import MappingConfigError, StreamMapping, parse_stream_mappings

UTC = timezone.utc
NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)
SCHEMAS = Path(__file__).parent / "emulator" / "klaviyo_schemas.json"


def stream(obj: str, **raw: Any) -> StreamMapping:
    mapping = parse_stream_mappings({"s": {"object": obj, **raw}}).resolve("s")
    assert mapping is not None
    return mapping


def profile_mapper(columns: list[str] | None = None, region: str | None = None, **raw: Any):
    return ProfileMapper(stream("profile", **raw), columns or [], region)


def event_mapper(
    columns: list[str] | None = None,
    keys: list[str] | None = None,
    region: str | None = None,
    **raw: Any,
) -> EventMapper:
    raw.setdefault("event_name", "Placed Order")
    return EventMapper(stream("event", **raw), columns or [], keys or [], region, now=lambda: NOW)


def subscription_mapper(region: str | None = None, **raw: Any) -> SubscriptionMapper:
    return SubscriptionMapper(stream("subscription", **raw), [], region, now=lambda: NOW)


def reason(excinfo: pytest.ExceptionInfo[Rejection]) -> str:
    return excinfo.value.reason


def body_errors(operation: str, body: Any) -> list[str]:
    """Violations of the official request schema (the emulator validates the same way)."""
    jsonschema = pytest.importorskip("jsonschema")
    if not SCHEMAS.exists():
        pytest.skip("derived Klaviyo schemas not present")
    schema = json.loads(SCHEMAS.read_text())["operations"][operation]["request_schema"]
    validator = jsonschema.Draft7Validator(schema)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(body)]


# -- values --------------------------------------------------------------------------------


class Colour(enum.Enum):
    RED = "red"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("12"), 12),
        (Decimal("12.000"), 12),
        (Decimal("-0"), 0),
        (Decimal("1E+2"), 100),
        (Decimal("12.50"), 12.5),
        (Decimal("NaN"), None),
        (Decimal("Infinity"), None),
        (Decimal("-Infinity"), None),
        (Decimal("1.5E+400"), None),
        (Decimal(2**53), 2**53),
        (Decimal(2**53 + 1), str(2**53 + 1)),
        (2**64 + 3, str(2**64 + 3)),
        (float("nan"), None),
        (float("inf"), None),
        (1.25, 1.25),
        (True, True),
        ("text", "text"),
        (None, None),
        (datetime(2024, 5, 1, 12, 30, 15, 120000, tzinfo=UTC), "2024-05-01T12:30:15.120000+00:00"),
        (datetime(2024, 5, 1, 12, 30, 15), "2024-05-01T12:30:15+00:00"),
        (
            datetime(2024, 5, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
            "2024-05-01T12:00:00+00:00",
        ),
        (date(2024, 5, 1), "2024-05-01"),
        (time(8, 30), "08:30:00"),
        (b"\x00\xffab", base64.b64encode(b"\x00\xffab").decode()),
        (bytearray(b"hi"), "aGk="),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (Colour.RED, "Colour.RED"),
        ((1, Decimal("2.5")), [1, 2.5]),
        ({1: {"a": Decimal("NaN")}}, {"1": {"a": None}}),
        ({"b", "a", "c"}, ["a", "b", "c"]),
    ],
)
def test_to_json_converts_deterministically(value: Any, expected: Any) -> None:
    assert to_json(value) == expected


def test_to_json_nested_record_is_encodable() -> None:
    record = {
        "when": datetime(2024, 1, 1, tzinfo=UTC),
        "items": [{"price": Decimal("9.99"), "raw": b"x", "tags": {"b", "a"}}],
        "nan": Decimal("NaN"),
    }
    converted = to_json(record)
    assert json.loads(encode(converted)) == {
        "when": "2024-01-01T00:00:00+00:00",
        "items": [{"price": 9.99, "raw": "eA==", "tags": ["a", "b"]}],
        "nan": None,
    }


def test_datetimes_are_written_as_isoformat_in_utc() -> None:
    """format_datetime writes what `astimezone(UTC).isoformat()` writes (naive taken as UTC),
    format_seconds the same without the fraction, for random instants and offsets."""
    rng = random.Random(7)
    for _ in range(2000):
        moment = datetime(
            rng.randint(1, 9999),
            rng.randint(1, 12),
            rng.randint(1, 28),
            rng.randint(0, 23),
            rng.randint(0, 59),
            rng.randint(0, 59),
            rng.choice([0, 0, 1, 500_000, rng.randint(0, 999_999)]),
        )
        offset = rng.choice([None, UTC, timezone(timedelta(hours=rng.randint(-12, 12)))])
        if offset is not None:
            moment = moment.replace(tzinfo=offset)
        try:
            utc = (moment if offset is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
        except OverflowError:  # beyond year 1 or 9999 in UTC
            continue
        assert format_datetime(moment) == utc.isoformat()
        assert format_seconds(utc) == utc.replace(microsecond=0).isoformat()


def test_encode_is_compact_and_the_sorted_form_ignores_key_order() -> None:
    assert encode({"a": 1, "b": [1, "é"]}) == '{"a":1,"b":[1,"é"]}'.encode()
    assert encoded_size({"a": "é"}) == len('{"a":"é"}'.encode())
    first = encode_sorted({"a": 1, "b": {"c": 2, "d": 3}})
    assert first == b'{"a":1,"b":{"c":2,"d":3}}'
    assert first == encode_sorted({"b": {"d": 3, "c": 2}, "a": 1})


# -- identity --------------------------------------------------------------------------------


def test_email_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Bob.Smith+tag@Example.COM \n") == "bob.smith+tag@example.com"


@pytest.mark.parametrize(
    "value",
    [
        "bob@",
        "@example.com",
        "bob",
        "bob@example",
        "bob smith@example.com",
        "bob@@example.com",
        "bob@exa mple.com",
        "bob@example..com",
        "bob@.example.com",
        "bob@example.com.",
        "a@b.com,c@d.com",
        "<bob@example.com>",
        "x" * 250 + "@example.com",
        12345,
    ],
)
def test_implausible_email_rejected(value: Any) -> None:
    with pytest.raises(Rejection) as excinfo:
        normalise_email(value)
    assert reason(excinfo).startswith("email ")
    assert "is not a valid address" in reason(excinfo)


@pytest.mark.parametrize(
    ("value", "region", "expected"),
    [
        ("+14155552671", None, "+14155552671"),
        ("+1 (415) 555-2671", None, "+14155552671"),
        ("415-555-2671", "US", "+14155552671"),
        ("(415) 555 2671", "us", "+14155552671"),
        ("+44 20 7183 8750", None, "+442071838750"),
        ("+44 20 7183 8750", "US", "+442071838750"),
        ("020 7183 8750", "GB", "+442071838750"),
        ("00442071838750", None, "+442071838750"),
        ("00442071838750", "GB", "+442071838750"),
        ("00442071838750", "US", "+442071838750"),
        (4155552671, "US", "+14155552671"),
        (Decimal("4155552671"), "US", "+14155552671"),
        ("+15005550006", None, "+15005550006"),
    ],
)
def test_phone_normalised_to_e164(value: Any, region: str | None, expected: str) -> None:
    assert normalise_phone(value, region) == expected


def test_national_phone_without_region_rejected() -> None:
    with pytest.raises(Rejection) as excinfo:
        normalise_phone("415-555-2671", None)
    assert reason(excinfo) == (
        "phone_number '415-555-2671' is not a valid number "
        "(no +country and no default_phone_region)"
    )


@pytest.mark.parametrize("value", ["12345", "+1234", "+1 555", "not a phone", -4155552671, 1.5])
def test_invalid_phone_rejected(value: Any) -> None:
    with pytest.raises(Rejection, match="is not a valid number"):
        normalise_phone(value, "US")


def test_external_id_forms() -> None:
    assert normalise_external_id("  cust-1 ") == "cust-1"
    assert normalise_external_id("   ") is None
    assert normalise_external_id(None) is None
    assert normalise_external_id(42) == "42"
    assert normalise_external_id(Decimal("42.0")) == "42"
    assert normalise_external_id(2**60) == str(2**60)
    with pytest.raises(Rejection, match="single value"):
        normalise_external_id({"a": 1})


def test_identity_key_and_attributes() -> None:
    assert Identity("a@x.com", "+14155552671", "7").key() == "email:a@x.com"
    assert Identity(None, "+14155552671", "7").key() == "phone:+14155552671"
    assert Identity(None, None, "7").key() == "external_id:7"
    assert Identity(None, "+14155552671", None).as_attributes() == {"phone_number": "+14155552671"}


def test_invalid_phone_beside_email_is_dropped_with_warning() -> None:
    identity, warnings = resolve_identity("A@X.com", "12345", None, "US")
    assert identity == Identity("a@x.com", None, None)
    assert warnings == ["phone_number dropped: phone_number '12345' is not a valid number"]


def test_invalid_phone_beside_external_id_is_dropped() -> None:
    identity, warnings = resolve_identity(None, "555", 7, None)
    assert identity == Identity(None, None, "7")
    assert len(warnings) == 1


def test_invalid_phone_alone_rejected() -> None:
    with pytest.raises(Rejection, match="phone_number '555' is not a valid number"):
        resolve_identity(None, "555", None, "US")


def test_invalid_email_rejected_even_with_valid_phone() -> None:
    with pytest.raises(Rejection, match="email 'bob@' is not a valid address"):
        resolve_identity("bob@", "+14155552671", None, None)


def test_no_identifier_rejected() -> None:
    with pytest.raises(Rejection) as excinfo:
        resolve_identity(None, "  ", "", None)
    assert reason(excinfo) == "no usable identifier (email, phone_number or external_id)"


# -- profiles --------------------------------------------------------------------------------


def test_standard_fields_map_without_listing() -> None:
    mapper = profile_mapper(region="US")
    resource = mapper.map(
        {
            "email": " Ann@Example.com",
            "phone_number": "415-555-2671",
            "external_id": 17,
            "first_name": "Ann",
            "last_name": "Lee",
            "organization": "Acme",
            "title": "CTO",
            "image": "https://example.com/a.png",
            "locale": "en-US",
            "city": "Boston",
            "country": "US",
            "zip": "02134",
            "latitude": Decimal("42.36"),
            "longitude": "-71.06",
            "ip": "127.0.0.1",
            "tier": "gold",
        }
    ).resource
    assert resource == {
        "type": "profile",
        "attributes": {
            "email": "ann@example.com",
            "phone_number": "+14155552671",
            "external_id": "17",
            "first_name": "Ann",
            "last_name": "Lee",
            "organization": "Acme",
            "title": "CTO",
            "image": "https://example.com/a.png",
            "locale": "en-US",
            "location": {
                "city": "Boston",
                "country": "US",
                "zip": "02134",
                "latitude": 42.36,
                "longitude": "-71.06",
                "ip": "127.0.0.1",
            },
            "properties": {"tier": "gold"},
        },
    }


def test_fields_map_other_columns_including_dotted_location() -> None:
    mapper = profile_mapper(
        fields={
            "email": "email_address",
            "location.city": "town",
            "region": "state",
            "phone_number": "phone",
            "properties.loyalty": "tier",
        }
    )
    mapped = mapper.map(
        {
            "email_address": "a@x.com",
            "email": "old@x.com",
            "town": "Paris",
            "state": "IDF",
            "phone": "+33 1 42 68 53 00",
            "tier": "gold",
            "city": "ignored: location.city comes from town",
        }
    )
    assert mapped.resource["attributes"] == {
        "email": "a@x.com",
        "phone_number": "+33142685300",
        "location": {"city": "Paris", "region": "IDF"},
        "properties": {"loyalty": "gold"},
    }


def test_phone_column_is_not_magic() -> None:
    mapped = profile_mapper().map({"email": "a@x.com", "phone": "+14155552671"})
    assert "phone_number" not in mapped.resource["attributes"]
    assert mapped.resource["attributes"]["properties"] == {"phone": "+14155552671"}


def test_properties_all_skips_metadata_and_includes_extra_columns() -> None:
    mapper = profile_mapper(["email", "plan", "_sdc_extracted_at"])
    mapped = mapper.map(
        {
            "email": "a@x.com",
            "plan": "pro",
            "_sdc_extracted_at": datetime(2024, 1, 1, tzinfo=UTC),
            "_sdc_batched_at": "x",
            "surprise": 1,
        }
    )
    assert mapped.resource["attributes"]["properties"] == {"plan": "pro", "surprise": 1}


def test_properties_list_and_empty() -> None:
    record = {"email": "a@x.com", "plan": "pro", "seats": 3, "notes": "x"}
    listed = profile_mapper(properties=["plan", "seats", "absent"]).map(record)
    assert listed.resource["attributes"]["properties"] == {"plan": "pro", "seats": 3}
    none = profile_mapper(properties=[], fields={"properties.p": "plan"}).map(record)
    assert none.resource["attributes"]["properties"] == {"p": "pro"}
    bare = profile_mapper(properties=[]).map(record)
    assert bare.resource["attributes"] == {"email": "a@x.com"}


def test_exclude_wins_everywhere() -> None:
    mapper = profile_mapper(
        exclude=["ssn", "first_name", "old"], fields={"properties.legacy": "old"}
    )
    mapped = mapper.map(
        {"email": "a@x.com", "ssn": "123", "first_name": "Ann", "old": 1, "plan": "pro"}
    )
    assert mapped.resource["attributes"] == {"email": "a@x.com", "properties": {"plan": "pro"}}


def test_nulls_ignore_omits_nulls() -> None:
    mapped = profile_mapper().map(
        {
            "email": "a@x.com",
            "first_name": None,
            "city": None,
            "plan": None,
            "score": Decimal("NaN"),
        }
    )
    assert mapped.resource == {"type": "profile", "attributes": {"email": "a@x.com"}}


def test_nulls_unset_clears_standard_fields_and_unsets_properties() -> None:
    mapper = profile_mapper(nulls="unset")
    mapped = mapper.map(
        {
            "email": "a@x.com",
            "phone_number": None,
            "external_id": None,
            "first_name": None,
            "city": None,
            "zeta": None,
            "alpha": Decimal("Infinity"),
            "plan": "pro",
        }
    )
    assert mapped.resource == {
        "type": "profile",
        "attributes": {
            "email": "a@x.com",
            "first_name": None,
            "location": {"city": None},
            "properties": {"plan": "pro"},
        },
        "meta": {"patch_properties": {"unset": ["alpha", "zeta"]}},
    }


def test_nulls_unset_leaves_absent_columns_alone() -> None:
    mapped = profile_mapper(nulls="unset").map({"email": "a@x.com"})
    assert mapped.resource == {"type": "profile", "attributes": {"email": "a@x.com"}}


def test_property_values_converted() -> None:
    mapped = profile_mapper().map(
        {
            "email": "a@x.com",
            "amount": Decimal("10.50"),
            "count": Decimal("3"),
            "signed_up": datetime(2024, 2, 3, 4, 5, 6, tzinfo=UTC),
            "birthday": date(1990, 7, 1),
            "blob": b"\x01\x02",
            "prefs": {"colours": ["red"], "score": Decimal("1.5"), "bad": Decimal("NaN")},
            "big": 2**60,
        }
    )
    assert mapped.resource["attributes"]["properties"] == {
        "amount": 10.5,
        "count": 3,
        "signed_up": "2024-02-03T04:05:06+00:00",
        "birthday": "1990-07-01",
        "blob": "AQI=",
        "prefs": {"colours": ["red"], "score": 1.5, "bad": None},
        "big": str(2**60),
    }


def test_standard_fields_are_sent_as_text() -> None:
    mapped = profile_mapper().map({"email": "a@x.com", "zip": 2134, "title": Decimal("2.5")})
    assert mapped.resource["attributes"]["location"] == {"zip": "2134"}
    assert mapped.resource["attributes"]["title"] == "2.5"
    with pytest.raises(Rejection, match=r"'first_name' \(first_name\) must be a single value"):
        profile_mapper().map({"email": "a@x.com", "first_name": {"given": "Ann"}})


def test_profile_warnings_and_identity() -> None:
    mapped = profile_mapper().map({"email": "a@x.com", "phone_number": "12"})
    assert mapped.identity == Identity("a@x.com", None, None)
    assert mapped.warnings == [
        "phone_number dropped: phone_number '12' is not a valid number "
        "(no +country and no default_phone_region)"
    ]
    assert mapped.size == encoded_size(mapped.resource)


def test_profile_without_identifier_rejected() -> None:
    with pytest.raises(Rejection, match="no usable identifier"):
        profile_mapper().map({"first_name": "Ann", "email": ""})


def _padded_profile(total: int) -> dict[str, Any]:
    base = {"email": "a@x.com", "pad": ""}
    overhead = encoded_size({"type": "profile", "attributes": {"email": "a@x.com"}}) + len(
        ',"properties":{"pad":""}'
    )
    return {**base, "pad": "x" * (total - overhead)}


def test_profile_size_limit_at_and_over() -> None:
    mapper = profile_mapper()
    at_limit = mapper.map(_padded_profile(100_000))
    assert at_limit.size == 100_000
    with pytest.raises(Rejection) as excinfo:
        mapper.map(_padded_profile(100_001))
    assert reason(excinfo) == (
        "profile is 100,001 bytes, over Klaviyo's 100 KB (100,000 bytes) per-profile limit"
    )


def test_string_limit_counts_utf8_bytes_and_names_the_column() -> None:
    mapper = profile_mapper()
    with pytest.raises(Rejection, match=r"column 'bio' is a string over Klaviyo's 100 KB"):
        mapper.map({"email": "a@x.com", "bio": "€" * 33_334})  # 100,002 bytes
    with pytest.raises(Rejection, match=r"column 'bio' .*100 KB"):
        mapper.map({"email": "a@x.com", "bio": ["€" * 33_334]})


def test_nesting_and_array_limits() -> None:
    mapper = profile_mapper()
    deep: Any = "leaf"
    for _ in range(10):
        deep = {"n": deep}
    mapper.map({"email": "a@x.com", "tree": deep})
    with pytest.raises(Rejection, match=r"'tree' is nested deeper than Klaviyo's limit of 10"):
        mapper.map({"email": "a@x.com", "tree": {"n": deep}})
    mapper.map({"email": "a@x.com", "skus": list(range(4000))})
    with pytest.raises(Rejection, match=r"'skus' has an array of 4,001 items.*4,000"):
        mapper.map({"email": "a@x.com", "skus": list(range(4001))})


def test_profile_resources_match_the_bulk_import_schema() -> None:
    mapper = profile_mapper(nulls="unset", region="US")
    resources = [
        mapper.map(
            {
                "email": "a@x.com",
                "phone_number": "415-555-2671",
                "first_name": None,
                "latitude": Decimal("1.5"),
                "city": "X",
                "gone": None,
                "nested": {"a": [1, 2]},
            }
        ).resource,
        mapper.map({"external_id": 5, "zip": 12345}).resource,
    ]
    body = {
        "data": {
            "type": "profile-bulk-import-job",
            "attributes": {"profiles": {"data": resources}},
        }
    }
    assert body_errors("bulk_import_profiles", body) == []


def _random_value(rng: random.Random) -> Any:
    return rng.choice(
        [
            None,
            "",
            "   ",
            "text",
            "x" * 100_001,  # over Klaviyo's string limit
            True,
            0,
            42,
            2**60,  # beyond a double's exact integers: sent as a string
            Decimal("1.25"),
            Decimal("7"),
            Decimal("1E+400"),
            Decimal("Infinity"),
            1.5,
            float("nan"),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
            datetime(2026, 1, 2, 3, 4, 5),
            datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone(timedelta(hours=2))),
            date(2026, 1, 2),
            {"nested": [1, {"deeper": "x"}]},
            [1, 2, 3],
            b"bytes",
        ]
    )


def _random_identifier(rng: random.Random, kind: str) -> Any:
    choices: dict[str, list[Any]] = {
        "email": ["A@Example.com", " b@example.com ", "not an email", None, "", 5],
        "phone": ["+14155550123", "(415) 555-0123", "12", None, 4155550123, "+442079460958"],
        "id": ["c-1", 17, None, " ", Decimal("3"), True],
    }
    return rng.choice(choices[kind])


def _outcome(map_parts: Any, record: dict[str, Any]) -> Any:
    try:
        return map_parts(record)
    except Rejection as rejection:
        return ("rejected", rejection.reason)


def test_compiled_profile_mapping_gives_what_the_plan_gives() -> None:
    """The function compiled per record shape returns exactly what the generic mapping does,
    for random records, mappings and values (rejections included)."""
    rng = random.Random(20261129)
    columns = ["email", "phone", "id", "first_name", "city", "latitude", "tier", "score", "seen"]
    configs: list[dict[str, Any]] = [
        {"fields": {"phone_number": "phone", "external_id": "id"}},
        {"fields": {"phone_number": "phone", "properties.level": "tier"}, "nulls": "unset"},
        {"properties": ["tier", "score", "missing"], "fields": {"external_id": "id"}},
        {"fields": {"email": "tier", "location.zip": "score"}, "exclude": ["seen"]},
        {"properties": [], "fields": {"phone_number": "phone", "organization": "tier"}},
        {"fields": {"properties.tier": "score", "external_id": "id"}, "nulls": "unset"},
    ]
    compared = 0
    for config in configs:
        for region in ("US", None):
            mapper = profile_mapper(columns, region, **config)
            for _ in range(300):
                record = {
                    column: (
                        _random_identifier(rng, column)
                        if column in ("email", "phone", "id")
                        else _random_value(rng)
                    )
                    for column in rng.sample(columns, rng.randint(1, len(columns)))
                }
                if rng.random() < 0.3:
                    record["extra"] = _random_value(rng)
                expected = _outcome(mapper.map_generic, record)
                assert _outcome(mapper.map_parts, record) == expected, (config, record)
                assert _outcome(mapper.map_parts, record) == expected  # compiled, cached
                compared += expected[0] != "rejected"
    assert compared > 500  # many records map; the rest are rejected the same way


# -- events ----------------------------------------------------------------------------------


ORDER = {
    "order_id": 1001,
    "email": "A@X.com",
    "first_name": "Ann",
    "tier": "gold",
    "placed_at": datetime(2024, 5, 1, 12, 30, 15, 999999, tzinfo=UTC),
    "total": Decimal("19.90"),
    "currency": "eur",
    "sku": "A1",
    "items": [{"sku": "A1", "qty": 2}],
    "_sdc_extracted_at": datetime(2024, 5, 2, tzinfo=UTC),
}


def test_event_full_shape() -> None:
    mapper = event_mapper(
        list(ORDER),
        keys=["order_id"],
        time_field="placed_at",
        value_field="total",
        value_currency_field="currency",
        profile_properties=["tier"],
        backfill=True,
    )
    mapped = mapper.map(ORDER)
    assert mapped.profile == {
        "type": "profile",
        "attributes": {"email": "a@x.com", "first_name": "Ann", "properties": {"tier": "gold"}},
    }
    assert mapped.metric_name == "Placed Order"
    assert mapped.unique_id == "1001"
    assert mapped.dedupe_key == ("email:a@x.com", "Placed Order", "1001")
    assert mapped.event == {
        "type": "event",
        "attributes": {
            "metric": {"data": {"type": "metric", "attributes": {"name": "Placed Order"}}},
            "properties": {"order_id": 1001, "sku": "A1", "items": [{"sku": "A1", "qty": 2}]},
            "time": "2024-05-01T12:30:15+00:00",
            "value": 19.9,
            "value_currency": "EUR",
            "unique_id": "1001",
            "backfill": True,
        },
    }
    assert mapped.size == encoded_size(mapped.event) + encoded_size(mapped.profile)
    body = {
        "data": {
            "type": "event-bulk-create-job",
            "attributes": {
                "events-bulk-create": {
                    "data": [
                        {
                            "type": "event-bulk-create",
                            "attributes": {
                                "profile": {"data": mapped.profile},
                                "events": {"data": [mapped.event]},
                            },
                        }
                    ]
                }
            },
        }
    }
    assert body_errors("bulk_create_events", body) == []


def test_event_without_optional_fields() -> None:
    mapped = event_mapper(properties=[]).map({"email": "a@x.com", "placed_at": "x"})
    attributes = mapped.event["attributes"]
    assert set(attributes) == {"metric", "properties", "unique_id"}
    assert attributes["properties"] == {}
    assert "backfill" not in attributes


def test_event_name_from_column() -> None:
    mapper = event_mapper(event_name=None, event_name_field="kind")
    assert mapper.map({"email": "a@x.com", "kind": "  Viewed Product "}).metric_name == (
        "Viewed Product"
    )
    assert (
        "kind"
        not in mapper.map({"email": "a@x.com", "kind": "V"}).event["attributes"]["properties"]
    )
    assert mapper.map({"email": "a@x.com", "kind": "x" * 127}).metric_name == "x" * 127
    with pytest.raises(Rejection, match="under 128 characters"):
        mapper.map({"email": "a@x.com", "kind": "x" * 128})
    with pytest.raises(Rejection, match="'kind' is empty"):
        mapper.map({"email": "a@x.com", "kind": None})


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime(2024, 5, 1, 14, 0, 0, 500000, tzinfo=timezone(timedelta(hours=2))), "12:00:00"),
        (datetime(2024, 5, 1, 12, 0, 59, 999999), "12:00:59"),
        ("2024-05-01T12:00:00Z", "12:00:00"),
        ("2024-05-01T07:00:00-05:00", "12:00:00"),
        ("2024-05-01 12:00:00", "12:00:00"),
        (date(2024, 5, 1), "00:00:00"),
        ("2024-05-01", "00:00:00"),
    ],
)
def test_event_time_in_utc_whole_seconds(value: Any, expected: str) -> None:
    mapped = event_mapper(time_field="at").map({"email": "a@x.com", "at": value})
    assert mapped.event["attributes"]["time"] == f"2024-05-01T{expected}+00:00"


def test_event_time_range_and_nulls() -> None:
    mapper = event_mapper(time_field="at")
    assert "time" not in mapper.map({"email": "a@x.com", "at": None}).event["attributes"]
    soon = NOW + timedelta(days=300)
    assert mapper.map({"email": "a@x.com", "at": soon}).event["attributes"]["time"] == (
        soon.isoformat()
    )
    for bad in (datetime(1989, 12, 31, tzinfo=UTC), NOW + timedelta(days=400)):
        with pytest.raises(Rejection, match="after 1990-01-01 and at most one year from now"):
            mapper.map({"email": "a@x.com", "at": bad})
    with pytest.raises(Rejection, match="'at' value 'yesterday' is not a date-time"):
        mapper.map({"email": "a@x.com", "at": "yesterday"})


def test_event_value_and_currency() -> None:
    mapper = event_mapper(value_field="amount", value_currency="usd")
    for amount in (" 12.50", Decimal("12.5"), 12.5):
        attributes = mapper.map({"email": "a@x.com", "amount": amount}).event["attributes"]
        assert attributes["value"] == 12.5
    attributes = mapper.map({"email": "a@x.com", "amount": 3}).event["attributes"]
    assert (attributes["value"], attributes["value_currency"]) == (3, "USD")
    for bad in ("twelve", Decimal("NaN"), True, [1]):
        with pytest.raises(Rejection, match=r"'amount' value .* is not a finite number"):
            mapper.map({"email": "a@x.com", "amount": bad})
    column = event_mapper(value_field="amount", value_currency_field="cur")
    with pytest.raises(Rejection, match="ISO 4217"):
        column.map({"email": "a@x.com", "amount": 1, "cur": "dollars"})
    with pytest.raises(MappingConfigError, match="value_currency"):
        event_mapper(value_currency="dollars")


def test_unique_id_from_fields() -> None:
    single = event_mapper(unique_id_fields=["order_id"], keys=["ignored"])
    assert single.map({"email": "a@x.com", "order_id": "A-1"}).unique_id == "A-1"
    assert single.map({"email": "a@x.com", "order_id": 2**60 + 1}).unique_id == str(2**60 + 1)
    stamp = single.map({"email": "a@x.com", "order_id": datetime(2024, 1, 1, tzinfo=UTC)})
    assert stamp.unique_id == "2024-01-01T00:00:00+00:00"
    with pytest.raises(Rejection, match="unique_id field 'order_id' is null"):
        single.map({"email": "a@x.com", "order_id": None})

    pair = event_mapper(unique_id_fields=["a", "b"])
    first = pair.map({"email": "a@x.com", "a": "a|b", "b": "c"}).unique_id
    second = pair.map({"email": "a@x.com", "a": "a", "b": "b|c"}).unique_id
    assert first == '"a|b"|"c"'
    assert first != second
    assert pair.map({"email": "a@x.com", "a": 1, "b": Decimal("2")}).unique_id == "1|2"
    long = pair.map({"email": "a@x.com", "a": "x" * 300, "b": 1}).unique_id
    assert len(long) == 64
    assert long == pair.map({"email": "a@x.com", "a": "x" * 300, "b": 1}).unique_id


def test_unique_id_defaults_to_key_properties() -> None:
    mapper = event_mapper(keys=["order_id", "line"])
    assert mapper.map({"email": "a@x.com", "order_id": 7, "line": 2}).unique_id == "7|2"


def test_unique_id_record_hash_is_deterministic() -> None:
    mapper = event_mapper()
    record = {"email": "a@x.com", "sku": "A1", "at": datetime(2024, 1, 1, tzinfo=UTC)}
    reordered = {"at": record["at"], "sku": "A1", "email": "a@x.com"}
    with_metadata = {**record, "_sdc_extracted_at": datetime.now(UTC), "_sdc_sequence": 9}
    unique = mapper.map(record).unique_id
    assert len(unique) == 64
    assert unique == mapper.map(reordered).unique_id == mapper.map(with_metadata).unique_id
    assert unique == record_hash(record)
    # A fixed value: the hash must not change between runs or releases.
    assert record_hash({"a": 1}) == (
        "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
    )
    assert unique != mapper.map({**record, "sku": "A2"}).unique_id


def test_same_second_events_keep_distinct_unique_ids() -> None:
    mapper = event_mapper(keys=["line_id"], time_field="at")
    at = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    one = mapper.map({"email": "a@x.com", "line_id": 1, "at": at})
    two = mapper.map({"email": "a@x.com", "line_id": 2, "at": at + timedelta(microseconds=5)})
    assert one.event["attributes"]["time"] == two.event["attributes"]["time"]
    assert one.dedupe_key != two.dedupe_key
    hashed = event_mapper(time_field="at")
    assert (
        hashed.map({"email": "a@x.com", "sku": "A", "at": at}).unique_id
        != hashed.map({"email": "a@x.com", "sku": "B", "at": at}).unique_id
    )


def test_event_property_limit() -> None:
    base = {"email": "a@x.com"}
    mapper = event_mapper()
    at_limit = {**base, **{f"p{i}": i for i in range(400)}}
    assert len(mapper.map(at_limit).event["attributes"]["properties"]) == 400
    with pytest.raises(Rejection, match="401 properties, over Klaviyo's limit of 400"):
        mapper.map({**at_limit, "p400": 1})


def test_event_string_limit() -> None:
    with pytest.raises(Rejection, match=r"'note' is a string over Klaviyo's 100 KB"):
        event_mapper().map({"email": "a@x.com", "note": "x" * 100_001})


def test_event_columns_routing() -> None:
    mapper = event_mapper(
        ["email", "phone_number", "city", "tier", "at", "amount", "kind", "sku", "secret"],
        event_name=None,
        event_name_field="kind",
        time_field="at",
        value_field="amount",
        profile_properties=["tier"],
        exclude=["secret"],
        fields={"properties.Product": "product_code", "external_id": "customer"},
    )
    mapped = mapper.map(
        {
            "email": "a@x.com",
            "customer": "c-9",
            "phone_number": "+14155552671",
            "city": "Boston",
            "tier": "gold",
            "at": "2024-01-01T00:00:00Z",
            "amount": 5,
            "kind": "Bought",
            "sku": "A1",
            "secret": "x",
            "product_code": "P-1",
            "_sdc_received_at": "y",
        }
    )
    assert mapped.profile["attributes"] == {
        "email": "a@x.com",
        "phone_number": "+14155552671",
        "external_id": "c-9",
        "location": {"city": "Boston"},
        "properties": {"tier": "gold"},
    }
    assert mapped.event["attributes"]["properties"] == {"sku": "A1", "Product": "P-1"}


def test_event_listed_properties_and_identity_rules() -> None:
    mapper = event_mapper(properties=["sku"], region="US")
    mapped = mapper.map({"phone_number": "415 555 2671", "sku": "A", "other": 1})
    assert mapped.event["attributes"]["properties"] == {"sku": "A"}
    assert mapped.dedupe_key[0] == "phone:+14155552671"
    with pytest.raises(Rejection, match="no usable identifier"):
        mapper.map({"sku": "A"})


# -- subscriptions ---------------------------------------------------------------------------


def test_subscribe_email_shape() -> None:
    mapped = subscription_mapper().map({"email": " A@X.com ", "first_name": "Ann"})
    assert mapped.resource == {
        "type": "profile",
        "attributes": {
            "email": "a@x.com",
            "subscriptions": {"email": {"marketing": {"consent": "SUBSCRIBED"}}},
        },
    }
    assert mapped.identity == Identity("a@x.com", None, None)
    assert mapped.size == encoded_size(mapped.resource)


def test_subscribe_both_channels_historical_import() -> None:
    mapper = subscription_mapper(
        region="US",
        channels=["email", "sms"],
        historical_import=True,
        consented_at_field="opted_in_at",
        fields={"phone_number": "mobile"},
    )
    mapped = mapper.map(
        {
            "email": "a@x.com",
            "mobile": "(415) 555-2671",
            "opted_in_at": datetime(2024, 1, 15, 9, 30, 1, 5, tzinfo=UTC),
        }
    )
    consent = {"consent": "SUBSCRIBED", "consented_at": "2024-01-15T09:30:01+00:00"}
    assert mapped.resource["attributes"] == {
        "email": "a@x.com",
        "phone_number": "+14155552671",
        "subscriptions": {"email": {"marketing": consent}, "sms": {"marketing": consent}},
    }
    body = {
        "data": {
            "type": "profile-subscription-bulk-create-job",
            "attributes": {
                "profiles": {"data": [mapped.resource]},
                "historical_import": True,
                "custom_source": "target-klaviyo",
            },
        }
    }
    assert body_errors("bulk_subscribe_profiles", body) == []


def test_historical_consent_must_be_given_and_in_the_past() -> None:
    mapper = subscription_mapper(historical_import=True, consented_at_field="at")
    with pytest.raises(Rejection, match="consented_at column 'at' is null"):
        mapper.map({"email": "a@x.com", "at": None})
    with pytest.raises(Rejection, match="is in the future"):
        mapper.map({"email": "a@x.com", "at": NOW + timedelta(minutes=1)})
    assert mapper.map({"email": "a@x.com", "at": "2020-02-02"}).resource["attributes"][
        "subscriptions"
    ]["email"]["marketing"]["consented_at"] == ("2020-02-02T00:00:00+00:00")


def test_consented_at_ignored_without_historical_import() -> None:
    mapper = subscription_mapper(consented_at_field="at")
    marketing = mapper.map({"email": "a@x.com", "at": "2020-02-02"}).resource["attributes"][
        "subscriptions"
    ]["email"]["marketing"]
    assert marketing == {"consent": "SUBSCRIBED"}


def test_unsubscribe_shape_matches_schema() -> None:
    mapper = subscription_mapper(behavior="unsubscribe", channels=["email", "sms"])
    mapped = mapper.map({"email": "a@x.com", "phone_number": "+14155552671"})
    assert mapped.resource["attributes"]["subscriptions"] == {
        "email": {"marketing": {"consent": "UNSUBSCRIBED"}},
        "sms": {"marketing": {"consent": "UNSUBSCRIBED"}},
    }
    body = {
        "data": {
            "type": "profile-subscription-bulk-delete-job",
            "attributes": {"profiles": {"data": [mapped.resource]}},
        }
    }
    assert body_errors("bulk_unsubscribe_profiles", body) == []


def test_subscription_identity_rules() -> None:
    email_only = subscription_mapper()
    with pytest.raises(Rejection) as excinfo:
        email_only.map({"external_id": "c-1"})
    assert reason(excinfo) == "subscriptions need email or phone_number"
    with pytest.raises(Rejection, match="an email subscription needs an email"):
        email_only.map({"phone_number": "+14155552671"})
    mapped = email_only.map({"email": "a@x.com", "phone_number": "555"})
    assert mapped.resource["attributes"]["email"] == "a@x.com"
    assert "phone_number" not in mapped.resource["attributes"]
    assert mapped.warnings[0].startswith("phone_number dropped: ")

    sms = subscription_mapper(channels=["sms"])
    with pytest.raises(Rejection, match="an sms subscription needs a phone_number"):
        sms.map({"email": "a@x.com"})
    with pytest.raises(Rejection, match="phone_number '555' is not a valid number"):
        sms.map({"email": "a@x.com", "phone_number": "555"})
    assert sms.map({"phone_number": "+14155552671"}).resource["attributes"] == {
        "phone_number": "+14155552671",
        "subscriptions": {"sms": {"marketing": {"consent": "SUBSCRIBED"}}},
    }
    with pytest.raises(Rejection, match="not a valid address"):
        sms.map({"email": "bad", "phone_number": "+14155552671"})


def test_north_american_validity_is_decided_by_the_exchange() -> None:
    """The per-exchange shortcut agrees with phonenumbers on every number it decides."""
    import random

    import phonenumbers

    from target_klaviyo.mapping.identity import normalise_phone

    rng = random.Random(7)
    for _ in range(3000):
        national = f"{rng.randint(200, 999)}{rng.randint(100, 999)}{rng.randint(0, 9999):04d}"
        expected = phonenumbers.is_valid_number(phonenumbers.parse("+1" + national, None))
        for written, region in (("+1" + national, None), (national, "US")):
            try:
                got = normalise_phone(written, region) == "+1" + national
            except Rejection:
                got = False
            assert got == expected, written


@pytest.mark.parametrize(
    ("written", "region"),
    [
        ("+44 20 7946 0018", None),
        ("+44 (0)20 7946 0018", None),
        ("+31 20 555 0123", "US"),
        ("0044 20 7946 0018", "US"),
        ("001 415 555 2671", "US"),
        ("0044 20 7946 0018", "GB"),
        ("00 44 20 7946 0018", None),
        ("+1 415-555-2671", "GB"),
        ("+49 30 901820", None),
        ("+39 06 698 3001", None),
    ],
)
def test_shortcuts_agree_with_phonenumbers(written: str, region: str | None) -> None:
    assert normalised_or_none(written, region) == full_parse(written, region)


def full_parse(written: str, region: str | None) -> str | None:
    """phonenumbers alone: the number as written, then "00" read as the international prefix."""
    import phonenumbers

    candidates = [written]
    if written.startswith("00"):
        candidates.append("+" + written[2:])
    for text in candidates:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def normalised_or_none(written: str, region: str | None) -> str | None:
    from target_klaviyo.mapping.identity import normalise_phone

    try:
        return normalise_phone(written, region)
    except Rejection:
        return None


def test_north_american_written_forms_agree_with_phonenumbers() -> None:
    """Numbers written the ways warehouses hold them, in and out of North America: the cheap
    path gives what a full parse gives (or leaves the number to it)."""
    import random

    forms = (
        "{a}{e}{l}",
        "({a}) {e}-{l}",
        "({a}){e}-{l}",
        "{a}.{e}.{l}",
        "{a}-{e}-{l}",
        "1{a}{e}{l}",
        "1-{a}-{e}-{l}",
        "1 ({a}) {e} {l}",
        "+1{a}{e}{l}",
        "+1 {a} {e} {l}",
        "+1 ({a}) {e}-{l}",
        "+ 1 {a}.{e}.{l}",
        "001 {a} {e} {l}",
        "001{a}{e}{l}",
    )
    rng = random.Random(11)
    for _ in range(1500):
        area = f"{rng.randint(100, 999)}"
        parts = {"a": area, "e": f"{rng.randint(0, 999):03d}", "l": f"{rng.randint(0, 9999):04d}"}
        written = rng.choice(forms).format(**parts)
        region = rng.choice(("US", "CA", "GB", "DE", None))
        assert normalised_or_none(written, region) == full_parse(written, region), (written, region)
