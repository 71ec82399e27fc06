"""Child processes: the emulator, and measured runs (wall time and the child's own peak RSS)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


class Emulator:
    """``python -m tests.emulator`` in its own process."""

    def __init__(self, *args: str, log: Path) -> None:
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.emulator", "--port", "0", *args],
            cwd=REPO,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=self._log,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        if not line.startswith("Klaviyo emulator at "):
            self.stop()
            raise RuntimeError(f"the emulator did not start: {line!r} (see {log})")
        self.base_url = line.split()[3]
        self.private_key = line.split("private key ")[1].split(",")[0]

    def control(self, method: str, route: str, payload: Any = None) -> Any:
        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(
            f"{self.base_url}/_emulator{route}", data=data, method=method
        )
        with urllib.request.urlopen(request, timeout=600) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self.control("POST", "/reset")

    def cpu_s(self) -> float:
        """The emulator's CPU time so far (user + system, all threads): on a small machine
        it shares the cores with the run it serves, where Klaviyo's work is remote."""
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return float("nan")  # no procfs
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Measured:
    exit_code: int
    wall_s: float
    cpu_s: float
    peak_rss_kb: int
    stderr_path: Path
    started_at: float  # time.time() at launch
    rss_samples: list[tuple[float, int]]  # (seconds since launch, VmRSS in KB)

    @property
    def peak_rss_mb(self) -> float:
        return self.peak_rss_kb / 1024

    def rss_profile(self, parts: int = 10) -> list[float]:
        """Highest sampled RSS (MB) in each of ``parts`` equal slices of the run."""
        peaks = [0.0] * parts
        for at, rss_kb in self.rss_samples:
            index = min(parts - 1, int(at / self.wall_s * parts)) if self.wall_s else 0
            peaks[index] = max(peaks[index], rss_kb / 1024)
        return peaks


def _sample_rss(pid: int, started: float, out: list[tuple[float, int]], stop: threading.Event):
    status = Path(f"/proc/{pid}/status")
    while not stop.wait(0.25):
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmRSS:"):
                    out.append((time.perf_counter() - started, int(line.split()[1])))
                    break
        except (OSError, ValueError):
            return


def run_measured(args: list[str], stdin: Path, stderr_path: Path, cwd: Path) -> Measured:
    """Run ``args`` with ``stdin`` from a file; wall time, CPU time and peak RSS of that child.

    ``os.wait4`` returns the resource usage of that one child (ru_maxrss, KB on Linux), so the
    figures of earlier children do not leak in. VmRSS is also sampled every 0.25 s, to show
    how memory evolves during the run.
    """
    with stdin.open("rb") as source, stderr_path.open("wb") as err:
        started_at = time.time()
        started = time.perf_counter()
        proc = subprocess.Popen(
            args, stdin=source, stdout=subprocess.DEVNULL, stderr=err, cwd=cwd, env=_env()
        )
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(
            target=_sample_rss, args=(proc.pid, started, samples, stop), daemon=True
        )
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        stop.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        proc.returncode,
        wall,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss,
        stderr_path,
        started_at,
        samples,
    )


def target_args(config: Path) -> list[str]:
    return [sys.executable, "-m", "target_klaviyo", "--config", str(config)]


def noop_args(config: Path) -> list[str]:
    return [sys.executable, "-m", "benchmarks.noop_target", "--config", str(config)]


def tail(path: Path, lines: int = 15) -> str:
    text = path.read_text(errors="replace").splitlines()
    return "\n".join(text[-lines:])
