"""Validation of the knobs and the scripted faults (``config.py``)."""

from __future__ import annotations

import pytest

from airflow_provider_getimage.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, Fault


def test_config_validation_and_knobs():
    config = EmulatorConfig(api_keys="single", failing_prompts=["a", "b"])  # type: ignore[arg-type]
    assert config.api_keys == ("single",)
    assert config.failing_prompts == ("a", "b")
    assert EmulatorConfig().api_keys == (DEFAULT_API_KEY,) == ("emulator-key",)
    assert Emulator(EmulatorConfig(latency=5), seed=3).config == EmulatorConfig(latency=5, seed=3)
    for bad in (
        {"failure_rate": 1.5},
        {"error_rate": -0.1},
        {"latency": -1},
        {"image_format": "dicts"},
        {"api_keys": ()},
        {"rate_limit": 0},
        {"image_size": 0},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each bad knob has its own message
            EmulatorConfig(**bad)
    with pytest.raises(ValueError, match="unknown knob"):
        Emulator(latencyy=1)


def test_fault_validation():
    assert Fault("drop", method="get").method == "GET"
    assert Fault("status", status=429, retry_after=1.2).retry_after == "2"  # type: ignore[arg-type]
    assert Fault.from_dict({"kind": "delay", "delay": 1}).delay == 1
    for bad in (
        {"kind": "nope"},
        {"kind": "status"},
        {"kind": "body"},
        {"kind": "diffusion_status"},
        {"kind": "drop", "times": 0},
        {"kind": "drop", "unknown": 1},
        {},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each bad fault has its own message
            Fault.from_dict(bad)
