"""One run per stream at a time (SPEC §3.15): a lock per (account, stream) held for the run.

Each backend takes the lock with something the operating system or the database lets go of
when the holding process dies, so a dead run's lock is taken over without anyone clearing it:

- SQLite ledger: `fcntl.flock` on a file per (account, stream) under `<state_dir>/locks/`
  (the kernel drops the lock with the process's last descriptor);
- PostgreSQL ledger: a session-level advisory lock on a connection kept for the run (the
  server drops it when the session ends), see `target_klaviyo/ledger/postgres.py`.

Both write who holds the lock (host, pid, since) where the next run can read it, to name the
holder when it has to give up.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

import xxhash

from target_klaviyo.ledger.errors import LedgerError

POLL_S = 0.1  # how often a waiting run tries the lock again


@dataclass(frozen=True)
class Holder:
    """Who holds a stream lock."""

    host: str
    pid: int
    since: datetime

    @classmethod
    def this_process(cls, since: datetime | None = None) -> Holder:
        return cls(socket.gethostname(), os.getpid(), since or datetime.now(timezone.utc))

    def describe(self) -> str:
        return f"host {self.host}, pid {self.pid}, since {self.since.isoformat(timespec='seconds')}"

    def to_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "since": self.since.isoformat()})

    @classmethod
    def from_json(cls, text: str) -> Holder | None:
        try:
            data = json.loads(text)
            return cls(str(data["host"]), int(data["pid"]), datetime.fromisoformat(data["since"]))
        except (ValueError, TypeError, KeyError):
            return None


class StreamLocked(LedgerError):  # noqa: N818 (the public name)
    """Another live run holds the stream; the message names the stream and the holder."""

    def __init__(self, stream: str, holder: Holder | None, waited_s: float) -> None:
        self.stream = stream
        self.holder = holder
        self.waited_s = waited_s
        who = holder.describe() if holder is not None else "holder not recorded yet"
        if holder is not None and holder.pid == os.getpid() and holder.host == socket.gethostname():
            who += ": this very process"
        super().__init__(
            f"stream {stream!r} is being loaded by another run ({who});"
            f" gave up after waiting {waited_s:.0f} s (lock_timeout_s)"
        )


class StreamLock:
    """A held stream lock: release it, or use it as a context manager. Releasing twice is a
    no-op; a lock never released is freed when the process ends."""

    def __init__(
        self,
        account: str,
        stream: str,
        holder: Holder,
        release: Callable[[], None],
        *,
        took_over: Holder | None = None,
    ) -> None:
        self.account = account
        self.stream = stream
        self.holder = holder
        # The holder recorded by a run that ended without releasing the lock (it died).
        self.took_over = took_over
        self._release: Callable[[], None] | None = release
        self._guard = threading.Lock()

    @property
    def held(self) -> bool:
        return self._release is not None

    def release(self) -> None:
        with self._guard:
            release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> StreamLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "held" if self.held else "released"
        return f"<StreamLock {self.stream!r} {state} by {self.holder.describe()}>"


def unheld_lock(account: str, stream: str) -> StreamLock:
    """What a read-only ledger (a dry run) hands out: it sends nothing, so it neither waits
    for a run nor keeps one waiting, and it writes no holder anywhere."""
    return StreamLock(account, stream, Holder.this_process(), lambda: None)


def wait_for_lock(
    stream: str,
    timeout_s: float,
    try_lock: Callable[[], StreamLock | None],
    holder: Callable[[], Holder | None],
    *,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> StreamLock:
    """Try `try_lock` until it succeeds or `timeout_s` has passed (0: once); then raise
    `StreamLocked` naming whoever `holder` says holds it."""
    if timeout_s < 0:
        raise ValueError(f"lock_timeout_s must be 0 or more, not {timeout_s}")
    started = clock()
    deadline = started + timeout_s
    while True:
        lock = try_lock()
        if lock is not None:
            return lock
        left = deadline - clock()
        if left <= 0:
            raise StreamLocked(stream, holder(), clock() - started)
        sleep(min(POLL_S, left))


def lock_key(namespace: str, account: str, stream: str) -> int:
    """A stable signed 64-bit key for (namespace, account, stream), as advisory locks take."""
    value = xxhash.xxh3_64_intdigest(f"{namespace}\0{account}\0{stream}".encode())
    return value - (1 << 64) if value >= 1 << 63 else value


class FileLocks:
    """Stream locks of the SQLite ledger: one `flock`ed file per (account, stream)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, account: str, stream: str) -> Path:
        # Stream names may hold any character; the file is named by a hash of the pair.
        name = xxhash.xxh3_128_hexdigest(f"{account}\0{stream}".encode())
        return self.directory / f"{name}.lock"

    def try_lock(self, account: str, stream: str) -> StreamLock | None:
        import fcntl

        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        path = self._path(account, stream)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        # A release empties the file: holder text found now was left by a run that died.
        previous = Holder.from_json(os.pread(fd, 4096, 0).decode(errors="replace"))
        holder = Holder.this_process()
        data = holder.to_json().encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)

        def release() -> None:
            try:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)

        return StreamLock(account, stream, holder, release, took_over=previous)

    def holder(self, account: str, stream: str) -> Holder | None:
        try:
            text = self._path(account, stream).read_text(errors="replace")
        except OSError:
            return None
        return Holder.from_json(text)
