"""A local stand-in for the GetImage.io API, for the demo, the tests and DAG authors' own tests.

Never imported by the provider's runtime code. :class:`Emulator` (and its aiohttp dependency) is
loaded lazily, so importing this package (as the pytest plugin does in every test run) stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_getimage.emulator.config import DEFAULT_API_KEY, EmulatorConfig, Fault

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator.runner import Emulator

__all__ = ["DEFAULT_API_KEY", "Emulator", "EmulatorConfig", "Fault"]


def __getattr__(name: str) -> Any:
    """Import :class:`Emulator` on first use only."""
    if name == "Emulator":
        from airflow_provider_getimage.emulator.runner import Emulator

        return Emulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
