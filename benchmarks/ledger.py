"""skip_unchanged hashes in the ledger: SQLite under a state_dir against PostgreSQL.

    python -m benchmarks.ledger [--hashes 1000000] [--url postgresql://...]

Writes N hashes as a run does (`remember_sent` in batches of 10,000, then `flush_sent`), closes
and reopens the ledger, and reads every hash back through `unchanged()` in batches of 10,000,
as the sinks do; for each backend it prints the seconds of the write and of the read. Goal:
PostgreSQL within the same order of time as SQLite (PG ÷ SQLite ≤ 10, write and read alike),
printed as PASS or MISS. PostgreSQL is the server the tests use (PG* variables or
127.0.0.1:5432, database `test`, see tests/postgres.py), or `--url`; a throwaway schema is
dropped afterwards, and an unreachable server is reported and skipped. The exit code is 0
whatever the figures.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from target_klaviyo.ledger.errors import redact_url
from target_klaviyo.ledger.store import Ledger, open_ledger

BATCH = 10_000  # hashes per sink batch, as in target_klaviyo/sinks/base.py
GOAL_RATIO = 10.0


@dataclass(frozen=True)
class Figures:
    write_s: float
    read_s: float


def hashes(count: int, seed: int = 1) -> list[tuple[int, int]]:
    """`count` distinct (key, digest) pairs, signed 64-bit, in no particular order."""
    rng = random.Random(seed)
    pairs: dict[int, int] = {}
    while len(pairs) < count:
        pairs[rng.getrandbits(64) - 2**63] = rng.getrandbits(64) - 2**63
    return list(pairs.items())


def measure(open_one: Callable[[], Ledger], pairs: list[tuple[int, int]]) -> Figures:
    ledger = open_one()
    started = time.perf_counter()
    for start in range(0, len(pairs), BATCH):
        ledger.remember_sent(pairs[start : start + BATCH])
    ledger.flush_sent()
    write_s = time.perf_counter() - started
    ledger.close()

    ledger = open_one()
    started = time.perf_counter()
    found = 0
    for start in range(0, len(pairs), BATCH):
        found += len(ledger.unchanged(pairs[start : start + BATCH]))
    read_s = time.perf_counter() - started
    ledger.close()
    if found != len(pairs):
        raise SystemExit(f"read back {found:,} of {len(pairs):,} hashes")
    return Figures(write_s, read_s)


def postgres_url() -> str:
    from tests.postgres import PostgresSettings

    return PostgresSettings.from_env().url()


def postgres_problem(url: str) -> str | None:
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'target-klaviyo[postgres]')"
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("select 1")
    except psycopg.Error as exc:
        return f"{redact_url(url)} is not reachable: {' '.join(str(exc).split())}"
    return None


def drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(schema)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hashes", type=int, default=1_000_000)
    parser.add_argument("--url", help="PostgreSQL URL (default: the tests' server)")
    args = parser.parse_args()
    pairs = hashes(args.hashes)
    print(f"{len(pairs):,} skip_unchanged hashes, written and read in batches of {BATCH:,}")

    with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        sqlite = measure(lambda: open_ledger(state_dir), pairs)
    print(f"sqlite      write {sqlite.write_s:7.2f} s   read {sqlite.read_s:7.2f} s")

    url = args.url or postgres_url()
    problem = postgres_problem(url)
    if problem is not None:
        print(f"postgresql  skipped: {problem}")
        return
    schema = f"tk_bench_{uuid.uuid4().hex[:10]}"
    try:
        with tempfile.TemporaryDirectory(prefix="ledger-bench-") as tmp:
            pg = measure(lambda: open_ledger(tmp, url=url, schema=schema), pairs)
    finally:
        drop_schema(url, schema)
    print(f"postgresql  write {pg.write_s:7.2f} s   read {pg.read_s:7.2f} s   ({redact_url(url)})")
    for what, ratio in (
        ("write", pg.write_s / sqlite.write_s),
        ("read", pg.read_s / sqlite.read_s),
    ):
        verdict = "PASS" if ratio <= GOAL_RATIO else "MISS"
        print(f"{what:5} PG ÷ SQLite {ratio:5.2f}   goal ≤ {GOAL_RATIO:.0f}   {verdict}")


if __name__ == "__main__":
    main()
