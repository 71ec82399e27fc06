"""The bulk request protocol: one request for many records, and what each answer means for
each of them.

Klaviyo validates a bulk request as a whole: one bad row fails it with a 400 whose error
pointers name the rows (`/data/attributes/profiles/data/<i>/...`). Those rows are rejected with
Klaviyo's detail and the rest sent once more. A 413 splits the request in two; other 4xx reject
every row with Klaviyo's reason; retries exhausted (429, 5xx, network) put the rows on hold.
"""

from __future__ import annotations

import logging
import re
from array import array
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate

from target_klaviyo.klaviyo.client import ApiResult
from target_klaviyo.records.item import Item, Request
from target_klaviyo.records.outcomes import Outcomes
from target_klaviyo.run.context import Client

EncodeRequest = Callable[[list[Item]], Request]
Accepted = Callable[[list[Item], ApiResult], None]


def join_body(head: bytes, parts: list[bytes], tail: bytes) -> bytes:
    """`head`, the comma-separated `parts` and `tail` in one join: a body is up to 5 MB, and
    each concatenation of the whole would copy it. `parts` is changed."""
    parts = parts or [b""]
    parts[0] = head + parts[0]
    parts[-1] += tail
    return b",".join(parts)


def join_parts(head: bytes, parts: list[bytes], tail: bytes) -> tuple[bytes, array[int]]:
    """`join_body`, and where each part ends (for `Request.ends`)."""
    ends = array("q", accumulate(map(len, parts)))
    return join_body(head, parts, tail), ends


def row_locator(prefix: str, count: int) -> Callable[[str], list[int]]:
    """For bodies whose items sit in one array: `<prefix>/<i>/...` names item i."""
    pattern = re.compile(re.escape(prefix) + r"/(\d+)(?:/|$)")

    def locate(pointer: str) -> list[int]:
        match = pattern.match(pointer)
        if match and int(match.group(1)) < count:
            return [int(match.group(1))]
        return []

    return locate


class BulkProtocol:
    def __init__(
        self, client: Client, outcomes: Outcomes, max_bytes: int, logger: logging.Logger
    ) -> None:
        self.client = client
        self.outcomes = outcomes
        self.max_bytes = max_bytes
        self.logger = logger

    def send(
        self,
        operation: str,
        items: list[Item],
        encode_request: EncodeRequest,
        accepted: Accepted,
        *,
        path_params: Mapping[str, str] | None = None,
        resend_allowed: bool = True,
    ) -> None:
        """POST one bulk request and give every item an outcome (or hand the accepted ones to
        `accepted`, which gives them theirs)."""
        request = encode_request(items)
        if len(request.body) > self.max_bytes and len(items) > 1:
            self._split(operation, items, encode_request, accepted, path_params, resend_allowed)
            return
        if request.parts_kept:
            # The body holds every item's part: their own copies go while the request is out
            # (through Retry-After waits, tens of thousands of records), and come back from
            # the body, or are made again, for what is sent again (`_restore`).
            for item in items:
                item.encoded = None
        result = self.client.request(operation, body=request.body, path_params=path_params)
        if result.exhausted:
            self.outcomes.hold(items, result.describe())
            return
        if result.status == 400 and resend_allowed:
            bad = self._rows_named(result, request)
            if bad:
                for index, detail in bad.items():
                    self.outcomes.reject(items[index], f"Klaviyo: {detail}")
                kept = [index for index in range(len(items)) if index not in bad]
                self._restore(request, items, kept)
                rest = [items[index] for index in kept]
                self.logger.warning(
                    "%s refused %d of %d rows; resending the other %d once",
                    operation,
                    len(bad),
                    len(items),
                    len(rest),
                )
                if rest:
                    self.send(
                        operation,
                        rest,
                        encode_request,
                        accepted,
                        path_params=path_params,
                        resend_allowed=False,
                    )
                return
        if result.status == 413 and len(items) > 1:
            self._restore(request, items, range(len(items)))
            self._split(operation, items, encode_request, accepted, path_params, resend_allowed)
            return
        if not result.ok:
            self.outcomes.reject_all(items, result)
            return
        # Klaviyo has the payloads: they are not needed again (rejects and holds take the
        # records), and a job may run for minutes with its records waiting.
        if not request.parts_kept:  # otherwise they went before the request
            for item in items:
                item.encoded = None
        del request
        accepted(items, result)

    @staticmethod
    def _restore(request: Request, items: list[Item], indexes: Iterable[int]) -> None:
        """The encoded parts of these items, back from the body (to be sent again)."""
        if request.parts_kept:
            for index in indexes:
                items[index].encoded = request.part(index)

    @staticmethod
    def _rows_named(result: ApiResult, request: Request) -> dict[int, str]:
        """Row index -> Klaviyo's detail, for the rows the error pointers name."""
        bad: dict[int, str] = {}
        for error in result.errors:
            detail = error.detail or error.title
            for index in request.locate(error.pointer or ""):
                bad[index] = f"{bad[index]}; {detail}" if index in bad else detail
        return bad

    def _split(
        self,
        operation: str,
        items: list[Item],
        encode_request: EncodeRequest,
        accepted: Accepted,
        path_params: Mapping[str, str] | None,
        resend_allowed: bool,
    ) -> None:
        half = len(items) // 2
        for part in (items[:half], items[half:]):
            self.send(
                operation,
                part,
                encode_request,
                accepted,
                path_params=path_params,
                resend_allowed=resend_allowed,
            )
