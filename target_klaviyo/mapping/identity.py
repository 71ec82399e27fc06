"""Profile identity: email, phone number (E.164) and external id.

Emails are trimmed, lower-cased and checked for a plausible form; phone numbers are
normalised to E.164 with ``phonenumbers``. Nothing garbled is ever sent: an invalid email rejects
the record; an invalid phone is dropped with a warning when another identifier remains, and
rejects the record when it is the only one.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any, NamedTuple

import phonenumbers

__all__ = [
    "Identity",
    "Rejection",
    "blank",
    "normalise_email",
    "normalise_external_id",
    "normalise_phone",
    "resolve_identity",
]


class Rejection(Exception):  # noqa: N818 (the name other modules use)
    """A record that cannot be loaded; ``reason`` is one line the user can act on."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def show(value: Any, limit: int = 60) -> str:
    """A short, single-line, quoted rendering of a value for a rejection reason."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


# A plausible address: one @, a non-empty local part, a dotted domain without empty labels, no
# whitespace, control characters or the delimiters that show several addresses glued together.
_BAD = r"\s\x00-\x1f\x7f@,;:<>()\[\]\\\""
# Written label-first ("example" then ".com"), which matches the same addresses as
# "(label.)+label" without backtracking over the last label.
_EMAIL_RE = re.compile(rf"[^{_BAD}]{{1,64}}@[^{_BAD}.]+(?:\.[^{_BAD}.]+)+")
MAX_EMAIL_LENGTH = 254


def normalise_email(value: Any) -> str:
    """Trim and lower-case an email; raise Rejection unless it has a plausible form."""
    if isinstance(value, str):
        email = value.strip().lower()
        if len(email) <= MAX_EMAIL_LENGTH and _EMAIL_RE.fullmatch(email):
            return email
    raise Rejection(f"email {show(value)} is not a valid address")


_E164_RE = re.compile(r"\+[1-9]\d{6,14}")
_PHONE_FORMAT = phonenumbers.PhoneNumberFormat.E164


def _phone_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value) if value > 0 else None
    if isinstance(value, Decimal):
        if value.is_finite() and value > 0 and value == value.to_integral_value():
            return str(int(value))
        return None
    return None


def _try_parse(text: str, region: str | None) -> str | None:
    try:
        number = phonenumbers.parse(text, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, _PHONE_FORMAT)


class NanpExchanges:
    """Whether North American numbers are valid, by exchange: libphonenumber's patterns for
    country code 1 decide validity by the area code and exchange (at most the first seven
    digits of the national number), then accept any line number, so one check per exchange
    serves every number in it.

    A customers table brings hundreds of thousands of exchanges: each answer is kept in two
    bits of one table over all 10,000,000 seven-digit prefixes (2.5 MB, never evicted), where
    a cache of strings took about 170 bytes an exchange and forgot the oldest.
    """

    UNKNOWN, VALID, INVALID = 0, 1, 2

    def __init__(self) -> None:
        self._states = bytearray(10_000_000 // 4)

    def valid(self, first_seven: str) -> bool:
        index = int(first_seven)
        at, shift = index >> 2, (index & 3) << 1
        state = (self._states[at] >> shift) & 3
        if state == self.UNKNOWN:
            state = self.VALID if _nanp_valid(index) else self.INVALID
            # Two threads setting neighbours in one byte may lose one answer: it is asked again.
            self._states[at] |= state << shift
        return state == self.VALID


# The number types `_number_type_helper` tries. A valid number matches any one of them, so
# the order decides only the cost: fixed-line and mobile, which most numbers are, come first.
_NUMBER_TYPES = (
    "fixed_line",
    "mobile",
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
)


def _region_test(region: str) -> Callable[[str], bool] | None:
    """`phonenumbers.is_valid_number_for_region` for one region, on a national number, with
    the region's patterns compiled once (the library looks each up again per call): a
    number is valid when it has the region's general form and one of its types' forms.
    None when the metadata is not as expected (a later phonenumbers): the library decides."""
    try:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        if metadata is None:
            return None
        descs = [metadata.general_desc, *(getattr(metadata, name) for name in _NUMBER_TYPES)]
        tests = [
            None
            if desc is None or not desc.national_number_pattern
            else (frozenset(desc.possible_length), re.compile(desc.national_number_pattern))
            for desc in descs
        ]
    except (AttributeError, TypeError, re.error):
        return None
    general, types = tests[0], [test for test in tests[1:] if test is not None]
    if general is None:
        return None

    def matches(national: str, lengths: frozenset[int], pattern: re.Pattern[str]) -> bool:
        # As libphonenumber matches: the first way the pattern matches must take it all.
        if lengths and len(national) not in lengths:
            return False
        found = pattern.match(national)
        return found is not None and found.end() == len(national)

    def valid(national: str) -> bool:
        return matches(national, *general) and any(matches(national, *t) for t in types)

    return valid


_valid_in_us = _region_test("US")


def _nanp_valid(first_seven: int) -> bool:
    national = first_seven * 1000
    # Valid in the US is valid (the US is the first region libphonenumber tries for +1); only
    # other numbers need the check across every North American region.
    if _valid_in_us is not None and _valid_in_us(str(national)):
        return True
    number = phonenumbers.PhoneNumber(country_code=1, national_number=national)
    return bool(phonenumbers.is_valid_number(number))


_nanp_exchange_valid = NanpExchanges().valid


def _valid_e164(text: str) -> bool:
    """Whether an E.164-shaped string is a valid number, without the cost of parsing it.

    Country calling codes are prefix-free, so the first known prefix is the country. A
    national number with a leading zero needs parse()'s handling; False sends it there.
    """
    digits = text[1:]
    for length in (1, 2, 3):
        country_code = int(digits[:length])
        if country_code in phonenumbers.COUNTRY_CODE_TO_REGION_CODE:
            national = digits[length:]
            if not national or national[0] == "0":
                return False
            if country_code == 1 and len(national) == 10:
                return _nanp_exchange_valid(national[:7])
            main_region_valid = _main_region_test(country_code)
            if main_region_valid is not None and main_region_valid(national):
                return True
            number = phonenumbers.PhoneNumber(
                country_code=country_code, national_number=int(national)
            )
            return bool(phonenumbers.is_valid_number(number))
    return False


@functools.cache  # one a country calling code
def _main_region_test(country_code: int) -> Callable[[str], bool] | None:
    """The compiled test of a calling code's main region (its first: libphonenumber tries it
    first, and a number valid there is valid), unless that region is told by leading digits;
    None sends every number to the library."""
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(country_code) or ()
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(regions[0]) if regions else None
    if metadata is None or metadata.leading_digits is not None:
        return None
    return _region_test(regions[0])


_NANP_REGIONS = frozenset(phonenumbers.COUNTRY_CODE_TO_REGION_CODE[1])
# "+" or "00", then digits with the usual separators: an international number.
_INTERNATIONAL = re.compile(r"(\+|00)[\d\s.\-()]{7,24}")
_SEPARATORS = str.maketrans("", "", " .-()\t")


# A North American number as warehouses write it: "+1 (415) 555-0123", "415.555.0123",
# "14155550123", "001 415 555 0123". Groups: the prefix, area code, exchange, line.
_NANP_WRITTEN = re.compile(
    r"(\+\s*1|001|1)?[\s.\-]*\(?([2-9]\d\d)\)?[\s.\-]*(\d{3})[\s.\-]*(\d{4})"
)


def _fast_e164(text: str, region: str | None) -> str | None:
    """The cheap cases: E.164 (perhaps with separators), an "00" international number in North
    America (where no national number starts with 0), a North American number written
    nationally, or another region's number written nationally with its national prefix.
    None means "not decided here": the full parse decides.
    """
    nanp = _NANP_WRITTEN.fullmatch(text)
    if nanp is not None:
        prefix, area, exchange, line = nanp.groups()
        # "+1" names the country; without it (or with "1" / "001") the region must be NANP.
        if (prefix is not None and prefix[0] == "+") or region in _NANP_REGIONS:
            if _nanp_exchange_valid(area + exchange + line[0]):
                return "+1" + area + exchange + line
            return None
    if _INTERNATIONAL.fullmatch(text) and (text[0] == "+" or region in _NANP_REGIONS):
        digits = text.translate(_SEPARATORS)
        candidate = "+" + (digits[1:] if digits[0] == "+" else digits[2:])
        if _E164_RE.fullmatch(candidate) and _valid_e164(candidate):
            return candidate
        return None
    return _fast_national(text, region)


# Digits and separators only: no letters, extension or "+" for the full parse to read.
_NATIONAL_WRITTEN = re.compile(r"[0-9 .\-()\t]{4,40}")


class NationalPlan(NamedTuple):
    """How libphonenumber reads a number written nationally in a region (see _fast_national)."""

    country_code: str
    prefix: re.Pattern[str]  # the national prefix, as the library matches it
    international: re.Pattern[str]  # the region's international call prefix
    valid: Callable[[str], bool]


@functools.cache  # one a region
def _national_plan(region: str | None) -> NationalPlan | None:
    """The plan for a region that is its calling code's main region (not told by leading
    digits) and strips its national prefix without rewriting the number; None otherwise."""
    if region is None or region in _NANP_REGIONS:
        return None
    metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
    if metadata is None or metadata.country_code is None:
        return None
    regions = phonenumbers.COUNTRY_CODE_TO_REGION_CODE.get(metadata.country_code) or ()
    if not regions or regions[0] != region:
        return None
    if not metadata.national_prefix_for_parsing or metadata.national_prefix_transform_rule:
        return None
    if not metadata.international_prefix:
        return None
    valid = _main_region_test(metadata.country_code)
    if valid is None:
        return None
    return NationalPlan(
        str(metadata.country_code),
        re.compile(metadata.national_prefix_for_parsing),
        re.compile(metadata.international_prefix),
        valid,
    )


def _fast_national(text: str, region: str | None) -> str | None:
    """A number written nationally with its national prefix ("020 7946 0958" in GB), the
    default region being its calling code's main region: libphonenumber's parse strips the
    prefix the way the region's metadata says, and the rest is checked with the region's
    compiled patterns. None (any other case, or not valid) leaves it to the full parse."""
    plan = _national_plan(region)
    if plan is None or not _NATIONAL_WRITTEN.fullmatch(text):
        return None
    digits = text.translate(_SEPARATORS)
    if not digits.isdigit() or digits.startswith(plan.country_code):
        return None
    if plan.international.match(digits):
        return None  # dialled abroad: the full parse reads the country from it
    prefix = plan.prefix.match(digits)
    if prefix is None or not prefix.end():
        return None
    national = digits[prefix.end() :]
    if not national or national[0] == "0" or not plan.valid(national):
        return None
    return "+" + plan.country_code + national


def _parse_phone(text: str, region: str | None) -> str | None:
    """E.164 form of ``text`` or None, by the full parse (the cheap cases were tried)."""
    result = _try_parse(text, region)
    if result is not None:
        return result
    # "00" is the international call prefix in most of the world; phonenumbers only knows it
    # when the default region uses it. The result must still be a valid number.
    digits = text.lstrip()
    if digits.startswith("00") and len(digits) > 2:
        return _try_parse("+" + digits[2:], region)
    return None


def normalise_phone(value: Any, default_region: str | None) -> str:
    """E.164 form of a phone number (str, int or integral Decimal); raise Rejection otherwise.

    Numbers without a ``+country`` prefix need ``default_region`` (ISO 3166-1 alpha-2).
    """
    text = value if type(value) is str else _phone_text(value) or ""
    # Most numbers are decided by the cheap cases; the rest by the (cached) full parse.
    fast = _fast_e164(text.strip(), default_region.upper() if default_region else None)
    if fast is not None:
        return fast
    result, reason = _normalise_phone_text(text, default_region)
    if reason is not None and type(value) is not str:
        reason = reason.replace(repr(text), show(value), 1)
    if result is None:
        raise Rejection(str(reason))
    return result


# Numbers are mostly unique: the cache serves the few a table repeats (placeholders, a shop's
# switchboard), where one full parse costs 50 to 150 us.
@functools.lru_cache(maxsize=4096)
def _normalise_phone_text(value: str, default_region: str | None) -> tuple[str | None, str | None]:
    """(E.164, None) or (None, reason). Cached: parsing is the costly part of identity."""
    text = value.strip()
    region = default_region.upper() if default_region else None
    if text:
        if _E164_RE.fullmatch(text):
            result = _parse_phone(text, None)
        else:
            result = _parse_phone(text, region)
        if result is not None:
            return result, None
        if region is None and not text.startswith(("+", "00")):
            return None, (
                f"phone_number {show(value)} is not a valid number "
                "(no +country and no default_phone_region)"
            )
    return None, f"phone_number {show(value)} is not a valid number"


def normalise_external_id(value: Any) -> str | None:
    """``external_id`` as a string: trimmed (empty is None); integers as their digits."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, bool):
        raise Rejection(f"external_id {show(value)} is not an identifier")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise Rejection(f"external_id {show(value)} is not an identifier")
        if value == value.to_integral_value():
            return str(int(value))
        return str(value.normalize())
    if isinstance(value, (dict, list, tuple, set)):
        raise Rejection(f"external_id {show(value)} must be a single value, not a collection")
    return str(value).strip() or None


