"""skip_unchanged hashes that wait in memory for the ledger's next batch write.

A batch holds up to 100,000 (key, digest) pairs (`Ledger.SENT_BATCH`) for several seconds
of a run, while records come and go by the tens of thousands. As a dict of ints a batch was
200,000 small objects (about 12 MB) scattered among the records' own memory, which the
allocator could then not give back whole: at 1,000,000 profiles the run's peak RSS was
110-117 MB against 88-90 MB at 100,000 (benchmarks/README.md). Here a batch is one hash
table in three flat arrays — keys, digests and a state byte a slot (open addressing,
linear probing) — 17 bytes a slot at most half full, allocated as three blocks and
dropped whole once written.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Iterable

# A slot is empty (0), holds a key and its digest, or a key whose digest was forgotten.
_USED, _FORGOTTEN = 1, 2


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
        self._live = 0  # keys with a digest
        self._occupied = 0  # slots not empty (live or forgotten): what probes walk past

    def __len__(self) -> int:
        return self._live

    def update(self, pairs: Iterable[tuple[int, int]]) -> None:
        """Each key's digest; a later pair for a key replaces the earlier one."""
        pairs = list(pairs)
        if 2 * (self._occupied + len(pairs)) > len(self._state):
            self._resize(max(self._expected, self._occupied + len(pairs)))
        keys, digests, state, mask = self._keys, self._digests, self._state, self._mask
        added = revived = 0
        for key, digest in pairs:
            slot = key & mask
            while state[slot] and keys[slot] != key:
                slot = (slot + 1) & mask
            if state[slot] != _USED:
                if state[slot]:
                    revived += 1
                else:
                    keys[slot] = key
                    added += 1
                state[slot] = _USED
            digests[slot] = digest
        self._occupied += added
        self._live += added + revived

    def split(self, wanted: dict[int, int]) -> tuple[set[int], list[int]]:
        """Of key -> digest: the keys whose waiting digest is that one, and the keys without
        a waiting digest (for the database to answer)."""
        if not self._live:
            return set(), list(wanted)
        keys, digests, state, mask = self._keys, self._digests, self._state, self._mask
        same: set[int] = set()
        asked: list[int] = []
        for key, digest in wanted.items():
            slot = key & mask
            while state[slot] and keys[slot] != key:
                slot = (slot + 1) & mask
            if state[slot] != _USED:
                asked.append(key)
            elif digests[slot] == digest:
                same.add(key)
        return same, asked

    def forget(self, keys: Iterable[int]) -> None:
        """These keys' digests are not to be written."""
        table, state, mask = self._keys, self._state, self._mask
        if not self._live:
            return
        for key in keys:
            slot = key & mask
            while state[slot]:
                if table[slot] == key:
                    if state[slot] == _USED:
                        state[slot] = _FORGOTTEN
                        self._live -= 1
                    break
                slot = (slot + 1) & mask

    def take(self) -> tuple[array[int], array[int]]:
        """Every (key, digest), sorted by key, as two arrays; the table is emptied."""
        keys, digests = self._keys, self._digests
        slots = self._live_slots()
        slots.sort(key=keys.__getitem__)
        taken = (
            array("q", map(keys.__getitem__, slots)),
            array("q", map(digests.__getitem__, slots)),
        )
        self._allocate(0)
        return taken

    def _live_slots(self) -> list[int]:
        state = self._state
        slots = list(itertools.compress(range(len(state)), state))  # live or forgotten
        if len(slots) != self._live:
            slots = [slot for slot in slots if state[slot] == _USED]
        return slots

    def _resize(self, needed: int) -> None:
        """Room for `needed` keys at most half full; the live ones are moved over."""
        keys, digests = self._keys, self._digests
        live = [(keys[slot], digests[slot]) for slot in self._live_slots()]
        slots = self.MIN_SLOTS
        while slots < 2 * needed:
            slots *= 2
        self._allocate(slots)
        self.update(live)
