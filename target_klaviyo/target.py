"""TargetKlaviyo: settings, routing of streams to sinks, and the run's beginning and end."""

from __future__ import annotations

import gc
import sys
import time
import typing as t
from pathlib import Path, PurePath

import click
from singer_sdk import Target
from singer_sdk.exceptions import (
    ConfigValidationError,
    InvalidRecord,
    MissingKeyPropertiesError,
    RecordsWithoutSchemaException,
)
from singer_sdk.helpers.capabilities import PluginCapabilities
from singer_sdk.mapper import SameRecordTransform
from singer_sdk.singerlib.exceptions import InvalidInputLine

from target_klaviyo.klaviyo.client import ConfigError, KlaviyoAuthError, KlaviyoClient
from target_klaviyo.klaviyo.dry_run import DryRunClient
from target_klaviyo.klaviyo.startup import StartupError, check_account
from target_klaviyo.ledger.rejects import RejectsFile
from target_klaviyo.ledger.store import Ledger
from target_klaviyo.ledger.summary import Progress, render_table, write_summary_file
from target_klaviyo.reader import MessageReader
from target_klaviyo.run import Run
from target_klaviyo.settings import (
    CONFIG_SCHEMA,
    DEFAULT_BASE_URL,
    DEFAULT_REVISION,
    DEFAULT_STATE_DIR,
    MappingConfigError,
    parse_stream_mappings,
)
from target_klaviyo.sinks.base import KlaviyoSink
from target_klaviyo.sinks.events import EventSink
from target_klaviyo.sinks.lists import ListSink
from target_klaviyo.sinks.profiles import ProfileSink
from target_klaviyo.sinks.subscriptions import SubscriptionSink

# A record waits at most this long in a partly filled request (singer-sdk's max record age).
MAX_CHUNK_AGE_S = 300.0

SINKS: dict[str, type[KlaviyoSink]] = {
    "profile": ProfileSink,
    "list": ListSink,
    "event": EventSink,
    "subscription": SubscriptionSink,
}


class UnmappedStreamError(ValueError):
    """A stream that no `streams` mapping covers."""


# Errors in the user's input or account: reported in one line, without a traceback.
USER_ERRORS = (
    InvalidInputLine,
    RecordsWithoutSchemaException,
    MissingKeyPropertiesError,
    InvalidRecord,
    UnmappedStreamError,
    KlaviyoAuthError,
    StartupError,
    ConfigError,
    MappingConfigError,
)


