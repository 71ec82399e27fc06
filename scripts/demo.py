"""The demo: examples/*.singer through target-klaviyo into the local Klaviyo emulator.

Starts the emulator on loopback, writes a config pointing at it (from examples/config.json),
runs the target twice (the second run shows skip_unchanged at work) and prints what the
emulator now holds. Nothing leaves this machine.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKDIR = REPO / ".demo"
BANNER = re.compile(r"at (http://\S+) \(private key (\S+), public key (\S+)\)")


def start_emulator() -> tuple[subprocess.Popen[str], str, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.emulator", "--port", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = BANNER.search(line)
    if not match:
        proc.terminate()
        raise SystemExit(f"the emulator did not start: {line!r}")
    return proc, match.group(1), match.group(2)


def run_target(config_path: Path, title: str) -> None:
    print(f"\n=== {title}", flush=True)
    stdin = "".join(
        (REPO / "examples" / name).read_text()
        for name in (
            "customers.singer",
            "orders.singer",
            "newsletter.singer",
            "do_not_contact.singer",
            "forget_me.singer",
            "products.singer",
        )
    )
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("target-klaviyo")), "--config", str(config_path)],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    # The target logs to stderr; show its summary table and anything that went wrong.
    in_summary = False
    for line in proc.stderr.splitlines():
        in_summary = in_summary or "Run summary" in line
        if in_summary or "ERROR" in line or "WARNING" in line:
            print("  " + line.split(" | ")[-1] if " | " in line else "  " + line)
    for state in proc.stdout.splitlines():
        print(f"  STATE passed on: {state}")
    if proc.returncode != 0:
        raise SystemExit(f"target-klaviyo exited with {proc.returncode}")


def show_emulator(base_url: str) -> None:
    with urllib.request.urlopen(f"{base_url}/_emulator/state", timeout=10) as response:
        state = json.load(response)
    profiles = state["profiles"]
    print(f"\n=== The emulator now holds {len(profiles)} profiles")
    for profile in profiles[:8]:
        attributes = profile["attributes"]
        props = profile.get("properties") or {}
        print(
            f"  {attributes.get('email') or '-':28} {attributes.get('phone_number') or '-':15}"
            f" {attributes.get('first_name') or ''} {attributes.get('last_name') or ''}"
            f"  tier={props.get('loyalty_tier', '-')}"
        )
    for list_id, data in state["lists"].items():
        print(f"  list {data['name']!r} ({list_id}): {len(data['members'])} members")
    metrics = Counter(event["metric"] for event in state["events"])
    for metric, count in metrics.items():
        print(f"  {count} events of {metric!r}")
    suppressed = sorted(
        profile["attributes"]["email"]
        for profile in profiles
        if any(entry["reason"] == "USER_SUPPRESSED" for entry in profile.get("suppressions", ()))
    )
    print(f"  {len(suppressed)} profiles suppressed: {', '.join(suppressed)}")
    for deletion in state["deletions"]:
        print(f"  privacy deletion of {deletion['identifier']}: {deletion['status']}")
    items = state["catalog"]["items"]
    print(f"  {len(items)} catalog items")
    for item_id, item in list(items.items())[:4]:
        print(f"    {item_id:32} {item['title']:24} {item['price']:>6} {item['custom_metadata']}")


def main() -> None:
    shutil.rmtree(WORKDIR, ignore_errors=True)
    WORKDIR.mkdir()
    emulator, base_url, key = start_emulator()
    try:
        print(f"Klaviyo emulator running at {base_url}")
        config = json.loads((REPO / "examples" / "config.json").read_text())
        config.update(
            private_api_key=key,
            api_base_url=base_url,
            state_dir=str(WORKDIR / "state"),
            progress_interval_s=0,
        )
        config_path = WORKDIR / "config.json"
        config_path.write_text(json.dumps(config, indent=2))
        run_target(
            config_path, "First run: customers, orders, a newsletter list and a product catalog"
        )
        run_target(config_path, "Second run, same input: nothing changed, nothing sent")
        show_emulator(base_url)
        rejects = WORKDIR / "state" / "rejects.jsonl"
        if rejects.exists():
            print(f"\n=== Rejected records, with the reason ({rejects.relative_to(REPO)})")
            reasons = Counter(
                (entry["stream"], entry["reason"])
                for entry in map(json.loads, rejects.read_text().splitlines())
            )
            for (stream, reason), count in reasons.items():
                print(f"  {stream}: {reason} ({count} times: once per run)")
        print(f"\nConfig, ledger and last_run.json are in {WORKDIR.relative_to(REPO)}/")
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)


if __name__ == "__main__":
    main()
