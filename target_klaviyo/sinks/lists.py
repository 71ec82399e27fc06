"""Lists: insert, delete and mirror membership (being written)."""

from __future__ import annotations

from target_klaviyo.sinks.profiles import ProfileSink


class ListSink(ProfileSink):
    OBJECT = "list"

    def setup(self) -> None:
        raise NotImplementedError("list mappings are not available yet")
