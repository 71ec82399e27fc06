"""The run's beginning and end.

Before any input is read: the start-up check (key, scopes, public key, lists), progress lines,
jobs an interrupted run left in flight, then records on hold replayed first. At the end of
input: every stream's last request, then the waits. After an error: every record read gets an
outcome (sent, or on hold for the next run) and the summary is written. On the command line:
user errors end in one line and exit 1, never a traceback.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import signal
import sys
import time
import typing as t

from singer_sdk.exceptions import (
    InvalidRecord,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_klaviyo.klaviyo.client import ConfigError, KlaviyoAuthError, KlaviyoClient
from target_klaviyo.klaviyo.startup import StartupError, account_of, check_account
from target_klaviyo.ledger.locks import StreamLocked
from target_klaviyo.ledger.store import LedgerError
from target_klaviyo.records.jobs import KIND_OF_OPERATION
from target_klaviyo.run.context import Run
from target_klaviyo.run.progress import Progress
from target_klaviyo.run.stats import render_table, write_summary_file
from target_klaviyo.sdk import StopReading
from target_klaviyo.streams import MappingConfigError

if t.TYPE_CHECKING:
    from target_klaviyo.ledger.budget import SharedPacer
    from target_klaviyo.target import TargetKlaviyo


class UnmappedStreamError(ValueError):
    """A stream that no `streams` mapping covers."""


# What putting a record on hold takes at most, about twice what was measured (200,000
# records of an interrupted import: 4.9 s with SQLite, 5.3 s with PostgreSQL).
HOLD_S_PER_RECORD = 50e-6
# How long a stopping run waits, once its grace is over, for a job Klaviyo had just accepted
# to be followed (and so put on hold).
SETTLING_S = 2.0

# Errors in the user's input: reported in one line naming the input line.
INPUT_ERRORS = (
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidRecord,
    UnmappedStreamError,
)
# Errors in the user's input, settings or account: reported in one line, without a traceback.
USER_ERRORS = (
    *INPUT_ERRORS,
    KlaviyoAuthError,
    StartupError,
    ConfigError,
    MappingConfigError,
    LedgerError,  # the ledger's database refused, or another run holds a stream
)


class Lifecycle:
    def __init__(self, target: TargetKlaviyo) -> None:
        self.target = target
        self.run: Run = target.run
        self.logger = target.logger
        settings = self.run.settings
        self.progress = Progress(
            self.run.stats,
            settings.progress_interval_s,
            self.logger.info,
            lambda: self.run.client.rate_limit_wait_s,
            self.publish_reads,
        )
        self._started = False
        self._finished = False
        self._budget: SharedPacer | None = None  # the shared budget the client paces from

    def publish_reads(self) -> None:
        """Records read so far into the run's figures, also between chunks (a slow tap)."""
        for sink in list(self.run.sinks):
            sink.outcomes.publish(sink.dispatch.seq)

    # -- before any input -----------------------------------------------------------------

    def start(self) -> None:
        if self._started:
            return
        self._started = True
        run = self.run
        if not run.settings.dry_run:
            assert isinstance(run.client, KlaviyoClient)
            # The start-up checks pace from the key's budget (runs of one key started in the
            # same second would otherwise look up their account, 1 a second, together).
            self.pace_from(run.client, run.account)
            run.resolved_ids = check_account(run.client, run.settings)
            self.logger.info("Klaviyo start-up check passed")
            self.share_budget(run.client)
        else:
            for mapping in run.mappings.mappings:
                if mapping.list_id or mapping.list_name:
                    run.resolved_ids[mapping.pattern] = mapping.list_id or f"<{mapping.list_name}>"
        self.progress.start()
        if run.ledger is not None and not run.settings.dry_run:
            self.check_ledger_account()
            self.resolve_interrupted_jobs()
            self.replay_held()

    def share_budget(self, client: KlaviyoClient) -> None:
        """With the ledger in PostgreSQL, every run on the account paces from one budget kept
        there; the account is named by its id (`GET /api/accounts`) so that runs with
        different keys of one account share it."""
        run = self.run
        if not self._shares_budgets():
            return
        account_id = account_of(client)
        if account_id is None:
            self.logger.warning(
                "the key cannot read its account (scope accounts:read): runs with other keys "
                "of this account do not share its rate budget"
            )
        else:
            run.account = f"account-{account_id}"
            self.pace_from(client, run.account)
        self.logger.info("rate budget shared with every run on this account (ledger)")

    def pace_from(self, client: KlaviyoClient, account: str) -> None:
        """Pace from the budget the ledger keeps for `account` (a key's hash, or an account's
        id), where it keeps one."""
        if not self._shares_budgets():
            return
        assert self.run.ledger is not None
        budget = self.run.ledger.rate_budget(
            account, in_flight_timeout_s=2 * self.run.settings.request_timeout_s
        )
        if budget is not None:
            client.share_budget(budget)
            previous, self._budget = self._budget, budget
            if previous is not None:
                previous.close()  # the key's, once the account's is known: nothing in flight

    def _shares_budgets(self) -> bool:
        ledger = self.run.ledger
        return ledger is not None and ledger.kind == "postgresql" and not ledger.read_only

    def check_ledger_account(self) -> None:
        """A ledger serves one Klaviyo account at a time. A run of another account (two
        loaders of two accounts on one state_dir or ledger_schema) forgets the skip_unchanged
        hashes, and records on hold are kept under the id of the account that held them. A
        key stands for its account once the account's id is known: a rotated key is not
        another account."""
        run = self.run
        ledger = run.ledger
        assert ledger is not None
        account = self._account_of_key(run.account)
        before = ledger.swap_account(account)
        if before is not None and ledger.meta(f"account of {before}") != account:
            # Kept, the other account's skip_unchanged hashes would skip records this account
            # never received: forgotten, every record is sent once.
            ledger.forget_account_facts()
            self.logger.warning(
                "the ledger (%s) was last used with another Klaviyo account or key (%s, now %s):"
                " its skip_unchanged hashes and catalog ids are forgotten, so every record is"
                " sent again. Give each account its own state_dir or ledger_schema",
                ledger.location,
                before,
                account,
            )
        # Held where the account's id was not known (a key that may not read it, a run that
        # stopped before it knew, an earlier version), records on hold are any run's.
        ledger.hold_for(account if account.startswith("account-") else "")
        for other, count in ledger.held_elsewhere():
            self.logger.warning(
                "%d records on hold were held by a run with another Klaviyo account (%s, now"
                " %s): they wait for a run with it, not replayed into this one",
                count,
                other,
                account,
            )

    def _account_of_key(self, account: str) -> str:
        """`account` (the run's key's hash, where its account is not known yet) as its
        account's id once known. Asked of Klaviyo (`GET /api/accounts`, once a key and
        ledger) only where the ledger keeps something another account must not be given: a
        first run on a fresh state_dir asks nothing, unless it leaves records on hold."""
        run = self.run
        ledger = run.ledger
        assert ledger is not None
        if not account.startswith("key-"):
            return account
        known = ledger.meta(f"account of {account}")
        if known is None and ledger.kind == "sqlite" and ledger.keeps_anything():
            assert isinstance(run.client, KlaviyoClient)
            try:  # PostgreSQL runs asked as they started
                account_id = account_of(run.client, may_fail=False)
            except StartupError as exc:  # asked again next run; this one holds for no account
                self.logger.warning("%s", exc)
                return account
            # '': the key may not read its account (scope accounts:read); not asked again.
            known = f"account-{account_id}" if account_id is not None else ""
            ledger.set_meta(f"account of {account}", known)
        return known or account

    def resolve_interrupted_jobs(self) -> None:
        """Jobs an interrupted run left in flight: look them up, then forget them.

        Their records are sent again anyway: STATE was not passed on past them, so the tap
        resends them, and upserts and unique_ids make the resend safe. Looking them up tells
        the user what happened to the interrupted job. The jobs of a stream another live run
        holds are that run's own, still followed by it: they are left alone.
        """
        ledger = self.run.ledger
        assert ledger is not None
        held_elsewhere: dict[str, bool] = {}
        for job in ledger.jobs_in_flight():
            if job.stream not in held_elsewhere:
                held_elsewhere[job.stream] = self._held_by_another_run(job.stream)
            if held_elsewhere[job.stream]:
                continue
            kind = KIND_OF_OPERATION.get(job.operation)
            if kind is None:  # recorded by a newer version
                outcome = "this version cannot ask Klaviyo about it"
            else:
                result = self.run.client.request(kind.get_operation, path_params={"id": job.id})
                if result.ok:
                    status = result.body["data"]["attributes"].get("status")
                    outcome = f"Klaviyo reports it {status}"
                else:
                    outcome = f"Klaviyo no longer knows it ({result.describe()})"
            self.logger.info(
                "%s job %s of stream %r (%d records) was in flight when an earlier run"
                " stopped; %s. Its records are sent again with this run's input.",
                kind.name if kind else job.operation,
                job.id,
                job.stream,
                job.records,
                outcome,
            )
            ledger.job_finished(job.id)

    def _held_by_another_run(self, stream: str) -> bool:
        """Whether a live run holds the stream now (asked once, without waiting; a lock a
        dead run left is taken over, then given back)."""
        run = self.run
        assert run.ledger is not None
        try:
            run.ledger.lock_stream(run.account, stream, 0).release()
        except StreamLocked:
            return True
        return False

    def replay_held(self) -> None:
        """Records on hold go out first, through the same sinks, with the current mapping
        (but for a stream another live run is loading: they are that run's to replay)."""
        ledger = self.run.ledger
        assert ledger is not None
        target = self.target
        for stream in ledger.held_streams():
            if self.run.mappings.resolve(stream) is None:
                self.logger.warning(
                    "%d records of stream %r stay on hold: the stream has no mapping now",
                    ledger.held_count(stream),
                    stream,
                )
                continue
            if self._held_by_another_run(stream):
                # That run replays them (it did so as it started) or puts them back on hold.
                self.logger.info(
                    "%d records of stream %r on hold are left to the run loading that stream",
                    ledger.held_count(stream),
                    stream,
                )
                continue
            stored = ledger.stream_schema(stream)
            if stored is None:
                continue
            schema, key_properties = stored
            sink = target.get_sink(stream, schema=schema, key_properties=key_properties)
            self.logger.info(
                "replaying %d records of %r held by earlier runs", ledger.held_count(stream), stream
            )
            # Read a page at a time (bounded memory). A record that goes back on hold keeps its
            # row, so the pages never meet it again in this pass.
            for record in ledger.held_records(stream):
                sink.tally_record_read()
                sink.replay(record)
                if sink.is_full:
                    target.drain_one(sink)
            target.drain_one(sink)

    # -- the end of input -----------------------------------------------------------------

    def send_last_requests(self) -> None:
        """Every stream's last request goes out before any stream waits for room: a stream
        whose jobs are still running must not hold back another stream's last request."""
        for sink in sorted(self.run.sinks, key=lambda sink: sink.dispatch.must_wait()):
            sink.flush()

    def after_input(self) -> None:
        self.run.raise_if_failed()
        self.run.gate.check()
        self.finish(claim_held=True)

    def claim_held(self) -> None:
        """Records this run put on hold before its account's id was known (a first run on a
        new ledger) are kept under it once known: no run of another account on the same
        ledger replays them. Asked only where records wait on hold."""
        run = self.run
        ledger = run.ledger
        if ledger is None or run.settings.dry_run or ledger.account or not ledger.held_count():
            return
        account = self._account_of_key(run.account)
        if account.startswith("account-"):
            ledger.hold_for(account)

    def finish(self, *, claim_held: bool = False) -> dict[str, t.Any] | None:
        """Stop workers, print the summary and write last_run.json (once); the summary.
        `claim_held`: at the end of input (not after an error or a signal)."""
        if self._finished:
            return None
        self._finished = True
        run = self.run
        self.progress.stop()
        run.wait_for_requests()
        if claim_held:
            self.claim_held()
        for sink in run.sinks:
            sink.outcomes.publish(sink.dispatch.seq)
        summary = run.stats.to_dict(run.client.calls, run.client.rate_limit_wait_s)
        if run.ledger is not None and not run.settings.dry_run:
            summary["on_hold_total"] = run.ledger.held_count()
            write_summary_file(run.settings.state_dir, summary)
        if run.settings.dry_run:
            summary["dry_run_plan"] = str(run.settings.state_dir / "dry_run.jsonl")
        self.logger.info("%s", render_table(summary))
        run.close()
        return summary

    def shutdown_after_error(self, error: BaseException, *, send_what_was_read: bool) -> None:
        """Give every record read an outcome, then summarise.

        After bad input, the records before the bad line are good: they are sent (and STATE
        passed on for them). After any other error, records not yet sent go on hold and are
        replayed by the next run. Requests in flight are waited for either way.
        """
        try:
            if send_what_was_read and self._started and not self.run.failed:
                self.target.drain_all(is_endofpipe=True)
                self.run.gate.check()
        except Exception as exc:  # the original error matters more
            self.logger.debug("while sending what was read: %s", exc)
        try:
            reason = f"not sent: the run stopped ({one_line(error)})"
            for sink in self.run.sinks:
                sink.hold_unsent(reason)
            self.finish()
        except Exception as exc:  # the original error matters more
            self.logger.debug("while shutting down: %s", exc)

    # -- the command line -----------------------------------------------------------------

    def listen(self, file_input: t.IO[str] | None) -> None:
        """Read the input to its end; a user error ends the run in one line and exit 1, a
        signal in `stop`."""
        _tune_garbage_collector()
        _tune_malloc()
        target = self.target
        try:
            target.listen(file_input)
        except StopReading as stop:
            self.stop(stop.signum)
        except USER_ERRORS as exc:
            on_input = isinstance(exc, INPUT_ERRORS)
            where = f"input line {target.reader.line_number}: " if on_input else ""
            self.logger.error("%s%s", where, one_line(exc))
            self.shutdown_after_error(exc, send_what_was_read=on_input)
            sys.exit(1)
        except BaseException as exc:
            self.shutdown_after_error(exc, send_what_was_read=False)
            raise

    # -- stopped by a signal ----------------------------------------------------------------

    def on_signal(self, signum: int) -> None:
        """SIGTERM / SIGINT (in the main thread): read no more; a second signal stops at once."""
        name = signal.Signals(signum).name
        if self.run.stopping is not None:
            # The ledger is consistent at any instant (one transaction per change); what was
            # read and not settled was not passed on in STATE, so the tap sends it again.
            self.logger.error("second %s: stopping at once", name)
            logging.shutdown()
            os._exit(128 + signum)
        self.run.stopping = signum
        self.target.reader.stop_requested = signum
        stop_sending = getattr(self.run.client, "stop_sending", None)
        if stop_sending is not None:
            stop_sending()
        if self.target.reader.reading:
            raise StopReading(signum)  # the tap is silent: leave the read now

    def stop(self, signum: int) -> t.NoReturn:
        """Stopped by a signal: what was sent gets `stop_grace_s` to finish, every record read
        and not settled goes on hold, the summary is written, accounted STATE passed on."""
        name = signal.Signals(signum).name
        grace = self.run.settings.stop_grace_s
        run = self.run
        self.logger.warning(
            "%s received: no more input is read; requests already sent have %d s to finish",
            name,
            grace,
        )
        # The grace counts from the signal, and the records still out are put on hold within
        # it too (an orchestrator kills the run when its own grace period is over): waiting
        # for them ends early by what that takes.
        deadline = time.monotonic() + grace
        for sink in run.sinks:
            sink.hold_unsent(f"not sent: the run was stopped by {name}")
        while not all(s.dispatch.idle() for s in run.sinks):
            out = run.stats.in_jobs()
            holding_s = HOLD_S_PER_RECORD * out
            left = deadline - time.monotonic()
            if holding_s >= left:
                if holding_s > 0:
                    self.logger.warning(
                        "%d records are still out: waiting for them ends %.1f s before"
                        " stop_grace_s is over, to put them on hold within it",
                        out,
                        max(0.0, left),
                    )
                break
            time.sleep(0.05)
        late = f"not settled within stop_grace_s ({grace} s) after {name}"
        run.abandon_jobs(late)
        for sink in run.sinks:
            sink.dispatch.abandon(late)
        # A request Klaviyo had just accepted as a job when the grace ended is between the
        # two: its job ends (on hold) as soon as it is followed, within milliseconds.
        settling = time.monotonic() + SETTLING_S
        while time.monotonic() < settling and not all(s.dispatch.all_ended() for s in run.sinks):
            time.sleep(0.01)
        run.gate.check()
        summary = self.finish()
        waiting = summary.get("on_hold_total", 0) if summary else 0
        self.logger.error("stopped by %s: %d records wait on hold for the next run", name, waiting)
        logging.shutdown()
        sys.stdout.flush()
        # Request threads still blocked on Klaviyo would hold the interpreter's exit; every
        # record they carry is on hold already.
        os._exit(128 + signum)

    def test_connection(self) -> t.NoReturn:
        """`--test-connection`: the start-up check alone, then exit 0 or 1."""
        run = self.run
        try:
            if run.settings.dry_run:
                self.logger.info("dry_run is set: nothing to check without the network")
            else:
                assert isinstance(run.client, KlaviyoClient)
                check_account(run.client, run.settings)
                self.logger.info("Connection OK: key, scopes, public key and lists checked")
        except (KlaviyoAuthError, StartupError) as exc:
            self.logger.error("Connection check failed: %s", one_line(exc))
            sys.exit(1)
        finally:
            run.close()
        sys.exit(0)


