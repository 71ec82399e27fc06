"""The skip_unchanged hashes that wait in memory (ledger/pending.py) behave as a dict."""

from __future__ import annotations

import random

from target_klaviyo.ledger.pending import MIN_SLOTS, PendingHashes

INT64 = 1 << 63


def _check(table: PendingHashes, model: dict[int, int], probes: list[int]) -> None:
    assert len(table) == len(model)
    for key in probes:
        assert table.get(key) == model.get(key)
    wanted = {key: model.get(key, 7) for key in probes}
    same, absent = table.split(wanted)
    assert same == {k for k, d in wanted.items() if model.get(k) == d}
    assert absent == [k for k in wanted if k not in model]


def test_random_operations_match_a_dict_with_colliding_keys() -> None:
    rng = random.Random(18)
    # Keys crowd a few home slots (the same low bits), negative and positive, so that runs
    # wrap around the end of the table and deletions have to shift keys back.
    homes = [0, 1, 2, MIN_SLOTS - 2, MIN_SLOTS - 1, 500]
    universe = [
        (rng.randrange(-(1 << 40), 1 << 40) * MIN_SLOTS * 64 + rng.choice(homes)) % INT64
        - (INT64 if rng.random() < 0.5 else 0)
        for _ in range(3_000)
    ]
    table = PendingHashes()
    model: dict[int, int] = {}
    for round_ in range(300):
        batch = [(rng.choice(universe), rng.randrange(-INT64, INT64)) for _ in range(20)]
        table.update(batch)
        model.update(batch)
        gone = rng.sample(universe, 15)
        table.discard(gone)
        for key in gone:
            model.pop(key, None)
        _check(table, model, rng.sample(universe, 60))
        if round_ % 100 == 99:
            keys, digests = table.take()
            assert keys == sorted(model)
            assert digests == [model[key] for key in keys]
            assert len(table) == 0
            model.clear()
            _check(table, model, universe[:100])


def test_grows_past_its_first_size_and_keeps_every_pair() -> None:
    rng = random.Random(7)
    pairs = {rng.randrange(-INT64, INT64): rng.randrange(-INT64, INT64) for _ in range(20_000)}
    table = PendingHashes(expected=100)
    items = list(pairs.items())
    for start in range(0, len(items), 3_000):
        table.update(iter(items[start : start + 3_000]))  # any iterable of pairs
    _check(table, pairs, list(pairs)[:2_000] + [1, 2, 3])
    keys, digests = table.take()
    assert keys == sorted(pairs)
    assert digests == [pairs[key] for key in keys]


def test_a_later_digest_replaces_an_earlier_one() -> None:
    table = PendingHashes()
    table.update([(5, 1), (5 + MIN_SLOTS, 2)])
    table.update([(5, 3)])
    assert (len(table), table.get(5), table.get(5 + MIN_SLOTS)) == (2, 3, 2)
    table.discard([5, 99])
    assert (len(table), table.get(5), table.get(5 + MIN_SLOTS)) == (1, None, 2)
