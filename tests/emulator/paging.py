"""Query parameters of the GET operations: ``page[size]``, ``page[cursor]`` and the ``links`` they
give, and ``filter`` parsing (Klaviyo: API overview, Filtering and Pagination).
"""

from __future__ import annotations

import base64
import binascii
import bisect
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit

from .calls import Call, bad_parameter
from .filters import Condition, FilterError, parse_filter


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
        # The spec's page[size] bounds, e.g. get_lists "Min: 1. Max: 10." (Klaviyo: lists and
        # subscriptions).
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


def page(
    order: Sequence[int],
    start: int | None,
    size: int,
    keep: Callable[[int], bool] | None = None,
    *,
    descending: bool = False,
) -> tuple[list[int], int | None, int | None]:
    """One page of positions.

    ``order``: positions in page order (ascending, or descending when ``descending``);
    ``keep``: which positions match the request (all when None); ``start``: the position the
    page starts at (a cursor; None for the first page). Returns the page's positions and the
    positions where the next and the previous pages start (None when there is no such page).
    """
    if start is None:
        index = 0
    elif descending:
        index = bisect.bisect_left(order, -start, key=lambda position: -position)
    else:
        index = bisect.bisect_left(order, start)
    found: list[int] = []
    next_position = None
    for i in range(index, len(order)):
        position = order[i]
        if keep is None or keep(position):
            if len(found) == size:
                next_position = position
                break
            found.append(position)
    prev_position = None
    seen = 0
    for i in range(index - 1, -1, -1):
        position = order[i]
        if keep is None or keep(position):
            prev_position = position
            seen += 1
            if seen == size:
                break
    return found, next_position, prev_position


def filters(call: Call, allowed: dict[str, tuple[str, frozenset[str]]]) -> list[Condition]:
    raw = call.query.get("filter")
    if raw is None:
        return []
    try:
        return parse_filter(raw, allowed)
    except FilterError as exc:
        raise bad_parameter("filter", str(exc)) from None
