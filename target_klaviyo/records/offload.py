"""Offload: a large stream's records checked and mapped in a second process.

Reading, checking and mapping a record costs the reading thread about 15 µs of Python, and it
holds the interpreter while it does: on a large customers table that, not Klaviyo, decides how
soon the last import job goes out. Once a stream has read `OFFLOAD_AFTER` records here, its
lines go in batches to a mapping process of its own (`python -m target_klaviyo.records.offload`),
which checks and maps them exactly as this process would (the same intake and the same record
mapper, built from the sink's recipe). This process then routes lines and adds the mapped
records to their chunks, in input order, while it sends them; when the mapping process already
has batches before it, this process maps the next batch itself rather than wait, and while the
run's writes wait for their rate-limit window it reads its batches itself (handing them over
costs CPU, and reading faster would gain nothing then).

A line the mapping process does not map cleanly — a validation failure, a rejection, a date
that does not parse, any error — comes back unmapped and takes this process's own path, so
every outcome, warning and error message is the one a run without offload gives. If the mapping
process stops, the lines it holds are mapped here, and the stream stays here. Nothing waits in
the pipeline across a flush, an ACTIVATE_VERSION or the end of the stream (`drain`); a STATE
counts the lines on their way as read (`Dispatcher.reading_ahead`), and a run that stops leaves
them unread, as it leaves input it has not read.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import msgspec

# A stream's records stay in this process until it has read this many (a small stream is
# done before a second process would have started).
OFFLOAD_AFTER = 10_000
OFFLOAD_POLL = 2_000  # records read between two looks at whether it has started
BATCH_LINES = 1_000  # lines per batch sent to the mapping process
# ... or fewer, when they hold this many characters: rows of about 3 KB (orders with their
# line items) would otherwise keep 24 MB of lines, and as much again mapped, on their way.
BATCH_CHARS = 1_000_000
BATCHES_IN_FLIGHT = 8  # batches sent and not yet taken back (bounds the lines held here)
# Batches the mapping process has before it when this process maps the next batch itself
# rather than wait for it: one being mapped, one or two more to go on with.
QUEUED_THERE = 3
_FRAME = 4  # bytes of a frame's length
PIPE_BYTES = 4 << 20  # a pipe's buffer, where the system allows it
# A batch takes milliseconds: a mapping process silent this long is taken as stopped.
STALL_S = 120.0

# A batch's results: per line, (key, identifiers or None, payload, size, warnings, encoded),
# or None to map it here.
Result = tuple[str, dict[str, Any] | None, Any, int, list[str], Any] | None


@dataclass(frozen=True)
class Recipe:
    """What the mapping process builds a stream's intake and mapper from (pickled)."""

    stream: str
    schema: dict[str, Any]
    key_properties: tuple[str, ...]
    validate: bool
    # A picklable callable record -> Mapped (`records.item.Mapped`), raising Rejection.
    map_record: Callable[[dict[str, Any]], Any]
    keeps_identifiers: bool  # the sink's items keep their identifiers: they come back too


def spare_cpus() -> int:
    """How many mapping processes can run beside this one to any gain: one for each CPU ours
    to use but the first (taskset's and a container's CPU limit count). More would only take
    turns on the same CPUs, each at the cost of its start-up."""
    if os.name != "posix":
        return 0
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS
        cpus = os.cpu_count() or 1
    quota = _cgroup_cpus()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(0, int(cpus) - 1)


