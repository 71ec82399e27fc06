"""Query parameters of the GET operations: ``page[size]``, ``page[cursor]`` and the ``links`` they
give, and ``filter`` parsing (klaviyo-api.md §1, Filtering and Pagination).
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

from .calls import Call, bad_parameter
from .filters import Condition, FilterError, parse_filter

_T = TypeVar("_T")


def page_size(call: Call) -> int:
    bounds = call.operation.page_size or {"default": 20, "minimum": 1, "maximum": 100}
    raw = call.query.get("page[size]")
    if raw is None:
        return bounds["default"]
    try:
        size = int(raw)
    except ValueError:
        raise bad_parameter("page[size]", f"'{raw}' is not a valid integer.") from None
    if not bounds["minimum"] <= size <= bounds["maximum"]:
        # The spec's page[size] bounds, e.g. get_lists "Min: 1. Max: 10." (klaviyo-api.md §4.2).
        raise bad_parameter(
            "page[size]",
            f"Page size must be between {bounds['minimum']} and {bounds['maximum']}.",
        )
    return size


def cursor(call: Call) -> int:
    """The position a page starts at (0 without ``page[cursor]``)."""
    position = cursor_given(call)
    return 0 if position is None else position


def cursor_given(call: Call) -> int | None:
    """The position ``page[cursor]`` names, None without one."""
    raw = call.query.get("page[cursor]")
    if raw is None:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        kind, _, position = text.partition(":")
        if kind != "emu" or not position.isdigit():
            raise ValueError(text)
        return int(position)
    except (ValueError, binascii.Error):
        raise bad_parameter("page[cursor]", f"Invalid cursor '{raw}'.") from None


def links(
    call: Call, next_position: int | None, prev_position: int | None = None
) -> dict[str, Any]:
    """``links`` of a page: ``next`` and ``prev`` carry the cursors of the pages around it."""
    return {
        "self": call.url,
        "next": None if next_position is None else _link(call, next_position),
        "prev": None if prev_position is None else _link(call, prev_position),
    }


def _link(call: Call, position: int) -> str:
    token = base64.urlsafe_b64encode(f"emu:{position}".encode()).decode().rstrip("=")
    pairs = [(k, v) for k, v in call.query_pairs if k != "page[cursor]"]
    pairs.append(("page[cursor]", token))
    path = urlsplit(call.url).path
    return f"{call.base_url}{path}?{urlencode(pairs)}"


def take(positions: Iterator[tuple[int, Any]], size: int) -> tuple[list[Any], int | None]:
    """Up to ``size`` items, and the position of the next item (None when there is none)."""
    page: list[Any] = []
    for position, item in positions:
        if len(page) == size:
            return page, position
        page.append(item)
    return page, None


def window(
    entries: Sequence[tuple[int, _T]], start: int | None, size: int, *, descending: bool = False
) -> tuple[list[_T], int | None, int | None]:
    """One page of ``entries`` (``(position, item)`` already filtered and in page order, the
    positions ascending, or descending when ``descending``): the page starting at position
    ``start`` (None: the first page), and the positions the next and previous pages start at.
    """
    keys = [-position if descending else position for position, _ in entries]
    index = 0 if start is None else bisect.bisect_left(keys, -start if descending else start)
    page = [item for _, item in entries[index : index + size]]
    next_position = entries[index + size][0] if index + size < len(entries) else None
    prev_position = entries[max(0, index - size)][0] if index > 0 else None
    return page, next_position, prev_position


def filters(call: Call, allowed: dict[str, tuple[str, frozenset[str]]]) -> list[Condition]:
    raw = call.query.get("filter")
    if raw is None:
        return []
    try:
        return parse_filter(raw, allowed)
    except FilterError as exc:
        raise bad_parameter("filter", str(exc)) from None
