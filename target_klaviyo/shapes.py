"""Work done once per record shape (a record's columns in order, sometimes with the types of
its values) and kept: a stream's records nearly all share a few shapes.

Every such cache keeps at most `SHAPES_KEPT` entries; beyond them a record is worked out on its
own (correct, only slower), so memory stays bounded whatever the input.
"""

from __future__ import annotations

from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")

SHAPES_KEPT = 256


def keep(cache: dict[K, V], key: K, value: V) -> V:
    """Remember `value` for `key` while the cache has room; return it either way."""
    if len(cache) < SHAPES_KEPT:
        cache[key] = value
    return value
