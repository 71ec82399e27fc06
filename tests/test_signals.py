"""Stopped by SIGTERM or SIGINT, as Meltano, Airflow and Kubernetes stop a run: no more input
is read, what was sent gets `stop_grace_s` to finish, every record read and not settled goes
on hold, the summary adds up, only accounted-for STATE is passed on, and the exit code is
128 + the signal's number. A second signal stops at once, the ledger consistent."""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import (
    INTEGER,
    STRING,
    Running,
    base_config,
    record_message,
    run_target,
    schema_message,
    singer_lines,
    state_message,
)

SCHEMA = {"id": INTEGER, "email": STRING}
STREAMS = {
    "customers": {"object": "profile", "fields": {"external_id": "id"}},
    "orders": {"object": "event", "event_name": "Placed Order"},
}


def customer_lines(start: int, stop: int, state_every: int = 5_000) -> str:
    messages: list[dict[str, Any]] = []
    for i in range(start, stop):
        messages.append(record_message("customers", {"id": i, "email": f"p{i}@example.com"}))
        if (i + 1) % state_every == 0:
            messages.append(state_message({"customers": i}))
    return singer_lines(messages)


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what} never happened"
        time.sleep(0.02)


def seen(emulator: Any, operation: str) -> Callable[[], bool]:
    return lambda: any(entry.operation == operation for entry in emulator.request_log)


def assert_adds_up(summary: dict[str, Any]) -> None:
    for name, stats in summary["streams"].items():
        settled = stats["loaded"] + stats["unchanged"] + stats["rejected"] + stats["on_hold"]
        assert stats["read"] == settled, f"{name}: {stats}"


def stop_line(stderr: str, name: str) -> str:
    lines = [line for line in stderr.splitlines() if f"| stopped by {name}:" in line]
    assert len(lines) == 1, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return lines[0]


def test_sigterm_while_the_tap_is_silent(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, batch_size_rows=5_000)
    run = Running(config, tmp_path)
    run.write(singer_lines([schema_message("customers", SCHEMA, ["id"])]))
    run.write(customer_lines(0, 5_020))  # a job's worth and STATE, then 20 records, then silence
    wait_for(seen(emulator, "bulk_import_profiles"), "the first import job")
    time.sleep(0.5)

    run.signal(signal.SIGTERM)
    code, states, stderr = run.finish()

    assert code == 128 + signal.SIGTERM
    line = stop_line(stderr, "SIGTERM")
    summary = run.summary()
    assert_adds_up(summary)
    stats = summary["streams"]["customers"]
    assert stats["read"] == 5_020
    assert f"{summary['on_hold_total']} records wait on hold" in line
    # STATE moved as far as records were accounted for, which here is all of them.
    assert states[-1] == {"customers": 4_999}

    # The next run replays what waited; Klaviyo ends as a clean run would leave it.
    rerun = run_target(
        config,
        singer_lines([schema_message("customers", SCHEMA, ["id"])]) + customer_lines(5_020, 5_040),
        tmp_path,
    )
    assert rerun.exit_code == 0, rerun.stderr
    assert rerun.stream("customers")["replayed"] == stats["on_hold"]
    assert emulator.wait_idle()
    ids = {p["attributes"]["external_id"] for p in emulator.dump()["profiles"]}
    assert ids == {str(i) for i in range(5_040)}


@pytest.mark.emulator(job_latency_s=60)
def test_sigterm_with_jobs_open_holds_them_after_the_grace(emulator: Any, tmp_path: Path) -> None:
    config, run = import_jobs_open(emulator, tmp_path, jobs=2, stop_grace_s=1)

    started = time.monotonic()
    run.signal(signal.SIGTERM)
    code, states, stderr = run.finish()

    assert code == 128 + signal.SIGTERM
    assert time.monotonic() - started < 30  # the jobs' 60 s were not waited out
    stop_line(stderr, "SIGTERM")
    assert "not settled within stop_grace_s (1 s)" in stderr
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"]["customers"]["on_hold"] == 20_000
    assert states[-1] == {"customers": 19_999}  # every record is durably on hold

    # The jobs stay recorded: the next run asks Klaviyo about them.
    emulator.configure(job_latency_s=None)
    rerun = run_target(config, "", tmp_path)
    assert rerun.exit_code == 0, rerun.stderr
    assert rerun.stderr.count("was in flight when an earlier run stopped") == 2


@pytest.mark.emulator(job_latency_s=60)
def test_sigterm_leaves_time_within_the_grace_to_put_what_is_out_on_hold(
    emulator: Any, tmp_path: Path
) -> None:
    """An orchestrator kills the run when its own grace period ends: records still out are
    put on hold within stop_grace_s, so waiting for their jobs ends that much earlier."""
    _, run = import_jobs_open(emulator, tmp_path, jobs=2, stop_grace_s=3)

    run.signal(signal.SIGTERM)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGTERM
    # 20,000 records at 50 µs each: waiting ends a second before the 3 s are over.
    found = re.search(r"20000 records are still out: waiting for them ends ([\d.]+) s", stderr)
    assert found is not None, stderr[-3000:]
    assert 0.5 <= float(found[1]) <= 1.0
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"]["customers"]["on_hold"] == 20_000


