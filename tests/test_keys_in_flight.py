"""The keys on their way (records/dispatch.py): what keeps one identity's writes in input order
while a million records wait in open jobs. Checked against a set of the same keys."""

from __future__ import annotations

import random
import sys
from array import array

from target_klaviyo.records.dispatch import KeysInFlight


def test_keys_in_flight_agree_with_a_set_as_chunks_come_and_go() -> None:
    rng = random.Random(7)
    keys, reference = KeysInFlight(), set()
    chunks: list[array[int]] = []
    for _ in range(2_000):
        if chunks and rng.random() < 0.45:
            chunk = chunks.pop(rng.randrange(len(chunks)))
            keys.remove(chunk)
            reference.difference_update(chunk)
        else:
            # Random hashes, and hashes sharing their low bits (one bucket), and zero.
            fresh = {
                rng.choice([rng.getrandbits(64) - 2**63, rng.randrange(-50, 50) << 16, 0])
                for _ in range(rng.randint(1, 300))
            }
            chunk = array("q", sorted(fresh - reference))
            assert not keys.overlaps(chunk)
            keys.add(chunk)
            reference.update(chunk)
            chunks.append(chunk)
        assert keys.count == len(reference)
        for key in rng.sample(sorted(reference), min(20, len(reference))):
            assert keys.overlaps([rng.getrandbits(64) - 2**63, key])
        strangers = [rng.getrandbits(64) - 2**63 for _ in range(20)]
        assert keys.overlaps(strangers) == any(key in reference for key in strangers)
    for chunk in chunks:
        keys.remove(chunk)
    assert keys.count == 0
    assert not keys.overlaps(list(reference))
    keys.remove(array("q", [1, 2, 3]))  # keys not on their way: nothing happens
    keys.add(array("q", [5]))
    keys.remove(array("q", [5, 6]))
    assert keys.count == 0


def test_a_key_made_of_the_bytes_of_two_neighbours_is_not_on_its_way() -> None:
    """A bucket keeps its keys' bytes end to end: eight bytes straddling two keys of the bucket
    may spell a third key of it, which is still not on its way."""

    def key(*octets: int) -> int:
        return int.from_bytes(bytes(octets), sys.byteorder, signed=True)

    # In memory, the straddling key is the second half of the first and the first half of
    # the second; on a little-endian machine all three share their low 16 bits: one bucket.
    first, second = key(0, 0, 1, 2, 0, 0, 5, 6), key(0, 0, 7, 8, 0, 0, 9, 10)
    straddling = key(0, 0, 5, 6, 0, 0, 7, 8)
    keys = KeysInFlight()
    keys.add(array("q", [first, second]))
    assert keys.overlaps([second])
    assert not keys.overlaps([straddling])
    keys.remove(array("q", [straddling]))
    assert keys.count == 2 and keys.overlaps([first]) and keys.overlaps([second])
    keys.remove(array("q", [first, second]))
    assert keys.count == 0
