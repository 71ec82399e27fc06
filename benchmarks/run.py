"""The benchmark command: ``python -m benchmarks.run [--only SECTIONS] [sizes]``.

Sections (all by default, in this order):

- ``rate``: target-klaviyo against the emulator at Klaviyo's real tier rates; wall time divided
  by the floor the tiers allow for the workload's requests at Klaviyo's batch maxima.
- ``baseline``: a per-record loader (one profile-import per profile, one POST /api/events per
  event), measured on a sample at real rates and extrapolated to the rate workload.
- ``cpu``: records per second of target-klaviyo (emulator unthrottled, in its own process)
  against a no-op singer-sdk BatchSink target on the same input, with and without validation.
- ``memory``: peak RSS at a small and a large number of profiles, the ledger's size after the
  large run, and the throughput of a second, all-unchanged run of the same input.
- ``wide``: an orders table of wide rows (about 3 KB each, with their line items) at Klaviyo's
  real tier rates, long enough that the per-minute window holds requests back: peak RSS, and
  wall time divided by the floor of its requests.
- ``profiles``: a customers table alone at Klaviyo's real tier rates, with import jobs that take
  the emulator a set time (as Klaviyo's do); wall time divided by the least time to submit the
  jobs plus one job's latency, polls per job, peak RSS, and 429s.
- ``catalog``: a products table loaded as catalog items at Klaviyo's real tier rates, with
  catalog jobs that take a set time; wall time divided by the least time to submit the create
  jobs (100 items each, at most 500 in progress) plus one job's latency, and 429s.
- ``budget``: two runs at once on one Klaviyo account (two event streams, the ledger in
  PostgreSQL so that they pace from one budget), at real tier rates: their combined wall time
  divided by the floor of their combined requests, and 429s. Skipped, with the reason, when
  PostgreSQL (``BENCH_LEDGER_URL``, default ``postgresql://postgres@127.0.0.1:5432/test``) or
  psycopg is not there.

Every figure is a ratio of two measurements taken in the same run, printed with its goal and
PASS or MISS. The command exits 0 unless a run crashed.
"""

from __future__ import annotations

import argparse
import compileall
import datetime as dt
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.baseline import PerRecordLoader
from benchmarks.floor import bulk_requests, floor, format_rows, per_record_requests, tier_time
from benchmarks.procs import (
    REPO,
    Emulator,
    Measured,
    noop_args,
    run_measured,
    tail,
    target_args,
)
from benchmarks.workload import (
    CATALOG_ITEMS_PER_JOB,
    EVENTS_PER_REQUEST,
    EVENTS_STREAM,
    PROFILES_PER_JOB,
    RECORDS_FORMAT,
    WIDE_LINE_ITEMS,
    Workload,
    catalog_streams,
    config_streams,
    write_events,
    write_input,
    write_products,
    write_wide_orders,
)
from target_klaviyo.klaviyo.operations import OPERATIONS

SECTIONS = ("rate", "baseline", "cpu", "memory", "wide", "profiles", "catalog", "budget")
# Run only when asked for with --only: they need a tool the machine may lack, and minutes.
OPT_IN_SECTIONS = ("instructions",)
LEDGER_GLOB = "ledger.sqlite3*"  # the database and its WAL files
EMULATOR_FAST = ("--unthrottled", "--no-validate", "--job-delay", "0")
EMULATOR_REAL_RATES = ("--no-validate", "--job-delay", "0")


class BenchmarkError(RuntimeError):
    """A measured run failed; the benchmark cannot give its figure."""


