"""The ledger's errors, and keeping the PostgreSQL password out of every message.

`ledger_url` is a secret (SPEC §2): messages name it as `redact_url` prints it, and text that
comes from psycopg or libpq goes through `scrub` before it reaches an exception or a log
(libpq quotes a URL's bad token, or the whole URL, in some of its errors).

URLs are taken apart by hand, at the last `@` before the host, rather than by
`urllib.parse.urlsplit`: a password holding an unencoded `/`, `?` or `#` would otherwise be
read as part of the path and printed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote

HIDDEN = "***"
# libpq parameters whose value is a secret when given in a URL's query string.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


class LedgerError(Exception):
    """The ledger cannot be opened or used; the message is one line for the user."""


class LedgerUrlError(LedgerError, ValueError):
    """`ledger_url` (or `ledger_schema`) is not something the ledger can use."""


def _parts(url: str) -> tuple[str, str | None, str | None, str]:
    """(scheme with '://', user, password, the rest after the last '@') of a URL; user and
    password are None where the URL has no user part."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None, None, url
    if "@" not in rest:
        return scheme + sep, None, None, rest
    userinfo, _, host = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return scheme + sep, user, password if colon else None, host


def _redact_query(rest: str) -> str:
    head, question, query = rest.partition("?")
    if not question:
        return rest
    pairs = []
    for pair in query.split("&"):
        name = pair.partition("=")[0]
        pairs.append(f"{name}={HIDDEN}" if unquote(name).lower() in _SECRET_PARAMETERS else pair)
    return head + "?" + "&".join(pairs)


def redact_url(url: str) -> str:
    """`url` with its password (and any password query parameter) shown as `***`."""
    scheme, user, password, rest = _parts(url)
    if not scheme:
        # Not a URL at all: a bare word is harmless, anything that could hold a user is not.
        return HIDDEN if "@" in url else url
    if user is None:
        return scheme + _redact_query(rest)
    userinfo = f"{user}:{HIDDEN}" if password is not None else user
    return f"{scheme}{userinfo}@{_redact_query(rest)}"


def ambiguous_url(url: str) -> str | None:
    """Why `url` cannot be split into user, password and host without guessing, or None.

    A password with an unencoded `@`, `/`, `?` or `#` is split differently by different
    parsers, and the piece taken for a host or database name would then be printed."""
    rest = url.partition("://")[2]
    at = rest.find("@")
    if at >= 0 and (rest.count("@") > 1 or any(c in rest[:at] for c in "/?#")):
        return (
            "ledger_url: write '@', '/', '?', '#' and ':' inside the user name or password"
            " percent-encoded (%40, %2F, %3F, %23, %3A)"
        )
    return None


def url_secrets(url: str | None) -> list[str]:
    """Every password this URL (or PGPASSWORD) carries, as written and as decoded."""
    found: list[str] = []
    if url:
        _scheme, _user, password, rest = _parts(url)
        if password:
            found.append(password)
        query = rest.partition("?")[2]
        found += [v for k, v in parse_qsl(query) if k.lower() in _SECRET_PARAMETERS]
        found += [
            pair.partition("=")[2]
            for pair in query.split("&")
            if unquote(pair.partition("=")[0]).lower() in _SECRET_PARAMETERS
        ]
    env = os.environ.get("PGPASSWORD")
    if env:
        found.append(env)
    variants = {form for secret in found for form in (secret, unquote(secret), quote(secret))}
    # Longest first, so that a secret containing another is replaced whole.
    return sorted((s for s in variants if s), key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret replaced by `***`, on one line."""
    for secret in secrets:
        text = text.replace(secret, HIDDEN)
    return " ".join(text.split())
