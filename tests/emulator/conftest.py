"""Fixtures of the emulator tests: emulators with short latencies, stopped at teardown."""

from __future__ import annotations

import pytest

from airflow_provider_getimage.emulator import Emulator


@pytest.fixture
def start_emulator():
    """Start emulators with short latencies; all stopped at teardown.

    Local rather than the plugin's fixture so these tests run whether or not the package
    (and so its ``pytest11`` entry point) is installed; the plugin has its own tests in
    ``test_pytest_plugin.py``.
    """
    started: list[Emulator] = []

    def start(**knobs) -> Emulator:
        emulator = Emulator(**{"latency": 0.3, "seed": 0, **knobs})
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(start_emulator) -> Emulator:
    return start_emulator()
