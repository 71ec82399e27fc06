"""Dispatch: mapped records gathered into request-sized chunks and sent by request threads.

A chunk is filled up to Klaviyo's item and byte limits, then handed to one of the stream's own
worker threads while reading goes on (a stream waiting for its rate-limit window never holds
up another). A chunk that became a bulk job ends later, when the job ends: its records are then
on disk (`spool.py`), not in memory, and the request thread is free for the next chunk.

Reading waits only where it must: when the stream's request threads already hold
`MAX_QUEUED_RECORDS` records or `MAX_QUEUED_BYTES` of request bodies (memory), when the
stream has `max_open_jobs` jobs open or on their way, and when a chunk holds a key still on
its way in an earlier request or job (Klaviyo applies one key's writes in input order, and
whether a record is unchanged is known only once its key's earlier write has ended). The
STATE gate asks how far the stream's records are accounted for.
"""

from __future__ import annotations

import itertools
import struct
import threading
from array import array
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from target_klaviyo.klaviyo.client import KlaviyoAuthError
from target_klaviyo.records.item import Item
from target_klaviyo.records.outcomes import Outcomes
from target_klaviyo.records.spool import SpooledKeys
from target_klaviyo.sdk import StopReading

if TYPE_CHECKING:
    from target_klaviyo.run.context import Run

# Room left in each request for the JSON:API envelope around the items.
ENVELOPE_BYTES = 4_096
MAX_WORKERS = 16  # request threads per stream
# Records a stream's request threads may hold (mapped, waiting for their rate-limit window or
# on their way): four full profile import jobs. A stream of small requests (events, 1,000 a
# request) queues many while its operation waits for its window.
MAX_QUEUED_RECORDS = 40_000
# And at most this many bytes of request bodies (each record's encoded size; in memory it
# takes about twice that, with the line it was read from): a table of wide rows — orders
# with their line items, about 3 KB each — reaches this first. Ten requests of 3 MB, enough
# to fill Klaviyo's burst of 10 a second.
MAX_QUEUED_BYTES = 32_000_000
NO_KEYS: array[int] = array("q")
# A job-held chunk with at least this many keys keeps them on disk (`Spool.write_keys`).
SPOOL_KEYS_FROM = 1_000


# A key hash as a bucket of KeysInFlight holds it: its 8 bytes.
_packed = struct.Struct("=q").pack


class KeysInFlight:
    """The key hashes of the records on their way, about 9 bytes a key (a set of ints takes
    70): a full sync keeps every open job's keys here, a million of them for minutes. Hashes
    are spread over buckets by their low bits; a bucket is the 8 bytes of each of its keys,
    end to end (`bytes`: no object a key, no spare room), so a lookup is one search in C.
    There are more buckets as more keys wait (64 keys a bucket on average at most, up to
    2**18). Full buckets mean few objects, each rewritten as keys come and go: with 16 keys a
    bucket the index took 11-13 bytes a key in four times as many objects, and a 1,000,000-
    profile run on a busy machine peaked at 108-128 MB against 107-112 MB now."""

    MIN_BUCKETS = 1 << 10
    MAX_BUCKETS = 1 << 18
    KEYS_PER_BUCKET = 64

    def __init__(self) -> None:
        self._buckets: list[bytes] = []
        self._mask = -1
        self.count = 0

    def overlaps(self, keys: Iterable[int]) -> bool:
        if not self.count:
            return False
        buckets, mask = self._buckets, self._mask
        for key in keys:
            bucket = buckets[key & mask]
            if not bucket:
                continue
            # `find`, not `in`: bytes' `in` tries its operand as an int first, and raises and
            # clears a TypeError for every key. _find only confirms the (rare) match found
            # off a key's start.
            packed = _packed(key)
            at = bucket.find(packed)
            if at >= 0 and (at % 8 == 0 or _find(bucket, packed) >= 0):
                return True
        return False

    def add(self, keys: array[int]) -> None:
        count = self.count + len(keys)
        size = len(self._buckets)
        if count > self.KEYS_PER_BUCKET * size and size < self.MAX_BUCKETS:
            while count > self.KEYS_PER_BUCKET * size and size < self.MAX_BUCKETS:
                size = max(self.MIN_BUCKETS, 4 * size)
            old, self._buckets, self._mask = self._buckets, [b""] * size, size - 1
            for bucket in old:
                if bucket:
                    self._insert(array("q", bucket))
        self._insert(keys)
        self.count = count

    def _insert(self, keys: array[int]) -> None:
        buckets, mask = self._buckets, self._mask
        for key in keys:
            buckets[key & mask] += _packed(key)

    def remove(self, keys: array[int]) -> None:
        if not keys or not self._buckets:
            return
        buckets, mask = self._buckets, self._mask
        removed = 0
        for key in keys:
            index = key & mask
            bucket = buckets[index]
            at = _find(bucket, _packed(key))
            if at < 0:  # not on its way (a set would not mind either)
                continue
            buckets[index] = bucket[:at] + bucket[at + 8 :]
            removed += 1
        self.count -= removed
        if not self.count:  # all out: give the buckets back
            self._buckets, self._mask = [], -1


