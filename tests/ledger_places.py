"""Where the ledger tests open their ledger: SQLite under a temporary state_dir, or PostgreSQL
in a throwaway schema of the local server (skipped there, failing on CI, when it is missing:
tests/postgres.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from target_klaviyo.ledger.store import Ledger, open_ledger
from tests.postgres import PostgresSettings, require_postgres, schema_name

KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@dataclass(frozen=True)
class LedgerPlace:
    kind: str
    state_dir: Path
    url: str | None  # None: SQLite
    schema: str

    def open(self, *, read_only: bool = False) -> Ledger:
        return open_ledger(self.state_dir, url=self.url, schema=self.schema, read_only=read_only)

    def args(self) -> list[str]:
        """How a helper process opens the same ledger (see its argv parsing)."""
        return [str(self.state_dir), self.url or "", self.schema]


@contextmanager
def ledger_place(kind: str, tmp_path: Path) -> Iterator[LedgerPlace]:
    state_dir = tmp_path / "state"
    if kind == "sqlite":
        yield LedgerPlace(kind, state_dir, None, "unused")
        return
    settings = PostgresSettings.from_env()
    require_postgres(settings)
    with schema_name(settings) as name:
        yield LedgerPlace(kind, state_dir, settings.url(), name)
