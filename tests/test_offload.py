"""A large profile stream is checked and mapped in a second process (records/offload.py) once
it has read OFFLOAD_AFTER records. Klaviyo gets the same profiles, the rejects file the same
reasons, the summary the same counts as when the stream is mapped in one process; bad input
still names its line; and a mapping process that dies leaves its lines to the reading process.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from target_klaviyo.records import offload
from target_klaviyo.records.offload import OFFLOAD_AFTER, OFFLOAD_POLL
from tests.support import (
    DATETIME,
    INTEGER,
    NUMBER,
    REPO,
    STRING,
    Running,
    base_config,
    record_message,
    schema_message,
    singer_lines,
    state_message,
)

pytestmark = pytest.mark.skipif(
    sys.platform != "linux", reason="the tests pin a run to one CPU with taskset (Linux)"
)

SCHEMA = {
    "id": INTEGER,
    "email": STRING,
    "phone": STRING,
    "lifetime_value": NUMBER,
    "signed_up_at": DATETIME,
}
STREAMS = {"customers": {"object": "profile", "fields": {"phone_number": "phone"}}}
# A list insert rides on the same import jobs, its records keeping their identifiers.
LIST_STREAMS = {
    "customers": {
        "object": "list",
        "list_name": "Customers",
        "create_list": True,
        "fields": {"phone_number": "phone"},
    }
}
OFFLOADED_NOTE = "mapping the stream's records in a second process"
# Lines written before the mapping process is given time to start; the stream's lines go
# to it from the next look at it (every OFFLOAD_POLL records).
BEFORE = OFFLOAD_AFTER + OFFLOAD_POLL // 2
TOTAL = BEFORE + 4 * OFFLOAD_POLL  # the cases below lie past BEFORE + OFFLOAD_POLL


def customer(i: int) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": i,
        "email": f"Person{i}@Example.com",
        "phone": f"(415) {234 + i // 10_000}-{i % 10_000:04d}",  # one number each
        "lifetime_value": i + 0.25,
        "signed_up_at": "2024-03-01T10:00:00+02:00",
    }
    case = i % 997
    if case == 1:
        row["lifetime_value"] = "a lot"  # fails validation: rejected with the reason
    elif case == 2:
        row["email"], row["phone"] = None, "12"  # no identifier left: rejected
    elif case == 3:
        row["signed_up_at"] = "not a date"  # fails validation (format date-time)
    elif case == 4:
        row["phone"] = "555"  # dropped with a warning; the email remains
    return row


def input_lines(rows: range, *, state_every: int = 1_000) -> str:
    messages: list[dict[str, Any]] = []
    if rows.start == 0:
        messages.append(schema_message("customers", SCHEMA, ["id"]))
    for i in rows:
        messages.append(record_message("customers", customer(i)))
        if (i + 1) % state_every == 0:
            messages.append(state_message({"customers": i}))
    return singer_lines(messages)


def mapping_process(target: subprocess.Popen[str], timeout: float = 30) -> int:
    """The pid of a run's mapping process, once it is there."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = subprocess.run(
            ["pgrep", "-P", str(target.pid), "-f", "target_klaviyo.records.offload"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        if found:
            return int(found[0])
        time.sleep(0.05)
    raise AssertionError("the run started no mapping process")


def offloaded_run(config: dict[str, Any], tmp_path: Path, rest: str) -> Running:
    """A run given BEFORE records, then time for its mapping process to start, then `rest`."""
    running = Running(config, tmp_path)
    running.write(input_lines(range(BEFORE)))
    mapping_process(running.proc)
    time.sleep(2.0)  # the mapping process builds its mapper (about half a second)
    running.feed(rest)
    return running


def one_process_run(config: dict[str, Any], tmp_path: Path, text: str) -> tuple[int, str]:
    """The same target pinned to one CPU: it maps every record itself."""
    path = tmp_path / "config-one-cpu.json"
    path.write_text(json.dumps(config))
    proc = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "target_klaviyo", "--config", str(path)],
        input=text,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    return proc.returncode, proc.stderr


def profiles(emulator: Any) -> dict[str, tuple[Any, ...]]:
    return {
        str(p["attributes"]["email"]): (
            p["attributes"]["phone_number"],
            p["attributes"]["external_id"],
            p["properties"],
        )
        for p in emulator.dump()["profiles"]
    }


MIRROR_STREAMS = {
    "customers": {**LIST_STREAMS["customers"], "behavior": "mirror", "mirror_on": "end_of_stream"}
}


