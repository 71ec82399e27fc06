"""A run's spool: the records of submitted bulk jobs, kept on disk until their job ends.

Once Klaviyo accepted a job, its records wait — often minutes — for the job to complete. They
are needed again only if the job reports errors (to map them to rows and reject those) or
fails (to hold them). So each job's records are written once, as their lines of input, to an
unnamed temporary file and read back only then. What a success needs per record (the
skip_unchanged hashes to remember) is written beside them and read back when the job ends,
as are the key hashes that keep one identity's later writes waiting for the job.

The spool is a series of files of about `SEGMENT_BYTES`: a file is deleted once every job
written to it has ended and given its records back (`release`), so the disk holds about
what open jobs hold, not the whole run's input.
"""

from __future__ import annotations

import tempfile
import threading
from array import array
from dataclasses import dataclass, field

from target_klaviyo.ledger.store import HeldRecord
from target_klaviyo.mapping.values import encode, to_json
from target_klaviyo.records.item import Item

SLICE_ROWS = 1_000  # rows whose text is encoded and written at a time
SEGMENT_BYTES = 32 * 1024 * 1024  # a spool file takes no more jobs past this size
# Files open at once, at most: past this many, the newest file takes every job (a job
# that ends late keeps its whole file, and each file is a file descriptor).
MAX_SEGMENTS = 64


class Segment:
    """One spool file and how many of the blocks written to it are still wanted."""

    def __init__(self) -> None:
        self.file = tempfile.TemporaryFile(prefix="target-klaviyo-")  # noqa: SIM115
        self.end = 0
        self.wanted = 0


@dataclass(eq=False, slots=True)
class SpooledKeys:
    """Where an open job's key hashes are in the spool (`Spool.write_keys`)."""

    segment: Segment
    offset: int
    count: int


@dataclass(eq=False, slots=True)
class SubmittedRows:
    """Where the rows of one submitted job are in the spool: their lines, then their keys (UTF-8
    text), then each row's line length and key length (`array("I")`), then, when `hashed`, each
    row's skip_unchanged key and payload hashes (`array("q")`)."""

    segment: Segment
    offset: int
    text_size: int  # bytes of the lines and keys
    count: int  # rows
    hashed: bool
    released: bool = False
    held: dict[int, HeldRecord] = field(default_factory=dict)  # row -> its record on hold
    # Rows whose fields sent as null are cleared after the job (`nulls: unset`).
    clears: array[int] = field(default_factory=lambda: array("I"))


def _line(source: dict | str) -> str:
    """A record as a line the reader could have read (records that came as dicts)."""
    if type(source) is str:
        return source
    return encode({"record": to_json(source)}).decode() + "\n"


class Spool:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._current: Segment | None = None
        self._segments: set[Segment] = set()

    def write(self, items: list[Item], *, unchanged: bool) -> SubmittedRows:
        """Spool the records of a job Klaviyo accepted; `unchanged`: keep their hashes. An
        item's payload, when it has one, marks a row with fields to clear afterwards. The
        rows stay until `release`."""
        lines = [_line(item.source) for item in items]
        keys = [item.key for item in items]
        tail = [array("I", map(len, lines)).tobytes(), array("I", map(len, keys)).tobytes()]
        if unchanged:
            tail.append(array("q", [item.sent or 0 for item in items]).tobytes())
            tail.append(array("q", [item.digest or 0 for item in items]).tobytes())
        with self._lock:
            segment = self._segment()
            offset = segment.end
            segment.file.seek(offset)
            # Encoded a slice at a time: a job's lines are several MB, and request threads
            # spool at the same time as the reader fills the next requests.
            text_size = 0
            for texts in (lines, keys):
                for start in range(0, len(texts), SLICE_ROWS):
                    text = "".join(texts[start : start + SLICE_ROWS]).encode()
                    text_size += segment.file.write(text)
            for part in tail:
                segment.file.write(part)
            segment.end = offset + text_size + sum(map(len, tail))
        rows = SubmittedRows(segment, offset, text_size, len(items), unchanged)
        for row, item in enumerate(items):
            if item.held is not None:
                rows.held[row] = item.held
            if item.payload is not None:  # what the record still needs cleared
                rows.clears.append(row)
        return rows

    def write_keys(self, keys: array[int]) -> SpooledKeys:
        """Spool the key hashes of an open job's records (8 bytes each, needed again only when
        the job ends: `take_keys`)."""
        with self._lock:
            segment = self._segment()
            offset = segment.end
            segment.file.seek(offset)
            segment.end = offset + segment.file.write(keys.tobytes())
        return SpooledKeys(segment, offset, len(keys))

    def take_keys(self, where: SpooledKeys) -> array[int]:
        """The key hashes `write_keys` spooled, given back: they are not read again."""
        keys = array("q")
        keys.frombytes(self._read(where.segment, where.offset, 8 * where.count))
        with self._lock:
            self._unwanted(where.segment)
        return keys

    def release(self, rows: SubmittedRows) -> None:
        """The job's rows have their outcomes: they are not read again."""
        with self._lock:
            if not rows.released:
                rows.released = True
                self._unwanted(rows.segment)

    def _segment(self) -> Segment:
        """The file the next block goes to (holding the lock); that block is wanted."""
        current = self._current
        if current is not None and current.end >= SEGMENT_BYTES:
            if not current.wanted:
                self._drop(current)
                current = None
            elif len(self._segments) < MAX_SEGMENTS:
                current = None
        if current is None:
            current = self._current = Segment()
            self._segments.add(current)
        current.wanted += 1
        return current

    def _unwanted(self, segment: Segment) -> None:
        segment.wanted -= 1
        if not segment.wanted and segment is not self._current:
            self._drop(segment)

    def _drop(self, segment: Segment) -> None:
        segment.file.close()  # an unnamed temporary file: its space is freed
        self._segments.discard(segment)

    def disk_bytes(self) -> int:
        """What the spool's files hold now."""
        with self._lock:
            return sum(segment.end for segment in self._segments)

    def _read(self, segment: Segment, offset: int, size: int) -> bytes:
        with self._lock:
            segment.file.seek(offset)
            return segment.file.read(size)

    def rows(self, rows: SubmittedRows) -> list[tuple[str, str]]:
        """(line, key) of each row, in row order."""
        data = self._read(rows.segment, rows.offset, rows.text_size + 8 * rows.count)
        lengths, key_lengths = array("I"), array("I")
        lengths.frombytes(data[rows.text_size : rows.text_size + 4 * rows.count])
        key_lengths.frombytes(data[rows.text_size + 4 * rows.count :])
        text = data[: rows.text_size].decode()
        lines, start = _cut(text, lengths, 0)
        keys, _ = _cut(text, key_lengths, start)
        return list(zip(lines, keys, strict=True))

    def hashes(self, rows: SubmittedRows) -> tuple[array[int], array[int]]:
        """Each row's skip_unchanged key hash and payload hash (empty when not `hashed`)."""
        sent, digests = array("q"), array("q")
        if rows.hashed and rows.count:
            data = self._read(
                rows.segment, rows.offset + rows.text_size + 8 * rows.count, 16 * rows.count
            )
            sent.frombytes(data[: 8 * rows.count])
            digests.frombytes(data[8 * rows.count :])
        return sent, digests

    def close(self) -> None:
        with self._lock:
            for segment in list(self._segments):
                self._drop(segment)
            self._current = None


def _cut(text: str, lengths: array[int], start: int) -> tuple[list[str], int]:
    out = []
    for length in lengths:
        out.append(text[start : start + length])
        start += length
    return out, start
