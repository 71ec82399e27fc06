"""Shared fixture: a fresh Klaviyo emulator per test (see tests/emulator/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.emulator import Emulator


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "emulator(**kwargs): options for the `emulator` fixture, e.g. "
        "@pytest.mark.emulator(window_scale=0.01, job_delay_s=0)",
    )


@pytest.fixture
def emulator(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """A started emulator on an ephemeral loopback port.

    Options come from ``@pytest.mark.emulator(...)`` (Emulator's keyword arguments). At teardown
    the test fails if the emulator recorded request violations (schema or limit failures) other
    than the number it declared with ``emulator.expect_violations(n)``.
    """
    marker = request.node.get_closest_marker("emulator")
    options = dict(marker.kwargs) if marker else {}
    instance = Emulator(**options).start()
    try:
        yield instance
    finally:
        instance.stop()
    problem = instance.unexpected_violations()
    if problem:
        pytest.fail(problem, pytrace=False)
