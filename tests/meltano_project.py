"""Meltano 4.4.1 the way the end-to-end tests drive it: installed once in a cached venv, run in
scratch projects with a clean environment, loading from the real tap-postgres.

Meltano lives in a venv outside the project's (its pins - sqlalchemy<2.1, click<8.6 - may clash
with ours): `$TARGET_KLAVIYO_TEST_CACHE` or `~/.cache/target-klaviyo-tests/meltano-4.4.1-py3.X`,
created once and reused. `meltano install` puts the plugins into each scratch project's
`.meltano/`; the package caches (uv's, pip's) make that fast after the first time.

Set TARGET_KLAVIYO_E2E_LOGS=<dir> to keep the full output of every Meltano command.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.postgres import PostgresSettings

REPO = Path(__file__).resolve().parent.parent
MELTANO_VERSION = "4.4.1"
TAP_POSTGRES = "meltanolabs-tap-postgres==0.10.0"
INSTALL_TIMEOUT_S = 900  # `meltano install`: tap-postgres and the target from PyPI
RUN_TIMEOUT_S = 300


# -- Meltano in a cached venv ----------------------------------------------------------------


def cache_dir() -> Path:
    configured = os.environ.get("TARGET_KLAVIYO_TEST_CACHE")
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "target-klaviyo-tests"


def venv_bin(venv: Path, name: str) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / name


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock, so that parallel test processes build the venv once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for Meltano: no trace of the project's venv or of a developer's key."""
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "MELTANO_PROJECT_ROOT"}
        and not key.startswith(("TARGET_KLAVIYO_", "TAP_POSTGRES_", "MELTANO_"))
    }
    env.update(
        MELTANO_SEND_ANONYMOUS_USAGE_STATS="false",
        MELTANO_CLI_DISABLE_VERSION_CHECK="true",
        MELTANO_CLI_LOG_LEVEL="info",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(
    args: Sequence[str | Path], *, cwd: Path, env: Mapping[str, str], timeout: float, what: str
) -> subprocess.CompletedProcess[str]:
    """Run a command, stderr folded into stdout; fail with the output's tail."""
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [str(arg) for arg in args],
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        pytest.fail(f"{what}: no result after {timeout:.0f} s\n{tail(output)}", pytrace=False)
    elapsed = time.monotonic() - started
    sys.stderr.write(f"[e2e] {what}: exit {proc.returncode} in {elapsed:.1f} s\n")
    if os.environ.get("TARGET_KLAVIYO_E2E_LOGS"):  # keep every command's output for debugging
        logs = Path(os.environ["TARGET_KLAVIYO_E2E_LOGS"])
        logs.mkdir(parents=True, exist_ok=True)
        name = "".join(c if c.isalnum() else "-" for c in what)
        (logs / f"{name}.log").write_text(proc.stdout)
    if proc.returncode != 0:
        pytest.fail(f"{what} exited {proc.returncode}\n{tail(proc.stdout)}", pytrace=False)
    return proc


def meltano_executable() -> Path:
    """Meltano 4.4.1 in a venv of its own under the cache dir, created once and reused.

    The venv is built in place (its scripts name the interpreter by absolute path) and marked
    complete at the end; a half-built one, e.g. after an interrupted install, is rebuilt.
    """
    tag = f"meltano-{MELTANO_VERSION}-py{sys.version_info.major}.{sys.version_info.minor}"
    venv = cache_dir() / tag
    meltano = venv_bin(venv, "meltano")
    stamp = venv / ".complete"
    if stamp.exists() and meltano.exists():
        return meltano
    with locked(cache_dir() / f"{tag}.lock"):
        if stamp.exists() and meltano.exists():
            return meltano
        shutil.rmtree(venv, ignore_errors=True)
        env = clean_env()
        run(
            [sys.executable, "-m", "venv", venv],
            cwd=cache_dir(),
            env=env,
            timeout=300,
            what="python -m venv (for Meltano)",
        )
        run(
            [venv_bin(venv, "python"), "-m", "pip", "install", f"meltano=={MELTANO_VERSION}"],
            cwd=cache_dir(),
            env=env,
            timeout=INSTALL_TIMEOUT_S,
            what=f"pip install meltano=={MELTANO_VERSION}",
        )
        stamp.write_text(f"meltano=={MELTANO_VERSION}\n")
    return meltano


# -- the extractor -----------------------------------------------------------------------------


def tap_postgres_extractor(
    pg: PostgresSettings, schema: str, replication_keys: Mapping[str, str]
) -> dict[str, Any]:
    """tap-postgres reading the tables of one schema, each incrementally on its replication key
    (`{table: column}`); its streams are named `<schema>-<table>`."""
    return {
        # Defined in full (namespace, settings) so Meltano needs no Hub lookup:
        # only PyPI is reachable from CI and from the test machines.
        "name": "tap-postgres",
        "variant": "meltanolabs",
        "namespace": "tap_postgres",
        "pip_url": TAP_POSTGRES,
        "executable": "tap-postgres",
        "capabilities": ["catalog", "discover", "state", "about", "stream-maps"],
        "settings": [
            {"name": "host", "kind": "string"},
            {"name": "port", "kind": "integer"},
            {"name": "user", "kind": "string"},
            {"name": "password", "kind": "string", "sensitive": True},
            {"name": "database", "kind": "string"},
            {"name": "filter_schemas", "kind": "array"},
        ],
        "config": {
            "host": pg.host,
            "port": pg.port,
            "user": pg.user,
            "database": pg.database,
            "filter_schemas": [schema],
            # tap-postgres insists on a password; a trust-auth server (CI's, the test
            # machines') ignores it.
            "password": pg.password or "postgres",
        },
        "metadata": {
            f"{schema}-{table}": {
                "replication-method": "INCREMENTAL",
                "replication-key": column,
            }
            for table, column in replication_keys.items()
        },
    }
