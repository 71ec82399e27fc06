"""``python -m tests.emulator --port PORT``: serve the Klaviyo emulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
from types import FrameType

from .server import Emulator


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.emulator", description="Klaviyo API emulator"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--window-scale",
        type=float,
        default=1.0,
        help="multiply rate-limit window lengths (e.g. 0.01 for fast tests)",
    )
    parser.add_argument(
        "--job-delay",
        type=float,
        default=0.05,
        help="seconds a bulk job / event batch waits before it is applied",
    )
    parser.add_argument(
        "--job-latency",
        type=float,
        default=None,
        help="seconds after its own submission each bulk import job completes (jobs run side by "
        "side; without it jobs run one after another, each taking --job-delay)",
    )
    parser.add_argument(
        "--no-validate", action="store_true", help="skip JSON-schema validation of request bodies"
    )
    parser.add_argument("--unthrottled", action="store_true", help="disable rate limiting")
    parser.add_argument(
        "--supported-regions",
        default=None,
        help="comma-separated ISO regions the account can send SMS to",
    )
    args = parser.parse_args(argv)
    # Klaviyo answers a request whatever it is processing behind it: request threads get the
    # interpreter sooner while the worker thread applies queued jobs and events (the default
    # 5 ms switch interval would add its wait to every answer).
    sys.setswitchinterval(0.0005)

    regions = None
    if args.supported_regions:
        regions = {r.strip().upper() for r in args.supported_regions.split(",") if r.strip()}
    emulator = Emulator(
        host=args.host,
        port=args.port,
        window_scale=args.window_scale,
        job_delay_s=args.job_delay,
        job_latency_s=args.job_latency,
        validate=not args.no_validate,
        throttle=not args.unthrottled,
        supported_regions=regions,
    ).start()
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sys.stdout.write(
        f"Klaviyo emulator at {emulator.base_url} "
        f"(private key {emulator.private_key}, public key {emulator.public_key})\n"
    )
    sys.stdout.flush()
    try:
        while not done.wait(0.5):
            # What the emulator stores (profiles, events, jobs) lives as long as the process:
            # moved out of the collector's sight, later collections do not rescan millions of
            # objects each time a request body is parsed.
            gc.freeze()
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
