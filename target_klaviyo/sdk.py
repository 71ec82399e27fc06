"""Every place target-klaviyo copies or replaces singer-sdk behaviour: here, and what a record
goes through in `sdk_records.py` (kept free of singer-sdk's import, for the mapping process).

singer-sdk 0.54 reads each record through `Target._process_record_message`
(`singer_sdk/target_base.py`): a stream-map transform, a copy, metadata columns, jsonschema
validation, timestamp parsing, a key-property check, metrics — about 35 µs a record before the
target sees it. Records of streams without stream maps skip that path here and are checked by
the copies below instead (`records/intake.py` applies them); streams with stream maps or
`add_record_metadata` keep singer-sdk's path. Each seam names the singer-sdk source it mirrors
(file and function, in 0.54.9) and why it exists. A CI job runs the suite against the newest
singer-sdk pre-release, so drift shows before it bites.

- `MessageReader` replaces `GenericSingerReader.process_lines` (`singerlib/encoding/base.py`):
  line numbers for error messages, RECORDs straight to their sink with their line (or,
  for a stream mapped in a second process, undecoded to `on_line`), STATE held back until
  accounted for, reading stopped by a signal.
- `takes_records_directly` states when `Target._process_record_message` would leave a record
  unchanged: those streams may skip it.
- In `sdk_records.py`: `METADATA_COLUMNS` / `drop_metadata` copy
  `Sink._remove_sdc_metadata_from_record` (`sinks/core.py`); `missing_key_properties` copies
  the error of `Sink._singer_validate_message`, raised once per set of columns instead of
  checked per record; `datelike_columns` / `parse_dates` copy
  `Sink._parse_timestamps_in_record`, decided once per schema instead of per field and record.
- `RecordValidator` is what `Sink.get_validator` gives singer-sdk's per-record path: the
  target's own check (`records/validation.py`), its failure kept for the sink, not raised.
- `count_records` does `_process_record_message`'s `record_counter_metric.increment()` for
  records of the direct path.
- `MAX_CHUNK_AGE_S` mirrors `Target._MAX_RECORD_AGE_IN_MINUTES`: a slow tap's records go out
  within the same bound.
- `config_errors`: singer-sdk's config check (`PluginBase._validate_config`) stops the
  run at the first config that breaks the JSON schema; the target adds what only it can check
  (every stream mapping, regions, URLs), so that every problem shows in one go.
- `invoke` replaces `Target.invoke`: the run's lifecycle around `listen()` (one-line errors,
  `--test-connection`).
- `install_signal_handlers` replaces `PluginBase._setup_signal_handlers` /
  `Target._handle_termination`, which drain every sink inside the handler and exit 0; a
  signal that reaches another thread wakes the main one (`_relay_to_main_thread`).
- `KlaviyoSink.clean_up` calls `super().clean_up()`: in 0.54 `Sink.clean_up` ends the
  record-count metric.

Three of these change in singer-sdk 0.55 (pre-releases): the record-count metric moves to
`Sink.tally_record_written`, `Sink._clean_up` (final) ends the metric before `clean_up`, and
termination gains `_is_terminating` and `_terminate`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import typing as t
from collections import Counter, defaultdict
from collections.abc import Callable

import msgspec
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.encoding.base import GenericSingerReader, SingerMessageType
from singer_sdk.singerlib.exceptions import InvalidInputLine
from singer_sdk.sinks.core import BaseJSONSchemaValidator

from target_klaviyo.records.validation import RecordCheck
from target_klaviyo.sdk_records import decode_message

if t.TYPE_CHECKING:
    from singer_sdk import Target
    from singer_sdk.mapper import PluginMapper
    from singer_sdk.sinks import Sink

# A record waits at most this long in a partly filled request (singer-sdk: 5 minutes).
MAX_CHUNK_AGE_S = 300.0

# -- reading ------------------------------------------------------------------------------


class Envelope(msgspec.Struct):
    """What routes a line: its type and stream (the rest is parsed, not built)."""

    type: str
    stream: str | None = None


_envelope = msgspec.json.Decoder(Envelope).decode


def record_line_prefixes(stream: str) -> tuple[str, ...]:
    """How taps begin a RECORD line of `stream` (compact, and Python's json.dumps), up to
    the stream's name: a line that begins so is that stream's RECORD, or malformed."""
    name = json.dumps(stream)
    return ('{"type":"RECORD","stream":' + name + ",", '{"type": "RECORD", "stream": ' + name + ",")


class ReaderHooks(t.Protocol):
    # Streams whose RECORD lines go to `on_line` undecoded (mapped in a second process).
    offloaded: dict[str, t.Any]

    def on_line(self, sink: t.Any, line: str, number: int) -> None: ...

    def before_input(self) -> None: ...

    def on_state(self, message: dict) -> None: ...

    def on_activate_version(self, message: dict) -> None: ...

    def record_callback(
        self, through_sdk: t.Callable[[dict], None]
    ) -> t.Callable[[dict, str], None]: ...


class StopReading(BaseException):
    """A signal asked the run to stop: no further line is read."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class MessageReader(GenericSingerReader[str]):
    """singer-sdk's reader loop, counting lines for clear error messages.

    RECORD, STATE and ACTIVATE_VERSION go to the target's hooks: records of most streams go
    straight to their sink (with the line they were read from), STATE is passed on only when
    the records before it are accounted for, and ACTIVATE_VERSION ends a mirror pass.
    """

    def __init__(self, hooks: ReaderHooks | None = None) -> None:
        super().__init__()
        self.hooks = hooks
        self.line_number = 0
        self.stop_requested: int | None = None  # a signal's number: read no further line
        self.reading = False  # blocked on the input: a signal may interrupt the read

    @property
    def default_input(self) -> t.IO[str]:
        return sys.stdin

    def deserialize_json(self, line: str) -> dict:
        try:
            message = decode_message(line)
        except msgspec.DecodeError as exc:
            raise InvalidInputLine(f"not valid JSON ({exc})") from None
        if not isinstance(message, dict):
            raise InvalidInputLine("not a JSON object")
        return message

    def process_lines(
        self,
        file_input: t.IO[str] | None,
        callbacks: dict[str, t.Callable[[dict], None]],
    ) -> t.Counter[str]:
        on_record: t.Callable[[dict, str], None] | None = None
        offloaded: dict[t.Any, t.Any] = {}
        on_line: t.Callable[[t.Any, str, int], None] | None = None
        if self.hooks is not None:
            offloaded = self.hooks.offloaded
            on_line = self.hooks.on_line
            self.hooks.before_input()
            on_record = self.hooks.record_callback(callbacks[SingerMessageType.RECORD])
            callbacks = {
                **callbacks,
                SingerMessageType.STATE: self.hooks.on_state,
                SingerMessageType.ACTIVATE_VERSION: self.hooks.on_activate_version,
            }
        stats: dict[str, int] = defaultdict(int)
        decode = decode_message
        readline = (file_input or self.default_input).readline
        while True:
            # A signal that arrives while the tap is silent interrupts the read (on_signal,
            # offload.IdleDrain): `reading` says so, and only while the read lasts. Set before
            # the look at `stop_requested`: a signal in between raises, not waits for a line.
            self.reading = True
            try:
                if self.stop_requested is not None:
                    raise StopReading(self.stop_requested)
                line = readline()
            finally:
                self.reading = False
            if not line:
                break
            self.line_number += 1
            if offloaded and on_line is not None:
                # A line of a stream mapped in a second process goes there undecoded: known
                # by how taps begin a RECORD line, else by its type and stream alone.
                sink = None
                for candidate in offloaded.values():
                    if line.startswith(candidate.line_prefixes):
                        sink = candidate
                        break
                else:
                    try:
                        envelope = _envelope(line)
                    except (msgspec.DecodeError, msgspec.ValidationError):
                        envelope = None  # the full decode below says what is wrong
                    if envelope is not None and envelope.type == "RECORD":
                        sink = offloaded.get(envelope.stream)
                if sink is not None:
                    on_line(sink, line, self.line_number)
                    stats["RECORD"] += 1
                    continue
            try:
                message = decode(line)
            except msgspec.DecodeError:
                if not line.strip():
                    continue  # a blank line carries no message
                message = self.deserialize_json(line)  # raises, with the reason
            if type(message) is not dict:
                message = self.deserialize_json(line)  # raises, with the reason
            if "type" not in message:
                self.assert_line_requires(message, requires={"type"})  # raises, with the reason
            message_type = message["type"]
            if message_type == "RECORD" and on_record is not None:
                on_record(message, line)
            else:
                callback = callbacks.get(message_type)
                if callback is None:
                    self._process_unknown_message(message)
                else:
                    callback(message)
            stats[message_type] += 1
        return Counter(**stats)


def takes_records_directly(
    mapper: PluginMapper, stream_name: str, *, add_record_metadata: bool
) -> bool:
    """Whether `_process_record_message` would pass a stream's records on unchanged (so they
    may skip it): no stream map or flattening changes them, no metadata columns are added."""
    if add_record_metadata:
        return False
    maps = mapper.stream_maps.get(stream_name)
    if not maps or len(maps) != 1:
        return False
    (only,) = maps
    return (
        type(only) is SameRecordTransform
        and only.stream_alias == stream_name
        and not only.flattening_enabled
    )


class RecordValidator(RecordCheck, BaseJSONSchemaValidator):
    """singer-sdk's validator hook (`Sink.get_validator`): validates each record of
    singer-sdk's per-record path; a failure is kept for the sink instead of raised."""

    def __init__(self, schema: dict[str, t.Any]) -> None:
        super().__init__(schema)
        self.failure: tuple[int, str, dict[str, t.Any]] | None = None

    def validate(self, record: dict[str, t.Any]) -> None:
        failure = self.check(record)
        if failure is not None:
            self.failure = (id(record), *failure)

    def take_failure(self, record: dict[str, t.Any]) -> tuple[str, dict[str, t.Any]] | None:
        """Why `record` failed validation and the record as received, if it did."""
        failure, self.failure = self.failure, None
        if failure is not None and failure[0] == id(record):
            return failure[1], failure[2]
        return None


def count_records(sink: Sink, count: int) -> None:
    """The `record_count` metric for records that skipped `_process_record_message`."""
    if count:
        sink.record_counter_metric.increment(count)


# -- settings -----------------------------------------------------------------------------

_SCHEMA_PATH = re.compile(r"^(.*) in config\[(.*)\]$", re.S)


def config_errors(schema_errors: t.Sequence[str], own: t.Sequence[str]) -> list[str]:
    """singer-sdk's schema errors in the target's style (`streams.a.object: <problem>`, where
    singer-sdk ends a line with ` in config['streams']['a']['object']`), then the target's own
    errors that do not repeat one of them."""
    errors = []
    flagged = set()
    for error in schema_errors:
        match = _SCHEMA_PATH.match(error)
        if match is None:
            errors.append(error)
            continue
        path = ".".join(part.strip("'\"") for part in match.group(2).split("]["))
        flagged.add(path)
        errors.append(f"{path}: {match.group(1)}")
    errors.extend(error for error in own if error.split(":", 1)[0] not in flagged)
    return errors


# -- the command line ---------------------------------------------------------------------


def invoke(
    cls: type[Target],
    *,
    about: bool,
    about_format: str | None,
    config: t.Any,
    run: Callable[[t.Any], None],
) -> None:
    """`Target.invoke` with its last step, `target.listen(file_input)`, replaced by `run`."""
    if about:
        cls.print_about(about_format)
        sys.exit(0)
    cls.print_version(print_fn=cls.logger.info)
    target = cls(
        config=config.config if config is not None else None,
        validate_config=True,
        parse_env_config=config.parse_env if config is not None else False,
    )
    run(target)


def install_signal_handlers(on_signal: Callable[[int], None]) -> None:
    """Replace singer-sdk's SIGTERM / SIGINT handlers (`PluginBase._setup_signal_handlers`),
    which drain every sink inside the handler and exit 0. `on_signal` runs in the main thread,
    between two bytecodes of whatever it was doing; it may raise `StopReading` where that is
    safe (the reader blocked on its input)."""
    if threading.current_thread() is not threading.main_thread():
        return
    numbers = []
    for name in ("SIGTERM", "SIGINT"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, lambda signum, frame: on_signal(signum))
            numbers.append(number)
    _relay_to_main_thread(frozenset(numbers))


# What interrupts the main thread's system call once a signal reached another thread.
WAKE_SIGNAL = getattr(signal, "SIGUSR2", None)


def _wake(signum: int, frame: t.Any) -> None:
    """WAKE_SIGNAL's handler: the interrupted system call was all it was for."""


def _relay_to_main_thread(numbers: frozenset[int]) -> None:
    """The kernel hands a process's signal to any one of its threads. Python runs the handler
    in the main thread, but only when that thread next runs Python: a main thread blocked on a
    silent tap's input never would, and a second signal before it does counts as the same
    one. The C handler writes each signal's number to a wakeup fd; a thread that reads it
    interrupts the main thread's system call with WAKE_SIGNAL (whose handler does nothing),
    and Python then runs the handler (POSIX; once per process)."""
    if WAKE_SIGNAL is None or not hasattr(signal, "pthread_kill"):
        return
    if signal.getsignal(WAKE_SIGNAL) is _wake:  # relayed already
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    try:
        signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_fd)
        os.close(write_fd)
        return
    signal.signal(WAKE_SIGNAL, _wake)
    main = threading.main_thread().ident
    assert main is not None

    def relay() -> None:
        while received := os.read(read_fd, 64):
            if not numbers.isdisjoint(received):
                try:
                    signal.pthread_kill(main, WAKE_SIGNAL)
                except OSError:  # the main thread has ended: nothing left to wake
                    return

    threading.Thread(target=relay, name="signal-relay", daemon=True).start()