def _cgroup_cpus(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPUs a container's limit allows (cgroup v2 `cpu.max`, or v1's CFS quota), or
    None where there is no limit or none can be read (Kubernetes' `limits.cpu` sets it)."""
    try:
        text = (root / "cpu.max").read_text().split()
        quota, period = text[0], text[1]
    except (OSError, IndexError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    try:
        if quota in ("max", "-1") or int(period) <= 0:
            return None
        return int(quota) / int(period)
    except ValueError:
        return None


def _widen(pipe: IO[bytes]) -> None:
    """A pipe that holds a whole batch: the mapping process writes its results in one go,
    and this process's thread that reads them waits for the interpreter once a batch, not
    once every 64 KB (Linux; elsewhere the pipe stays as it is)."""
    try:
        import fcntl

        size = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, min(size, PIPE_BYTES))
    except (ImportError, AttributeError, OSError, ValueError):
        pass


def _write_frame(out: IO[bytes], payload: bytes) -> None:
    out.write(len(payload).to_bytes(_FRAME, "little"))
    out.write(payload)
    out.flush()


def _read_frame(source: IO[bytes]) -> bytes | None:
    head = source.read(_FRAME)
    if len(head) < _FRAME:
        return None
    size = int.from_bytes(head, "little")
    payload = source.read(size)
    return payload if len(payload) == size else None


class Offload:
    """One stream's mapping process and the lines on their way through it (reading thread).

    `start` launches the process; `ready` says when it has built the stream's mapper (the
    stream maps here until then). `add` queues a line; `drain` hands every line sent back to
    `take`, in input order, mapped or not.
    """

    def __init__(
        self,
        recipe: Recipe,
        take: Callable[[str, int, Result], None],
        logger: logging.Logger,
        sending_waits: Callable[[], bool],
    ) -> None:
        self._recipe = recipe
        self._take = take  # (line, line number, result): result None maps the line here
        self._sending_waits = sending_waits  # the run's writes wait for Klaviyo's rate limits
        self._logger = logger
        self._proc: subprocess.Popen[bytes] | None = None
        self._frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._lines: list[str] = []
        self._chars = 0  # in `_lines`
        self._numbers: list[int] = []
        # (lines, their numbers, how they come back): True, from the mapping process; their
        # results (encoded), mapped here; False, each line read here when taken.
        self._in_flight: deque[tuple[list[str], list[int], bool | bytes]] = deque()
        self._sent = 0  # batches sent to the mapping process and not yet taken back
        self._map_here: BatchMapper | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._decode = msgspec.msgpack.Decoder().decode
        self._taking = False  # batches are being taken back (a take may flush: no nesting)
        self._pending = 0  # lines added and not yet taken
        self.ready = False
        self.failed = False
        self.closed = False

    # -- the mapping process --------------------------------------------------------------

    def start(self) -> None:
        """Launch the mapping process; it reports when the stream's mapper is built."""
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "target_klaviyo.records.offload"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                bufsize=1 << 20,
            )
            assert self._proc.stdin is not None and self._proc.stdout is not None
            for pipe in (self._proc.stdin, self._proc.stdout):
                _widen(pipe)
            _write_frame(self._proc.stdin, pickle.dumps(self._recipe))
        except (OSError, ValueError, TypeError, AttributeError, pickle.PicklingError) as exc:
            self._stopped(f"could not start ({exc})")
            return
        threading.Thread(target=self._read_results, name="offload-results", daemon=True).start()

    def _read_results(self) -> None:
        """Frames from the mapping process, as they come (so that it never waits to write)."""
        assert self._proc is not None and self._proc.stdout is not None
        source = self._proc.stdout
        while True:
            frame = _read_frame(source)
            self._frames.put(frame)
            if frame is None:
                return

    def poll_ready(self) -> bool:
        """Whether the mapping process has built the mapper (without waiting for it)."""
        if not self.ready and not self.failed and not self._frames.empty():
            frame = self._frames.get()
            if frame == b"ready":
                self.ready = True
            else:
                self._stopped("did not start")
        return self.ready

    def close(self) -> None:
        """End the mapping process (after `drain`)."""
        self.closed = True
        if not self.ready:  # still starting: nothing of it to wait for
            self._end()
            return
        proc, self._proc = self._proc, None
        self.ready = False
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # it ends at the end of its input
            proc.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            proc.kill()
            proc.wait()

    def _stopped(self, why: str) -> None:
        if not self.failed:
            self._logger.warning(
                "the mapping process %s; its lines are mapped in this process", why
            )
        self.failed = True
        self._end()

    def _end(self) -> None:
        self.ready = False
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.kill()
            proc.wait()

    # -- lines on their way ---------------------------------------------------------------

    def add(self, line: str, number: int) -> None:
        """A line of the stream, read (it comes back through `take`, in order)."""
        self._lines.append(line)
        self._numbers.append(number)
        self._pending += 1
        self._chars += len(line)
        if (len(self._lines) >= BATCH_LINES or self._chars >= BATCH_CHARS) and not self._taking:
            self._take_back(everything=False)

    def drain(self) -> None:
        """Every line added comes back through `take` before this returns."""
        if not self._taking:  # else a line taken flushed its chunk: that taking goes on, in order
            self._take_back(everything=True)

    def _take_back(self, *, everything: bool) -> None:
        """Send the lines added, then take back every batch (`everything`), or those already
        answered and, with BATCHES_IN_FLIGHT out, the oldest."""
        self._taking = True
        try:
            if self._lines:
                self._send()
            in_flight = self._in_flight
            if everything:
                while in_flight:
                    self._take_batch()
                return
            if len(in_flight) >= BATCHES_IN_FLIGHT:
                self._take_batch()
            # A batch the mapping process does not hold goes on at once; one it holds, once
            # it has answered.
            while in_flight and (in_flight[0][2] is not True or not self._frames.empty()):
                self._take_batch()
        except BaseException:
            self.discard()
            raise
        finally:
            self._taking = False

    def discard(self) -> None:
        """Lines added and not yet taken stay unread, as far as the run goes: the line being
        taken raised (bad input, a failed run), or the run stops. No STATE passed them, so the
        tap sends them again. What the mapping process still holds would come back out of
        step: it ends."""
        self._in_flight.clear()
        self._sent = 0
        self._lines, self._numbers, self._chars = [], [], 0
        self._pending = 0
        self.failed = True
        self._end()

    def pending(self) -> int:
        """Lines added and not yet taken (read, as STATE counts, though not yet numbered:
        `take` numbers them in order; a STATE never arrives while a batch is being taken)."""
        return self._pending

    def _send(self) -> None:
        """Send the lines added to the mapping process, or map them here while it has
        QUEUED_THERE batches before it: this process would only wait for it. While the run's
        writes wait for Klaviyo's rate limits, reading faster gains nothing and handing lines
        over costs CPU of its own: they are read here, as before the process was ready."""
        lines, numbers = self._lines, self._numbers
        self._lines, self._numbers, self._chars = [], [], 0
        proc = self._proc
        if proc is None or not self.ready or self._sending_waits():
            self._in_flight.append((lines, numbers, False))
            return
        if self._sent - self._frames.qsize() >= QUEUED_THERE:
            if self._map_here is None:
                self._map_here = BatchMapper(self._recipe)
            # Kept encoded, as the mapping process's answers are: a batch of mapped records
            # as objects takes several times the memory, for as long as it waits its turn.
            self._in_flight.append((lines, numbers, self._encode(self._map_here(lines))))
            return
        try:
            assert proc.stdin is not None
            _write_frame(proc.stdin, self._encode(lines))
        except (OSError, ValueError):
            self._stopped("stopped taking lines")
            self._in_flight.append((lines, numbers, False))
            return
        self._sent += 1
        self._in_flight.append((lines, numbers, True))

    def _take_batch(self) -> None:
        lines, numbers, how = self._in_flight[0]
        results: list[Result] | None = self._decode(how) if isinstance(how, bytes) else None
        if how is True:
            self._sent -= 1
        if how is True and self._proc is not None:
            try:
                frame = self._frames.get(timeout=STALL_S)
            except queue.Empty:
                frame = b""
            if frame == b"":
                self._stopped(f"answered nothing for {STALL_S:.0f} s")
            elif frame is None:
                self._stopped(f"ended (exit code {self._proc.wait()})")
            else:
                try:
                    results = self._decode(frame)
                except msgspec.DecodeError:
                    self._stopped("answered with a broken frame")
        self._in_flight.popleft()
        self._pending -= len(lines)
        take = self._take
        if results is None or len(results) != len(lines):
            if results is not None:
                self._stopped("answered out of step")
            for line, number in zip(lines, numbers, strict=True):
                take(line, number, None)
            return
        for line, number, result in zip(lines, numbers, results, strict=True):
            take(line, number, result)


