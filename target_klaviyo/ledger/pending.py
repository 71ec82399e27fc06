"""skip_unchanged hashes that wait in memory for the ledger's next batch write.

A batch holds up to 100,000 (key, digest) pairs (`Ledger.SENT_BATCH`) for several seconds
of a run, while records come and go by the tens of thousands. As a dict of ints a batch was
200,000 small objects (about 12 MB) scattered among the records' own memory, which the
allocator could then not give back whole. Here a batch is one hash table in three flat
arrays — keys, digests and a state byte a slot (open addressing, linear probing) — 17 bytes
a slot at most half full, allocated as three blocks and dropped whole once written: the
peak RSS of 1,000,000 profiles went from 114-117 MB to 106-108 MB (benchmarks/README.md).
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable

# A slot is empty (0), holds a key and its digest, or a key whose digest was forgotten.
_USED, _FORGOTTEN = 1, 2
_LIVE_ONLY = bytes([0, 1]) + bytes(254)  # state -> 1 where a key has its digest, else 0


class PendingHashes:
    """key -> digest, both signed 64-bit ints, until `take`. Not thread-safe (the ledger's
    lock guards it)."""

    MIN_SLOTS = 1 << 10

    def __init__(self, expected: int = 0) -> None:
        self._expected = expected  # keys a batch usually reaches: sized for at first
        self._allocate(0)

    def _allocate(self, slots: int) -> None:
        self._keys = array("q", [0]) * slots
        self._digests = array("q", [0]) * slots
        self._state = bytearray(slots)
        self._mask = slots - 1
        # A key's first slot is its top bits, counted from the least key: slots follow key
        # order, so the table read slot by slot is in key order but for the few keys a
        # collision moved on: a batch write touches the table's pages in order.
        self._shift = 65 - max(slots, 2).bit_length()
        self._half = slots // 2
        self._live = 0  # keys with a digest
        self._occupied = 0  # slots not empty (live or forgotten): what probes walk past

    def __len__(self) -> int:
        return self._live

    def update(self, pairs: Iterable[tuple[int, int]], count: int | None = None) -> None:
        """Each key's digest; a later pair for a key replaces the earlier one. `count`: how
        many pairs there are at most, when they come one at a time (a job's rows, zipped
        from its hash arrays, need no list of their own)."""
        if count is None:
            pairs = list(pairs)
            count = len(pairs)
        if 2 * (self._occupied + count) > len(self._state):
            self._resize(max(self._expected, self._occupied + count))
        keys, digests, state, mask = self._keys, self._digests, self._state, self._mask
        shift, half, used = self._shift, self._half, _USED
        added = revived = 0
        for key, digest in pairs:
            slot = (key >> shift) + half
            if state[slot]:  # taken: the key is further along, or the first empty slot is
                while state[slot] and keys[slot] != key:
                    slot = (slot + 1) & mask
                if state[slot]:  # the key: live, or forgotten and back
                    if state[slot] != used:
                        state[slot] = used
                        revived += 1
                    digests[slot] = digest
                    continue
            keys[slot] = key
            digests[slot] = digest
            state[slot] = used
            added += 1
        self._occupied += added
        self._live += added + revived

    def split(self, wanted: dict[int, int]) -> tuple[set[int], list[int]]:
        """Of key -> digest: the keys whose waiting digest is that one, and the keys without
        a waiting digest (for the database to answer)."""
        if not self._live:
            return set(), list(wanted)
        keys, digests, state, mask = self._keys, self._digests, self._state, self._mask
        shift, half = self._shift, self._half
        same: set[int] = set()
        asked: list[int] = []
        used = _USED
        for key, digest in wanted.items():
            slot = (key >> shift) + half
            if not state[slot]:  # most keys: not waiting, and their slot is empty
                asked.append(key)
                continue
            while state[slot] and keys[slot] != key:
                slot = (slot + 1) & mask
            if state[slot] != used:
                asked.append(key)
            elif digests[slot] == digest:
                same.add(key)
        return same, asked

    def forget(self, keys: Iterable[int]) -> None:
        """These keys' digests are not to be written."""
        if not self._live:
            return
        table, state, mask = self._keys, self._state, self._mask
        shift, half = self._shift, self._half
        for key in keys:
            slot = (key >> shift) + half
            while state[slot] and table[slot] != key:
                slot = (slot + 1) & mask
            if state[slot] == _USED:
                state[slot] = _FORGOTTEN
                self._live -= 1

    def take(self) -> tuple[array[int], array[int]]:
        """Every (key, digest), as two arrays in slot order, which is key order but where a
        collision moved a key on (all a batch write needs); the table is emptied. Read
        straight into the arrays: lists of a batch's keys, digests and their order were
        300,000 small objects made at once, mid-run, among the records' own memory."""
        live = self._state
        if self._live != self._occupied:
            live = live.translate(_LIVE_ONLY)
        keys = array("q", itertools.compress(self._keys, live))
        digests = array("q", itertools.compress(self._digests, live))
        self._allocate(0)
        return keys, digests

    def _resize(self, needed: int) -> None:
        """Room for `needed` keys at most half full; the live ones are moved over."""
        keys, digests = self.take()
        slots = self.MIN_SLOTS
        while slots < 2 * needed:
            slots *= 2
        self._allocate(slots)
        self.update(zip(keys, digests, strict=True), len(keys))


class WrittenKeys:
    """The keys whose hashes this run wrote, as a one-hash Bloom filter over 2 MB of bits.

    In a first sync (the ledger held no hashes) a stored hash of one of this run's keys can
    only be one this run wrote (keys are seeded by stream; a stream is one run's at a time):
    a key the filter never saw needs no look-up, and a key it saw is looked up as before. One
    key in 17 is asked in vain at 1,000,000 keys written, nearly one in two at 10,000,000. A
    key missed here is sent again, never skipped wrongly. Keys are random 64-bit hashes
    already: their own bits are the index.
    """

    BITS = 1 << 24

    def __init__(self) -> None:
        self._bits = bytearray(self.BITS >> 3)
        self._mask = (self.BITS >> 3) - 1

    def add(self, keys: Iterable[int]) -> None:
        bits, mask = self._bits, self._mask
        for key in keys:
            bits[(key >> 3) & mask] |= 1 << (key & 7)

    def maybe(self, keys: Iterable[int]) -> list[int]:
        """The keys that may have been written."""
        bits, mask = self._bits, self._mask
        return [key for key in keys if bits[(key >> 3) & mask] >> (key & 7) & 1]
