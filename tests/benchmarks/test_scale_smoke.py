"""
Smoke test of ``make bench-scale`` (``benchmarks.trigger_polling --phases scale``) at a tiny size.

It checks that the phase runs end to end (emulator process with a rate limit during the polls,
one client per mode, the provider's triggers with and without the connection's shared limiter, and
the limiter-free baseline polling every N / R s)
and that its report has its shape. No performance verdict: the numbers are for the full run.
"""

from __future__ import annotations

import pytest

from tests.benchmarks.bench_cli import run_trigger_polling

N, RATE = 60, 20


@pytest.fixture(scope="module")
def scale_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """N = 60 triggers polling every 1 s (60/s asked) of a service that takes 20/s; about 40 s."""
    return run_trigger_polling(
        tmp_path_factory.mktemp("bench-scale"),
        *("--phases", "scale", "--scale-n", str(N), "--scale-rate", str(RATE), "--scale-interval", "1"),
        *("--scale-latency", "6", "--scale-jitter", "1", "--scale-max-seconds", "30"),
        timeout=240,
    )


def test_both_modes_detect_every_generation(scale_run):
    result, _stdout = scale_run
    runs = result["scale"]["runs"]
    modes = {(run["emulator_rate_limit"], run["max_requests_per_second"]) for run in runs}
    assert modes == {(float(RATE), None), (float(RATE), float(RATE)), (None, None)}
    for run in runs:
        assert run["submitted"] == N
        assert run["undetected"] == 0, run["error_samples"]
        assert run["client_errors"] == 0, run["error_samples"]
        assert run["requests"] >= N
        assert run["cpu_ms_per_request"] > 0


def test_the_limit_is_met_only_by_the_shared_limiter(scale_run):
    """Demand is 3x the service's limit: per trigger it answers 429s, with the shared limiter none."""
    result, _stdout = scale_run
    runs = {
        run["max_requests_per_second"]: run for run in result["scale"]["runs"] if run["emulator_rate_limit"]
    }
    assert runs[None]["share_429"] > 0.05
    assert runs[float(RATE)]["share_429"] <= 0.01
    assert runs[float(RATE)]["requests_per_s"] <= RATE * 1.05


def test_report_has_the_table_and_targets(scale_run):
    result, stdout = scale_run
    assert "### Scale: one triggerer, a rate-limited service" in stdout
    assert {"per-trigger", "shared limiter", "limiter-free at R"} == set(result["scale"]["summary"])
    verdicts = {row["target"]: row["verdict"] for row in result["scale"]["targets"]}
    cpu = [name for name in verdicts if name.startswith("CPU per poll")]
    assert len(cpu) == 1
    assert "at R polls/s" in cpu[0]
    assert verdicts[cpu[0]] in {"PASS", "FAIL"}


def test_the_cpu_baseline_asks_for_the_polls_the_limiter_lets_through(scale_run):
    """The limiter-free run polls every N / R s: R polls/s asked, the same fixed cost per poll."""
    result, _stdout = scale_run
    (baseline,) = [run for run in result["scale"]["runs"] if run["emulator_rate_limit"] is None]
    assert baseline["interval_s"] == N / RATE
    assert baseline["max_requests_per_second"] is None
    assert baseline["share_429"] == 0
    assert baseline["requests_per_s"] <= RATE * 1.2
