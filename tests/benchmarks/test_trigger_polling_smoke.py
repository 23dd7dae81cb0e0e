"""
Smoke test of ``benchmarks.trigger_polling``: a tiny run of every mode of its polling phase, end to end.

It proves the benchmark still runs against the current provider (real emulator process, TLS,
one client process per mode) and that its report keeps its shape, so ``make bench`` does not rot
between the times someone runs it. No performance assertion: machines are noisy; the benchmark's
own targets table is for people to read.
"""

from __future__ import annotations

import pytest

from tests.benchmarks.bench_cli import run_trigger_polling

N = 20
MODES = ("provider", "baseline", "floor")


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """
    Run the benchmark once (N=20, one repeat, 0.5 s polls, 1.5 s generations) for all tests here.

    About 15 s on 2 cores; the timeout only catches a hang (no timing assertion: CI is noisy).
    """
    return run_trigger_polling(
        tmp_path_factory.mktemp("bench"),
        *("--phases", "polling", "--n", str(N), "--repeats", "1", "--interval", "0.5"),
        *("--latency", "1.5", "--latency-jitter", "0.5", "--max-seconds", "15"),
    )


def test_every_generation_detected_without_errors(smoke_run):
    result, _stdout = smoke_run
    runs = {run["mode"]: run for run in result["runs"]}
    assert sorted(runs) == sorted(MODES)
    for mode, run in runs.items():
        assert run["n"] == N, mode
        assert run["submitted"] == N, mode
        assert run["detected"] == N, (mode, run["error_samples"])
        assert run["undetected"] == 0, mode
        assert run["errors"] == 0, (mode, run["error_samples"], run["non_2xx_responses"])
        assert run["finished_before_start"] == 0, mode


def test_numbers_are_measured(smoke_run):
    """Every number the table shows comes from a measurement, in the units the README states."""
    result, _stdout = smoke_run
    for run in result["runs"]:
        mode = run["mode"]
        assert run["polls"] >= N, mode  # at least one poll per diffusion, counted by the emulator
        assert run["cpu_s"] > 0, mode
        assert run["cpu_ms_per_1000_polls"] > 0, mode
        assert run["peak_rss_mb"] > run["rss_growth_mb"] >= 0, mode
        assert run["connections"] >= 1, mode
        assert 0 <= run["lateness_p50_s"] <= run["lateness_p99_s"] <= run["lateness_max_s"], mode
        assert run["first_poll_p50_s"] >= 0, mode
        assert run["polls_per_generation"] >= 1, mode
        assert run["wall_s"] > 0, mode
        assert run["emulator_cpu_pct"] >= 0, mode
    # A session per poll is what the baseline stands for: one connection per poll.
    baseline = next(run for run in result["runs"] if run["mode"] == "baseline")
    assert baseline["connections"] == baseline["polls"]


def test_report_structure(smoke_run):
    result, stdout = smoke_run
    assert set(result) >= {"machine", "params", "runs", "summary", "ratios", "targets"}
    assert {"cpu_count", "python", "aiohttp", "airflow"} <= set(result["machine"])
    assert [(row["n"], row["mode"]) for row in result["summary"]] == [(N, mode) for mode in MODES]
    (ratio,) = result["ratios"]
    assert ratio["baseline_over_provider"] > 0
    assert ratio["provider_over_floor"] > 0
    verdicts = {item["target"]: item["verdict"] for item in result["targets"]}
    assert len(verdicts) == 6
    assert set(verdicts.values()) <= {"PASS", "FAIL", "n/a"}
    # N=1000 and N=5000 targets cannot be judged from an N=20 run.
    assert sum(verdict == "n/a" for verdict in verdicts.values()) == 5
    assert "| N | mode | CPU ms / 1k polls |" in stdout
    assert "baseline / provider CPU per poll" in stdout
    assert "| target | value | limit | verdict |" in stdout
    for mode in MODES:
        assert f"| {N} | {mode} |" in stdout
