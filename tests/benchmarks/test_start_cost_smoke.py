"""
Smoke test of the trigger benchmark's start phase: a fresh triggerer, at a tiny N, end to end.

It proves the phase still runs against the current provider (the hook module left to the first
trigger, the connection from ``AIRFLOW_CONN_GETIMAGE_DEFAULT``, log records rendered as JSON),
that its fit and its targets are computed and reported, so ``make bench`` does not rot between
the times someone runs it. No performance assertion: at N=20 the one-off costs (the hook import,
the first connection lookup) dominate the start cost, and CI is noisy.
"""

from __future__ import annotations

import pytest

from tests.benchmarks.bench_cli import run_trigger_polling

N = 20
POLLS = (3, 6)
MODES = ("provider", "floor")


@pytest.fixture(scope="module")
def start_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """The start phase once: N=20, generations of 3 and 6 polls of 0.3 s, one repeat (about 20 s)."""
    return run_trigger_polling(
        tmp_path_factory.mktemp("bench-start"),
        *("--phases", "start", "--start-n", str(N), "--start-polls", *map(str, POLLS)),
        *("--start-interval", "0.3", "--start-repeats", "1", "--max-seconds", "15"),
    )


def test_every_trigger_ran_in_a_fresh_triggerer(start_run):
    result, _stdout = start_run
    assert result["runs"] == []  # no polling phase
    runs = result["start"]["runs"]
    assert sorted((run["target_polls"], run["mode"]) for run in runs) == sorted(
        (polls, mode) for polls in POLLS for mode in MODES
    )
    for run in runs:
        where = (run["target_polls"], run["mode"], run["error_samples"])
        assert run["profile"] == "start"
        assert run["n"] == run["submitted"] == run["detected"] == N, where
        assert run["errors"] == 0, where
        assert run["cpu_s"] > 0, where
        assert run["polls_per_generation"] >= 1, where
        # Both modes import their HTTP client inside the window, as in a fresh triggerer.
        assert run["aiohttp_preloaded"] is False, where
    for run in (run for run in runs if run["mode"] == "provider"):
        # The hook module was left to the first trigger, and the status changes were rendered.
        assert run["hook_preloaded"] is False
        assert run["log_lines"] >= N


def test_fit_and_targets_are_reported(start_run):
    result, stdout = start_run
    start = result["start"]
    assert start["params"]["n"] == N
    assert start["params"]["polls"] == list(POLLS)
    summary = start["summary"]
    assert [(row["target_polls"], row["mode"]) for row in summary["rows"]] == [
        (polls, mode) for polls in POLLS for mode in MODES
    ]
    # At N = 20 the one-off import dominates and a fitted slope may even come out negative: the
    # smoke test checks the phase's code path and report, never its numbers (benchmarks/README.md).
    for mode in MODES:
        assert isinstance(summary["fits"][mode]["per_poll_ms"], float), mode
    assert isinstance(summary["start_cost_ms"], float)
    assert isinstance(summary["steady_ratio"], float)
    assert [item["target_polls"] for item in summary["per_length"]] == list(POLLS)
    verdicts = [item["verdict"] for item in start["targets"]]
    assert len(verdicts) == 3
    assert set(verdicts) <= {"PASS", "FAIL"}
    assert verdicts[2] == "PASS"  # the runs measured what they should
    assert "### Start cost and steady poll: a fresh triggerer" in stdout
    assert "| fit: CPU per trigger = fixed + per poll x polls | fixed ms | ms / poll |" in stdout
    assert "| target | value | limit | verdict | each repeat's own fit |" in stdout
