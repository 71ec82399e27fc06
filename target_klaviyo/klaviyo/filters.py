"""Klaviyo filter expressions with every value escaped (https://developers.klaviyo.com/en/docs/filtering_).

Values are JSON-style double-quoted strings; a quote or backslash inside a value is escaped,
so an email like `o"brien@x.com` cannot break out of the expression.
"""

from __future__ import annotations

from collections.abc import Iterable


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def equals(field: str, value: str) -> str:
    return f"equals({field},{quote(value)})"


def any_of(field: str, values: Iterable[str]) -> str:
    return f"any({field},[{','.join(quote(v) for v in values)}])"
