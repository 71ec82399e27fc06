"""A no-op singer-sdk target: one BatchSink whose process_batch does nothing.

The reference for what the SDK itself costs per record; ``python -m benchmarks.noop_target
--config FILE < input.singer``. Accepts every stream.
"""

from __future__ import annotations

from singer_sdk import Target
from singer_sdk import typing as th
from singer_sdk.sinks import BatchSink


class NoopSink(BatchSink):
    """Discards every batch."""

    def process_batch(self, context: dict) -> None:
        pass


class TargetNoop(Target):
    name = "target-noop"
    config_jsonschema = th.PropertiesList(
        th.Property("api_key", th.StringType, secret=True, description="unused"),
    ).to_dict()
    default_sink_class = NoopSink


if __name__ == "__main__":
    TargetNoop.cli()