class Identity(NamedTuple):
    """The normalised identifiers of one profile (a tuple: made for every record)."""

    email: str | None = None
    phone_number: str | None = None
    external_id: str | None = None

    def key(self) -> str:
        """Within-batch dedupe key: the strongest identifier present."""
        if self.email is not None:
            return "email:" + self.email
        if self.phone_number is not None:
            return "phone:" + self.phone_number
        return "external_id:" + str(self.external_id)

    def as_attributes(self) -> dict[str, str]:
        """The identifiers present, as Klaviyo profile attributes."""
        attributes: dict[str, str] = {}
        if self.email is not None:
            attributes["email"] = self.email
        if self.phone_number is not None:
            attributes["phone_number"] = self.phone_number
        if self.external_id is not None:
            attributes["external_id"] = self.external_id
        return attributes


_new_tuple = tuple.__new__


def blank(value: Any) -> bool:
    """None, or a string of nothing but whitespace: an absent value."""
    return value is None or (isinstance(value, str) and not value.strip())


NO_IDENTIFIER = "no usable identifier (email, phone_number or external_id)"


def resolve_identity(
    email: Any, phone: Any, external_id: Any, default_region: str | None
) -> tuple[Identity, list[str]]:
    """Normalise a record's identifiers; returns the identity and any warnings.

    Blank values (None, empty or whitespace strings) count as absent. An invalid email is a
    Rejection; an invalid phone is dropped with a warning when an email or external_id remains,
    and is a Rejection when it would be the only identifier.
    """
    # Plain strings (nearly every record) are handled inline; the rest by the helpers.
    email_out: str | None = None
    if type(email) is str:
        text = email.strip().lower()
        if text:
            if len(text) > MAX_EMAIL_LENGTH or _EMAIL_RE.fullmatch(text) is None:
                raise Rejection(f"email {show(email)} is not a valid address")
            email_out = text
    elif not blank(email):
        email_out = normalise_email(email)
    if type(external_id) is str:
        external_out = external_id.strip() or None
    elif type(external_id) is int:
        external_out = str(external_id)
    else:
        external_out = normalise_external_id(external_id)
    phone_out = None
    warnings: list[str] = []
    if not blank(phone):
        try:
            phone_out = normalise_phone(phone, default_region)
        except Rejection as rejection:
            if email_out is None and external_out is None:
                raise
            warnings.append(f"phone_number dropped: {rejection.reason}")
    if email_out is None and phone_out is None and external_out is None:
        raise Rejection(NO_IDENTIFIER)
    # tuple.__new__ directly: a NamedTuple's own constructor is a Python-level function.
    return _new_tuple(Identity, (email_out, phone_out, external_out)), warnings
