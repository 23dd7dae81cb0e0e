"""What the emulator decides (``state.py``): outcomes, timing, counters, reset, runtime knobs."""

from __future__ import annotations

import time

import pytest
import requests

from airflow_provider_getimage.emulator import EmulatorConfig, Fault
from airflow_provider_getimage.emulator.state import EmulatorState
from tests.emulator.helpers import (
    get,
    submit,
    wait_terminal,
)


def test_failing_prompt_ends_failed_with_message(start_emulator):
    emulator = start_emulator(latency=0.1, failing_prompts=("Forbidden",))
    bad = submit(emulator, prompt="something FORBIDDEN here").json()["id"]
    good = submit(emulator, prompt="something fine").json()["id"]
    failed = wait_terminal(emulator, bad)
    assert failed["status"] == "FAILED"
    assert "content filter" in failed["message"]
    assert "images" not in failed
    assert wait_terminal(emulator, good)["status"] == "FINISHED"


def test_failure_rate_one_fails_everything(start_emulator):
    emulator = start_emulator(latency=0, failure_rate=1.0)
    ids = [submit(emulator, prompt=f"p{i}").json()["id"] for i in range(3)]
    for diffusion_id in ids:
        record = wait_terminal(emulator, diffusion_id)
        assert record["status"] == "FAILED"
        assert record["message"]
    assert {d["outcome"] for d in emulator.diffusions()} == {"FAILED"}


def test_latency_jitter_is_seeded(start_emulator):
    def latencies(seed: int) -> list[float]:
        emulator = start_emulator(latency=10, latency_jitter=5, seed=seed)
        for i in range(5):
            submit(emulator, prompt=f"p{i}")
        return [round(d["finishes_at"] - d["created_at"], 3) for d in emulator.diffusions()]

    first, again = latencies(7), latencies(7)
    assert first == again
    assert all(5 <= value <= 15 for value in first)
    assert len(set(first)) > 1


def test_runtime_configure_changes_new_diffusions(emu):
    quick = submit(emu).json()["id"]
    config = emu.configure(latency=60, failing_prompts=["nope"], api_keys="new-key")
    assert config.failing_prompts == ("nope",)
    assert config.api_keys == ("new-key",)
    assert emu.api_key == "new-key"
    slow = submit(emu).json()["id"]
    time.sleep(0.35)
    assert get(emu, quick).json()["status"] == "FINISHED"
    assert get(emu, slow).json()["status"] == "NEW"  # NEW lasts min(10% of latency, 1 s)
    with pytest.raises(ValueError, match="unknown knob"):
        emu.configure(not_a_knob=1)
    with pytest.raises(ValueError, match="cannot change while running"):
        emu.configure(tls=True)


def test_stats_count_requests_polls_and_responses(emu):
    session = requests.Session()
    first = submit(emu, session).json()["id"]
    second = submit(emu, session).json()["id"]
    for _ in range(3):
        get(emu, first, session)
    get(emu, second, session)
    get(emu, "unknown", session)
    submit(emu, session, prompt="")
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["requests"] == 8
    assert stats["submissions"] == 2
    assert stats["diffusions"] == 2
    assert stats["polls"] == 5
    assert stats["polls_by_id"] == {first: 3, second: 1, "unknown": 1}
    assert stats["responses_by_status"] == {"200": 4, "201": 2, "400": 1, "404": 1}
    assert stats["rate_limited"] == stats["dropped"] == stats["faults_served"] == 0
    assert stats == {**emu.stats(), "connections": stats["connections"]}


def test_reset_clears_diffusions_stats_and_faults(emu):
    diffusion_id = submit(emu).json()["id"]
    emu.inject(Fault("status", status=500, times=5))
    assert requests.post(f"{emu.url}/_emulator/reset", timeout=5).status_code == 200
    stats = emu.stats()
    assert stats["diffusions"] == stats["submissions"] == stats["requests"] == 0
    assert stats["faults_pending"] == 0
    assert emu.diffusions() == []
    assert get(emu, diffusion_id).status_code == 404  # no fault left, diffusion gone
    assert emu.config.latency == 0.3  # knobs survive a reset


# -- admission, without a socket: the knobs and the scripts give the same fault type ---------------

POLL = ("GET", "/v1/diffusions/some-id")
SUBMIT = ("POST", "/v1/diffusions")


def test_rate_limit_gives_the_429_a_test_would_script():
    state = EmulatorState(EmulatorConfig(rate_limit=1, retry_after=1.5))
    assert state.admit(*POLL) is None
    assert state.admit(*POLL) == Fault("status", status=429, retry_after="2")
    stats = state.stats()
    assert stats["rate_limited"] == 1
    assert stats["faults_served"] == 0


@pytest.mark.parametrize(
    ("knob", "request_", "kinds"),
    [
        pytest.param("error_rate", SUBMIT, {("status_after", 500), ("status_after", 502), ("status", 503)}),
        pytest.param("error_rate", POLL, {("status", 500), ("status", 502), ("status", 503)}),
        pytest.param("drop_rate", SUBMIT, {("drop", None), ("drop_after", None)}),
        pytest.param("drop_rate", POLL, {("drop", None)}),
    ],
)
def test_random_knobs_draw_faults(knob, request_, kinds):
    state = EmulatorState(EmulatorConfig(seed=1).updated({knob: 1.0}))
    drawn = [state.admit(*request_) for _ in range(40)]
    assert {(fault.kind, fault.status) for fault in drawn if fault is not None} == kinds
    assert None not in drawn


def test_scripted_faults_come_first_and_count_down():
    state = EmulatorState(EmulatorConfig(drop_rate=1.0))
    queued = Fault("diffusion_status", value="QUEUED", times=2)
    state.add_faults([queued, Fault("status", status=500)])
    assert state.admit(*SUBMIT) == Fault("status", status=500)  # a POST skips diffusion_status
    assert state.admit(*POLL) == queued
    assert state.pending_faults() == [{**queued.to_dict(), "remaining": 1}]
    assert state.admit(*POLL) == queued
    assert state.pending_faults() == []
    assert state.admit(*POLL) == Fault("drop")  # script used up: the knob draws again
    stats = state.stats()
    assert stats["faults_served"] == 3
    assert stats["dropped"] == 1
    assert stats["polls"] == 3
