"""What a stream's request threads may hold (records/dispatch.py): reading waits for room by
records (`MAX_QUEUED_RECORDS`) and by request bytes (`MAX_QUEUED_BYTES`), so that a table of
wide rows — orders with their line items — waiting for Klaviyo's rate window takes tens of
megabytes, not the hundreds that 40,000 such records would."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

from target_klaviyo.records import dispatch
from target_klaviyo.records.dispatch import MAX_QUEUED_BYTES, MAX_QUEUED_RECORDS, Dispatcher
from target_klaviyo.records.item import IDENTIFIERS_NOT_KEPT, Item


def held_dispatcher(rows_per_request: int) -> tuple[Dispatcher, threading.Event, list[int]]:
    """A stream whose requests are all held (waiting for their window) until released."""
    release = threading.Event()
    sent: list[int] = []

    def send(chunk: Any) -> bool:
        sent.append(len(chunk.items))
        release.wait(30)
        return True

    run = SimpleNamespace(
        raise_if_failed=lambda: None,
        stopping=None,
        fail=lambda exc: None,
        stats=SimpleNamespace(add=lambda *args, **counts: None),
        gate=SimpleNamespace(check=lambda: None),
    )
    outcomes = SimpleNamespace(
        stream="orders", object="event", publish=lambda seq: None, hold=lambda *args: None
    )
    stream = Dispatcher(
        name="orders",
        max_items=rows_per_request,
        max_bytes=5_000_000,
        ordered=False,
        max_open_jobs=None,
        prepare=lambda items: items,
        send=send,
        outcomes=outcomes,  # type: ignore[arg-type]
        run=run,  # type: ignore[arg-type]
    )
    return stream, release, sent


def requests_handed_over(stream: Dispatcher, rows: int, row_bytes: int) -> int:
    """Fill requests of `rows` rows of `row_bytes` each until reading would have to wait."""
    handed = 0
    while True:
        for _ in range(rows):
            seq = stream.next_seq()
            stream.add(Item(seq, "{}", f"order-{seq}", IDENTIFIERS_NOT_KEPT, None, row_bytes, None))
        if stream.must_wait():
            return handed
        stream.flush()
        handed += 1


def test_wide_rows_wait_for_room_by_their_bytes() -> None:
    stream, release, sent = held_dispatcher(rows_per_request=1_000)
    try:
        # Rows of 3 KB: 3 MB a request; far fewer records than MAX_QUEUED_RECORDS.
        handed = requests_handed_over(stream, 1_000, 3_000)
        assert handed == MAX_QUEUED_BYTES // 3_000_000
        assert handed * 1_000 < MAX_QUEUED_RECORDS
    finally:
        release.set()
        stream.shutdown()
    assert sum(sent) == handed * 1_000


def test_narrow_rows_wait_for_room_by_their_count() -> None:
    stream, release, sent = held_dispatcher(rows_per_request=1_000)
    try:
        handed = requests_handed_over(stream, 1_000, 300)
        assert handed == MAX_QUEUED_RECORDS // 1_000
    finally:
        release.set()
        stream.shutdown()
    assert len(sent) == handed


def test_one_request_larger_than_the_bound_still_goes(monkeypatch: Any) -> None:
    """Nothing held: a request over the bound goes alone (else reading would wait forever)."""
    monkeypatch.setattr(dispatch, "MAX_QUEUED_BYTES", 1_000_000)
    stream, release, sent = held_dispatcher(rows_per_request=100)
    try:
        assert requests_handed_over(stream, 100, 20_000) == 1
    finally:
        release.set()
        stream.shutdown()
    assert sent == [100]