def _find(bucket: bytes, packed: bytes) -> int:
    """Where a key's 8 bytes are in a bucket, or -1: a match must start where a key does."""
    at = bucket.find(packed)
    while at > 0 and at % 8:
        at = bucket.find(packed, at + 1)
    return at


@dataclass(eq=False, slots=True)
class Chunk:
    """One request's records on their way; outstanding for the STATE gate until it ends."""

    token: int
    items: list[Item]  # emptied once a bulk job holds the records
    keys: array[int]  # hashes of the items' keys, when the stream keeps one key's writes in order
    count: int
    job: bool = False  # a bulk job holds the records: the chunk ends when the job ends
    ended: bool = False
    spooled_keys: SpooledKeys | None = None  # `keys`, on disk while a job holds them


class Dispatcher:
    def __init__(
        self,
        *,
        name: str,
        max_items: int,
        max_bytes: int,
        ordered: bool,
        max_open_jobs: int | None,
        prepare: Callable[[list[Item]], list[Item]],
        send: Callable[[Chunk], bool],
        outcomes: Outcomes,
        run: Run,
    ) -> None:
        self.max_items = max_items
        self.ordered = ordered
        self.max_open_jobs = max_open_jobs
        self._byte_limit = max_bytes - ENVELOPE_BYTES
        self._prepare = prepare
        self._send = send
        self._outcomes = outcomes
        self._run = run
        self._lock = threading.Condition()
        self.seq = 0  # records read (written by the reading thread only)
        # Records read and not numbered yet: lines on their way through a mapping process
        # (records/offload.py), each to be numbered in input order.
        self.reading_ahead: Callable[[], int] | None = None
        self._tokens = itertools.count(1)
        self._outstanding: dict[int, int] = {}  # chunk token -> lowest record seq it holds
        self._inflight_keys = KeysInFlight()  # key hashes of the chunks on their way
        # request -> records it carries and their bytes
        self._futures: dict[Future[None], tuple[int, int]] = {}
        self._live: set[Chunk] = set()  # chunks handed to a request thread, not ended
        self._records_queued = 0  # records the request threads hold
        self._bytes_queued = 0  # and their request bytes
        self.open_jobs = 0  # chunks whose records a bulk job holds
        self._chunk: list[Item] = []
        self._chunk_bytes = 0
        self._chunk_token = 0
        self.executor = ThreadPoolExecutor(
            max_workers=min(MAX_WORKERS, max(1, MAX_QUEUED_RECORDS // max_items)),
            thread_name_prefix=f"klaviyo-{name}",
        )

    # -- the reading thread ---------------------------------------------------------------

    def next_seq(self) -> int:
        """A record was read: its sequence number (the gate counts in these)."""
        self.seq = seq = self.seq + 1
        return seq

    def add(self, item: Item) -> None:
        """Add a mapped record to the current chunk (sending the chunk first if it is full)."""
        chunk = self._chunk
        if chunk and (
            len(chunk) >= self.max_items or self._chunk_bytes + item.size + 1 > self._byte_limit
        ):
            self.flush()
            chunk = self._chunk
        if not chunk:
            with self._lock:
                self._chunk_token = next(self._tokens)
                self._outstanding[self._chunk_token] = item.seq
        chunk.append(item)
        self._chunk_bytes += item.size + 1

    def flush(self) -> None:
        """Hand the current chunk to a worker (after the sink's `prepare`)."""
        self._outcomes.publish(self.seq)
        self._run.raise_if_failed()
        items, token = self._take_chunk()
        if not items:
            return
        # 8 bytes a key (an open job holds 10,000 of them for minutes).
        keys = array("q", [hash(item.key) for item in items] if self.ordered else ())
        try:
            if keys:
                # A key still on its way waits first: what that write ends as (remembered
                # when it ends) decides whether this one is unchanged.
                self._wait_while(lambda: self._inflight_keys.overlaps(keys))
            prepared = self._prepare(items)
            if not prepared:
                self._end(token, 0, NO_KEYS, job=False)
                return
            if prepared is not items:  # some were settled (superseded or unchanged)
                keys = array("q", [hash(item.key) for item in prepared] if self.ordered else ())
            items = prepared
            # Only this thread adds keys and takes room: what holds now holds below.
            size = sum(item.size for item in items)
            self._wait_while(lambda: self._no_room_for(len(items), size))
        except BaseException:
            # Not handed over (the run stops, or failed): back in the current chunk, where a
            # stopping run puts what it read on hold.
            self._chunk, self._chunk_token = items, token
            self._chunk_bytes = sum(item.size + 1 for item in items)
            raise
        chunk = Chunk(token, items, keys, len(items))
        with self._lock:
            # One chunk's keys are distinct (the sink's prepare), and a chunk waits above while
            # any of its keys is on its way: a key is in at most one chunk in flight.
            self._inflight_keys.add(keys)
            self._records_queued += len(items)
            self._bytes_queued += size
            self._live.add(chunk)
        self._run.stats.add(self._outcomes.stream, self._outcomes.object, in_jobs=len(items))
        future = self.executor.submit(self._send_chunk, chunk)
        with self._lock:
            self._futures[future] = (len(items), size)
        future.add_done_callback(self._forget_future)

    def _wait_while(self, blocked: Callable[[], bool]) -> None:
        """The reading thread waits while `blocked()` (asked holding the lock)."""
        with self._lock:
            while blocked():
                self._lock.wait(timeout=1.0)
                self._run.raise_if_failed()

    def _take_chunk(self) -> tuple[list[Item], int]:
        items, token = self._chunk, self._chunk_token
        self._chunk, self._chunk_bytes, self._chunk_token = [], 0, 0
        return items, token

    def _no_room_for(self, records: int, size: int) -> bool:
        """Whether a chunk must wait for requests or jobs in flight (holding the lock)."""
        return bool(
            self._futures
            and (
                self._records_queued + records > MAX_QUEUED_RECORDS
                or self._bytes_queued + size > MAX_QUEUED_BYTES
            )
        ) or (
            # A chunk on its way opens a job once Klaviyo accepts it: it counts already,
            # or a fast reader would hand over many chunks before the first job opens.
            self.max_open_jobs is not None
            and self.open_jobs + len(self._futures) >= self.max_open_jobs
        )

    def must_wait(self) -> bool:
        """Whether handing over the current chunk would first wait for requests in flight."""
        with self._lock:
            keys = [hash(item.key) for item in self._chunk] if self.ordered else []
            return self._no_room_for(
                len(self._chunk), self._chunk_bytes
            ) or self._inflight_keys.overlaps(keys)

    def hold_unsent(self, reason: str) -> None:
        """The run is stopping: records read but not sent wait on hold."""
        self._outcomes.publish(self.seq)
        items, token = self._take_chunk()
        if items:
            self._outcomes.hold(items, reason)
            self._end(token, 0, NO_KEYS, job=False)

    def wait_idle(self) -> None:
        """Flush and wait until every request and job of this stream has ended."""
        self.flush()
        with self._lock:
            while self._futures or self.open_jobs:
                self._lock.wait(timeout=1.0)
                if self._run.stopping is not None:
                    raise StopReading(self._run.stopping)
        self._run.raise_if_failed()

    # -- the request threads --------------------------------------------------------------

    def _send_chunk(self, chunk: Chunk) -> None:
        items = chunk.items
        ended = True
        try:
            ended = self._send(chunk)
        except KlaviyoAuthError as exc:
            self._outcomes.hold(items, str(exc))
            self._run.fail(exc)
        except Exception as exc:
            # Nothing is lost: the records wait on hold while the run stops with the error.
            self._outcomes.hold(items, f"internal error: {type(exc).__name__}")
            self._run.fail(exc)
        if ended:
            self.end(chunk)

    def job_opened(self, chunk: Chunk) -> None:
        """A bulk job holds the chunk's records now; `end(chunk)` comes when it ends (after
        the submission: `ChunkJobs`). Its key hashes wait on disk until then: a full sync
        keeps hundreds of jobs open for minutes."""
        chunk.job = True
        if len(chunk.keys) >= SPOOL_KEYS_FROM:
            chunk.spooled_keys = self._run.spool.write_keys(chunk.keys)
            chunk.keys = NO_KEYS
        with self._lock:
            self.open_jobs += 1

    def end(self, chunk: Chunk) -> None:
        """Every record of the chunk has its outcome."""
        with self._lock:
            if chunk.ended:
                return
            chunk.ended = True
            self._live.discard(chunk)
        keys = chunk.keys
        if chunk.spooled_keys is not None:
            keys = self._run.spool.take_keys(chunk.spooled_keys)
            chunk.spooled_keys = None
        self._end(chunk.token, chunk.count, keys, job=chunk.job)

    def abandon(self, reason: str) -> int:
        """The run is stopping and its grace is over: records of requests still on their way
        go on hold (an answer that comes later settles none of them). Jobs are abandoned by
        their watcher. Returns how many chunks were still out."""
        with self._lock:
            live = [chunk for chunk in self._live if not chunk.job]
        for chunk in live:
            self._outcomes.hold(chunk.items, reason)
            self.end(chunk)
        return len(live)

    def all_ended(self) -> bool:
        """Every chunk handed over has ended (its records have their outcomes)."""
        with self._lock:
            return not self._live

    def idle(self) -> bool:
        """No request or job of this stream is out."""
        with self._lock:
            return not self._futures and not self.open_jobs

    def _end(self, token: int, count: int, keys: array[int], *, job: bool) -> None:
        if count:
            self._run.stats.add(self._outcomes.stream, self._outcomes.object, in_jobs=-count)
        with self._lock:
            self._inflight_keys.remove(keys)
            self._outstanding.pop(token, None)
            if job:
                self.open_jobs -= 1
            self._lock.notify_all()
        self._run.gate.check()

    def _forget_future(self, future: Future[None]) -> None:
        with self._lock:
            records, size = self._futures.pop(future, (0, 0))
            self._records_queued -= records
            self._bytes_queued -= size
            self._lock.notify_all()

    # -- the STATE gate's view ------------------------------------------------------------

    def records_seen(self) -> int:
        # Asked by the reading thread (which alone writes these) when a STATE arrives.
        ahead = self.reading_ahead
        return self.seq + (ahead() if ahead is not None else 0)

    def accounted_through(self) -> int:
        with self._lock:
            if self._outstanding:
                return min(self._outstanding.values()) - 1
            return self.seq

    def shutdown(self, *, wait: bool = True) -> None:
        self.executor.shutdown(wait=wait, cancel_futures=not wait)


class ChunkJobs:
    """A chunk whose records went out in one or more bulk jobs (a 413 splits a request, a
    sink may send one chunk as several jobs): it ends when its last job ended. Any sink whose
    requests open Klaviyo jobs follows its chunks with one."""

    def __init__(self, chunk: Chunk) -> None:
        self.chunk = chunk
        self.jobs = 0
        self._pending = 1  # the submission itself, until `send_chunk` is done
        self._lock = threading.Lock()

    def opened(self, dispatch: Dispatcher) -> None:
        with self._lock:
            if not self.jobs:
                dispatch.job_opened(self.chunk)
            self.jobs += 1
            self._pending += 1

    def release(self) -> bool:
        """One job ended (or the submission finished); True when nothing is pending."""
        with self._lock:
            self._pending -= 1
            return self._pending == 0

    def submitted(self, end: Callable[[Chunk], None]) -> bool:
        """The submission is done: the chunk's records are in jobs (on disk) or have outcomes.
        True when no job opened (the chunk ends now); else the last of its jobs to end ends it
        with `end` (here, when they all ended already)."""
        self.chunk.items = []
        if not self.jobs:
            return True
        if self.release():
            end(self.chunk)
        return False
