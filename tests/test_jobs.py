"""Bulk import jobs that take Klaviyo a while (the emulator's job latency): they are submitted
without waiting for each other, followed together through the job list, and every way a job
can end gives each record its outcome."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from target_klaviyo.records.jobs import (
    POLL_MIN_S,
    POLL_PAST_END_S,
    PROFILE_IMPORT,
    JobEnd,
    JobWatcher,
    OpenJob,
)
from tests.support import (
    INTEGER,
    STRING,
    base_config,
    record_message,
    run_checked,
    run_target,
    schema_message,
    singer_lines,
    state_message,
    stream_messages,
)

SCHEMA = {"id": INTEGER, "email": STRING, "plan": STRING}
STREAMS = {"customers": {"object": "profile", "fields": {"external_id": "id"}}}
JOB_ROWS = 10_000


def customers(count: int, plan: str = "basic", start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "email": f"person{i}@example.com", "plan": plan} for i in range(start, count)]


def calls(emulator: Any, operation: str) -> list[Any]:
    return [entry for entry in emulator.request_log if entry.operation == operation]


def completed_at(emulator: Any) -> list[datetime]:
    return sorted(
        datetime.fromisoformat(job["completed_at"]) for job in emulator.dump()["jobs"].values()
    )


@pytest.mark.emulator(job_latency_s=5.0)
def test_jobs_are_submitted_while_earlier_ones_run_and_polled_together(
    emulator: Any, tmp_path: Path
) -> None:
    run = run_checked(
        emulator,
        base_config(emulator, tmp_path / "state", STREAMS),
        [
            *stream_messages("customers", SCHEMA, customers(5 * JOB_ROWS), ["id"]),
            state_message({"done": True}),
        ],
        tmp_path,
    )

    assert run.stream("customers")["loaded"] == 5 * JOB_ROWS
    assert run.states == [{"done": True}]
    imports = calls(emulator, "bulk_import_profiles")
    assert len(imports) == 5
    # Every job was submitted before the first one ended: reading never waited for a job.
    first_end = completed_at(emulator)[0]
    assert all(datetime.fromtimestamp(e.ended_wall).astimezone() < first_end for e in imports)
    # The open jobs were followed through the job list, not one by one.
    assert calls(emulator, "get_bulk_import_profiles_jobs")
    assert calls(emulator, "get_bulk_import_profiles_job") == []


@pytest.mark.emulator(job_latency_s=1.0)
def test_one_identitys_writes_wait_for_its_open_job(emulator: Any, tmp_path: Path) -> None:
    """A profile in an open job is written again (newer data) only once that job ended:
    Klaviyo runs jobs side by side, and the later write must land last."""
    rows = [*customers(JOB_ROWS), {"id": 0, "email": "person0@example.com", "plan": "gold"}]
    run_checked(
        emulator,
        base_config(emulator, tmp_path / "state", STREAMS),
        stream_messages("customers", SCHEMA, rows, ["id"]),
        tmp_path,
    )

    imports = sorted(calls(emulator, "bulk_import_profiles"), key=lambda e: e.started_wall)
    assert [e.items for e in imports] == [JOB_ROWS, 1] or [e.items for e in imports] == [JOB_ROWS]
    upserts = calls(emulator, "create_or_update_profile")
    second_write = (imports[1:] or upserts)[0]
    first_end = completed_at(emulator)[0]
    assert datetime.fromtimestamp(second_write.started_wall).astimezone() >= first_end
    (profile,) = [p for p in emulator.dump()["profiles"] if p["attributes"]["external_id"] == "0"]
    assert profile["properties"]["plan"] == "gold"


@pytest.mark.emulator(job_latency_s=0.5)
def test_a_cancelled_job_holds_its_records_and_the_next_run_loads_them(
    emulator: Any, tmp_path: Path
) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS)
    emulator.add_fault("cancel_job", operation="bulk_import_profiles")
    text = singer_lines(stream_messages("customers", SCHEMA, customers(2 * JOB_ROWS), ["id"]))

    first = run_target(config, text, tmp_path)
    assert first.exit_code == 0, first.stderr
    first.assert_accounted()
    stats = first.stream("customers")
    assert (stats["loaded"], stats["on_hold"]) == (JOB_ROWS, JOB_ROWS)
    assert "Klaviyo cancelled profile import job" in first.stderr

    second = run_target(config, "", tmp_path)
    assert second.exit_code == 0, second.stderr
    second.assert_accounted()
    stats = second.stream("customers")
    assert (stats["replayed"], stats["loaded"], stats["on_hold"]) == (JOB_ROWS, JOB_ROWS, 0)
    assert emulator.wait_idle()
    assert len(emulator.dump()["profiles"]) == 2 * JOB_ROWS


@pytest.mark.emulator(job_latency_s=4.0)
def test_a_job_past_job_timeout_s_holds_its_records(emulator: Any, tmp_path: Path) -> None:
    config = base_config(emulator, tmp_path / "state", STREAMS, job_timeout_s=1)
    messages = [
        schema_message("customers", SCHEMA, ["id"]),
        *(record_message("customers", row) for row in customers(20)),
    ]
    run = run_target(config, singer_lines(messages), tmp_path)

    assert run.exit_code == 0, run.stderr
    run.assert_accounted()
    assert run.stream("customers")["on_hold"] == 20
    assert "did not finish in time" in run.stderr


def test_a_job_without_progress_is_asked_again_when_jobs_of_its_kind_end() -> None:
    """Once a job of a kind completed (Klaviyo's created_at to completed_at: 20 s), a later job
    that shows no progress yet is asked again just after it would end, not after its backoff;
    past that, often."""
    job = OpenJob("j", PROFILE_IMPORT, None, 600.0, lambda end: None, submitted=100.0)
    job.delay = 10.0
    job.saw({"status": "processing"}, now=112.0)
    assert job.next_poll == 112.0 + 10.0  # nothing known: the backoff (capped at 10 s)
    job.saw({"status": "processing"}, now=115.0, typical_s=20.0)
    assert job.next_poll == 100.0 + 20.0 + POLL_MIN_S  # just after it would end
    job.saw({"status": "processing"}, now=121.0, typical_s=20.0)
    assert job.next_poll == 121.0 + 1.0  # overdue: a twentieth of its length


def test_a_job_in_progress_is_asked_again_just_after_it_would_end_at_its_pace() -> None:
    job = OpenJob("j", PROFILE_IMPORT, None, 600.0, lambda end: None, submitted=100.0)
    job.saw({"status": "processing", "completed_count": 1_000, "total_count": 10_000}, now=102.0)
    job.saw({"status": "processing", "completed_count": 5_000, "total_count": 10_000}, now=106.0)
    # 1,000 rows a second, 5,000 to go: done at 111 s.
    assert job.next_poll == pytest.approx(111.0 + POLL_PAST_END_S)
    job.saw({"status": "processing", "completed_count": 9_900, "total_count": 10_000}, now=110.9)
    # A tenth of a second to go: not half a second (the watcher spaces polls by POLL_MIN_S).
    assert job.next_poll == pytest.approx(111.0 + POLL_PAST_END_S)


@pytest.mark.emulator(job_latency_s=1.0)
def test_a_profile_changed_and_changed_back_in_one_run_ends_as_its_last_row(
    emulator: Any, tmp_path: Path
) -> None:
    """skip_unchanged: a row equal to what the last run sent is not skipped while an earlier
    row of the same profile, different, is still on its way (it would land last)."""
    config = base_config(emulator, tmp_path / "state", STREAMS)
    run_checked(
        emulator,
        config,
        stream_messages("customers", SCHEMA, customers(JOB_ROWS), ["id"]),
        tmp_path,
    )
    rows = [
        *customers(JOB_ROWS, plan="gold"),
        {"id": 0, "email": "person0@example.com", "plan": "basic"},
    ]
    run_checked(emulator, config, stream_messages("customers", SCHEMA, rows, ["id"]), tmp_path)
    (profile,) = [p for p in emulator.dump()["profiles"] if p["attributes"]["external_id"] == "0"]
    assert profile["properties"]["plan"] == "basic"


class NoRequests:
    """A client the job watcher must not use here."""

    def request(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError("no poll was expected")


def test_a_job_accepted_after_a_stopping_run_abandoned_its_jobs_ends_at_once() -> None:
    """A request Klaviyo answers just after the grace was over: its job ends with the same
    reason as the open ones (its records go on hold), rather than wait for polls that no
    longer come and leave the summary short."""
    watcher = JobWatcher(NoRequests())
    ended: dict[str, JobEnd] = {}

    def ending(job_id: str) -> Callable[[JobEnd], None]:
        return lambda end: ended.__setitem__(job_id, end)

    watcher.watch(PROFILE_IMPORT, "open", None, 600, ending("open"))
    late = JobEnd(failure="not settled within stop_grace_s (30 s) after SIGTERM")

    watcher.abandon(str(late.failure))
    watcher.watch(PROFILE_IMPORT, "late", None, 600, ending("late"))
    assert ended["late"] == late
    assert watcher.open_jobs == 0
    watcher.close()  # waits for the endings under way
    assert ended["open"] == late


def test_a_job_accepted_after_the_run_ended_normally_is_refused() -> None:
    watcher = JobWatcher(NoRequests())
    watcher.close()
    with pytest.raises(RuntimeError, match="stopped"):
        watcher.watch(PROFILE_IMPORT, "late", None, 600, lambda end: None)
