"""A stateful stand-in for Klaviyo's REST API, for tests, the demo and benchmarks.

    from tests.emulator import Emulator

    with Emulator(window_scale=0.01) as em:
        ...  # point the target at em.base_url with em.private_key

Run alone with ``python -m tests.emulator --port 0`` (from the repository root).
"""

from .server import PRIVATE_KEY, PUBLIC_KEY, Emulator, LoggedRequest

__all__ = ["PRIVATE_KEY", "PUBLIC_KEY", "Emulator", "LoggedRequest"]