def ledger_members(state_dir: Path) -> list[tuple[str, str, int]]:
    """The members the ledger tracks (a mirror removes, on a later pass, those not seen)."""
    with sqlite3.connect(state_dir / "ledger.sqlite3") as db:
        rows = db.execute("SELECT key, identity, last_pass FROM members ORDER BY key").fetchall()
    return [tuple(row) for row in rows]


def list_members(emulator: Any) -> list[str]:
    state = emulator.dump()
    emails = {p["id"]: p["attributes"]["email"] for p in state["profiles"]}
    return sorted(emails[pid] for item in state["lists"].values() for pid in item["members"])


def rejects(state_dir: Path) -> list[tuple[Any, str]]:
    lines = (state_dir / "rejects.jsonl").read_text().splitlines()
    return sorted((json.loads(line)["record"]["id"], json.loads(line)["reason"]) for line in lines)


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
@pytest.mark.parametrize(
    "streams", [STREAMS, LIST_STREAMS, MIRROR_STREAMS], ids=["profile", "list insert", "mirror"]
)
def test_a_stream_mapped_in_a_second_process_loads_as_one_mapped_in_one(
    emulator: Any, tmp_path: Path, streams: dict[str, Any]
) -> None:
    offloaded_dir, single_dir = tmp_path / "offloaded", tmp_path / "single"
    running = offloaded_run(
        base_config(emulator, offloaded_dir, streams, default_phone_region="US"),
        tmp_path,
        input_lines(range(BEFORE, TOTAL)),
    )
    code, states, stderr = running.finish()
    assert code == 0, stderr
    assert OFFLOADED_NOTE in stderr
    assert emulator.wait_idle()
    offloaded = (
        profiles(emulator),
        list_members(emulator),
        running.summary()["streams"],
        rejects(offloaded_dir),
        ledger_members(offloaded_dir),
    )
    assert states[-1] == {"customers": TOTAL - 1}

    emulator.reset()
    code, stderr = one_process_run(
        base_config(emulator, single_dir, streams, default_phone_region="US"),
        tmp_path,
        input_lines(range(TOTAL)),
    )
    assert code == 0, stderr
    assert OFFLOADED_NOTE not in stderr
    assert emulator.wait_idle()
    single = (
        profiles(emulator),
        list_members(emulator),
        json.loads((single_dir / "last_run.json").read_text())["streams"],
        rejects(single_dir),
        ledger_members(single_dir),
    )

    assert offloaded == single
    if streams is not STREAMS:
        assert len(offloaded[1]) == offloaded[2]["customers"]["loaded"]
    if streams is MIRROR_STREAMS:
        assert len(offloaded[4]) == offloaded[2]["customers"]["loaded"]
    stats = offloaded[2]["customers"]
    cases = {case: sum(1 for i in range(TOTAL) if i % 997 == case) for case in (1, 2, 3, 4)}
    assert stats["rejected"] == cases[1] + cases[2] + cases[3]
    assert stats["loaded"] == TOTAL - stats["rejected"]
    assert stats["warnings"] >= cases[4]
    reasons = dict(offloaded[3])
    late = next(i for i in range(BEFORE + OFFLOAD_POLL, TOTAL) if i % 997 == 1)
    assert "lifetime_value" in reasons[late]


def test_bad_input_while_offloaded_names_its_line_and_loads_what_came_before(
    emulator: Any, tmp_path: Path
) -> None:
    bad = BEFORE + 2 * OFFLOAD_POLL + 7  # a record without its key property
    rest = input_lines(range(BEFORE, bad), state_every=500)
    rest += json.dumps(record_message("customers", {"email": "nokey@example.com"})) + "\n"
    rest += input_lines(range(bad, bad + 100))
    state_dir = tmp_path / "state"
    running = offloaded_run(base_config(emulator, state_dir, STREAMS), tmp_path, rest)
    code, states, stderr = running.finish()

    assert code == 1
    assert OFFLOADED_NOTE in stderr
    # Line 1 is the SCHEMA; a STATE follows every 1,000 records up to BEFORE, then every 500.
    line = 1 + bad + BEFORE // 1_000 + (bad - BEFORE) // 500 + 1
    assert f"input line {line}: " in stderr
    summary = running.summary()["streams"]["customers"]
    assert summary["read"] == bad
    assert summary["loaded"] + summary["rejected"] == bad
    assert states[-1] == {"customers": bad - bad % 500 - 1}


