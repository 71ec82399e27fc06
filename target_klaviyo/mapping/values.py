"""JSON-safe value conversion, compact encoding and payload sizes.

Records arrive from singer-sdk with floats as ``Decimal``, ``date-time`` strings parsed to
``datetime`` and ``date`` strings to ``date``; they may also hold bytes, NaN / Infinity and nested
objects. :func:`to_json` turns any of these into plain JSON types, deterministically: the same input
always gives the same output, so payload hashes are stable from run to run.
"""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Mapping
from datetime import date, datetime, time, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import msgspec

__all__ = [
    "MAX_SAFE_INTEGER",
    "decimal_to_json",
    "encode",
    "encode_sorted",
    "encode_sorted_exact",
    "encoded_size",
    "format_datetime",
    "format_seconds",
    "parse_instant",
    "to_json",
]

# Integers beyond ±2**53 cannot be represented exactly by a JSON reader that uses doubles
# (JavaScript, and most likely Klaviyo's storage); they are sent as decimal strings instead.
MAX_SAFE_INTEGER = 2**53

_MAX_EXACT_DIGITS = 64
_UTC = timezone.utc
_encoder = msgspec.json.Encoder()
_sorted_encoder = msgspec.json.Encoder(order="deterministic")
_decoder = msgspec.json.Decoder()


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with an explicit ``+00:00`` offset; naive values are taken as UTC."""
    zone = value.tzinfo
    if zone is not _UTC:
        value = value.replace(tzinfo=_UTC) if zone is None else value.astimezone(_UTC)
    # msgspec writes the digits `isoformat()` writes (UTC as "Z") in a twentieth of its time.
    return _encoder.encode(value)[1:-2].decode() + "+00:00"


def _integer(value: int) -> int | str:
    if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
        return value
    return str(value)


def decimal_to_json(value: Decimal) -> int | float | str | None:
    """What `to_json` makes of a Decimal."""
    if not value.is_finite():
        return None
    number = float(value)
    if not number.is_integer() and math.isfinite(number):
        return number  # the common case: a fraction within a double's range
    # Integers of up to 64 digits are kept exact; beyond that (1E+400, say) a double it is.
    if value.adjusted() < _MAX_EXACT_DIGITS and value == value.to_integral_value():
        return _integer(int(value))
    result = float(value)
    # A finite Decimal can still overflow a double (e.g. 1.5E+400).
    return result if math.isfinite(result) else None


def _set_items(value: set[Any] | frozenset[Any]) -> list[Any]:
    items = [to_json(item) for item in value]
    items.sort(key=repr)
    return items


def to_json(value: Any) -> Any:
    """Convert ``value`` to JSON types (dict with str keys, list, str, int, float, bool, None).

    * ``Decimal``: ``int`` when integral and within ±2**53, a decimal string when integral and
      larger (exact, up to 64 digits), else ``float``; NaN / ±Infinity (and values beyond a
      double's range) become ``None``.
    * ``float`` NaN / ±Infinity become ``None``; ints beyond ±2**53 become decimal strings.
    * ``datetime``: ISO 8601 in UTC (``...+00:00``; naive values are taken as UTC).
    * ``date``: ``YYYY-MM-DD``; ``time``: ISO format; bytes: base64; UUID: str.
    * dict: str keys (recursively); list / tuple: list; set: list sorted by ``repr``.
    * anything else: ``str(value)``.
    """
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
        return str(value)
    if kind is Decimal:
        return decimal_to_json(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is dict:
        return {
            (key if type(key) is str else str(to_json(key))): to_json(item)
            for key, item in value.items()
        }
    if kind is list or kind is tuple:
        return [to_json(item) for item in value]
    if kind is datetime:
        return format_datetime(value)
    if kind is date:
        return value.isoformat()
    return _to_json_slow(value)


def _to_json_slow(value: Any) -> Any:
    """Subclasses and the rarer types."""
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return _integer(int(value))
    if isinstance(value, float):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Decimal):
        return decimal_to_json(value)
    if isinstance(value, datetime):
        return format_datetime(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, time):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, Mapping):
        return {
            (key if type(key) is str else str(to_json(key))): to_json(item)
            for key, item in value.items()
        }
    if isinstance(value, (set, frozenset)):
        return _set_items(value)
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    return str(value)


def encode(obj: Any) -> bytes:
    """Compact JSON of an already JSON-safe object (keys in insertion order)."""
    return _encoder.encode(obj)


def decode(data: bytes) -> Any:
    """The inverse of `encode`."""
    return _decoder.decode(data)


def encode_sorted(obj: Any) -> bytes:
    """Compact JSON with object keys sorted: independent of dict insertion order, so that a
    tap reordering its columns does not make an unchanged record look changed."""
    return _sorted_encoder.encode(obj)


_buffers = threading.local()


def encode_sorted_exact(obj: Any) -> bytes:
    """`encode_sorted`, in an allocation of exactly its size, for payloads that wait with
    their records: `encode` grows its output and keeps up to a quarter of it spare (about
    150 bytes of a 400-byte profile, times the tens of thousands of records on their way).
    Encoded into this thread's buffer, then copied."""
    buffer = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = bytearray(1024)
    _sorted_encoder.encode_into(obj, buffer)
    return bytes(buffer)


def encoded_size(obj: Any) -> int:
    """Bytes of ``encode(obj)``: what the object adds to a request body."""
    return len(_encoder.encode(obj))


def parse_instant(value: Any) -> datetime | None:
    """A point in time from a datetime, a date (midnight UTC) or an ISO 8601 string.

    Returns an aware UTC datetime, or None when the value is not a recognisable time. Naive
    values are taken as UTC.
    """
    if type(value) is datetime and value.tzinfo is _UTC:
        return value
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=_UTC)
    elif isinstance(value, str):
        text = value.strip()
        if text[-1:] in ("Z", "z"):
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
    else:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=_UTC)
    return moment.astimezone(_UTC)


def format_seconds(moment: datetime) -> str:
    """``YYYY-MM-DDTHH:MM:SS+00:00`` of an aware datetime, truncated to the second."""
    if moment.microsecond:
        moment = moment.replace(microsecond=0)
    return format_datetime(moment)
