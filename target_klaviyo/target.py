"""TargetKlaviyo: settings, and the routing of each stream to its sink."""

from __future__ import annotations

import time
import typing as t
from pathlib import PurePath

import click
from singer_sdk import Target
from singer_sdk.exceptions import ConfigValidationError, RecordsWithoutSchemaException
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_klaviyo import sdk
from target_klaviyo.klaviyo.client import KlaviyoClient
from target_klaviyo.klaviyo.dry_run import DryRunClient
from target_klaviyo.ledger.rejects import RejectsFile
from target_klaviyo.ledger.store import LedgerError, open_ledger
from target_klaviyo.records import offload
from target_klaviyo.run.context import Client, Run
from target_klaviyo.run.lifecycle import Lifecycle, UnmappedStreamError
from target_klaviyo.sdk_records import decode_message
from target_klaviyo.settings import CONFIG_SCHEMA, Settings, SettingsError
from target_klaviyo.sinks import SINK_CLASSES
from target_klaviyo.sinks.base import KlaviyoSink
from target_klaviyo.sinks.profiles import ProfileUpsertSink


class TargetKlaviyo(Target):
    """Loads Singer streams into Klaviyo profiles, lists, events and subscriptions."""

    name = "target-klaviyo"
    package_name = "target-klaviyo"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ProfileUpsertSink
    # ACTIVATE_VERSION ends a mirror pass of a list stream.
    capabilities: t.ClassVar[list] = [*Target.capabilities, PluginCapabilities.ACTIVATE_VERSION]

    def __init__(
        self,
        *,
        config: dict | PurePath | str | list[PurePath | str] | None = None,
        parse_env_config: bool = False,
        validate_config: bool = True,
        setup_mapper: bool = True,
        message_reader: t.Any = None,
    ) -> None:
        self.reader = message_reader or sdk.MessageReader(hooks=self)
        schema_errors: list[str] = []
        try:
            super().__init__(
                config=config,
                parse_env_config=parse_env_config,
                validate_config=validate_config,
                setup_mapper=setup_mapper,
                message_reader=self.reader,
            )
        except ConfigValidationError as exc:
            schema_errors = list(exc.errors)  # every problem is reported, below
        own_errors: list[str] = []
        try:
            self.settings = settings = Settings.from_config(self.config)
        except SettingsError as exc:
            own_errors = exc.errors
        if schema_errors or own_errors:
            raise ConfigValidationError(
                "Config validation failed",
                errors=sdk.config_errors(schema_errors, own_errors),
                schema=self.config_jsonschema,
            ) from None
        client: Client
        if settings.dry_run:
            client = DryRunClient(settings.state_dir / "dry_run.jsonl")
        else:
            client = KlaviyoClient(
                private_key=settings.private_api_key,
                base_url=settings.api_base_url,
                revision=settings.revision,
                max_retries=settings.max_retries,
                timeout_s=settings.request_timeout_s,
            )
        try:
            ledger = open_ledger(
                settings.state_dir,
                url=settings.ledger_url,
                schema=settings.ledger_schema,
                read_only=settings.dry_run,
            )
        except LedgerError as exc:
            raise ConfigValidationError(
                "Config validation failed", errors=[str(exc)], schema=self.config_jsonschema
            ) from None
        self.run = Run(
            settings=settings,
            client=client,
            ledger=ledger,
            rejects=RejectsFile(settings.rejects_path),
        )
        self.lifecycle = Lifecycle(self)
        sdk.install_signal_handlers(self.lifecycle.on_signal)
        self._direct_sinks: dict[str, KlaviyoSink] = {}  # streams whose records skip the SDK
        # ... and the streams whose records are mapped in a second process
        self.offloaded: dict[str, KlaviyoSink] = self.run.offloaded
        self.run.read_line_here = self._read_line_here
        self._on_record: t.Callable[[dict, str], None] | None = None
        self._flush_at = time.monotonic() + sdk.MAX_CHUNK_AGE_S
        self._idle_drain: offload.IdleDrain | None = None
        self._schema_sinks: dict[str, KlaviyoSink] = {}  # the current sink of each stream

    # -- routing --------------------------------------------------------------------------

    def get_sink_class(self, stream_name: str) -> type[KlaviyoSink]:
        mapping = self.settings.streams.resolve(stream_name)
        if mapping is None:
            raise UnmappedStreamError(
                f"stream {stream_name!r} has no mapping in the `streams` setting"
                f" (mapped: {', '.join(self.settings.streams.names)})"
            )
        return SINK_CLASSES[mapping.route]

    def get_sink(
        self,
        stream_name: str,
        *,
        record: dict | None = None,
        schema: dict | None = None,
        key_properties: t.Sequence[str] | None = None,
    ) -> t.Any:
        if schema is not None and self.settings.streams.resolve(stream_name) is not None:
            # Before any of the stream's records is read: one run per stream at a time.
            self.run.lock_stream(stream_name)
        sink = t.cast(
            KlaviyoSink,
            super().get_sink(
                stream_name, record=record, schema=schema, key_properties=key_properties
            ),
        )
        if schema is not None:  # a SCHEMA message (or a replay) chose the stream's sink
            previous = self._schema_sinks.get(stream_name)
            if previous is not None and previous is not sink:
                # A new schema replaced the sink: what the old one holds goes out now.
                previous.flush()
                previous.end_offload()
            self._schema_sinks[stream_name] = sink
            if sdk.takes_records_directly(
                self.mapper, stream_name, add_record_metadata=self.settings.add_record_metadata
            ):
                self._direct_sinks[stream_name] = sink
            else:
                self._direct_sinks.pop(stream_name, None)
                sink.end_offload()
        return sink

    # -- the reader's hooks (sdk.MessageReader) -------------------------------------------

    def before_input(self) -> None:
        self.lifecycle.start()
        if offload.spare_cpus():
            self._idle_drain = offload.IdleDrain(
                lambda: (self.reader.reading, self.reader.line_number),
                self._offload_pending,
                self._drain_while_silent,
            )
            self._idle_drain.start()

    def _drain_while_silent(self) -> None:
        if self.run.stopping is None and self.run.failure is None:
            self.drain_offloads()

    def _offload_pending(self) -> int:
        """Lines on their way through mapping processes (asked from the IdleDrain's thread)."""
        sinks = tuple(self.run.sinks)
        return sum(sink.offload.pending() for sink in sinks if sink.offload is not None)

    def record_callback(
        self, through_sdk: t.Callable[[dict], None]
    ) -> t.Callable[[dict, str], None]:
        """The reader's RECORD handler: records of streams without stream maps go straight to
        their sink, with the line they came from; the rest (and malformed messages) through
        singer-sdk's path."""
        direct = self._direct_sinks

        def on_record(message: dict, line: str) -> None:
            sink = direct.get(message.get("stream"))  # type: ignore[arg-type]
            record = message.get("record")
            if sink is None or type(record) is not dict:
                if message.get("stream") not in self.mapper.stream_maps:
                    # singer-sdk's own check would miss a stream whose sink exists only
                    # because its records on hold were replayed.
                    raise RecordsWithoutSchemaException(
                        f"a RECORD of stream {message.get('stream')!r} came before its SCHEMA"
                    )
                through_sdk(message)
            else:
                sink.receive(record, line)
            if time.monotonic() >= self._flush_at:
                self._flush_old()

        self._on_record = on_record
        return on_record

    def on_line(self, sink: KlaviyoSink, line: str, number: int) -> None:
        """The reader's handler for a RECORD of a stream mapped in a second process."""
        sink.receive_line(line, number)
        if time.monotonic() >= self._flush_at:
            self._flush_old()

    def _flush_old(self) -> None:
        """A slow tap: send what waits in partly filled requests, so that STATE moves."""
        for sink in self.run.sinks:
            sink.flush()
        self._flush_at = time.monotonic() + sdk.MAX_CHUNK_AGE_S

    def _read_line_here(self, line: str, number: int) -> None:
        """A RECORD line back from the mapping process unmapped: read as the reader reads
        one, and any error names its line."""
        if self._on_record is None:  # lines are offloaded only once the reader runs
            raise RuntimeError("a line came back before the reader started")
        reader = self.reader
        current, reader.line_number = reader.line_number, number
        message = decode_message(line)
        if message.get("type") != "RECORD":  # it began as one: a key given twice
            raise InvalidInputLine("a RECORD line that names its type twice")
        self._on_record(message, line)
        reader.line_number = current

    def drain_offloads(self) -> None:
        """Every line read is a record in its chunk (before STATE and ACTIVATE_VERSION)."""
        for sink in self.run.sinks:
            sink.drain_offload()

    def on_state(self, message: dict) -> None:
        self._assert_line_requires(message, requires={"value"})
        # Lines on their way through a mapping process count as read (records_seen).
        self.run.gate.receive(message["value"])

    def on_activate_version(self, message: dict) -> None:
        self._assert_line_requires(message, requires={"stream", "version"})
        self.drain_offloads()
        if not self.settings.process_activate_version_messages:
            return
        for stream_map in self.mapper.stream_maps.get(message["stream"], []):
            if self.sink_exists(stream_map.stream_alias):
                self.get_sink(stream_map.stream_alias).activate_version(message["version"])

    def process_endofpipe(self) -> None:
        if self._idle_drain is not None:
            self._idle_drain.stop()
        self.lifecycle.start()  # an empty input still replays what is on hold
        self.lifecycle.send_last_requests()
        for sink in self.run.sinks:  # nothing more to map: mapping processes end now
            sink.end_offload()
        super().process_endofpipe()
        self.lifecycle.after_input()

    # -- the command line -----------------------------------------------------------------

    @classmethod
    def get_singer_command(cls) -> click.Command:
        command = super().get_singer_command()
        command.params.append(
            click.Option(
                ["--test-connection", "test_connection"],
                is_flag=True,
                help="Check the key, scopes, public key and lists, then exit (0 or 1).",
            )
        )
        return command

    @classmethod
    def invoke(  # type: ignore[override]
        cls,
        *,
        about: bool = False,
        about_format: str | None = None,
        config: t.Any = None,
        file_input: t.IO[str] | None = None,
        test_connection: bool = False,
    ) -> None:
        def run(target: TargetKlaviyo) -> None:
            if test_connection:
                target.lifecycle.test_connection()
            target.lifecycle.listen(file_input)

        sdk.invoke(cls, about=about, about_format=about_format, config=config, run=run)