def test_bad_input_found_while_the_tap_is_silent_ends_the_run_naming_its_line(
    emulator: Any, tmp_path: Path
) -> None:
    """A bad line on its way through the mapping process when the tap goes silent: the drain
    finds it, and the run ends at once (exit 1, naming the line) with what came before it
    loaded, without waiting for the tap's next line."""
    bad = BEFORE + 2 * OFFLOAD_POLL + 7
    rest = input_lines(range(BEFORE, bad), state_every=500)
    rest += json.dumps(record_message("customers", {"email": "nokey@example.com"})) + "\n"
    running = Running(base_config(emulator, tmp_path / "state", STREAMS), tmp_path)
    running.write(input_lines(range(BEFORE)))
    mapping_process(running.proc)
    time.sleep(2.0)
    running.write(rest)  # and the tap says nothing more
    running.proc.wait(timeout=30)
    code, _, stderr = running.finish()

    assert code == 1
    line = 1 + bad + BEFORE // 1_000 + (bad - BEFORE) // 500 + 1
    assert f"input line {line}: " in stderr
    summary = running.summary()["streams"]["customers"]
    assert summary["read"] == bad
    assert summary["loaded"] + summary["rejected"] == bad


def test_a_mapping_process_that_dies_leaves_its_lines_to_the_reading_process(
    emulator: Any, tmp_path: Path
) -> None:
    running = Running(base_config(emulator, tmp_path / "state", STREAMS), tmp_path)
    running.write(input_lines(range(BEFORE)))
    worker = mapping_process(running.proc)
    time.sleep(2.0)
    running.write(input_lines(range(BEFORE, BEFORE + 2 * OFFLOAD_POLL)))
    time.sleep(0.5)
    subprocess.run(["kill", f"-{signal.SIGKILL}", str(worker)], check=True)
    running.feed(input_lines(range(BEFORE + 2 * OFFLOAD_POLL, TOTAL)))
    code, states, stderr = running.finish()

    assert code == 0, stderr
    assert OFFLOADED_NOTE in stderr
    assert "its lines are mapped in this process" in stderr
    summary = running.summary()["streams"]["customers"]
    assert summary["read"] == TOTAL
    assert summary["loaded"] + summary["rejected"] == TOTAL
    assert states[-1] == {"customers": TOTAL - 1}
    assert emulator.wait_idle()
    assert len(emulator.dump()["profiles"]) == summary["loaded"]


def test_a_silent_tap_leaves_no_lines_waiting_in_the_mapping_process(
    emulator: Any, tmp_path: Path
) -> None:
    """The tap goes silent with lines on their way through the mapping process (the last
    ones a partial batch): they come back and the import jobs they fill go out without
    waiting for the tap's next line. Then the orchestrator stops the run: every line read is
    accounted for, STATE passed only records accounted for, and the next run, given the
    input again from the last STATE, loads everything."""
    config = base_config(emulator, tmp_path / "state", STREAMS, stop_grace_s=5)
    running = Running(config, tmp_path)
    running.write(input_lines(range(BEFORE)))
    mapping_process(running.proc)
    time.sleep(2.0)
    written = 20_321  # two import jobs' worth, then part of a batch
    running.write(input_lines(range(BEFORE, written)))
    deadline = time.monotonic() + 30
    while sum(e.operation == "bulk_import_profiles" for e in emulator.request_log) < 2:
        assert time.monotonic() < deadline, "the second import job waited for the tap"
        time.sleep(0.05)
    running.signal(signal.SIGTERM)
    code, states, stderr = running.finish()

    assert code == 128 + signal.SIGTERM, stderr[-2000:]
    assert OFFLOADED_NOTE in stderr
    assert "Traceback" not in stderr
    stats = running.summary()["streams"]["customers"]
    assert stats["read"] == written
    assert stats["read"] == stats["loaded"] + stats["rejected"] + stats["on_hold"]
    last = states[-1]["customers"]
    assert last < stats["read"]  # STATE passed only records read and accounted for

    # The tap starts again after the last STATE it saw.
    again = [schema_message("customers", SCHEMA, ["id"])]
    rerun = Running(config, tmp_path)
    rerun.feed(singer_lines(again) + input_lines(range(last + 1, written)))
    code, _, stderr = rerun.finish()
    assert code == 0, stderr
    assert rerun.summary()["streams"]["customers"]["replayed"] == stats["on_hold"]
    assert emulator.wait_idle()
    emails = set(profiles(emulator))
    assert {f"person{i}@example.com" for i in range(written) if i % 997 not in (1, 2, 3)} <= emails