def _tune_garbage_collector() -> None:
    """A run keeps tens of thousands of records in flight, none of them in a reference cycle;
    with the default thresholds the cyclic collector walks them all again and again (about a
    tenth of the run's CPU). What exists at start-up is frozen out of its sight, and it runs
    less often; cycles are still collected."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


M_ARENA_MAX = -8  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
MALLOC_ARENAS = 2
MMAP_THRESHOLD = 1 << 20


def _tune_malloc() -> None:
    """glibc's malloc keeps high-water marks that a long run of large, short-lived buffers
    drives up. Threads that allocate at once get their own arenas (up to eight per core), each
    with its own mark: two are enough for a run's request threads. And a freed block of
    several MB raises the size from which blocks are mapped on their own, so later request
    bodies (up to 5 MB, built and dropped per job) land in an arena and leave it fragmented:
    a fixed 1 MB threshold gives them back when they are dropped. At 1,000,000 profiles the
    arenas measured about 50 MB less, the threshold about 20 MB more (benchmarks/README.md).
    MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ set by the user win; other C libraries are left
    alone."""
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    except (OSError, AttributeError):
        return
    if not os.environ.get("MALLOC_ARENA_MAX"):
        mallopt(M_ARENA_MAX, MALLOC_ARENAS)
    if not os.environ.get("MALLOC_MMAP_THRESHOLD_"):
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."
