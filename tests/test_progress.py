"""Progress lines (SPEC §3.11): a line per active stream every `progress_interval_s`, with
records read counted as they are read — a slow tap that never fills a batch included — and
lines go on while the run waits on Klaviyo's jobs."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    INTEGER,
    STRING,
    Running,
    base_config,
    record_message,
    schema_message,
    singer_lines,
)

STREAMS = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}
LINE = re.compile(r"progress customers: read (\d+), loaded (\d+), in jobs (\d+)")


@pytest.mark.emulator(job_latency_s=4.0)
def test_a_slow_tap_gets_a_line_every_interval_also_while_jobs_run(
    emulator: Any, tmp_path: Path
) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, progress_interval_s=1)
    running = Running(config, tmp_path)
    running.write(singer_lines([schema_message("customers", {"id": INTEGER, "email": STRING})]))
    # 250 records a second for 4 seconds: far below a batch of 10,000.
    for second in range(4):
        started = time.monotonic()
        for step in range(5):
            rows = range(second * 250 + step * 50, second * 250 + (step + 1) * 50)
            running.write(
                singer_lines(
                    record_message("customers", {"id": i, "email": f"c{i}@example.com"})
                    for i in rows
                )
            )
            time.sleep(max(0.0, started + (step + 1) * 0.2 - time.monotonic()))
    running.close_input()
    code, _, stderr = running.finish()

    assert code == 0, stderr[-3000:]
    figures = [tuple(map(int, match.groups())) for match in LINE.finditer(stderr)]
    reads = [read for read, _, _ in figures]
    # While the tap is still sending: lines about once a second, counting what was read.
    reading = [read for read in reads if read < 1_000]
    assert len(reading) >= 2, stderr[-3000:]
    assert reading[0] > 0
    assert reading == sorted(reading) and len(set(reading)) == len(reading)
    # Then the import job takes 4 s: the stream still gets its lines, all read, none loaded,
    # all of it in the job. (A line may fall between the last read and the job's submission:
    # it shows fewer in jobs, never more, and never after the job is in.)
    waiting = [in_jobs for read, loaded, in_jobs in figures if read == 1_000 and loaded == 0]
    assert waiting == sorted(waiting) and waiting[-1:] == [1_000], stderr[-3000:]
    assert waiting.count(1_000) >= 2, stderr[-3000:]
    assert running.summary()["streams"]["customers"]["loaded"] == 1_000
