"""North American numbers are judged by their exchange: the target (normalising) and the
emulator (checking) both answer for country code 1 from the first seven national digits, which
holds only while libphonenumber's patterns for +1 accept any line number. These tests compare
both with libphonenumber's full answer across every area code, so a metadata release that
breaks the rule fails here rather than in a customer's load."""

from __future__ import annotations

import random
from collections.abc import Iterator

import phonenumbers
import pytest

from target_klaviyo.mapping.identity import (
    NanpExchanges,
    Rejection,
    _fast_national,
    _normalise_phone_text,
    _region_test,
    normalise_phone,
)
from tests.emulator.rules import check_phone, nanp_exchange_region


def _sample() -> list[str]:
    """Every area code, with common and random exchanges, each with several line numbers."""
    rng = random.Random(20261206)
    numbers = []
    for area in range(200, 1000):
        for exchange in (200, 555, 911, rng.randrange(100, 1000), rng.randrange(100, 1000)):
            for line in (0, 1234, rng.randrange(10_000)):
                numbers.append(f"+1{area}{exchange:03d}{line:04d}")
    return numbers


def _full(value: str) -> tuple[bool, str | None]:
    parsed = phonenumbers.parse(value, None)
    region = phonenumbers.region_code_for_number(parsed)
    valid = phonenumbers.is_valid_number(parsed)
    return valid, region if valid else None


@pytest.fixture(scope="module")
def sample() -> list[tuple[str, bool, str | None]]:
    return [(value, *_full(value)) for value in _sample()]


def test_emulator_checks_north_american_numbers_as_libphonenumber_does(
    sample: list[tuple[str, bool, str | None]],
) -> None:
    nanp_exchange_region.cache_clear()
    differ = [
        (value, valid, region)
        for value, valid, region in sample
        if (check_phone(value).ok, check_phone(value).region) != (valid, region)
    ]
    assert sum(valid for _, valid, _ in sample) > len(sample) // 4  # the sample has both kinds
    assert differ == []


def test_target_normalises_north_american_numbers_as_libphonenumber_does(
    sample: list[tuple[str, bool, str | None]],
) -> None:
    differ = []
    for value, valid, _ in sample:
        written = f"({value[2:5]}) {value[5:8]}-{value[8:]}"  # as a warehouse writes it
        for text, region in ((value, None), (written, "US")):
            try:
                result: str | None = normalise_phone(text, region)
            except Rejection:
                result = None
            if result != (value if valid else None):
                differ.append((text, region, valid, result))
    assert differ == []


def test_each_exchange_keeps_its_own_answer_beside_its_neighbours() -> None:
    """Four exchanges share a byte of the table: each keeps the answer libphonenumber gives,
    the first time and every time after."""
    rng = random.Random(6)
    prefixes = [f"{p:07d}" for p in range(2_125_550, 2_125_560)]  # neighbours in one byte
    prefixes += [f"{rng.randrange(10_000_000):07d}" for _ in range(3_000)]
    exchanges = NanpExchanges()

    def libphonenumber(prefix: str) -> bool:
        number = phonenumbers.PhoneNumber(country_code=1, national_number=int(prefix) * 1000)
        return bool(phonenumbers.is_valid_number(number))

    expected = [libphonenumber(prefix) for prefix in prefixes]
    assert any(expected) and not all(expected)
    assert [exchanges.valid(prefix) for prefix in prefixes] == expected
    assert [exchanges.valid(prefix) for prefix in reversed(prefixes)] == expected[::-1]


@pytest.mark.parametrize("region", ["US", "CA", "GB", "DE"])
def test_a_regions_compiled_patterns_answer_as_libphonenumber(region: str) -> None:
    valid = _region_test(region)
    assert valid is not None  # this phonenumbers' metadata is read as expected
    code = phonenumbers.country_code_for_region(region)
    rng = random.Random(region)
    nationals = [str(rng.randrange(10**length)) for length in range(5, 13) for _ in range(400)]
    nationals += [value[2:] for value in _sample()[::7]]
    assert 0 < sum(map(valid, nationals)) < len(nationals)  # the sample has both kinds
    differ = [
        national
        for national in nationals
        if valid(national)
        != phonenumbers.is_valid_number_for_region(
            phonenumbers.PhoneNumber(country_code=code, national_number=int(national)), region
        )
    ]
    assert differ == []


def _examples_and_neighbours(
    rng: random.Random, spread: int, neighbours: int
) -> Iterator[tuple[str, phonenumbers.PhoneNumber]]:
    """Each region's example fixed-line and mobile numbers, and `neighbours` numbers within
    `spread` of each (valid or not): (region, number)."""
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.FIXED_LINE, phonenumbers.PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            for offset in (0, *(rng.randrange(-spread, spread) for _ in range(neighbours))):
                yield (
                    region,
                    phonenumbers.PhoneNumber(
                        country_code=example.country_code,
                        national_number=max(1, example.national_number + offset),
                    ),
                )


def test_international_numbers_are_judged_as_libphonenumber_judges_them() -> None:
    """Every region's example numbers and neighbours of them, written in E.164: valid ones
    come back as they are, the rest are rejected (the target checks a calling code's main
    region with its compiled patterns before asking the library)."""
    numbers = {
        f"+{number.country_code}{number.national_number}"
        for _, number in _examples_and_neighbours(random.Random(41), 10**6, 6)
    }
    differ = []
    for text in sorted(numbers):
        try:
            valid = phonenumbers.is_valid_number(phonenumbers.parse(text, None))
        except phonenumbers.NumberParseException:
            valid = False  # too short to be a number at all
        try:
            result: str | None = normalise_phone(text, None)
        except Rejection:
            result = None
        if result != (text if valid else None):
            differ.append((text, valid, result))
    assert len(numbers) > 2_000
    assert differ == []


def test_numbers_written_nationally_are_read_as_libphonenumber_reads_them() -> None:
    """Every region's example numbers and neighbours of them, written as that region writes
    them and as bare digits, with the region as default: the same E.164 number (or rejection)
    as the full parse gives (most are read without it)."""
    cases = set()
    for region, number in _examples_and_neighbours(random.Random(43), 10**5, 4):
        written = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        cases.add((written, region))
        cases.add(("".join(ch for ch in written if ch.isdigit()), region))
    # Dialled abroad, or with the country's own code, from the country itself.
    for text in ("00 44 20 7946 0958", "0033 6 12 34 56 78", "33 6 12 34 56 78", "44 7400 123456"):
        for region in ("GB", "FR", "DE", "AU"):
            cases.add((text, region))
    differ = []
    for text, region in sorted(cases):
        try:
            result: str | None = normalise_phone(text, region)
        except Rejection:
            result = None
        if result != _normalise_phone_text.__wrapped__(text, region)[0]:
            differ.append((text, region, result))
    read_fast = sum(_fast_national(text, region) is not None for text, region in cases)
    assert read_fast > len(cases) // 4
    assert differ == []
