"""The ledger's errors, and keeping the PostgreSQL password out of every message.

`ledger_url` is a secret (SPEC §2): messages name it as `redact_url` prints it, and text that
comes from psycopg or libpq goes through `scrub` before it reaches an exception or a log.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

HIDDEN = "***"
# libpq parameters whose value is a secret when given in a URL's query string.
_SECRET_PARAMETERS = frozenset({"password", "sslpassword"})


class LedgerError(Exception):
    """The ledger cannot be opened or used; the message is one line for the user."""


class LedgerUrlError(LedgerError, ValueError):
    """`ledger_url` (or `ledger_schema`) is not something the ledger can use."""


def redact_url(url: str) -> str:
    """`url` with its password (and any password query parameter) shown as `***`."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostport = netloc.rpartition("@")
            user, colon, _password = userinfo.partition(":")
            netloc = f"{user}:{HIDDEN}@{hostport}" if colon else f"{user}@{hostport}"
        query = parts.query
        if query:
            pairs = parse_qsl(query, keep_blank_values=True)
            query = urlencode(
                [(k, HIDDEN if k.lower() in _SECRET_PARAMETERS else v) for k, v in pairs],
                safe="*",
            )
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Not even parseable: show only the scheme, which cannot hold a secret.
        scheme = url.partition(":")[0]
        return f"{scheme}:{HIDDEN}" if scheme and scheme.isalnum() else HIDDEN


def url_secrets(url: str | None) -> list[str]:
    """Every password this URL (or PGPASSWORD) carries, as written and as decoded."""
    found: list[str] = []
    if url:
        try:
            parts = urlsplit(url)
            userinfo = parts.netloc.rpartition("@")[0]
            if ":" in userinfo:
                found.append(userinfo.partition(":")[2])
            found += [v for k, v in parse_qsl(parts.query) if k.lower() in _SECRET_PARAMETERS]
        except ValueError:
            # Unparseable: everything between the scheme and the last '@' may be a password.
            head = url.partition("://")[2].rpartition("@")[0]
            if head:
                found.append(head)
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
