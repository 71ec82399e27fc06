"""One run per stream (SPEC §3.15): a lock per (account, stream) in the ledger. Another run is
refused with the holder named, or waits up to its timeout; a dead run's lock is taken over.
Checked with real processes on both backends (SQLite: flock; PostgreSQL: advisory locks)."""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from target_klaviyo.ledger.store import StreamLock, StreamLocked
from tests.ledger_places import KINDS, LedgerPlace, ledger_place
from tests.support import REPO

ACCOUNT = "account-1"
STREAM = "public-customers"
EVENT_TIMEOUT_S = 60  # a helper that says nothing for this long has hung: fail, don't wait

# A run in miniature: opens the ledger, locks the stream and reports each step as a JSON line.
#   hold          lock at once; keep it until a line arrives on stdin; release
#   take T        lock, waiting up to T s
#   refused-then-take T   lock at once must fail (someone holds it); then lock waiting up to T s
HELPER = """
import json, sys
from target_klaviyo.ledger.store import StreamLocked, open_ledger

state_dir, url, schema, account, stream, mode, timeout = sys.argv[1:8]
ledger = open_ledger(state_dir, url=url or None, schema=schema)


def say(**event):
    print(json.dumps(event), flush=True)


def take(timeout_s):
    try:
        lock = ledger.lock_stream(account, stream, timeout_s)
    except StreamLocked as exc:
        say(refused=str(exc))
        return None
    took_over = lock.took_over.pid if lock.took_over else None
    say(locked=lock.holder.pid, since=lock.holder.since.isoformat(), took_over=took_over)
    return lock


if mode == "hold":
    lock = take(0)
    sys.stdin.readline()
    lock.release()
    say(released=True)
elif mode == "take":
    lock = take(float(timeout))
    if lock:
        lock.release()
elif mode == "refused-then-take":
    assert take(0) is None
    lock = take(float(timeout))
    if lock:
        lock.release()
ledger.close()
"""


class Helper:
    def __init__(self, place: LedgerPlace, mode: str, timeout_s: float = 0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HELPER, *place.args(), ACCOUNT, STREAM, mode, str(timeout_s)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def next_event(self) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=EVENT_TIMEOUT_S)
        except queue.Empty:
            self.proc.kill()
            pytest.fail(f"helper {self.proc.pid} said nothing for {EVENT_TIMEOUT_S} s")
        if event is None:
            assert self.proc.stderr is not None
            pytest.fail(f"helper {self.proc.pid} ended: {self.proc.stderr.read()}")
        return event

    def tell(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def finish(self) -> None:
        assert self.proc.wait(timeout=EVENT_TIMEOUT_S) == 0, self.proc.stderr


@pytest.fixture(params=KINDS)
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerPlace]:
    with ledger_place(request.param, tmp_path) as where:
        where.open().close()  # created (and migrated) once, before the processes race
        yield where


@pytest.fixture
def helpers() -> Iterator[list[Helper]]:
    started: list[Helper] = []
    yield started
    for helper in started:
        if helper.proc.poll() is None:
            helper.proc.kill()
            helper.proc.wait()


def start(helpers: list[Helper], place: LedgerPlace, mode: str, timeout_s: float = 0) -> Helper:
    helper = Helper(place, mode, timeout_s)
    helpers.append(helper)
    return helper


def test_a_second_run_is_refused_with_the_holder_named(
    place: LedgerPlace, helpers: list[Helper]
) -> None:
    holder = start(helpers, place, "hold")
    held = holder.next_event()
    assert held["locked"] == holder.proc.pid and held["took_over"] is None

    second = start(helpers, place, "take", 0)
    refused = second.next_event()["refused"]
    second.finish()
    since = datetime.fromisoformat(held["since"]).isoformat(timespec="seconds")
    assert refused == (
        f"stream {STREAM!r} is being loaded by another run (host {socket.gethostname()},"
        f" pid {holder.proc.pid}, since {since}); gave up after waiting 0 s (lock_timeout_s)"
    )
    holder.tell("release")
    assert holder.next_event() == {"released": True}
    holder.finish()


