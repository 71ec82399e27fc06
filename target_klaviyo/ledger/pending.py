"""skip_unchanged hashes that wait in memory to be written to the ledger.

Up to `Ledger.SENT_BATCH` (key hash -> payload hash) pairs wait between writes: written one
at a time they would each touch a random page of the table. A dict of them made two int
objects a pair (about 120 bytes with the dict). Those small objects, made as jobs end, while
the reader makes and frees records by the hundred thousand, kept most of the interpreter's
memory arenas from being given back: with a full sync's jobs ending all along, the peak
grew by about 20 MB. Here the pairs sit in two flat arrays (an open-addressing table with
linear probing, 16 bytes a slot, a quarter to three eighths full): no object per pair.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from itertools import compress

MIN_SLOTS = 1 << 10


class PendingHashes:
    """key -> digest (64-bit signed ints), for the ledger's sent hashes not yet written."""

    def __init__(self, expected: int = 0) -> None:
        self.count = 0
        self._allocate(expected)

    def _allocate(self, expected: int) -> None:
        slots = MIN_SLOTS
        while slots < 2 * expected + 2:  # kept at most half full
            slots *= 2
        self._mask = slots - 1
        self._used = bytearray(slots)
        self._keys = array("q", bytes(8 * slots))
        self._digests = array("q", bytes(8 * slots))

    def __len__(self) -> int:
        return self.count

    def update(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Set key -> digest for each pair (a later pair for a key replaces an earlier one)."""
        pairs = pairs if isinstance(pairs, (list, tuple)) else list(pairs)
        if 2 * (self.count + len(pairs)) > len(self._used):
            self._grow(self.count + len(pairs))
        mask, used, keys, digests = self._mask, self._used, self._keys, self._digests
        added = 0
        for key, digest in pairs:
            slot = key & mask
            while used[slot]:
                if keys[slot] == key:
                    break
                slot = (slot + 1) & mask
            else:
                used[slot] = 1
                keys[slot] = key
                added += 1
            digests[slot] = digest
        self.count += added

    def get(self, key: int) -> int | None:
        mask, used, keys = self._mask, self._used, self._keys
        slot = key & mask
        while used[slot]:
            if keys[slot] == key:
                return self._digests[slot]
            slot = (slot + 1) & mask
        return None

    def split(self, wanted: dict[int, int]) -> tuple[set[int], list[int]]:
        """Of key -> digest wanted: (the keys waiting here with that digest, the keys not
        here at all)."""
        if not self.count:
            return set(), list(wanted)
        mask, used, keys, digests = self._mask, self._used, self._keys, self._digests
        same: set[int] = set()
        absent: list[int] = []
        for key, digest in wanted.items():
            slot = key & mask
            while used[slot]:
                if keys[slot] == key:
                    if digests[slot] == digest:
                        same.add(key)
                    break
                slot = (slot + 1) & mask
            else:
                absent.append(key)
        return same, absent

    def discard(self, keys: Iterable[int]) -> None:
        """Remove these keys (those not here are ignored)."""
        if not self.count:
            return
        mask, used, table, digests = self._mask, self._used, self._keys, self._digests
        for key in keys:
            slot = key & mask
            while used[slot] and table[slot] != key:
                slot = (slot + 1) & mask
            if not used[slot]:
                continue
            # Backward-shift deletion: a key further along the run that could live in the
            # freed slot moves there, so that every probe still ends at an empty slot.
            hole = slot
            slot = (slot + 1) & mask
            while used[slot]:
                home = table[slot] & mask
                if (slot - home) & mask >= (slot - hole) & mask:
                    table[hole] = table[slot]
                    digests[hole] = digests[slot]
                    hole = slot
                slot = (slot + 1) & mask
            used[hole] = 0
            self.count -= 1

    def take(self) -> tuple[list[int], list[int]]:
        """Every pair, sorted by key (as keys and digests), and the table emptied."""
        keys = list(compress(self._keys, self._used))
        digests = list(compress(self._digests, self._used))
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self.count = 0
        self._used[:] = bytes(len(self._used))
        return [keys[i] for i in order], [digests[i] for i in order]

    def _grow(self, expected: int) -> None:
        keys = list(compress(self._keys, self._used))
        digests = list(compress(self._digests, self._used))
        self.count = 0
        self._allocate(expected)
        self.update(list(zip(keys, digests)))
