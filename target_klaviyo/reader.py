"""The Singer message reader: fast decoding, line numbers, and hooks for STATE,
ACTIVATE_VERSION and the start of input."""

from __future__ import annotations

import sys
import typing as t
from collections import Counter, defaultdict

import msgspec
from singer_sdk.singerlib.encoding.base import GenericSingerReader, SingerMessageType
from singer_sdk.singerlib.exceptions import InvalidInputLine

_decoder = msgspec.json.Decoder(float_hook=__import__("decimal").Decimal)


def decode_message(line: str | bytes) -> t.Any:
    """A line of input as the reader decodes it (numbers with a fraction as Decimal)."""
    return _decoder.decode(line)


class ReaderHooks(t.Protocol):
    def before_input(self) -> None: ...

    def on_state(self, message: dict) -> None: ...

    def on_activate_version(self, message: dict) -> None: ...

    def record_callback(
        self, through_sdk: t.Callable[[dict], None]
    ) -> t.Callable[[dict, str], None]: ...


class MessageReader(GenericSingerReader[str]):
    """Reads Singer messages line by line, counting lines for clear error messages.

    RECORD, STATE and ACTIVATE_VERSION go to the target's hooks: records of most streams go
    straight to their sink (with the line they were read from), STATE is passed on only when
    the records before it are accounted for, and ACTIVATE_VERSION ends a mirror pass.
    """

    def __init__(self, hooks: ReaderHooks | None = None) -> None:
        super().__init__()
        self.hooks = hooks
        self.line_number = 0

    @property
    def default_input(self) -> t.IO[str]:
        return sys.stdin

    def deserialize_json(self, line: str) -> dict:
        try:
            message = _decoder.decode(line)
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
        if self.hooks is not None:
            self.hooks.before_input()
            on_record = self.hooks.record_callback(callbacks[SingerMessageType.RECORD])
            callbacks = {
                **callbacks,
                SingerMessageType.STATE: self.hooks.on_state,
                SingerMessageType.ACTIVATE_VERSION: self.hooks.on_activate_version,
            }
        stats: dict[str, int] = defaultdict(int)
        decode = _decoder.decode
        for line in file_input or self.default_input:
            self.line_number += 1
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