def test_a_waiting_run_gets_the_lock_when_the_holder_releases_it(
    place: LedgerPlace, helpers: list[Helper]
) -> None:
    holder = start(helpers, place, "hold")
    assert holder.next_event()["locked"] == holder.proc.pid
    waiter = start(helpers, place, "refused-then-take", 60)
    assert f"pid {holder.proc.pid}" in waiter.next_event()["refused"]
    # The waiter found the stream held and now waits; the holder lets go.
    holder.tell("release")
    assert holder.next_event() == {"released": True}
    got = waiter.next_event()
    assert got["locked"] == waiter.proc.pid
    assert got["took_over"] is None  # released, not abandoned
    holder.finish()
    waiter.finish()


def test_the_lock_of_a_killed_run_is_taken_over(place: LedgerPlace, helpers: list[Helper]) -> None:
    holder = start(helpers, place, "hold")
    assert holder.next_event()["locked"] == holder.proc.pid
    holder.proc.send_signal(signal.SIGKILL)
    holder.proc.wait(timeout=EVENT_TIMEOUT_S)
    # PostgreSQL ends the dead session as soon as it sees the socket closed: wait for that.
    successor = start(helpers, place, "take", 60)
    got = successor.next_event()
    assert got["locked"] == successor.proc.pid
    assert got["took_over"] == holder.proc.pid
    successor.finish()


# -- within one process --------------------------------------------------------------------


def test_one_process_cannot_take_a_stream_twice_and_other_streams_are_free(
    place: LedgerPlace,
) -> None:
    ledger = place.open()
    try:
        lock = ledger.lock_stream(ACCOUNT, STREAM, 0)
        assert isinstance(lock, StreamLock) and lock.held
        with pytest.raises(StreamLocked) as refused:
            ledger.lock_stream(ACCOUNT, STREAM, 0.3)
        assert f"pid {os.getpid()}" in str(refused.value)
        assert "this very process" in str(refused.value)
        assert refused.value.holder == lock.holder
        # Another stream, or the same stream of another account, is another lock.
        with ledger.lock_stream(ACCOUNT, "orders", 0) as other:
            assert other.held
        assert not other.held
        ledger.lock_stream("account-2", STREAM, 0).release()
        lock.release()
        lock.release()  # a second release does nothing
        with ledger.lock_stream(ACCOUNT, STREAM, 0) as again:
            assert again.took_over is None
    finally:
        ledger.close()


def test_two_ledgers_of_one_process_exclude_each_other(place: LedgerPlace) -> None:
    first, second = place.open(), place.open()
    try:
        lock = first.lock_stream(ACCOUNT, STREAM, 0)
        with pytest.raises(StreamLocked):
            second.lock_stream(ACCOUNT, STREAM, 0)
        releaser = threading.Timer(0.2, lock.release)
        releaser.start()
        with second.lock_stream(ACCOUNT, STREAM, 30) as taken:
            assert taken.took_over is None
        releaser.join()
    finally:
        first.close()
        second.close()


def test_closing_the_ledger_releases_its_locks(place: LedgerPlace) -> None:
    ledger = place.open()
    ledger.lock_stream(ACCOUNT, STREAM, 0)
    ledger.close()
    ledger = place.open()
    try:
        lock = ledger.lock_stream(ACCOUNT, STREAM, 0)
        assert lock.took_over is None  # released by close, not abandoned
        lock.release()
    finally:
        ledger.close()


def test_a_negative_timeout_is_refused(place: LedgerPlace) -> None:
    ledger = place.open()
    try:
        with pytest.raises(ValueError, match="lock_timeout_s must be 0 or more"):
            ledger.lock_stream(ACCOUNT, STREAM, -1)
    finally:
        ledger.close()


def test_sqlite_lock_files_are_private_and_emptied_on_release(tmp_path: Path) -> None:
    with ledger_place("sqlite", tmp_path) as place:
        ledger = place.open()
        try:
            lock = ledger.lock_stream(ACCOUNT, "stream/with:odd*chars", 0)
            (path,) = (place.state_dir / "locks").iterdir()
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert json.loads(path.read_text())["pid"] == os.getpid()
            lock.release()
            assert path.read_text() == ""
        finally:
            ledger.close()