@pytest.mark.emulator(job_latency_s=60)
def test_sigterm_while_a_record_waits_for_its_profiles_open_job(
    emulator: Any, tmp_path: Path
) -> None:
    """A record whose profile is in an open job waits for that job to end; stopped then, it
    goes on hold with the others and the summary adds up."""
    config = base_config(emulator, tmp_path / "state", STREAMS, stop_grace_s=1)
    run = Running(config, tmp_path)
    run.write(singer_lines([schema_message("customers", SCHEMA, ["id"])]))
    run.write(customer_lines(0, 10_000))
    # Profile 0 again after a full job's worth: the last request waits for that job.
    run.write(singer_lines([record_message("customers", {"id": 0, "email": "p0@example.com"})]))
    run.close_input()
    wait_for(seen(emulator, "bulk_import_profiles"), "the first import job")
    time.sleep(1.0)  # the last request is waiting

    run.signal(signal.SIGTERM)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGTERM
    stop_line(stderr, "SIGTERM")
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"]["customers"]["read"] == 10_001
    assert summary["streams"]["customers"]["on_hold"] == 10_001, (summary, stderr[-2500:])


def test_sigint_while_waiting_on_a_rate_limit(emulator: Any, tmp_path: Path) -> None:
    emulator.add_fault("429", operation="bulk_create_events", count=None, retry_after=120)
    config = base_config(emulator, tmp_path / "state", STREAMS)
    run = Running(config, tmp_path)
    orders = [
        schema_message("orders", {"id": INTEGER, "email": STRING}, ["id"]),
        *(record_message("orders", {"id": i, "email": f"p{i}@example.com"}) for i in range(30)),
    ]
    run.write(singer_lines(orders))
    run.close_input()  # the last request goes out and meets the 429
    wait_for(seen(emulator, "bulk_create_events"), "the events request")

    started = time.monotonic()
    run.signal(signal.SIGINT)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGINT
    assert time.monotonic() - started < 20  # the 120 s Retry-After was not waited out
    stop_line(stderr, "SIGINT")
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"]["orders"]["on_hold"] == 30


def import_jobs_open(
    emulator: Any, tmp_path: Path, *, jobs: int = 1, stop_grace_s: int
) -> tuple[dict[str, Any], Running]:
    """A run (and its config) whose tap went silent once its customers went out, 10,000 to an
    import job, and Klaviyo took the jobs."""
    config = base_config(emulator, tmp_path / "state", STREAMS, stop_grace_s=stop_grace_s)
    run = Running(config, tmp_path)
    run.write(singer_lines([schema_message("customers", SCHEMA, ["id"])]))
    run.write(customer_lines(0, 10_000 * jobs))
    wait_for(
        lambda: sum(e.operation == "bulk_import_profiles" for e in emulator.request_log) == jobs,
        f"{jobs} import jobs",
    )
    return config, run


def signal_a_thread_other_than_the_main_one(pid: int, number: int) -> None:
    """As the kernel may deliver a process's signal (Linux, glibc's tgkill)."""
    tgkill = getattr(ctypes.CDLL(None), "tgkill", None)
    if tgkill is None:
        pytest.skip("needs Linux and glibc's tgkill")
    others = [int(tid) for tid in os.listdir(f"/proc/{pid}/task") if int(tid) != pid]
    # The newest first; one that ended meanwhile is passed over.
    if not any(tgkill(pid, tid, number) == 0 for tid in sorted(others, reverse=True)):
        pytest.fail("the run has no thread but the main one")


@pytest.mark.emulator(job_latency_s=60)
def test_sigterm_that_reaches_another_thread_stops_a_run_whose_tap_is_silent(
    emulator: Any, tmp_path: Path
) -> None:
    # The main thread is blocked on the input; the signal reaches another of its threads,
    # and Python would run the handler only once the main thread runs again: at the tap's next
    # line, which does not come.
    _, run = import_jobs_open(emulator, tmp_path, stop_grace_s=1)
    time.sleep(0.3)

    signal_a_thread_other_than_the_main_one(run.proc.pid, signal.SIGTERM)
    try:
        run.proc.wait(timeout=20)  # the job takes 60 s; stop_grace_s is 1 s
    except subprocess.TimeoutExpired:
        run.proc.kill()
        pytest.fail("the run did not stop: the signal waited for the tap's next line")
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    stop_line(stderr, "SIGTERM")
    summary = run.summary()
    assert_adds_up(summary)
    assert summary["streams"]["customers"]["on_hold"] == 10_000


@pytest.mark.emulator(job_latency_s=60)
def test_a_second_signal_stops_at_once_and_the_ledger_stays_usable(
    emulator: Any, tmp_path: Path
) -> None:
    config, run = import_jobs_open(emulator, tmp_path, stop_grace_s=120)

    run.signal(signal.SIGTERM)
    time.sleep(0.5)
    started = time.monotonic()
    run.signal(signal.SIGTERM)
    code, _, stderr = run.finish()

    assert code == 128 + signal.SIGTERM, stderr[-3000:]
    assert time.monotonic() - started < 10, stderr[-3000:]
    assert "second SIGTERM" in stderr

    emulator.reset()
    emulator.configure(job_latency_s=None)
    rerun = run_target(
        config,
        singer_lines([schema_message("customers", SCHEMA, ["id"])]) + customer_lines(0, 10_000),
        tmp_path,
    )
    assert rerun.exit_code == 0, rerun.stderr
    rerun.assert_accounted()
