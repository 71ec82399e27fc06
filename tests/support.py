"""Running target-klaviyo the way users do: the CLI, a config file and Singer lines on stdin."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def schema_message(
    stream: str,
    properties: Mapping[str, Any],
    key_properties: Sequence[str] = (),
) -> dict[str, Any]:
    return {
        "type": "SCHEMA",
        "stream": stream,
        "schema": {"type": "object", "properties": dict(properties)},
        "key_properties": list(key_properties),
    }


def record_message(stream: str, record: Mapping[str, Any], version: int | None = None) -> dict:
    message: dict[str, Any] = {"type": "RECORD", "stream": stream, "record": dict(record)}
    if version is not None:
        message["version"] = version
    return message


def state_message(value: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "STATE", "value": dict(value)}


def activate_version_message(stream: str, version: int) -> dict[str, Any]:
    return {"type": "ACTIVATE_VERSION", "stream": stream, "version": version}


# Column types that cover what taps send for customers, orders and audiences.
STRING = {"type": ["string", "null"]}
INTEGER = {"type": ["integer", "null"]}
NUMBER = {"type": ["number", "null"]}
DATETIME = {"type": ["string", "null"], "format": "date-time"}
BOOLEAN = {"type": ["boolean", "null"]}


def singer_lines(messages: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(message) + "\n" for message in messages)


def stream_messages(
    stream: str,
    properties: Mapping[str, Any],
    records: Iterable[Mapping[str, Any]],
    key_properties: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """SCHEMA then one RECORD per record."""
    return [schema_message(stream, properties, key_properties)] + [
        record_message(stream, record) for record in records
    ]


def base_config(emulator: Any, state_dir: Path, streams: Mapping[str, Any], **extra: Any) -> dict:
    config = {
        "private_api_key": emulator.private_key,
        "api_base_url": emulator.base_url,
        "state_dir": str(state_dir),
        "streams": dict(streams),
        "progress_interval_s": 0,
    }
    config.update(extra)
    return config


@dataclass
class TargetRun:
    exit_code: int
    stdout: str
    stderr: str
    state_dir: Path | None = None
    states: list[dict[str, Any]] = field(default_factory=list)

    @property
    def summary(self) -> dict[str, Any]:
        assert self.state_dir is not None
        return json.loads((self.state_dir / "last_run.json").read_text())

    def stream(self, name: str) -> dict[str, Any]:
        return self.summary["streams"][name]

    def rejects(self, path: Path | None = None) -> list[dict[str, Any]]:
        assert self.state_dir is not None
        target = path or self.state_dir / "rejects.jsonl"
        if not target.exists():
            return []
        return [json.loads(line) for line in target.read_text().splitlines() if line]

    def assert_accounted(self) -> None:
        """Every record read ends loaded, unchanged, rejected or on hold (README)."""
        for name, stats in self.summary["streams"].items():
            outcomes = stats["loaded"] + stats["unchanged"] + stats["rejected"] + stats["on_hold"]
            assert stats["read"] == outcomes, f"{name}: {stats}"


def run_target(
    config: Mapping[str, Any] | Path,
    input_text: str,
    tmp_path: Path,
    *,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> TargetRun:
    """Run `python -m target_klaviyo --config FILE` with `input_text` on stdin."""
    if isinstance(config, Path):
        config_path = config
        state_dir = None
    else:
        config_path = tmp_path / f"config-{os.urandom(4).hex()}.json"
        config_path.write_text(json.dumps(config))
        state_dir = Path(config["state_dir"]) if config.get("state_dir") else None
    run_env = {**os.environ, **(env or {})}
    run_env.setdefault("PYTHONPATH", str(REPO))
    proc = subprocess.run(
        [sys.executable, "-m", "target_klaviyo", "--config", str(config_path), *args],
        input=input_text,
        capture_output=True,
        text=True,
        env=run_env,
        timeout=timeout,
        check=False,
        cwd=tmp_path,
    )
    states = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    return TargetRun(proc.returncode, proc.stdout, proc.stderr, state_dir, states)


def run_checked(
    emulator: Any, config: Mapping[str, Any], messages: Iterable[Mapping[str, Any]], tmp_path: Path
) -> TargetRun:
    """A run that must go well: exit 0, every record accounted for, every write Klaviyo
    queued applied, and no phone number silently dropped by Klaviyo."""
    result = run_target(config, singer_lines(messages), tmp_path)
    assert result.exit_code == 0, result.stderr
    assert emulator.wait_idle()
    result.assert_accounted()
    assert emulator.silent_drops == []
    return result


class Running:
    """target-klaviyo in a process whose stdin the test writes at its own pace."""

    def __init__(self, config: dict[str, Any], tmp_path: Path, prefix: Sequence[str] = ()) -> None:
        """`prefix`: what the command runs under (`taskset -c 0,1`)."""
        self.state_dir = Path(config["state_dir"])
        path = tmp_path / f"config-{os.urandom(3).hex()}.json"
        path.write_text(json.dumps(config))
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "target_klaviyo", "--config", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        self._feeder: threading.Thread | None = None

    def write(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text)
        self.proc.stdin.flush()

    def feed(self, text: str) -> None:
        """The whole input at once, from a thread, then its end: the run reads it while the
        test goes on."""
        stdin = self.proc.stdin
        assert stdin is not None
        self.proc.stdin = None  # closed by the feeder

        def feed() -> None:
            try:
                stdin.write(text)
                stdin.close()
            except BrokenPipeError:  # the run ended before reading it all
                pass

        self._feeder = threading.Thread(target=feed, daemon=True)
        self._feeder.start()

    def close_input(self) -> None:
        """The tap finished: end of input."""
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.stdin = None

    def signal(self, number: int = signal.SIGTERM) -> None:
        self.proc.send_signal(number)

    def finish(self, timeout: float = 60) -> tuple[int, list[dict[str, Any]], str]:
        if self._feeder is not None:
            self._feeder.join(timeout)
        stdout, stderr = self.proc.communicate(timeout=timeout)
        states = [json.loads(line) for line in stdout.splitlines() if line.strip()]
        return self.proc.returncode, states, stderr

    def summary(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "last_run.json").read_text())
