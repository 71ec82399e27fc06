"""What travels along a record's route: the mapped record and its request."""

from __future__ import annotations

import functools
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from target_klaviyo.ledger.store import HeldRecord


class Mapped(NamedTuple):
    """What a sink's mapping makes of one record (one is made per record: build it with
    `mapped((...))`, which skips the NamedTuple constructor's Python-level call)."""

    key: str  # one Klaviyo identity (or event) per key in a request
    identifiers: dict[str, Any]  # for rejects and error matching
    payload: Any  # the resource, when it is not sent as `encoded`
    size: int  # bytes it adds to a request body
    warnings: Sequence[str]
    encoded: Any  # the payload as encoded by the mapping (bytes, or a sink's own form)


# An item's identifiers when its sink does not keep them (compared by identity; never filled).
IDENTIFIERS_NOT_KEPT: dict[str, Any] = {}

# mapped((key, identifiers, payload, size, warnings, encoded)) -> Mapped, in C.
mapped: Callable[[tuple[Any, ...]], Mapped] = functools.partial(tuple.__new__, Mapped)


@dataclass(slots=True)
class Item:
    """One mapped record on its way to Klaviyo."""

    seq: int
    # The record, or the line of input it was read from: a line takes a fraction of the
    # memory of its decoded record, and the record is needed again only to reject or hold it.
    source: dict[str, Any] | str
    key: str
    identifiers: dict[str, Any]  # IDENTIFIERS_NOT_KEPT: see `KlaviyoSink.identifiers_of`
    payload: Any
    size: int
    digest: int | None  # skip_unchanged: the payload's hash
    held: HeldRecord | None = None
    encoded: Any = None  # the payload as sent, when the mapping encoded it already
    settled: bool = False  # has its outcome (loaded, unchanged, rejected or on hold)
    sent: int | None = None  # skip_unchanged: the ledger key, once computed

    @property
    def attempts(self) -> int:
        return self.held.attempts if self.held else 0


@dataclass(slots=True)
class Request:
    """An encoded request body and how to find the item a Klaviyo error pointer names."""

    body: bytes
    locate: Callable[[str], list[int]]
    # When the body is a head, the items' encoded parts joined by commas, and a tail
    # (`protocol.join_parts`): the head's length and where each part ends, counted in parts
    # only. The items' own copies can then go while the request is out (`part` cuts one
    # back out of the body).
    head: int = 0
    ends: array[int] | None = None
    # Where the body cannot give a part back (events sit grouped by profile): item `index`'s
    # encoded form made again from its record. The items' own copies go while the request is
    # out here too, and only a resend (a 400 naming rows, a 413) makes them again.
    restore: Callable[[int], Any] | None = None

    @property
    def parts_kept(self) -> bool:
        """Whether the items' encoded parts can be had again without their own copies."""
        return self.ends is not None or self.restore is not None

    def part(self, index: int) -> Any:
        """Item `index`'s encoded part, as the body holds it (or made again)."""
        if self.ends is None:
            assert self.restore is not None
            return self.restore(index)
        start = self.head + index + (self.ends[index - 1] if index else 0)
        return self.body[start : self.head + index + self.ends[index]]
