"""What an endpoint handler is given (the account's ``Backend`` and a ``Call``), what it returns
(a ``Reply``) and the error it raises to answer 4xx (``ApiResponseError``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from .faults import FaultBook
from .resources import JSONAPI, ApiError
from .schemas import Operation
from .state import Store
from .work import Work


@dataclass
class Reply:
    status: int
    document: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = None
    content_type: str = JSONAPI
    action: str | None = None  # "reset" | "timeout": no response at all


@dataclass(frozen=True)
class QueryOptions:
    """``sort``, ``include``, ``fields[TYPE]`` and ``additional-fields[TYPE]`` of a request, checked
    against what the spec allows for its operation (query.py)."""

    sort: str | None = None
    include: frozenset[str] = frozenset()
    fields: dict[str, tuple[str, ...]] = field(default_factory=dict)
    additional_fields: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass
class Call:
    """One admitted API request, its body parsed and checked."""

    operation: Operation
    params: dict[str, str]  # path parameters
    query: dict[str, str]  # first value of each query parameter
    query_pairs: list[tuple[str, str]]
    headers: Message
    body: Any
    raw: bytes  # the body as sent
    url: str  # the request URL as the client sent it (links.self)
    base_url: str
    key: str
    options: QueryOptions = field(default_factory=QueryOptions)


@dataclass
class Backend:
    """The emulated account as endpoint handlers see it."""

    store: Store
    faults: FaultBook
    submit: Callable[[Work], None]  # queue asynchronous work (imports, events, subscriptions)
    public_key: str


Handler = Callable[[Backend, Call], Reply]


class ApiResponseError(Exception):
    """An error answer; ``violation`` marks a request our client should never have sent."""

    def __init__(
        self,
        errors: list[ApiError],
        *,
        violation: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(errors[0].detail)
        self.errors = errors
        self.status = errors[0].status
        self.violation = violation
        self.headers = headers or {}


def invalid(
    errors: list[tuple[str, str]], *, violation: bool = True, status: int = 400
) -> ApiResponseError:
    code = "invalid" if status == 400 else "request_too_large"
    return ApiResponseError(
        [ApiError(status, code, detail, pointer=where) for where, detail in errors],
        violation=violation,
    )


def bad_parameter(parameter: str, detail: str) -> ApiResponseError:
    # Klaviyo: rate limits and errors: source.parameter for query-parameter errors.
    return ApiResponseError([ApiError(400, "invalid", detail, parameter=parameter)], violation=True)


def not_found(detail: str) -> ApiResponseError:
    return ApiResponseError([ApiError(404, "not_found", detail)])
