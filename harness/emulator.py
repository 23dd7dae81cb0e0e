"""The emulator a deployment talks to, started with a key of its own."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator


def keyed_emulator(latency: float) -> Emulator:
    """
    A started emulator that accepts a key of its own, so a search of logs and tables has no false hit.

    Use it as a context manager (``with keyed_emulator(5) as emulator``) to have it stopped.
    """
    from airflow_provider_getimage.emulator import Emulator

    return Emulator(latency=latency, seed=0, api_keys=(f"e2e-key-{secrets.token_hex(12)}",)).start()