class IdleDrain:
    """While the tap is silent, the lines on their way through mapping processes come back
    and the chunks they fill go out, as the lines of a stream mapped here would: a watcher
    thread that sees the reader blocked on its input, with lines pending, for QUIET_S
    interrupts that read with a signal, and the handler drains (in the reading thread; Python
    retries the read after a handler that returns, so no input is lost). Without it, a full
    import job's records could wait for the tap's next line."""

    QUIET_S = 0.2
    SIGNAL = getattr(signal, "SIGUSR1", None)

    def __init__(
        self,
        reading: Callable[[], tuple[bool, int]],
        pending: Callable[[], int],
        drain: Callable[[], None],
    ) -> None:
        self._reading = reading  # (blocked on the input, lines read)
        self._pending = pending  # lines on their way
        self._drain = drain
        self._stopped = threading.Event()
        self._draining = False
        self._main = threading.main_thread().ident

    def start(self) -> None:
        """From the reading (main) thread: where signals can reach it (POSIX)."""
        if self.SIGNAL is None or not hasattr(signal, "pthread_kill"):
            return
        if threading.current_thread() is not threading.main_thread():
            return
        signal.signal(self.SIGNAL, self._on_signal)
        threading.Thread(target=self._watch, name="offload-idle", daemon=True).start()

    def stop(self) -> None:
        self._stopped.set()

    def _watch(self) -> None:
        last: int | None = None
        while not self._stopped.wait(self.QUIET_S):
            reading, lines = self._reading()
            if reading and lines == last and self._pending():
                assert self.SIGNAL is not None and self._main is not None
                try:
                    signal.pthread_kill(self._main, self.SIGNAL)
                except OSError:  # the reading thread has ended
                    return
            last = lines if reading else None

    def _on_signal(self, signum: int, frame: Any) -> None:
        reading, _ = self._reading()
        if reading and not self._draining and not self._stopped.is_set():
            self._draining = True
            try:
                self._drain()
            finally:
                self._draining = False


