"""A run's spool: the records of submitted bulk jobs, kept on disk until their job ends.

Once Klaviyo accepted a job, its records wait — often minutes — for the job to complete. They
are needed again only if the job reports errors (to map them to rows and reject those) or
fails (to hold them). So each job's records are written once, as their lines of input, to an
unnamed temporary file and read back only then; memory keeps a few bytes a record (the
skip_unchanged hashes to remember when the job succeeds), however many jobs are open.
"""

from __future__ import annotations

import tempfile
import threading
from array import array
from dataclasses import dataclass, field

from target_klaviyo.ledger.store import HeldRecord
from target_klaviyo.mapping.values import encode, to_json
from target_klaviyo.records.item import Item


@dataclass(eq=False, slots=True)
class SubmittedRows:
    """The rows of one submitted job: where their lines are, and what a success needs."""

    offset: int  # the lines, then the keys, UTF-8, in the spool
    size: int
    lengths: array[int]  # characters of each line
    key_lengths: array[int]  # characters of each key
    sent: array[int]  # skip_unchanged: each row's key and payload hashes (empty when off)
    digests: array[int]
    held: dict[int, HeldRecord] = field(default_factory=dict)  # row -> its record on hold
    # Rows whose fields sent as null are cleared after the job (`nulls: unset`).
    clears: array[int] = field(default_factory=lambda: array("I"))

    @property
    def count(self) -> int:
        return len(self.lengths)


def _line(source: dict | str) -> str:
    """A record as a line the reader could have read (records that came as dicts)."""
    if type(source) is str:
        return source
    return encode({"record": to_json(source)}).decode() + "\n"


class Spool:
    def __init__(self) -> None:
        self._file = tempfile.TemporaryFile(prefix="target-klaviyo-")  # noqa: SIM115
        self._lock = threading.Lock()
        self._end = 0

    def write(self, items: list[Item], *, unchanged: bool) -> SubmittedRows:
        """Spool the records of a job Klaviyo accepted; `unchanged`: keep their hashes. An
        item's payload, when it has one, marks a row with fields to clear afterwards."""
        lines = [_line(item.source) for item in items]
        keys = [item.key for item in items]
        data = ("".join(lines) + "".join(keys)).encode()
        with self._lock:
            self._file.seek(self._end)
            self._file.write(data)
            offset, self._end = self._end, self._end + len(data)
        rows = SubmittedRows(
            offset,
            len(data),
            array("I", map(len, lines)),
            array("I", map(len, keys)),
            array("q", [item.sent or 0 for item in items] if unchanged else ()),
            array("q", [item.digest or 0 for item in items] if unchanged else ()),
        )
        for row, item in enumerate(items):
            if item.held is not None:
                rows.held[row] = item.held
            if item.payload is not None:  # what the record still needs cleared
                rows.clears.append(row)
        return rows

    def rows(self, rows: SubmittedRows) -> list[tuple[str, str]]:
        """(line, key) of each row, in row order."""
        with self._lock:
            self._file.seek(rows.offset)
            text = self._file.read(rows.size).decode()
        lines, start = _cut(text, rows.lengths, 0)
        keys, _ = _cut(text, rows.key_lengths, start)
        return list(zip(lines, keys, strict=True))

    def close(self) -> None:
        with self._lock:
            self._file.close()


def _cut(text: str, lengths: array[int], start: int) -> tuple[list[str], int]:
    out = []
    for length in lengths:
        out.append(text[start : start + length])
        start += length
    return out, start
