"""
Tests of ``benchmarks.deployment_check`` that need no Airflow deployment.

A run of the check itself, even with 3 mapped tasks, takes about 80 s on 2 cores (the deployment
alone needs 25-40 s to start), so it is left to ``make bench``. What runs here is everything that
decides its verdict and its report: argument checks, the poll bound, the summary and checks
computed from observations, the table, the choice of database and the watch loop (the
process-tree sampler it uses is tested on real processes in ``test_process_trees.py``).
Importing the module also proves it still imports the ``harness`` package.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import pytest

import benchmarks.deployment_check as dc

N = 4
LATENCY = 20.0
INTERVAL = 5.0


def diffusion(index: int, *, prompt: str | None = None, latency: float = LATENCY) -> dict[str, Any]:
    created = 1_000.0 + index
    return {
        "id": f"id-{index}",
        "prompt": prompt or f"bench-x #{index}: a paper lantern",
        "created_at": created,
        "finishes_at": created + latency,
    }


def observed(**changes: Any) -> Any:
    """A clean run of N generations: all succeeded, one submission each, polls within the bound."""
    diffusions = [diffusion(i) for i in range(N)]
    polls_by_id = {d["id"]: 5 for d in diffusions}
    samples = [
        dc.Sample(1.0, {"scheduled": N}, 0, 0, 0.1, 400.0),
        dc.Sample(10.0, {"deferred": 3, "running": 1}, N, 6, 0.5, 420.0),
        dc.Sample(12.0, {"deferred": N}, N, 8, 0.6, 430.0),
        dc.Sample(40.0, {"success": N}, N, 20, 1.2, 425.0),
    ]
    values: dict[str, Any] = {
        "n": N,
        "latency": LATENCY,
        "poll_interval": INTERVAL,
        "wall_s": 40.0,
        "timed_out": False,
        "samples": samples,
        "ti_states": dict.fromkeys(range(N), "success"),
        "try_numbers": dict.fromkeys(range(N), 1),
        "diffusion_xcoms": {i: f"id-{i}" for i in range(N)},
        "emulator_stats": {
            "submissions": N,
            "polls": sum(polls_by_id.values()),
            "polls_by_id": polls_by_id,
            "connections": N + 2,
            "responses_by_status": {"200": 20, "201": N},
        },
        "diffusions": diffusions,
        "triggerer_cpu_s": 1.2,
        "runner_cpu_s": 0.4,
        "triggerer_idle_cpu_pct": 2.0,
        "triggerer_idle_rss_mb": 400.0,
        "triggerer_peak_rss_mb": 430.0,
        "triggerer_processes": [
            {"role": "supervisor", "pid": 10, "title": "airflow triggerer", "cpu_s": 0.8, "peak_rss_mb": 160},
            {
                "role": "trigger runner",
                "pid": 11,
                "title": "airflow triggerer",
                "cpu_s": 0.4,
                "peak_rss_mb": 150,
            },
        ],
    }
    values.update(changes)
    return dc.Observed(**values)


def verdicts(obs: Any) -> dict[str, str]:
    return {row["check"]: row["verdict"] for row in dc.checks(dc.summarise(obs))}


def result_for(obs: Any, **params: Any) -> dict[str, Any]:
    summary = dc.summarise(obs)
    return {
        "machine": {"cpu_count": 2, "platform": "Linux", "python": "3.11", "airflow": "3.3.2", "git": "abc"},
        "params": {
            "n": N,
            "latency": LATENCY,
            "poll_interval": INTERVAL,
            "parallelism": 4,
            "database": "postgresql",
            "tls": True,
            **params,
        },
        "summary": summary,
        "checks": dc.checks(summary),
        "triggerer_processes": obs.triggerer_processes,
    }


# ------------------------------------------------------------------------------------ arguments
def test_defaults_are_the_make_bench_run():
    args = dc.parse_args([])
    assert (args.n, args.latency, args.poll_interval, args.parallelism) == (200, 480.0, 5.0, 4)
    assert (args.database, args.tls, args.json_path, args.keep_home) == ("auto", True, None, False)


def test_arguments_parsed():
    args = dc.parse_args(
        [
            "--n",
            "3",
            "--latency",
            "8",
            "--poll-interval",
            "1",
            "--database",
            "sqlite",
            "--no-tls",
            "--json",
            "x",
        ]
    )
    assert (args.n, args.latency, args.poll_interval, args.database, args.tls, args.json_path) == (
        3,
        8.0,
        1.0,
        "sqlite",
        False,
        "x",
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--n", "0"],
        ["--parallelism", "0"],
        ["--latency", "0"],
        ["--poll-interval", "-1"],
        ["--timeout", "0"],
        ["--idle-seconds", "-1"],
        ["--database", "mysql"],
    ],
)
def test_bad_arguments_rejected(argv, capsys):
    with pytest.raises(SystemExit) as excinfo:
        dc.parse_args(argv)
    assert excinfo.value.code == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------------------- poll bound
@pytest.mark.parametrize(
    ("generation_s", "interval", "bound"),
    [
        (240.0, 5.0, 50),  # 48 intervals, the worker's check, the poll that sees FINISHED
        (240.0000001, 5.0, 50),  # float timestamps: not one interval more
        (241.0, 5.0, 51),
        (8.0, 1.0, 10),
        (0.5, 5.0, 3),
    ],
)
def test_poll_bound(generation_s, interval, bound):
    assert dc.poll_bound(generation_s, interval) == bound


# ----------------------------------------------------------------------------- summary, checks
def test_clean_run_passes():
    summary = dc.summarise(observed())
    assert summary["succeeded"] == N
    assert summary["failed"] == summary["not_succeeded_otherwise"] == 0
    assert summary["deferred_peak"] == N
    assert summary["deferred_peak_at_s"] == 12.0
    assert summary["all_submitted_s"] == 10.0
    assert summary["polls"] == 5 * N
    assert summary["triggerer_polls"] == 4 * N  # one check per task on the worker is not the triggerer's
    assert summary["triggerer_cpu_ms_per_poll"] == pytest.approx(1200 / 16)
    assert summary["runner_cpu_ms_per_poll"] == pytest.approx(400 / 16)
    assert summary["triggerer_cpu_above_idle_s"] == pytest.approx(1.2 - 0.02 * 40)
    assert summary["polls_per_generation_mean"] == 5
    assert summary["polls_bound"] == 6
    assert summary["connections"] == N + 2
    assert summary["non_2xx"] == 0
    rows = dc.checks(summary)
    assert {row["verdict"] for row in rows} == {"PASS"}
    assert dc.exit_code(rows) == 0


def test_a_duplicate_submission_fails():
    extra = diffusion(0)  # the same prompt submitted twice: one task paid for two generations
    extra["id"] = "id-dup"
    obs = observed(diffusions=[*[diffusion(i) for i in range(N)], extra])
    obs.emulator_stats["submissions"] = N + 1
    summary = dc.summarise(obs)
    assert summary["duplicate_prompts"] == 1
    assert verdicts(obs)["submissions (no duplicate)"] == "FAIL"
    assert dc.exit_code(dc.checks(summary)) == 1


def test_an_id_the_emulator_never_issued_fails():
    obs = observed(diffusion_xcoms={**{i: f"id-{i}" for i in range(N - 1)}, N - 1: "id-unknown"})
    assert verdicts(obs)["submissions (no duplicate)"] == "FAIL"


def test_a_failed_task_fails():
    obs = observed(ti_states={**dict.fromkeys(range(N - 1), "success"), N - 1: "failed"}, wall_s=None)
    summary = dc.summarise(obs)
    assert (summary["succeeded"], summary["failed"]) == (N - 1, 1)
    assert verdicts(obs) == {
        "tasks succeeded": "FAIL",
        "tasks failed": "FAIL",
        "submissions (no duplicate)": "PASS",
        "polls / generation, max": "PASS",
    }
    assert "Not all tasks succeeded" in dc.render(result_for(obs))


def test_unfinished_tasks_fail_without_counting_as_failed():
    obs = observed(ti_states={0: "success", 1: "deferred"}, wall_s=None, timed_out=True)
    summary = dc.summarise(obs)
    assert (summary["succeeded"], summary["failed"], summary["not_succeeded_otherwise"]) == (1, 0, N - 1)
    assert verdicts(obs)["tasks succeeded"] == "FAIL"
    assert math.isnan(summary["triggerer_cpu_pct_of_core"])
    assert "Timed out before all tasks finished" in dc.render(result_for(obs))


def test_polling_above_the_bound_fails():
    obs = observed()
    obs.emulator_stats["polls_by_id"]["id-2"] = 7  # bound: ceil(20 / 5) + 2 = 6
    summary = dc.summarise(obs)
    assert summary["over_bound"] == [{"id": "id-2", "polls": 7, "bound": 6}]
    assert verdicts(obs)["polls / generation, max"] == "FAIL"


# ------------------------------------------------------------------------------------- report
def test_render_shows_measures_processes_and_checks():
    text = dc.render(result_for(observed()))
    assert text.startswith(f"## Deployment check: {N} mapped deferred generations")
    assert "parallelism 4" in text
    assert "postgresql metadata database" in text
    assert "| wall s (trigger of the run to all success) | 40.0 |" in text
    assert f"| deferred at once (peak, at s) | {N} of {N} (at 12.0) |" in text
    assert "| triggerer CPU ms / triggerer poll | 75.00 |" in text
    assert "| polls / generation: mean / max (bound) | 5.00 / 5 (6) |" in text
    assert "| trigger runner | 11 | 0.40 | 150 |" in text
    assert "| check | value | limit | verdict |" in text
    assert f"| tasks succeeded | {N} | = {N} | PASS |" in text
    assert "nan" not in text.lower()
    assert "Note:" not in text
    assert "Fewer than 90%" not in text


def test_render_says_when_too_few_were_deferred_at_once():
    samples = [dc.Sample(10.0, {"deferred": 3, "scheduled": 1}, 3, 3, 0.5, 420.0)]
    text = dc.render(result_for(observed(samples=samples)))
    assert f"| deferred at once (peak, at s) | 3 of {N} (at 10.0) |" in text
    assert "Fewer than 90% of the tasks were deferred at once" in text
    assert "| all submitted at s | - |" in text


def test_render_and_json_without_measurements():
    """An empty run (nothing sampled, no poll) renders dashes, and its JSON has no NaN."""
    obs = observed(
        samples=[],
        ti_states={},
        try_numbers={},
        diffusion_xcoms={},
        diffusions=[],
        emulator_stats={},
        wall_s=None,
        timed_out=True,
    )
    result = result_for(obs, database="sqlite", database_note="PostgreSQL not reachable")
    text = dc.render(result)
    assert "| triggerer CPU ms / triggerer poll | - |" in text
    assert "Note: PostgreSQL not reachable" in text
    json.loads(json.dumps(dc.json_safe(result), allow_nan=False))


# ----------------------------------------------------------------------------------- database
def test_sqlite_when_asked():
    with dc.metadata_database("sqlite", "unused") as chosen:
        assert chosen == (None, "sqlite", None)


UNREACHABLE = "postgresql+psycopg2://postgres@127.0.0.1:1/postgres"


def test_falls_back_to_sqlite_with_a_note(capsys):
    with dc.metadata_database("auto", UNREACHABLE) as (url, kind, note):
        assert (url, kind) == (None, "sqlite")
        assert "PostgreSQL not reachable at 127.0.0.1:1" in (note or "")
    assert "NOTE: PostgreSQL not reachable" in capsys.readouterr().out


def test_postgresql_required_but_unreachable_raises():
    with pytest.raises(dc.DatabaseUnavailable), dc.metadata_database("postgresql", UNREACHABLE):
        pass


# --------------------------------------------------------------------------------- watch loop
class ScriptedDeployment:
    """
    Stands in for the deployment in the watch loop only (a real one takes 25-40 s to start):
    each tick reads the next (task state counts, run state) of a script; the last one repeats.
    """

    def __init__(self, script: list[tuple[dict[str, int], str]]) -> None:
        self.script = script
        self.ticks = 0

    def query(self, sql: str, params: Any = ()) -> list[dict[str, Any]]:
        counts, _run_state = self.script[min(self.ticks, len(self.script) - 1)]
        return [{"state": state, "n": n} for state, n in counts.items()]

    def run_state(self, dag_id: str, run_id: str) -> str:
        _counts, run_state = self.script[min(self.ticks, len(self.script) - 1)]
        self.ticks += 1
        return run_state

    def check_alive(self, *names: str) -> None:
        pass


class CountingEmulator:
    def stats(self) -> dict[str, Any]:
        return {"submissions": N, "polls": 3 * N}


def run_watch(script: list[tuple[dict[str, int], str]], timeout: float = 30.0) -> tuple[list[Any], Any]:
    tree = dc.ProcessTree(os.getpid())
    tree.sample()
    tree.mark()
    # Stand-ins with only what the watch loop calls: typed as Any for it.
    deployment: Any = ScriptedDeployment(script)
    emulator: Any = CountingEmulator()
    return dc.watch(
        deployment,
        emulator,
        tree,
        "run",
        N,
        started=time.monotonic(),
        timeout=timeout,
        interval=0.01,
    )


def test_watch_ends_when_all_succeeded():
    samples, wall = run_watch(
        [({"scheduled": N}, "running"), ({"deferred": N}, "running"), ({"success": N}, "running")]
    )
    assert [sample.states for sample in samples] == [{"scheduled": N}, {"deferred": N}, {"success": N}]
    assert wall == samples[-1].t
    assert samples[-1].submissions == N
    assert samples[-1].triggerer_rss_mb > 0


def test_watch_ends_when_the_run_failed_upstream():
    """The task making the prompts failed: one ``upstream_failed`` row, never N; the run is over."""
    samples, wall = run_watch([({"none": 1}, "running"), ({"upstream_failed": 1}, "failed")])
    assert wall is None
    assert len(samples) == 2


def test_watch_gives_up_at_the_timeout():
    samples, wall = run_watch([({"deferred": N}, "running")], timeout=0.1)
    assert wall is None
    assert samples[-1].t > 0.1
