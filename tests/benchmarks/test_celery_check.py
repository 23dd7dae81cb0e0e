"""
Tests of ``benchmarks.celery_check`` with no deployment: its arguments, environment and verdicts.

A run starts the whole Celery deployment (about 3 minutes on 2 cores at N = 30 + 100), so it is
left to ``make bench-celery``; what runs here is what turns an observation into its report.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from benchmarks import celery_check
from benchmarks.batch_check.run import KWARGS_ENV


def observed(**changes: Any) -> dict[str, Any]:
    """What a clean run of 3 mapped + a batch of 5 observes; ``changes`` override it."""
    base: dict[str, Any] = {
        "wall_s": 90.0,
        "run_states": {"batch": "success", "mapped": "success"},
        "timed_out": False,
        "killed": {"celery-worker": 40.0, "triggerer-2": 40.0},
        "asked": {"batch": 5, "mapped": 3},
        "submissions": 8,
        "polls": 40,
        "rate_limited": 0,
        "prompts_twice": 0,
        "cpu_s": 16.0,
        "cpu_by_component": {"scheduler": 10.0, "celery-worker-2": 6.0},
        "batch": {"finished": 5, "manifest_rows": 5, "ids_distinct": 5, "in_order": True, "ids_unknown": 0},
        "mapped": {"finished": 3, "ids_distinct": 3, "ids_unknown": 0, "retried": 0},
    }
    return {**base, **changes}


def verdicts(obs: dict[str, Any]) -> dict[str, str]:
    args = celery_check.parse_args(["--mapped-n", "3", "--batch-n", "5"])
    return {row["target"]: row["verdict"] for row in celery_check.targets(obs, args)}


def test_a_clean_run_passes_and_renders() -> None:
    args = celery_check.parse_args(["--mapped-n", "3", "--batch-n", "5", "--kill-at", "40"])
    obs = observed()
    rows = celery_check.targets(obs, args)
    assert {row["verdict"] for row in rows} == {"PASS", "n/a"}
    params = {key: value for key, value in vars(args).items() if key not in ("json_path", "check")}
    text = celery_check.render(
        {"params": params, "observed": obs, "targets": rows, "machine": {"cpu_count": 2}}
    )
    assert "| 90 | 16.0 | 2000.0 | 8 | 8 | 40 | 0 | 0 mapped, 0 batch |" in text
    assert "celery-worker" in text


@pytest.mark.parametrize(
    ("change", "target"),
    [
        ({"submissions": 9}, "submissions == generations asked"),
        ({"prompts_twice": 1}, "no prompt submitted twice"),
        ({"run_states": {"batch": "success", "mapped": "failed"}}, "both runs succeeded"),
        ({"mapped": {"finished": 2, "ids_distinct": 2, "ids_unknown": 0}}, "every mapped task succeeded"),
        (
            {
                "batch": {
                    "finished": 5,
                    "manifest_rows": 5,
                    "ids_distinct": 4,
                    "in_order": True,
                    "ids_unknown": 0,
                }
            },
            "batch manifest complete",
        ),
    ],
)
def test_a_wrong_count_or_task_fails(change: dict[str, Any], target: str) -> None:
    result = verdicts(observed(**change))
    assert result[target] == "FAIL"
    assert [name for name, verdict in result.items() if verdict == "FAIL"] == [target]


def test_arguments_and_environment() -> None:
    args = celery_check.parse_args(["--batch-n", "3000"])
    assert args.max_in_flight == 3000  # min(N, the trigger's MAX_WINDOW)
    env = celery_check.deployment_env(args, "postgresql+psycopg2://postgres@127.0.0.1:5432/x")
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CORE__DEFAULT_TASK_RETRIES"] == "1"
    assert json.loads(env[KWARGS_ENV])["max_submissions_per_second"] == args.max_submissions_per_second
    assert json.loads(env[KWARGS_ENV])["max_failures"] == 0
    killing = celery_check.parse_args(["--kill-at", "60"])
    env = celery_check.deployment_env(killing, "postgresql+psycopg2://postgres@127.0.0.1:5432/x")
    assert json.loads(env[KWARGS_ENV])["max_failures"] == celery_check.UNCERTAIN_ALLOWED
    for bad in (["--mapped-n", "0"], ["--kill-at", "-1"], ["--latency", "0"]):
        with pytest.raises(SystemExit):
            celery_check.parse_args(bad)


@pytest.mark.parametrize(
    ("kill_at", "uncertain", "submissions", "ok"),
    [
        ("40", 1, 7, "PASS"),  # the kill's one in-flight submission: not taken
        ("40", 1, 8, "PASS"),  # ... or taken, once
        ("40", 2, 6, "FAIL"),  # more than the one a kill can leave
        ("0", 1, 7, "FAIL"),  # no kill, nothing may be uncertain
    ],
)
def test_a_kill_may_leave_one_uncertain_item(kill_at: str, uncertain: int, submissions: int, ok: str) -> None:
    batch = {
        "finished": 5 - uncertain,
        "statuses": {"finished": 5 - uncertain, "uncertain": uncertain},
        "manifest_rows": 5,
        "ids_distinct": 5 - uncertain,
        "in_order": True,
        "ids_unknown": 0,
    }
    args = celery_check.parse_args(["--mapped-n", "3", "--batch-n", "5", "--kill-at", kill_at])
    obs = observed(batch=batch, submissions=submissions)
    result = {row["target"]: row["verdict"] for row in celery_check.targets(obs, args)}
    assert result["batch manifest complete"] == ok


def test_a_killed_workers_reserved_tasks_come_back_within_minutes() -> None:
    # A SIGKILLed worker loses the messages it had reserved and not started; Airflow requeues them
    # after [scheduler] task_queued_timeout, whose 600 s default was most of a run's wall time.
    args = celery_check.parse_args(["--mapped-n", "3", "--batch-n", "5", "--kill-at", "40"])
    env = celery_check.deployment_env(args, "postgresql+psycopg2://postgres@127.0.0.1:5432/x")
    assert float(env["AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT"]) <= 120
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
