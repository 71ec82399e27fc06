"""Query parameters of the GET operations: ``page[size]``, ``page[cursor]`` and the ``links`` they
give, and ``filter`` parsing (klaviyo-api.md §1, Filtering and Pagination).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator
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
        # The spec's page[size] bounds, e.g. get_lists "Min: 1. Max: 10." (klaviyo-api.md §4.2).
        raise bad_parameter(
            "page[size]",
            f"Page size must be between {bounds['minimum']} and {bounds['maximum']}.",
        )
    return size


def cursor(call: Call) -> int:
    """The position a page starts at (0 without ``page[cursor]``)."""
    raw = call.query.get("page[cursor]")
    if raw is None:
        return 0
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        kind, _, position = text.partition(":")
        if kind != "emu" or not position.isdigit():
            raise ValueError(text)
        return int(position)
    except (ValueError, binascii.Error):
        raise bad_parameter("page[cursor]", f"Invalid cursor '{raw}'.") from None


def links(call: Call, next_position: int | None) -> dict[str, Any]:
    """``links`` of a page: ``next`` carries the cursor of the page after this one."""
    found: dict[str, Any] = {"self": call.url, "next": None, "prev": None}
    if next_position is not None:
        token = base64.urlsafe_b64encode(f"emu:{next_position}".encode()).decode().rstrip("=")
        pairs = [(k, v) for k, v in call.query_pairs if k != "page[cursor]"]
        pairs.append(("page[cursor]", token))
        path = urlsplit(call.url).path
        found["next"] = f"{call.base_url}{path}?{urlencode(pairs)}"
    return found


def take(positions: Iterator[tuple[int, Any]], size: int) -> tuple[list[Any], int | None]:
    """Up to ``size`` items, and the position of the next item (None when there is none)."""
    page: list[Any] = []
    for position, item in positions:
        if len(page) == size:
            return page, position
        page.append(item)
    return page, None


def filters(call: Call, allowed: dict[str, tuple[str, frozenset[str]]]) -> list[Condition]:
    raw = call.query.get("filter")
    if raw is None:
        return []
    try:
        return parse_filter(raw, allowed)
    except FilterError as exc:
        raise bad_parameter("filter", str(exc)) from None
