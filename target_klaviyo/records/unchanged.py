"""skip_unchanged: a record whose outgoing payload is byte for byte the last one Klaviyo
accepted for its key is not sent again.

The ledger keeps one 64-bit hash per key: keys are hashed in a namespace (a stream and its
object by default; a list, or consent, where several streams write the same thing), and the
payload hash is seeded by the mapping's fingerprint, so that a new mapping sends everything.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import xxhash

from target_klaviyo.ledger.store import Ledger, hash64, sent_keys
from target_klaviyo.mapping.values import encode_sorted
from target_klaviyo.records.item import Item

xxh3_64 = xxhash.xxh3_64_intdigest
_SIGN_BIT = 1 << 63
_WRAP = 1 << 64


class UnchangedFilter:
    def __init__(
        self,
        ledger: Ledger | None,
        namespace: str,
        obj: str,
        fingerprint: str,
        *,
        enabled: bool,
        of_key: bool = False,
    ) -> None:
        self.enabled = enabled and ledger is not None
        self.of_key = of_key
        self._ledger = ledger
        self.key_of: Callable[[str], int] = sent_keys(namespace, obj)
        self.seed = int(fingerprint[:16], 16)

    def digest(self, key: str, payload: Any, encoded: Any) -> int:
        """The hash skip_unchanged compares: the outgoing payload, seeded by the mapping; or,
        for what Klaviyo never updates (events), the key alone: once accepted, any later copy
        is a repeat."""
        if self.of_key:
            return hash64(key.encode())
        if type(encoded) is not bytes:
            encoded = encode_sorted(payload)
        value = xxh3_64(encoded, self.seed)  # hash64, inline: once per record
        return value - _WRAP if value >= _SIGN_BIT else value

    def split(self, items: list[Item]) -> tuple[list[Item], list[Item]]:
        """(to send, unchanged): what Klaviyo already accepted, byte for byte, is left out."""
        if not self.enabled:
            return items, []
        assert self._ledger is not None
        key_of = self.key_of
        pairs = []
        for item in items:
            item.sent = sent = key_of(item.key)  # kept for `remember`
            pairs.append((sent, item.digest or 0))
        same = self._ledger.unchanged(pairs)
        if not same:
            return items, []
        kept: list[Item] = []
        skipped: list[Item] = []
        for item, (key, _) in zip(items, pairs, strict=True):
            (skipped if key in same else kept).append(item)
        return kept, skipped

    def remember(self, items: Sequence[Item]) -> None:
        """Klaviyo accepted these payloads."""
        if self.enabled and items:
            assert self._ledger is not None
            key_of = self.key_of
            self._ledger.remember_sent(
                [
                    (item.sent if item.sent is not None else key_of(item.key), item.digest)
                    for item in items
                    if item.digest is not None
                ]
            )

    def forget(self, items: Sequence[Item]) -> None:
        """These must be sent again next time (rejected), not skipped as unchanged."""
        if self.enabled:
            self.forget_keys([item.key for item in items if item.digest is not None])

    def forget_keys(self, keys: Sequence[str]) -> None:
        if self._ledger is not None and keys and not self._ledger.read_only:
            self._ledger.forget_sent([self.key_of(key) for key in keys])