@dataclass
class Figure:
    section: str
    name: str
    measured: str
    ratio: float
    goal: str
    ok: bool

    @property
    def verdict(self) -> str:
        return "PASS" if self.ok else "MISS"


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.figures: list[Figure] = []
        self.rate_wall_s: float | None = None
        self.rate_workload: Workload | None = None
        self._runs = 0

    # -- helpers --------------------------------------------------------------------------

    def figure(self, section: str, name: str, measured: str, ratio: float, goal: str, ok: bool):
        fig = Figure(section, name, measured, ratio, goal, ok)
        self.figures.append(fig)
        print(f"  => {name}: {ratio:,.2f} (goal {goal}) {fig.verdict}")

    def input_file(self, name: str, workload: Workload, variant: int = 0) -> Path:
        # Named by its sizes, so that a kept --workdir reuses an input only for the same workload.
        sizes = f"{workload.profiles}-{workload.events}-{workload.members}-v{variant}"
        sizes += f"-f{RECORDS_FORMAT}"
        path = self.workdir / f"{name}-{sizes}.singer"
        if not path.exists():
            started = time.perf_counter()
            write_input(path, workload, variant=variant)
            print(
                f"  input {path.name}: {workload.describe()}, "
                f"{path.stat().st_size / 1e6:,.1f} MB (written in "
                f"{time.perf_counter() - started:.1f} s)"
            )
        return path

    def run_dir(self, label: str) -> Path:
        """A new, empty directory for one run (a kept --workdir may hold an earlier one)."""
        self._runs += 1
        path = self.workdir / f"run-{self._runs}-{label}"
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir()
        return path

    def emulator(self, *flags: str) -> Emulator:
        self._runs += 1
        return Emulator(*flags, log=self.workdir / f"emulator-{self._runs}.log")

    def run_target(
        self,
        emulator: Emulator,
        input_path: Path,
        *,
        validate: bool | None,
        state_dir: Path | None = None,
        label: str,
        streams: dict[str, Any] | None = None,
        prefix: tuple[str, ...] = (),
    ) -> tuple[Measured, dict[str, Any]]:
        """One target-klaviyo run; its measurement and last_run.json (checked)."""
        run_dir = self.run_dir(label)
        state_dir = state_dir or run_dir / "state"
        config: dict[str, Any] = {
            "private_api_key": emulator.private_key,
            "api_base_url": emulator.base_url,
            "state_dir": str(state_dir),
            "default_phone_region": "US",
            "progress_interval_s": 0,
            "streams": streams or config_streams(),
        }
        if validate is not None:
            config["validate_records"] = validate
        config_path = run_dir / "config.json"
        config_path.write_text(json.dumps(config))
        measured = run_measured(
            [*prefix, *target_args(config_path)], input_path, run_dir / "stderr.log", run_dir
        )
        if measured.exit_code != 0:
            raise BenchmarkError(
                f"target-klaviyo ({label}) exited {measured.exit_code}:\n"
                f"{tail(measured.stderr_path)}"
            )
        summary = json.loads((state_dir / "last_run.json").read_text())
        for stream, stats in summary["streams"].items():
            outcomes = stats["loaded"] + stats["unchanged"] + stats["rejected"] + stats["on_hold"]
            if stats["read"] != outcomes or stats["on_hold"]:
                print(f"  WARNING: stream {stream} did not load cleanly: {stats}")
        return measured, summary

    def run_noop(
        self,
        input_path: Path,
        *,
        validate: bool | None,
        label: str,
        prefix: tuple[str, ...] = (),
    ) -> Measured:
        run_dir = self.run_dir(label)
        config = {} if validate is None else {"validate_records": validate}
        config_path = run_dir / "config.json"
        config_path.write_text(json.dumps(config))
        measured = run_measured(
            [*prefix, *noop_args(config_path)], input_path, run_dir / "stderr.log", run_dir
        )
        if measured.exit_code != 0:
            raise BenchmarkError(
                f"the no-op target ({label}) exited {measured.exit_code}:\n"
                f"{tail(measured.stderr_path)}"
            )
        return measured

    # -- 1. rate-limited ------------------------------------------------------------------

    def rate(self) -> None:
        args = self.args
        workload = Workload(args.rate_profiles, args.rate_events, args.rate_members)
        print(f"\n[rate] target-klaviyo at Klaviyo's real tier rates: {workload.describe()}")
        input_path = self.input_file("rate", workload)
        counts = bulk_requests(workload)
        floor_s, rows = floor(counts)
        print("  floor: requests at Klaviyo's batch maxima, least time their tiers allow")
        print("\n".join(format_rows(rows)))
        print(f"  floor = {floor_s:,.0f} s (emulator job processing set to 0 s)")
        with self.emulator(*EMULATOR_REAL_RATES) as emulator:
            measured, summary = self.run_target(emulator, input_path, validate=None, label="rate")
            log = emulator.control("GET", "/requests")
        (self.workdir / "rate-requests.json").write_text(json.dumps(log))
        spans = _spans(log)
        first_call = min((entry["started_wall"] for entry in log), default=measured.started_at)
        throttled = sum(1 for entry in log if entry["status"] == 429)
        print(
            f"  target-klaviyo (default settings): wall {measured.wall_s:,.1f} s, "
            f"CPU {measured.cpu_s:,.1f} s, peak RSS {measured.peak_rss_mb:,.0f} MB"
        )
        print(
            f"  waited on its own pacing {summary['rate_limit_wait_s']:,.1f} s; "
            f"429s from the emulator: {throttled}"
        )
        print(
            f"  first request {first_call - measured.started_at:.1f} s after launch "
            "(interpreter, imports, settings); from there:"
        )
        for operation, (count, first, last) in sorted(spans.items()):
            print(
                f"    {operation:<32} {count:>6} calls, first at {first:6.1f} s, "
                f"last answered at {last:6.1f} s"
            )
        if floor_s > 0:
            print(
                f"  its CPU time / floor = {measured.cpu_s / floor_s:.2f} (the target's threads "
                "share one interpreter, so the wall ratio cannot fall much below this even on "
                "an idle machine)"
            )
        self.rate_wall_s = measured.wall_s
        self.rate_workload = workload
        ratio = measured.wall_s / floor_s if floor_s > 0 else float("inf")
        self.figure(
            "rate",
            "wall time / rate-limit floor",
            f"{measured.wall_s:,.1f} s / {floor_s:,.0f} s",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )

    # -- 2. per-record baseline -----------------------------------------------------------

    def baseline(self) -> None:
        args = self.args
        workload = self.rate_workload or Workload(
            args.rate_profiles, args.rate_events, args.rate_members
        )
        print(
            f"\n[baseline] a per-record loader ({args.baseline_threads} threads), sample of "
            f"{args.baseline_sample} profile-imports + {args.baseline_sample} events "
            "at real rates"
        )
        with self.emulator() as emulator:  # real rates, request bodies validated
            loader = PerRecordLoader(emulator.base_url, emulator.private_key, args.baseline_threads)
            samples = loader.sample(args.baseline_sample, args.baseline_sample)
        rates = {}
        for sample in samples:
            rates[sample.operation] = sample.rate
            statuses = ", ".join(f"{k}: {v}" for k, v in sorted(sample.statuses.items()))
            print(
                f"  {sample.operation:<26} {sample.requests} requests in {sample.seconds:.2f} s"
                f" = {sample.rate:,.1f}/s (answers {statuses}; 429s waited out: "
                f"{sample.throttled})"
            )
        # Extrapolate: each operation needs at least what its tier allows, and at least what
        # the loader managed per second; the operations run in parallel.
        per_op = {}
        for operation, n in per_record_requests(workload).items():
            tier = OPERATIONS[operation].tier
            per_op[operation] = max(tier_time(n, tier), n / rates[operation])
            print(
                f"  extrapolated to the rate workload ({workload.describe()}): "
                f"{operation} x {n:,} -> {per_op[operation]:,.0f} s "
                f"(tier {tier.name}: {tier.burst_per_s}/s, {tier.steady_per_min}/min)"
            )
        theirs = max(per_op.values())
        print(f"  per-record loader: {theirs:,.0f} s = {theirs / 3600:,.1f} h")
        if self.rate_wall_s is None:
            ours_s, ours_label = floor(bulk_requests(workload))[0], "our floor (rate not run)"
        else:
            ours_s, ours_label = self.rate_wall_s, "target-klaviyo measured"
        print(f"  {ours_label}: {ours_s:,.1f} s")
        ratio = theirs / ours_s if ours_s > 0 else float("inf")
        self.figure(
            "baseline",
            "per-record loader time / target-klaviyo time",
            f"{theirs:,.0f} s / {ours_s:,.1f} s",
            ratio,
            ">= 100",
            ratio >= 100,
        )

    # -- 3. CPU ---------------------------------------------------------------------------

    def cpu(self) -> None:
        args = self.args
        workload = Workload(args.profiles, args.events, args.members)
        print(
            f"\n[cpu] records/s, target-klaviyo vs a no-op singer-sdk target: {workload.describe()}"
        )
        input_path = self.input_file("cpu", workload)
        n = workload.records
        results: dict[tuple[str, bool], tuple[float, float, float]] = {}
        with self.emulator(*EMULATOR_FAST) as emulator:
            for validate in (False, True):
                mode = "validation on" if validate else "validate_records: false"
                runs: dict[str, list[Measured]] = {"noop": [], "target": []}
                # Alternating runs: a change in the machine's load touches both sides alike.
                setting = None if validate else False  # None: singer-sdk's default (on)
                for _ in range(max(1, args.repeat)):
                    runs["noop"].append(self.run_noop(input_path, validate=setting, label="noop"))
                    emulator.reset()
                    measured, _ = self.run_target(
                        emulator, input_path, validate=setting, label="cpu"
                    )
                    runs["target"].append(measured)
                for who in ("noop", "target"):
                    walls = [m.wall_s for m in runs[who]]
                    cpus = [m.cpu_s for m in runs[who]]
                    rss = [m.peak_rss_mb for m in runs[who]]
                    wall, cpu = statistics.median(walls), statistics.median(cpus)
                    results[(who, validate)] = (n / cpu, n / wall, max(rss))
                    name = "no-op target  " if who == "noop" else "target-klaviyo"
                    each = ", ".join(f"{c:.1f}" for c in cpus)
                    print(
                        f"  {name} {mode:<24} CPU {cpu:7.1f} s = {n / cpu:9,.0f} rec/s"
                        f" (runs: {each} s); wall {wall:7.1f} s = {n / wall:9,.0f} rec/s; "
                        f"peak RSS {max(rss):,.0f} MB"
                    )
        print(
            "  (ratios use records per CPU-second of each process; wall figures are shown "
            "for reference, they include the machine's other load and, for target-klaviyo,"
            " waiting for the emulator's jobs)"
        )
        off = results[("target", False)][0] / results[("noop", False)][0]
        self.figure(
            "cpu",
            "target-klaviyo / no-op target, both validate_records: false",
            f"{results[('target', False)][0]:,.0f} / {results[('noop', False)][0]:,.0f} rec/s",
            off,
            ">= 0.6",
            off >= 0.6,
        )
        on = results[("target", True)][0] / results[("noop", True)][0]
        self.figure(
            "cpu",
            "target-klaviyo validating / no-op target's default jsonschema validation",
            f"{results[('target', True)][0]:,.0f} / {results[('noop', True)][0]:,.0f} rec/s",
            on,
            ">= 3",
            on >= 3,
        )

    # -- instructions (only with --only) ------------------------------------------------

    def instructions(self) -> None:
        """The cpu section's comparison in instructions a record, counted by valgrind's
        callgrind: a figure that neither the machine's other load nor its drifting speed
        moves, for comparing two versions of the code on a noisy machine."""
        args = self.args
        workload = Workload(args.profiles // 10, args.events // 10, args.members // 10)
        print(
            "\n[instructions] instructions a record under valgrind (callgrind), target-klaviyo"
            f" vs a no-op singer-sdk target: {workload.describe()}, a tenth of the cpu workload"
        )
        valgrind = shutil.which("valgrind")
        if valgrind is None:
            print("  skipped: valgrind is not installed")
            return
        inputs = {
            "start-up": self.input_file("instructions", Workload(0, 0, 0)),
            "records": self.input_file("instructions", workload),
        }
        counted: dict[tuple[str, str, bool], int] = {}
        with self.emulator(*EMULATOR_FAST) as emulator:
            # Start-up (imports, settings, the SCHEMA messages) does not depend on validation.
            for part, validations in (("start-up", (False,)), ("records", (False, True))):
                for validate in validations:
                    setting = None if validate else False  # None: singer-sdk's default (on)
                    for who in ("noop", "target"):
                        logs = f"callgrind-{who}-{part}-{validate}"
                        for old in self.workdir.glob(f"{logs}.*.log"):
                            old.unlink()
                        # Every process of the run, the mapping process too (one log each).
                        prefix = (
                            valgrind,
                            "--tool=callgrind",
                            "--trace-children=yes",
                            "--callgrind-out-file=/dev/null",
                            f"--log-file={self.workdir / logs}.%p.log",
                        )
                        label = f"instructions-{who}"
                        if who == "noop":
                            self.run_noop(
                                inputs[part], validate=setting, label=label, prefix=prefix
                            )
                        else:
                            emulator.reset()
                            self.run_target(
                                emulator, inputs[part], validate=setting, label=label, prefix=prefix
                            )
                        counted[(who, part, validate)] = _instructions(self.workdir, logs)
        n = workload.records
        for who in ("noop", "target"):
            name = "no-op target  " if who == "noop" else "target-klaviyo"
            print(
                f"  {name} start-up (no records): {counted[(who, 'start-up', False)] / 1e9:.2f}"
                " G instructions"
            )
        per_record: dict[tuple[str, bool], float] = {}
        for validate in (False, True):
            mode = "validation on" if validate else "validate_records: false"
            for who in ("noop", "target"):
                extra = counted[(who, "records", validate)] - counted[(who, "start-up", False)]
                per_record[(who, validate)] = extra / n
                name = "no-op target  " if who == "noop" else "target-klaviyo"
                print(f"  {name} {mode:<24} {extra / n:9,.0f} instructions a record")
        off = per_record[("noop", False)] / per_record[("target", False)]
        on = per_record[("noop", True)] / per_record[("target", True)]
        print(
            f"  records per instruction, target-klaviyo / no-op target: {off:.2f} both"
            f" validate_records: false (the cpu section's goal: >= 0.6 in CPU-seconds),"
            f" {on:.2f} validating (>= 3)"
        )

    # -- 4. memory and the ledger ---------------------------------------------------------

    def memory(self) -> None:
        args = self.args
        small, large = (20_000, 200_000) if args.quick else (args.memory_small, args.memory_large)
        print(
            f"\n[memory] peak RSS of target-klaviyo at {small:,} and {large:,} profiles "
            "(emulator unthrottled; validate_records: false)"
        )
        peaks: dict[int, float] = {}
        runs: dict[int, Measured] = {}
        with self.emulator(*EMULATOR_FAST) as emulator:
            for size in (small, large):
                emulator.reset()
                input_path = self.input_file("memory", Workload(size, 0, 0))
                state_dir = self.workdir / f"memory-state-{size}"
                shutil.rmtree(state_dir, ignore_errors=True)  # the first run starts with no ledger
                m, _ = self.run_target(
                    emulator, input_path, validate=False, state_dir=state_dir, label="memory"
                )
                peaks[size] = m.peak_rss_mb
                runs[size] = m
                print(
                    f"  {size:>9,} profiles: peak RSS {m.peak_rss_mb:6.0f} MB, "
                    f"wall {m.wall_s:,.1f} s, CPU {m.cpu_s:,.1f} s"
                )
                profile = " ".join(f"{mb:.0f}" for mb in m.rss_profile())
                print(f"    highest RSS in each tenth of the run (MB): {profile}")
            ledger_mb = _ledger_bytes(state_dir) / 1e6
            print(f"  ledger after {large:,} profiles: {ledger_mb:,.1f} MB")
            second, summary = self.run_target(
                emulator, input_path, validate=False, state_dir=state_dir, label="unchanged"
            )
            unchanged = sum(s["unchanged"] for s in summary["streams"].values())
            print(
                f"  second run, same input: {unchanged:,} of {large:,} unchanged; "
                f"wall {second.wall_s:,.1f} s, CPU {second.cpu_s:,.1f} s, "
                f"peak RSS {second.peak_rss_mb:,.0f} MB"
            )
        ratio = peaks[large] / peaks[small]
        self.figure(
            "memory",
            f"peak RSS at {large:,} / at {small:,} profiles",
            f"{peaks[large]:,.0f} MB / {peaks[small]:,.0f} MB",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )
        self.figure(
            "memory",
            f"peak RSS at {large:,} profiles, MB",
            f"{peaks[large]:,.0f} MB",
            peaks[large],
            "<= 300",
            peaks[large] <= 300,
        )
        self.figure(
            "memory",
            f"ledger size after {large:,} profiles, MB",
            f"{ledger_mb:,.1f} MB",
            ledger_mb,
            "< 200",
            ledger_mb < 200,
        )
        first = runs[large]
        speed = first.cpu_s / second.cpu_s if second.cpu_s > 0 else float("inf")
        self.figure(
            "memory",
            "all-unchanged second run / first run, records per CPU-second",
            f"{large / second.cpu_s:,.0f} / {large / first.cpu_s:,.0f} rec/s",
            speed,
            ">= 1",
            speed >= 1,
        )

    # -- 5. wide rows, held back by the rate window ---------------------------------------

    def wide(self) -> None:
        n = self.args.wide_orders
        requests = math.ceil(n / EVENTS_PER_REQUEST)
        floor_s = tier_time(requests, OPERATIONS["bulk_create_events"].tier)
        print(
            f"\n[wide] {n:,} orders of about 3 KB each ({WIDE_LINE_ITEMS} line items) at "
            "Klaviyo's real tier rates: past 150 requests, bulk_create_events' per-minute "
            "window holds requests back, and the stream holds as many as it may meanwhile"
        )
        input_path = self.workdir / f"wide-orders-{n}.singer"
        if not input_path.exists():
            started = time.perf_counter()
            write_wide_orders(input_path, n)
            print(
                f"  input {input_path.name}: {input_path.stat().st_size / 1e6:,.1f} MB "
                f"(written in {time.perf_counter() - started:.1f} s)"
            )
        with self.emulator(*EMULATOR_REAL_RATES) as emulator:
            measured, summary = self.run_target(
                emulator,
                input_path,
                validate=None,
                label="wide",
                streams={EVENTS_STREAM: config_streams()[EVENTS_STREAM]},
            )
            log = emulator.control("GET", "/requests")
        throttled = sum(1 for entry in log if entry["status"] == 429)
        loaded = sum(s["loaded"] for s in summary["streams"].values())
        peak = measured.peak_rss_mb
        print(
            f"  {requests} bulk_create_events requests, floor {floor_s:,.0f} s; wall "
            f"{measured.wall_s:,.1f} s, CPU {measured.cpu_s:,.1f} s, peak RSS {peak:,.0f} MB; "
            f"{loaded:,} loaded; 429s: {throttled}"
        )
        profile = " ".join(f"{mb:.0f}" for mb in measured.rss_profile())
        print(f"    highest RSS in each tenth of the run (MB): {profile}")
        self.figure(
            "wide",
            f"peak RSS, {n:,} orders of about 3 KB, MB",
            f"{peak:,.0f} MB",
            peak,
            "<= 300",
            peak <= 300,
        )
        ratio = measured.wall_s / floor_s
        self.figure(
            "wide",
            f"wall time / floor, {n:,} orders of about 3 KB",
            f"{measured.wall_s:,.1f} s / {floor_s:,.0f} s",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )

    # -- 6. profile import jobs at Klaviyo's latency --------------------------------------

    def profiles(self) -> None:
        args = self.args
        latencies = [float(x) for x in args.job_latencies.split(",") if x.strip()]
        runs = [(args.job_profiles, latency) for latency in latencies]
        if args.job_memory_profiles:  # 0: no memory run
            runs.append((args.job_memory_profiles, max(latencies)))
        sizes = ", ".join(f"{n:,} at L = {lat:g} s" for n, lat in runs)
        print(
            "\n[profiles] a customers table alone at Klaviyo's real tier rates, import jobs "
            f"completing a set time L after submission: {sizes}"
        )
        if latencies:
            # What reading alone costs on this machine: the last job cannot go out before the
            # last record is read, and wall / floor <= 1.2 needs it out by 1.2 * floor - L.
            reading = self.run_noop(
                self.input_file("profiles", Workload(args.job_profiles, 0, 0)),
                validate=False,
                label="profiles-noop",
            )
            print(
                f"  reading alone: the no-op singer-sdk target (validate_records: false, no"
                f" emulator running) reads the {args.job_profiles:,} profiles in"
                f" {reading.wall_s:,.1f} s wall, {reading.cpu_s:,.1f} s CPU"
            )
        for profiles, latency in runs:
            workload = Workload(profiles, 0, 0)
            input_path = self.input_file("profiles", workload)
            jobs = math.ceil(profiles / PROFILES_PER_JOB)
            submit_s = tier_time(jobs, OPERATIONS["bulk_import_profiles"].tier)
            floor_s = submit_s + latency
            flags = (*EMULATOR_REAL_RATES, "--job-latency", f"{latency:g}")
            with self.emulator(*flags) as emulator:
                measured, summary = self.run_target(
                    emulator, input_path, validate=None, label=f"profiles-{latency:g}"
                )
                log = emulator.control("GET", "/requests")
                timing = emulator.control("GET", "/timing")
                emulator_cpu_s = emulator.cpu_s()
            calls = Counter(entry["operation"] for entry in log)
            throttled = Counter(entry["operation"] for entry in log if entry["status"] == 429)
            polls = calls["get_bulk_import_profiles_jobs"] + calls["get_bulk_import_profiles_job"]
            loaded = sum(s["loaded"] for s in summary["streams"].values())
            ratio = measured.wall_s / floor_s
            print(
                f"  {profiles:,} profiles, L = {latency:g} s: {jobs} jobs, floor {submit_s:,.0f} s"
                f" to submit + {latency:g} s = {floor_s:,.0f} s; wall {measured.wall_s:,.1f} s,"
                f" CPU {measured.cpu_s:,.1f} s, peak RSS {measured.peak_rss_mb:,.0f} MB;"
                f" {loaded:,} loaded; polls {calls['get_bulk_import_profiles_jobs']} of the job"
                f" list + {calls['get_bulk_import_profiles_job']} of single jobs ="
                f" {polls / jobs:.2f} a job; 429s: {sum(throttled.values())}"
                + (f" ({dict(throttled)})" if throttled else "")
            )
            submitted = [
                entry["ended_wall"] - measured.started_at
                for entry in log
                if entry["operation"] == "bulk_import_profiles" and entry["status"] == 202
            ]
            print(
                f"    last job submitted {max(submitted, default=0):.1f} s after launch (the goal"
                f" needs it by {1.2 * floor_s - latency:.1f} s, before polls and the end); the"
                f" emulator ended {timing['jobs_ended']} jobs, the latest"
                f" {max(0.0, timing['late_s_max']):.1f} s after it was due (it checks and"
                f" applies every row itself, on the same machine: {emulator_cpu_s:,.1f} s of"
                " CPU)"
            )
            if profiles == args.job_profiles:
                self.figure(
                    "profiles",
                    f"wall time / floor, {profiles:,} profiles, job latency {latency:g} s",
                    f"{measured.wall_s:,.1f} s / {floor_s:,.0f} s",
                    ratio,
                    "<= 1.2",
                    ratio <= 1.2,
                )
            if (profiles, latency) == runs[-1]:
                self.figure(
                    "profiles",
                    f"peak RSS at {profiles:,} profiles, job latency {latency:g} s, MB",
                    f"{measured.peak_rss_mb:,.0f} MB",
                    measured.peak_rss_mb,
                    "<= 300",
                    measured.peak_rss_mb <= 300,
                )
            self.figure(
                "profiles",
                f"429s, {profiles:,} profiles, job latency {latency:g} s",
                str(sum(throttled.values())),
                sum(throttled.values()),
                "0",
                not throttled,
            )

    # -- 7. catalog jobs at Klaviyo's latency ---------------------------------------------

    def catalog(self) -> None:
        args = self.args
        items, latency = args.catalog_items, args.catalog_latency
        jobs = math.ceil(items / CATALOG_ITEMS_PER_JOB)
        print(
            f"\n[catalog] {items:,} catalog items (a products table) at Klaviyo's real tier "
            f"rates, catalog jobs completing {latency:g} s after submission"
        )
        input_path = self.workdir / f"products-{items}.singer"
        if not input_path.exists():
            write_products(input_path, items)
        # Klaviyo allows 500 catalog jobs in progress: beyond that, submissions wait for jobs
        # to end, one latency per 500 jobs.
        waves = math.ceil(jobs / 500)
        submit_s = tier_time(jobs, OPERATIONS["bulk_create_catalog_items"].tier)
        floor_s = max(submit_s, (waves - 1) * latency) + latency
        flags = (*EMULATOR_REAL_RATES, "--job-latency", f"{latency:g}")
        with self.emulator(*flags) as emulator:
            measured, summary = self.run_target(
                emulator,
                input_path,
                validate=None,
                label=f"catalog-{latency:g}",
                streams=catalog_streams(),
            )
            log = emulator.control("GET", "/requests")
        calls = Counter(entry["operation"] for entry in log)
        throttled = Counter(entry["operation"] for entry in log if entry["status"] == 429)
        polls = sum(n for name, n in calls.items() if "_catalog_items_job" in name)
        loaded = sum(s["loaded"] for s in summary["streams"].values())
        ratio = measured.wall_s / floor_s
        print(
            f"  {items:,} items, L = {latency:g} s: {jobs} create jobs, floor {submit_s:,.0f} s"
            f" to submit + {latency:g} s = {floor_s:,.0f} s; wall {measured.wall_s:,.1f} s,"
            f" CPU {measured.cpu_s:,.1f} s, peak RSS {measured.peak_rss_mb:,.0f} MB;"
            f" {loaded:,} loaded; lookups {calls['get_catalog_items']}; job polls {polls} ="
            f" {polls / jobs:.2f} a job; 429s: {sum(throttled.values())}"
            + (f" ({dict(throttled)})" if throttled else "")
        )
        self.figure(
            "catalog",
            f"wall time / floor, {items:,} catalog items, job latency {latency:g} s",
            f"{measured.wall_s:,.1f} s / {floor_s:,.0f} s",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )
        self.figure(
            "catalog",
            f"429s, {items:,} catalog items, job latency {latency:g} s",
            str(sum(throttled.values())),
            sum(throttled.values()),
            "0",
            not throttled,
        )

    # -- 8. two runs, one account's budget ------------------------------------------------

    def budget(self) -> None:
        args = self.args
        per_run = args.budget_events
        url = os.environ.get("BENCH_LEDGER_URL", "postgresql://postgres@127.0.0.1:5432/test")
        print(
            f"\n[budget] two runs at once on one account, {per_run:,} events each, the ledger "
            "in PostgreSQL (one rate budget), Klaviyo's real tier rates"
        )
        try:
            import psycopg

            psycopg.connect(url, connect_timeout=3).close()
        except Exception as exc:  # no PostgreSQL here: say so, measure nothing
            print(f"  skipped: the ledger's PostgreSQL is not reachable ({type(exc).__name__})")
            return
        schema = f"bench_{uuid.uuid4().hex[:8]}"
        names = ("web_orders", "store_orders")
        requests = 2 * math.ceil(per_run / EVENTS_PER_REQUEST)
        floor_s = tier_time(requests, OPERATIONS["bulk_create_events"].tier)
        results: dict[str, Measured] = {}
        errors: list[str] = []
        with self.emulator(*EMULATOR_REAL_RATES) as emulator:
            runs = []
            for name in names:  # inputs and configs first, so that the runs start together
                run_dir = self.run_dir(f"budget-{name}")
                input_path = write_events(run_dir / "input.singer", name, per_run)
                mapping = {**config_streams()[EVENTS_STREAM], "event_name": f"Placed ({name})"}
                config = {
                    "private_api_key": emulator.private_key,
                    "api_base_url": emulator.base_url,
                    "state_dir": str(run_dir / "state"),
                    "ledger_url": url,
                    "ledger_schema": schema,
                    "progress_interval_s": 0,
                    "streams": {name: mapping},
                }
                config_path = run_dir / "config.json"
                config_path.write_text(json.dumps(config))
                runs.append((name, config_path, input_path, run_dir))

            def one(name: str, config_path: Path, input_path: Path, run_dir: Path) -> None:
                measured = run_measured(
                    target_args(config_path), input_path, run_dir / "stderr.log", run_dir
                )
                if measured.exit_code != 0:
                    errors.append(
                        f"{name} exited {measured.exit_code}:\n{tail(measured.stderr_path)}"
                    )
                results[name] = measured

            threads = [threading.Thread(target=one, args=run) for run in runs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            log = emulator.control("GET", "/requests")
        drop_schema(url, schema)
        if errors:
            raise BenchmarkError("; ".join(errors))
        first = min(m.started_at for m in results.values())
        last = max(m.started_at + m.wall_s for m in results.values())
        wall = last - first
        throttled_by = Counter(entry["operation"] for entry in log if entry["status"] == 429)
        # The goal is about the loading: the start-up check's get_accounts (1/s) comes before a
        # run knows its account, so two runs started in the same second may meet one 429 there.
        throttled = throttled_by["bulk_create_events"]
        sent = sum(1 for entry in log if entry["operation"] == "bulk_create_events")
        print(
            f"  {sent} bulk_create_events requests together; floor {floor_s:,.0f} s; wall from"
            f" the first start to the last end {wall:,.1f} s; 429s: {dict(throttled_by) or 0}"
        )
        ratio = wall / floor_s
        self.figure(
            "budget",
            f"two runs' wall time / floor of their {requests} requests",
            f"{wall:,.1f} s / {floor_s:,.0f} s",
            ratio,
            "<= 1.2",
            ratio <= 1.2,
        )
        self.figure(
            "budget",
            "429s on bulk_create_events, two runs on one account",
            str(throttled),
            throttled,
            "0",
            not throttled,
        )


def drop_schema(url: str, schema: str) -> None:
    """The budget section's ledger schema is dropped after it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _spans(log: list[dict[str, Any]]) -> dict[str, tuple[int, float, float]]:
    """Per operation: calls, first start and last end, in seconds from the first request."""
    if not log:
        return {}
    origin = min(entry["started"] for entry in log)
    counts = Counter(entry["operation"] for entry in log)
    spans: dict[str, tuple[int, float, float]] = {}
    for entry in log:
        name = entry["operation"]
        _, first, last = spans.get(name, (0, float("inf"), 0.0))
        spans[name] = (
            counts[name],
            min(first, entry["started"] - origin),
            max(last, entry["ended"] - origin),
        )
    return spans


def _ledger_bytes(state_dir: Path) -> int:
    return sum(path.stat().st_size for path in state_dir.glob(LEDGER_GLOB))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f"{mem_kb / 1024 / 1024:.0f} GB RAM"
    except (OSError, ValueError, IndexError):
        memory = "RAM unknown"
    return (
        f"{platform.system()} {platform.release()}, {os.cpu_count()} x {cpu}, {memory}; "
        f"Python {platform.python_version()}, singer-sdk {metadata.version('singer-sdk')}"
    )


def byte_compile() -> None:
    """Byte-compile the measured code, as installing a wheel does: with
    PYTHONDONTWRITEBYTECODE set (some CI images set it), every run of an editable install
    would otherwise compile its sources again, and that start-up cost would be measured."""
    for package in ("target_klaviyo", "benchmarks"):
        compileall.compile_dir(REPO / package, quiet=1)


def revision() -> str:
    """The commit measured, and whether the working tree had changes."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "target_klaviyo"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return commit + (" with uncommitted changes in target_klaviyo/" if dirty else "")


def _instructions(workdir: Path, logs: str) -> int:
    """The instructions callgrind counted in a run's processes: the sum of the
    "Collected : N" lines of their logs."""
    total = found = 0
    for log in sorted(workdir.glob(f"{logs}.*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "Collected :" in line:
                total += int(line.split("Collected :")[1].strip())
                found += 1
    if not found:
        raise BenchmarkError(f"no instruction count in {workdir / logs}.*.log")
    return total


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.run",
        description="Benchmark target-klaviyo: rate-limit floor, per-record baseline, CPU "
        "against a no-op singer-sdk target, memory and the skip_unchanged ledger.",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"comma-separated sections to run (default: all of {','.join(SECTIONS)}; also "
        f"{','.join(OPT_IN_SECTIONS)}, only when named)",
    )
    sizes = parser.add_argument_group("cpu workload")
    sizes.add_argument("--profiles", type=int, default=100_000)
    sizes.add_argument("--events", type=int, default=50_000)
    sizes.add_argument("--members", type=int, default=20_000)
    sizes.add_argument(
        "--repeat", type=int, default=3, help="runs of each side, alternating (median; default 3)"
    )
    rate = parser.add_argument_group("rate-limited workload (real rates: minutes per run)")
    rate.add_argument("--rate-profiles", type=int, default=100_000)
    rate.add_argument("--rate-events", type=int, default=300_000)
    rate.add_argument("--rate-members", type=int, default=20_000)
    base = parser.add_argument_group("per-record baseline")
    base.add_argument("--baseline-sample", type=int, default=300)
    base.add_argument("--baseline-threads", type=int, default=16)
    mem = parser.add_argument_group("memory")
    mem.add_argument("--memory-small", type=int, default=100_000)
    mem.add_argument("--memory-large", type=int, default=1_000_000)
    mem.add_argument("--quick", action="store_true", help="memory at 20,000 and 200,000")
    mem.add_argument(
        "--wide-orders", type=int, default=200_000, help="orders of about 3 KB (section wide)"
    )
    jobs = parser.add_argument_group("profile import jobs at Klaviyo's latency")
    jobs.add_argument("--job-profiles", type=int, default=500_000)
    jobs.add_argument(
        "--job-latencies", default="20,60", help="seconds a job takes, comma-separated"
    )
    jobs.add_argument(
        "--job-memory-profiles",
        type=int,
        default=1_000_000,
        help="profiles of the memory run, at the longest latency",
    )
    catalog = parser.add_argument_group("catalog jobs at Klaviyo's latency")
    catalog.add_argument("--catalog-items", type=int, default=50_000)
    catalog.add_argument(
        "--catalog-latency", type=float, default=20.0, help="seconds a catalog job takes"
    )
    budget = parser.add_argument_group("two runs on one account")
    budget.add_argument("--budget-events", type=int, default=150_000, help="events per run")
    parser.add_argument("--workdir", type=Path, help="keep inputs and logs here")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(args.sections) - set(SECTIONS) - set(OPT_IN_SECTIONS))
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.workdir:
        workdir, keep = args.workdir.resolve(), True
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        workdir, keep = Path(tempfile.mkdtemp(prefix="target-klaviyo-bench-")), False
    print(f"target-klaviyo benchmarks, {dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}")
    print(f"machine: {machine()}")
    print(f"target-klaviyo: commit {revision()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    byte_compile()
    bench = Bench(args, workdir)
    started = time.perf_counter()
    try:
        for section in (*SECTIONS, *OPT_IN_SECTIONS):
            if section in args.sections:
                getattr(bench, section)()
    except BenchmarkError as exc:
        print(f"\nbenchmark failed: {exc}", file=sys.stderr)
        print(f"inputs and logs kept in {workdir}", file=sys.stderr)
        return 1
    print(
        f"\nSummary ({time.perf_counter() - started:,.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())})\n"
    )
    print("| section | figure | measured | ratio | goal | |")
    print("|---|---|---|---|---|---|")
    for fig in bench.figures:
        print(
            f"| {fig.section} | {fig.name} | {fig.measured} | {fig.ratio:,.2f} | {fig.goal} "
            f"| {fig.verdict} |"
        )
    if keep:
        print(f"\ninputs and logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