class TargetKlaviyo(Target):
    """Loads Singer streams into Klaviyo profiles, lists, events and subscriptions."""

    name = "target-klaviyo"
    package_name = "target-klaviyo"
    config_jsonschema = CONFIG_SCHEMA
    default_sink_class = ProfileSink
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
        self.reader = message_reader or MessageReader(hooks=self)
        super().__init__(
            config=config,
            parse_env_config=parse_env_config,
            validate_config=validate_config,
            setup_mapper=setup_mapper,
            message_reader=self.reader,
        )
        try:
            self.mappings = parse_stream_mappings(self.config.get("streams"))
        except MappingConfigError as exc:
            raise ConfigValidationError(
                "Invalid stream mapping", errors=exc.errors, schema=self.config_jsonschema
            ) from None
        self.dry_run = bool(self.config.get("dry_run", False))
        self.state_dir = Path(self.config.get("state_dir") or DEFAULT_STATE_DIR)
        client: t.Any
        try:
            if self.dry_run:
                client = DryRunClient(self.state_dir / "dry_run.jsonl")
            else:
                client = KlaviyoClient(
                    private_key=str(self.config["private_api_key"]),
                    base_url=str(self.config.get("api_base_url") or DEFAULT_BASE_URL),
                    revision=str(self.config.get("revision") or DEFAULT_REVISION),
                    max_retries=int(self.config.get("max_retries", 5)),
                    timeout_s=float(self.config.get("request_timeout_s", 60)),
                )
        except ConfigError as exc:
            raise ConfigValidationError(
                "Invalid settings", errors=[str(exc)], schema=self.config_jsonschema
            ) from None
        ledger = Ledger(self.state_dir, read_only=self.dry_run)
        rejects_path = self.config.get("rejects_path") or self.state_dir / "rejects.jsonl"
        self.run = Run(
            config=self.config,
            mappings=self.mappings,
            client=client,
            ledger=ledger,
            rejects=RejectsFile(rejects_path),
            state_dir=self.state_dir,
        )
        self.progress = Progress(
            self.run.stats,
            float(self.config.get("progress_interval_s", 10)),
            self.logger.info,
            lambda: self.run.client.rate_limit_wait_s,
        )
        self._direct_sinks: dict[str, KlaviyoSink] = {}  # streams whose records skip the SDK
        self._schema_sinks: dict[str, KlaviyoSink] = {}  # the current sink of each stream
        self._started = False
        self._finished = False

    # -- routing --------------------------------------------------------------------------

    def get_sink(
        self,
        stream_name: str,
        *,
        record: dict | None = None,
        schema: dict | None = None,
        key_properties: t.Sequence[str] | None = None,
    ) -> t.Any:
        sink = super().get_sink(
            stream_name, record=record, schema=schema, key_properties=key_properties
        )
        if schema is not None:  # a SCHEMA message (or a replay) chose the stream's sink
            previous = self._schema_sinks.get(stream_name)
            if previous is not None and previous is not sink:
                # A new schema replaced the sink: what the old one holds goes out now.
                previous.flush_chunk()
            if isinstance(sink, KlaviyoSink):
                self._schema_sinks[stream_name] = sink
            if isinstance(sink, KlaviyoSink) and self._takes_records_directly(stream_name):
                self._direct_sinks[stream_name] = sink
            else:
                self._direct_sinks.pop(stream_name, None)
        return sink

    def _takes_records_directly(self, stream_name: str) -> bool:
        """Whether a stream's records can skip singer-sdk's per-record path: no stream map or
        flattening changes them and no metadata columns are added."""
        if self.config.get("add_record_metadata"):
            return False
        maps = self.mapper.stream_maps.get(stream_name)
        if not maps or len(maps) != 1:
            return False
        (only,) = maps
        return (
            type(only) is SameRecordTransform
            and only.stream_alias == stream_name
            and not only.flattening_enabled
        )

    def record_callback(
        self, through_sdk: t.Callable[[dict], None]
    ) -> t.Callable[[dict, str], None]:
        """The reader's RECORD handler: records of streams without stream maps go straight to
        their sink, with the line they came from; the rest (and malformed messages) through
        singer-sdk's path."""
        direct = self._direct_sinks
        flush_at = time.monotonic() + MAX_CHUNK_AGE_S

        def on_record(message: dict, line: str) -> None:
            nonlocal flush_at
            sink = direct.get(message.get("stream"))  # type: ignore[arg-type]
            record = message.get("record")
            if sink is None or type(record) is not dict:
                through_sdk(message)
            else:
                sink.take(record, line)
            if time.monotonic() >= flush_at:
                # A slow tap: send what waits in partly filled requests, so that STATE moves.
                for each in self.run.sinks:
                    each.flush_chunk()
                flush_at = time.monotonic() + MAX_CHUNK_AGE_S

        return on_record

    def get_sink_class(self, stream_name: str) -> type[KlaviyoSink]:
        mapping = self.mappings.resolve(stream_name)
        if mapping is None:
            raise UnmappedStreamError(
                f"stream {stream_name!r} has no mapping in the `streams` setting"
                f" (mapped: {', '.join(self.mappings.names)})"
            )
        return SINKS[mapping.object]

    # -- the run's beginning: before any input is read ------------------------------------

    def before_input(self) -> None:
        if self._started:
            return
        self._started = True
        if not self.dry_run:
            assert isinstance(self.run.client, KlaviyoClient)
            self.run.list_ids = check_account(self.run.client, dict(self.config), self.mappings)
            self.logger.info("Klaviyo start-up check passed")
        else:
            for mapping in self.mappings.mappings:
                if mapping.list_id or mapping.list_name:
                    self.run.list_ids[mapping.pattern] = mapping.list_id or f"<{mapping.list_name}>"
        self.progress.start()
        self.resolve_interrupted_jobs()
        self.replay_held()

    def resolve_interrupted_jobs(self) -> None:
        """Jobs an interrupted run left in flight: look them up, then forget them.

        Their records are sent again anyway: STATE was not passed on past them, so the tap
        resends them, and upserts and unique_ids make the resend safe. Polling tells the user
        what happened to the interrupted job.
        """
        ledger = self.run.ledger
        if ledger is None or self.dry_run:
            return
        for job in ledger.jobs_in_flight():
            result = self.run.client.request(
                "get_bulk_import_profiles_job", path_params={"id": job.id}
            )
            if result.ok:
                status = result.body["data"]["attributes"].get("status")
                outcome = f"Klaviyo reports it {status}"
            else:
                outcome = f"Klaviyo no longer knows it ({result.describe()})"
            self.logger.info(
                "import job %s of stream %r (%d records) was in flight when an earlier run"
                " stopped; %s. Its records are sent again with this run's input.",
                job.id,
                job.stream,
                job.records,
                outcome,
            )
            ledger.job_finished(job.id)

    def replay_held(self) -> None:
        """Records on hold go out first, through the same sinks, with the current mapping."""
        ledger = self.run.ledger
        if ledger is None or self.dry_run:
            return
        for stream in ledger.held_streams():
            if self.mappings.resolve(stream) is None:
                self.logger.warning(
                    "%d records of stream %r stay on hold: the stream has no mapping now",
                    ledger.held_count(stream),
                    stream,
                )
                continue
            stored = ledger.stream_schema(stream)
            if stored is None:
                continue
            schema, key_properties = stored
            sink = self.get_sink(stream, schema=schema, key_properties=key_properties)
            assert isinstance(sink, KlaviyoSink)
            self.logger.info(
                "replaying %d records of %r held by earlier runs", ledger.held_count(stream), stream
            )
            # Read a page at a time (bounded memory). A record that goes back on hold keeps its
            # row, so the pages never meet it again in this pass.
            for record in ledger.held_records(stream):
                sink.tally_record_read()
                sink.accept(record.record, held=record)
                if sink.is_full:
                    self.drain_one(sink)
            self.drain_one(sink)

    # -- the reader's hooks ---------------------------------------------------------------

    def on_state(self, message: dict) -> None:
        self._assert_line_requires(message, requires={"value"})
        self.run.gate.receive(message["value"])

    def on_activate_version(self, message: dict) -> None:
        self._assert_line_requires(message, requires={"stream", "version"})
        if not self.config.get("process_activate_version_messages", True):
            return
        stream_name = message["stream"]
        for stream_map in self.mapper.stream_maps.get(stream_name, []):
            if self.sink_exists(stream_map.stream_alias):
                self.get_sink(stream_map.stream_alias).activate_version(message["version"])

    # -- the run's end --------------------------------------------------------------------

    def process_endofpipe(self) -> None:
        self.before_input()  # an empty input still replays what is on hold
        # Every stream's last request goes out before any stream waits for room: a stream
        # whose jobs are still running must not hold back another stream's last request.
        for sink in sorted(self.run.sinks, key=lambda sink: sink.must_wait_for_room()):
            sink.flush_chunk()
        super().process_endofpipe()
        self.run.raise_if_failed()
        self.run.gate.check()
        self.finish()

    def finish(self) -> None:
        """Stop workers, print the summary and write last_run.json (once)."""
        if self._finished:
            return
        self._finished = True
        self.progress.stop()
        self.run.wait_for_requests()
        for sink in self.run.sinks:
            sink.publish_counts()
        summary = self.run.stats.to_dict(self.run.client.calls, self.run.client.rate_limit_wait_s)
        if self.run.ledger is not None and not self.dry_run:
            summary["on_hold_total"] = self.run.ledger.held_count()
            write_summary_file(self.state_dir, summary)
        if self.dry_run:
            summary["dry_run_plan"] = str(self.state_dir / "dry_run.jsonl")
        self.logger.info("%s", render_table(summary))
        self.run.close()

    # -- CLI ------------------------------------------------------------------------------

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
        if about:
            cls.print_about(about_format)
            sys.exit(0)
        cls.print_version(print_fn=cls.logger.info)
        config_files = config.config if config is not None else None
        parse_env = config.parse_env if config is not None else False
        target = cls(config=config_files, validate_config=True, parse_env_config=parse_env)
        if test_connection:
            cls._test_connection(target)
        _tune_garbage_collector()
        try:
            target.listen(file_input)
        except USER_ERRORS as exc:
            where = ""
            if isinstance(
                exc,
                (
                    InvalidInputLine,
                    RecordsWithoutSchemaException,
                    MissingKeyPropertiesError,
                    InvalidRecord,
                    UnmappedStreamError,
                ),
            ):
                where = f"input line {target.reader.line_number}: "
            cls.logger.error("%s%s", where, _one_line(exc))
            target.shutdown_after_error(exc, send_what_was_read=bool(where))
            sys.exit(1)
        except BaseException as exc:
            target.shutdown_after_error(exc, send_what_was_read=False)
            raise

    def shutdown_after_error(self, error: BaseException, *, send_what_was_read: bool) -> None:
        """Give every record read an outcome, then summarise.

        After bad input, the records before the bad line are good: they are sent (and STATE
        passed on for them). After any other error, records not yet sent go on hold and are
        replayed by the next run. Requests in flight are waited for either way.
        """
        try:
            if send_what_was_read and self._started and not self.run.failed:
                self.drain_all(is_endofpipe=True)
                self.run.gate.check()
        except Exception as exc:  # the original error matters more
            self.logger.debug("while sending what was read: %s", exc)
        try:
            reason = f"not sent: the run stopped ({_one_line(error)})"
            for sink in self.run.sinks:
                sink.hold_unsent(reason)
            self.finish()
        except Exception as exc:  # the original error matters more
            self.logger.debug("while shutting down: %s", exc)

    @classmethod
    def _test_connection(cls, target: TargetKlaviyo) -> t.NoReturn:
        try:
            if target.dry_run:
                cls.logger.info("dry_run is set: nothing to check without the network")
            else:
                assert isinstance(target.run.client, KlaviyoClient)
                check_account(target.run.client, dict(target.config), target.mappings)
                cls.logger.info("Connection OK: key, scopes, public key and lists checked")
        except (KlaviyoAuthError, StartupError) as exc:
            cls.logger.error("Connection check failed: %s", _one_line(exc))
            sys.exit(1)
        finally:
            target.run.close()
        sys.exit(0)


def _tune_garbage_collector() -> None:
    """A run keeps tens of thousands of records in flight, none of them in a reference cycle;
    with the default thresholds the cyclic collector walks them all again and again (about a
    tenth of the run's CPU). What exists at start-up is frozen out of its sight, and it runs
    less often; cycles are still collected."""
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 400 else text[:397] + "..."
