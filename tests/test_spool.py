"""The spool: an open job's records wait on disk and come back exactly as they were read."""

from __future__ import annotations

from array import array

import pytest

import target_klaviyo.records.spool as spool_module
from target_klaviyo.records.item import Item
from target_klaviyo.records.spool import Spool


def _item(seq: int) -> Item:
    item = Item(
        seq,
        f'{{"type": "RECORD", "record": {{"name": "Zoë {seq} ✓"}}}}\n',
        f"email:jürgen{seq}@example.de",
        {},
        None,
        1,
        1_000 + seq,
    )
    item.sent = -seq
    return item


def test_jobs_records_come_back_from_the_spool_as_they_were_read() -> None:
    spool = Spool()
    try:
        items = [_item(seq) for seq in range(1, 8)]
        first = spool.write(items[:3], unchanged=True)
        second = spool.write(items[3:], unchanged=True)
        assert spool.rows(second) == [(item.source, item.key) for item in items[3:]]
        assert spool.rows(first) == [(item.source, item.key) for item in items[:3]]
        sent, digests = spool.hashes(second)
        assert list(sent) == [-4, -5, -6, -7]
        assert list(digests) == [1_004, 1_005, 1_006, 1_007]
    finally:
        spool.close()


def test_an_open_jobs_key_hashes_come_back_between_other_jobs_rows() -> None:
    spool = Spool()
    try:
        first = spool.write([_item(1)], unchanged=True)
        keys = array("q", [-(2**63), -1, 0, 2**63 - 1, hash("email:a@example.com")])
        where = spool.write_keys(keys)
        second = spool.write([_item(2)], unchanged=False)
        assert spool.take_keys(where) == keys
        assert spool.rows(first) == [(_item(1).source, _item(1).key)]
        assert spool.rows(second) == [(_item(2).source, _item(2).key)]
    finally:
        spool.close()


def test_a_spool_file_is_deleted_once_every_job_written_to_it_has_ended(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A nightly full sync spools its whole input: the disk keeps only what open jobs hold."""
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 2_000)
    spool = Spool()
    try:
        jobs = [
            spool.write([_item(seq) for seq in range(n, n + 10)], unchanged=True)
            for n in range(0, 100, 10)
        ]
        keys = spool.write_keys(array("q", range(300)))
        written = spool.disk_bytes()
        files = {id(job.segment) for job in jobs}
        assert len(files) > 2  # the jobs went to several files
        for job in jobs[:-1]:
            spool.release(job)
            spool.release(job)  # once counts
        # The last job's file is still wanted (and still being written to), the others went.
        assert spool.disk_bytes() < written / 2
        assert spool.rows(jobs[-1]) == [(_item(s).source, _item(s).key) for s in range(90, 100)]
        assert spool.take_keys(keys) == array("q", range(300))
        spool.release(jobs[-1])
        later = spool.write([_item(7)], unchanged=False)  # a new file: the last one is done
        assert spool.disk_bytes() == later.segment.end
        assert spool.rows(later) == [(_item(7).source, _item(7).key)]
    finally:
        spool.close()


def test_past_its_limit_of_files_the_spool_writes_on_in_its_newest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Jobs that end late each keep a whole file: the spool never opens more than
    MAX_SEGMENTS files (file descriptors), it writes on in the newest."""
    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 500)
    monkeypatch.setattr(spool_module, "MAX_SEGMENTS", 3)
    spool = Spool()
    try:
        jobs = [spool.write([_item(seq)], unchanged=True) for seq in range(20)]
        assert len({id(job.segment) for job in jobs}) == 3
        assert [spool.rows(job) for job in jobs] == [
            [(_item(seq).source, _item(seq).key)] for seq in range(20)
        ]
        for job in [job for job in jobs if job.segment is jobs[0].segment]:
            spool.release(job)  # the first file's jobs ended: it goes, a new one may come
        later = spool.write([_item(20)], unchanged=False)
        assert later.segment is not jobs[-1].segment
        assert spool.rows(later) == [(_item(20).source, _item(20).key)]
    finally:
        spool.close()
