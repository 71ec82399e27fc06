"""The local PostgreSQL the end-to-end tests load from: connection settings, a reachability
check that skips (or fails on CI), and throwaway schemas."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest


@dataclass(frozen=True)
class PostgresSettings:
    host: str
    port: int
    user: str
    password: str | None
    database: str

    @classmethod
    def from_env(cls) -> PostgresSettings:
        """The libpq variables when set, else the machine's default server."""
        return cls(
            host=os.environ.get("PGHOST", "127.0.0.1"),
            port=int(os.environ.get("PGPORT", "5432")),
            user=os.environ.get("PGUSER", "postgres"),
            password=os.environ.get("PGPASSWORD") or None,
            database=os.environ.get("PGDATABASE", "test"),
        )

    def conninfo(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": self.database,
            "connect_timeout": 5,
        }
        if self.password:
            info["password"] = self.password
        return info

    def url(self, database: str | None = None) -> str:
        """These settings as a `postgresql://` URL (what `ledger_url` takes)."""
        user = quote(self.user, safe="")
        if self.password:
            user += ":" + quote(self.password, safe="")
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"postgresql://{user}@{host}:{self.port}/{quote(database or self.database)}"


def on_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(reason: str) -> None:
    """Skip the test, except on CI (CI=true), where a missing service is a failure."""
    if on_ci():
        pytest.fail(f"{reason} (CI=true: the end-to-end test may not be skipped)", pytrace=False)
    pytest.skip(reason)


def require_postgres(settings: PostgresSettings) -> None:
    """Skip (or fail on CI) unless psycopg is importable and the server answers a query."""
    problem = postgres_problem(settings)
    if problem is not None:
        unavailable(problem)


def postgres_problem(settings: PostgresSettings) -> str | None:
    """Why the server cannot be used, or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install -e '.[test]')"
    where = f"PostgreSQL at {settings.host}:{settings.port}, database {settings.database!r}"
    try:
        with socket.create_connection((settings.host, settings.port), timeout=3):
            pass
    except OSError as exc:
        return f"{where} is not reachable: {exc}"
    try:
        with psycopg.connect(**settings.conninfo()) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return f"{where} refused a connection as {settings.user!r}: {exc}".strip()
    return None


@dataclass
class Schema:
    """A schema of its own in the test database; statements run in autocommit."""

    settings: PostgresSettings
    name: str

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        import psycopg

        with psycopg.connect(**self.settings.conninfo(), autocommit=True) as conn:
            conn.execute(f'set search_path to "{self.name}"')
            conn.execute(sql.encode(), params)

    def insert(self, table: str, rows: Sequence[dict[str, Any]]) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(**self.settings.conninfo(), autocommit=True) as conn:
            for row in rows:
                statement = sql.SQL("insert into {}.{} ({}) values ({})").format(
                    sql.Identifier(self.name),
                    sql.Identifier(table),
                    sql.SQL(", ").join(sql.Identifier(column) for column in row),
                    sql.SQL(", ").join(sql.Placeholder() for _ in row),
                )
                conn.execute(statement, list(row.values()))


@contextmanager
def temporary_schema(settings: PostgresSettings, prefix: str = "tk_e2e") -> Iterator[Schema]:
    """Create a uniquely named schema; drop it (and everything in it) afterwards."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(**settings.conninfo(), autocommit=True) as conn:
        conn.execute(sql.SQL("create schema {}").format(sql.Identifier(name)))
    try:
        yield Schema(settings, name)
    finally:
        with psycopg.connect(**settings.conninfo(), autocommit=True) as conn:
            # `<name>_ledger`: where a test keeps the target's ledger beside its tables.
            for each in (name, f"{name}_ledger"):
                conn.execute(
                    sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(each))
                )


@contextmanager
def schema_name(settings: PostgresSettings, prefix: str = "tk_ledger") -> Iterator[str]:
    """A unique schema name, not created (the code under test creates it); the schema is
    dropped afterwards if anything did."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    try:
        yield name
    finally:
        with psycopg.connect(**settings.conninfo(), autocommit=True) as conn:
            conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(name)))


def schema_exists(settings: PostgresSettings, name: str) -> bool:
    import psycopg

    with psycopg.connect(**settings.conninfo(), autocommit=True) as conn:
        return (
            conn.execute("select 1 from pg_namespace where nspname = %s", [name]).fetchone()
            is not None
        )