# -- the mapping process ------------------------------------------------------------------


class LineWarnsError(Exception):
    """The line has something to say (a warning): it is mapped in the reading process."""


class BatchMapper:
    """A recipe's intake and record mapper, mapping a batch of lines to their results: the
    mapping process's work, and the reading process's when it would otherwise wait for it."""

    def __init__(self, recipe: Recipe) -> None:
        from target_klaviyo.records.intake import Intake
        from target_klaviyo.records.validation import RecordCheck
        from target_klaviyo.sdk_records import decode_message

        class QuietIntake(Intake):
            def _warn(self, column: str, kind: str) -> None:
                raise LineWarnsError

        intake = QuietIntake(
            recipe.schema,
            recipe.key_properties,
            RecordCheck(recipe.schema) if recipe.validate else None,
            logging.getLogger("target-klaviyo.offload"),
        )
        self._check = intake.check
        self._decode = decode_message
        self._stream = recipe.stream
        self._keeps_identifiers = recipe.keeps_identifiers
        self._map_record = recipe.map_record

    def __call__(self, lines: list[str]) -> list[Result]:
        check, decode, stream = self._check, self._decode, self._stream
        keeps_identifiers, map_record = self._keeps_identifiers, self._map_record
        results: list[Result] = []
        append = results.append
        for line in lines:
            try:
                message = decode(line)
                record = message["record"]
                if (
                    type(record) is not dict
                    or message["type"] != "RECORD"
                    or message["stream"] != stream
                    or check(record) is not None
                ):
                    append(None)
                    continue
                key, identifiers, payload, size, warnings, encoded = map_record(record)
                append(
                    (
                        key,
                        identifiers if keeps_identifiers else None,
                        payload,
                        size,
                        list(warnings),
                        encoded,
                    )
                )
            except Exception:  # the reading process maps it, and says what is wrong
                append(None)
        return results


def serve(source: IO[bytes], out: IO[bytes]) -> None:
    """Build the recipe's intake and mapper, then map batches of lines until input ends."""
    frame = _read_frame(source)
    if frame is None:
        return
    map_batch = BatchMapper(pickle.loads(frame))
    encode = msgspec.msgpack.Encoder().encode
    decode_lines = msgspec.msgpack.Decoder(list[str]).decode
    # As in the reading process (`run/lifecycle.py`): records come and go, none in a cycle.
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)
    _write_frame(out, b"ready")
    while (frame := _read_frame(source)) is not None:
        _write_frame(out, encode(map_batch(decode_lines(frame))))


def main() -> None:
    # Signals are the reading process's to handle: this one ends when its input does.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Results go out on what was stdout; anything else written there would break their
    # frames, so stdout becomes stderr.
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    serve(sys.stdin.buffer, results)


if __name__ == "__main__":
    main()
