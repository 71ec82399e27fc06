"""The README's first command: the demo loads the examples into the emulator and shows them."""

from __future__ import annotations

import subprocess
import sys

from tests.support import REPO


def test_the_demo_runs_and_shows_what_klaviyo_holds() -> None:
    proc = subprocess.run(
        [sys.executable, "scripts/demo.py"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "The emulator now holds 7 profiles" in out  # one forgotten by forget_me
    assert "+442079460018" in out  # a UK number written nationally, sent as E.164
    assert "list 'Newsletter'" in out and "5 members" in out
    assert "8 events of 'Placed Order'" in out  # the repeated order is sent once
    assert "not-an-email" in out  # the rejected record, with its reason
    assert "2 profiles suppressed: alan@example.com, katherine@example.com" in out
    assert out.count("privacy deletion of") == 1  # requested once, not again on the re-run
    assert "6 catalog items" in out
    assert "$custom:::$default:::TEA-001" in out and "'brand': 'Harrow & Sons'" in out
    second_run = out.split("Second run")[1]
    assert "loaded" in second_run
    assert "bulk_import_profiles" not in second_run.split("The emulator now holds")[0]
    assert "bulk_create_catalog_items" not in second_run.split("The emulator now holds")[0]