@pytest.mark.parametrize(
    ("files", "cpus"),
    [
        ({"cpu.max": "max 100000\n"}, None),  # cgroup v2, no limit
        ({"cpu.max": "150000 100000\n"}, 1.5),  # Kubernetes limits.cpu: 1500m
        ({"cpu.max": "100000 100000\n"}, 1.0),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),  # v1
        ({"cpu/cpu.cfs_quota_us": "50000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 0.5),
        ({}, None),  # nothing to read
    ],
)
def test_a_containers_cpu_limit_is_read_from_its_cgroup(
    tmp_path: Path, files: dict[str, str], cpus: float | None
) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert offload._cgroup_cpus(tmp_path) == cpus


def test_one_mapping_process_a_spare_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offload.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    monkeypatch.setattr(offload, "_cgroup_cpus", lambda: None)
    assert offload.spare_cpus() == 3
    monkeypatch.setattr(offload, "_cgroup_cpus", lambda: 1.0)  # limits.cpu: 1
    assert offload.spare_cpus() == 0
    monkeypatch.setattr(offload, "_cgroup_cpus", lambda: 2.5)
    assert offload.spare_cpus() == 1
    monkeypatch.setattr(offload.os, "sched_getaffinity", lambda pid: {0})  # taskset -c 0
    assert offload.spare_cpus() == 0


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_two_large_streams_on_two_cpus_share_one_mapping_process(
    emulator: Any, tmp_path: Path
) -> None:
    """A mapping process a spare CPU: on two CPUs the first stream to need one gets it, the
    other maps in the run, and both load."""
    streams = {"customers": STREAMS["customers"], "leads": STREAMS["customers"]}
    config = base_config(emulator, tmp_path / "state", streams)
    running = Running(config, tmp_path, prefix=("taskset", "-c", "0,1"))

    def both(rows: range) -> str:
        messages: list[dict[str, Any]] = []
        if rows.start == 0:
            messages += [schema_message(name, SCHEMA, ["id"]) for name in streams]
        for start in range(rows.start, rows.stop, 500):
            for name in streams:
                block = range(start, min(start + 500, rows.stop))
                messages += [record_message(name, customer(i)) for i in block]
        return singer_lines(messages)

    running.write(both(range(BEFORE)))
    mapping_process(running.proc)
    time.sleep(2.0)
    running.feed(both(range(BEFORE, TOTAL)))
    code, _, stderr = running.finish(timeout=300)

    assert code == 0, stderr[-2000:]
    assert stderr.count(OFFLOADED_NOTE) == 1
    summary = running.summary()["streams"]
    for name in streams:
        assert summary[name]["read"] == TOTAL
        assert summary[name]["loaded"] + summary[name]["rejected"] == TOTAL


def mapped_where(record: dict[str, Any]) -> tuple[str, None, dict[str, Any], int, list[str], None]:
    """A record mapper that says which process mapped the record (every tenth fails)."""
    if record["id"] % 10 == 3:
        raise ValueError("mapped by the reading process, which says what is wrong")
    return str(record["id"]), None, {"email": record["email"], "pid": os.getpid()}, 1, [], None


def through_offload(
    monkeypatch: pytest.MonkeyPatch,
    queued_there: int,
    rows: list[dict[str, Any]] | None = None,
    sending_waits: Callable[[], bool] = lambda: False,
) -> list[Any]:
    """What a stream of 5,500 lines (or of `rows`) gives back, in order, with the mapping
    process started."""
    monkeypatch.setattr(offload, "QUEUED_THERE", queued_there)
    taken: list[Any] = []
    recipe = offload.Recipe(
        "customers", {"properties": SCHEMA}, ("id",), False, mapped_where, False
    )
    work = offload.Offload(
        recipe,
        lambda line, number, result: taken.append((number, result)),
        logging.getLogger(),
        sending_waits,
    )
    work.start()
    deadline = time.monotonic() + 30
    while not work.poll_ready():
        assert time.monotonic() < deadline and not work.failed, "the mapping process did not start"
        time.sleep(0.02)
    if rows is None:
        rows = [customer(i) for i in range(5_500)]
    lines = singer_lines([record_message("customers", row) for row in rows])
    for number, line in enumerate(lines.splitlines(keepends=True), 1):
        work.add(line, number)
    work.drain()
    work.close()
    assert not work.failed
    return taken


def test_the_reading_process_maps_batches_itself_rather_than_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While the mapping process has batches before it, the reading process maps the next one
    itself: the same results, in input order, as from the mapping process."""
    there = through_offload(monkeypatch, queued_there=10**6)  # every batch goes to it
    here = through_offload(monkeypatch, queued_there=0)  # it is always busy: none goes

    assert [number for number, _ in here] == list(range(1, 5_501))
    assert [number for number, _ in there] == list(range(1, 5_501))
    pids = {result[2]["pid"] for _, result in there if result is not None}
    assert len(pids) == 1 and os.getpid() not in pids
    assert {result[2]["pid"] for _, result in here if result is not None} == {os.getpid()}

    def without_pid(taken: list[Any]) -> list[Any]:
        return [(n, r if r is None else (*r[:2], {**r[2], "pid": 0}, *r[3:])) for n, r in taken]

    assert without_pid(here) == without_pid(there)
    # Lines not mapped cleanly (ids ending in 3, and what intake refuses) are mapped as taken.
    unmapped = {number for number, result in here if result is None}
    assert {i + 1 for i in range(5_500) if i % 10 == 3} <= unmapped


def test_lines_stay_in_the_reading_process_while_the_runs_writes_wait_for_their_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While a write waits for its rate-limit window, sending sets the run's pace: a batch
    read then is not handed to the mapping process (that costs CPU and gains nothing) but
    read in this process as it is taken, in input order. Once no write waits, batches go to
    the mapping process again."""
    asked: list[int] = []

    def sending_waits() -> bool:  # asked once a batch of 1,000 lines: the 3rd and 4th wait
        asked.append(1)
        return len(asked) in (3, 4)

    taken = through_offload(monkeypatch, queued_there=10**6, sending_waits=sending_waits)
    unpaused = through_offload(monkeypatch, queued_there=10**6)

    def mapped_there(taken: list[Any]) -> set[int]:
        return {number for number, result in taken if result is not None}

    assert [number for number, _ in taken] == list(range(1, 5_501))
    # The 3rd and 4th batches are read here, as they are taken; the rest went as before.
    assert mapped_there(taken) == mapped_there(unpaused) - set(range(2_001, 4_001))
    pids = {result[2]["pid"] for _, result in taken if result is not None}
    assert len(pids) == 1 and os.getpid() not in pids


def test_wide_rows_go_to_the_mapping_process_in_smaller_batches(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A batch is BATCH_LINES lines or BATCH_CHARS characters, whichever comes first: rows of
    several KB (orders with their line items) keep a few MB on their way, not 1,000 rows'
    worth in each of BATCHES_IN_FLIGHT batches."""
    batches: list[int] = []
    map_batch = offload.BatchMapper.__call__

    def counted(self: offload.BatchMapper, lines: list[str]) -> list[offload.Result]:
        batches.append(len(lines))
        return map_batch(self, lines)

    monkeypatch.setattr(offload.BatchMapper, "__call__", counted)
    notes = "a long delivery note " * 150  # about 3 KB a row
    rows = [{**customer(i), "email": f"person{i}@example.com", "notes": notes} for i in range(900)]
    # Every batch is mapped in this process (QUEUED_THERE 0), where it can be counted.
    taken = through_offload(monkeypatch, queued_there=0, rows=rows)

    assert [number for number, _ in taken] == list(range(1, 901))
    widest = offload.BATCH_CHARS // len(notes) + 1
    assert sum(batches) == 900 and max(batches) <= widest < offload.BATCH_LINES


def test_the_mapping_process_loads_the_mapping_without_singer_sdk() -> None:
    """A mapping process imports what maps a profile, not singer-sdk and the sinks: it starts
    in about a tenth of a second, where singer-sdk's import alone takes a quarter."""
    from target_klaviyo.mapping.profile import ProfileRecords
    from target_klaviyo.streams import parse_stream_mappings

    mapping = parse_stream_mappings(STREAMS).resolve("customers")
    assert mapping is not None
    recipe = offload.Recipe(
        "customers",
        {"properties": SCHEMA},
        ("id",),
        True,
        ProfileRecords(mapping, tuple(SCHEMA), "US"),
        False,
    )
    probe = (
        "import pickle, sys\n"
        "from target_klaviyo.records.offload import BatchMapper\n"
        "results = BatchMapper(pickle.loads(sys.stdin.buffer.read()))(sys.argv[1:])\n"
        "print(results[0][0] is not None, sorted({m.split('.')[0] for m in sys.modules}))\n"
    )
    line = singer_lines([record_message("customers", customer(5))]).strip()
    done = subprocess.run(
        [sys.executable, "-c", probe, line],
        input=pickle.dumps(recipe),
        capture_output=True,
        check=True,
        cwd=REPO,
    )
    mapped, modules = done.stdout.decode().split(" ", 1)
    assert mapped == "True", done.stderr.decode()
    assert "singer_sdk" not in modules and "requests" not in modules
