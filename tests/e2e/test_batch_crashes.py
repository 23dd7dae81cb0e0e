"""
A batch in a real Airflow 3 deployment (PostgreSQL), crashed: a worker SIGKILLed mid-submission,
a triggerer SIGKILLed mid-wait. Each prompt is paid for at most once, whatever dies.

Skips with a reason where no PostgreSQL server answers at 127.0.0.1:5432.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import AirflowDeployment, DatabaseUnavailable, keyed_emulator, postgres_database
from tests.e2e.batch_dags.e2e_batch_dags import (
    TRIGGERER_CRASH,
    TRIGGERER_PROMPTS,
    WORKER_CRASH,
    WORKER_PROMPTS,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).with_name("batch_dags")
BATCH_TRIGGER = "airflow_provider_getimage.triggers.batch.GetImageBatchTrigger"
#: Long enough that the batch still waits when the triggerer dies, and after the retry starts.
LATENCY = 25.0
TRIGGERER_THRESHOLD = 4.0
KEEP_HOME = bool(os.environ.get("GETIMAGE_E2E_KEEP_HOME"))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards; skip (saying why) without a server."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database())
        except DatabaseUnavailable as exc:
            pytest.skip(f"{exc}; the batch crash tests need it")
        if importlib.util.find_spec("asyncpg") is None:
            pytest.fail("asyncpg is not installed: Airflow needs it for a PostgreSQL metadata database")
        yield url


def submitted(emulator: Emulator, prompts: list[str]) -> Counter[str]:
    """How many diffusions the emulator created for each of ``prompts``."""
    wanted = set(prompts)
    return Counter(d["prompt"] for d in emulator.diffusions() if d["prompt"] in wanted)


def manifest(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def batch_trigger_rows(airflow: AirflowDeployment) -> list[dict[str, Any]]:
    rows = airflow.query("SELECT id, classpath, triggerer_id FROM trigger")
    return [row for row in rows if row["classpath"] == BATCH_TRIGGER]


def test_batch_survives_a_killed_worker_and_a_killed_triggerer(postgres_url: str, tmp_path: Path) -> None:
    worker_results, triggerer_results = tmp_path / "worker", tmp_path / "triggerer"
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(keyed_emulator(latency=LATENCY))
        airflow = AirflowDeployment(
            DAGS,
            extra_env=emulator.airflow_env(),
            database_url=postgres_url,
            triggerer_health_check_threshold=TRIGGERER_THRESHOLD,
            keep_home=KEEP_HOME,
        )
        stack.callback(lambda: print(f"\nbatch crashes: {airflow.report()}"))
        stack.enter_context(airflow)
        try:
            airflow.wait_until_parsed(WORKER_CRASH)
            airflow.wait_until_parsed(TRIGGERER_CRASH)
            worker_run = airflow.trigger(WORKER_CRASH, conf={"results": str(worker_results)})

            # -- the worker, SIGKILLed after about half the submissions
            airflow.wait_for(
                lambda: sum(submitted(emulator, WORKER_PROMPTS).values()) >= len(WORKER_PROMPTS) // 2,
                180,
                "half the batch submitted",
                check=("scheduler",),
            )
            killed = airflow.kill_task(WORKER_CRASH, worker_run, "generate")
            at_kill = sum(submitted(emulator, WORKER_PROMPTS).values())
            assert at_kill < len(WORKER_PROMPTS), "killed before the batch was all submitted"
            assert not killed.runner.is_running()

            # -- the triggerer, SIGKILLed while the other batch's window waits in it
            triggerer_run = airflow.trigger(TRIGGERER_CRASH, conf={"results": str(triggerer_results)})

            def waiting_in_a_triggerer() -> list[dict[str, Any]] | None:
                if airflow.task_states(TRIGGERER_CRASH, triggerer_run).get(("generate", -1)) != "deferred":
                    return None
                rows = [row for row in batch_trigger_rows(airflow) if row["triggerer_id"] is not None]
                polls = emulator.stats()["polls_by_id"]
                ids = [d["id"] for d in emulator.diffusions() if d["prompt"] in set(TRIGGERER_PROMPTS)]
                return rows if rows and ids and any(polls.get(i, 0) for i in ids) else None

            airflow.wait_for(waiting_in_a_triggerer, 180, "the batch window polled in a triggerer")
            finished_early = [
                d
                for d in emulator.diffusions()
                if d["prompt"] in set(TRIGGERER_PROMPTS) and d["status"] == "FINISHED"
            ]
            assert not finished_early, "the generations must still render when the triggerer dies"
            old_jobs = {row["triggerer_id"] for row in batch_trigger_rows(airflow)}
            airflow.kill("triggerer")
            airflow.restart("triggerer")

            assert airflow.wait_for_run(TRIGGERER_CRASH, triggerer_run, timeout=300) == "success"
            assert airflow.wait_for_run(WORKER_CRASH, worker_run, timeout=300) == "success"
        except BaseException:
            print(f"\n===== deployment at the failure =====\n{airflow.describe(lines=80)}")
            raise

        # The killed worker: its retry re-attached. Nothing was submitted twice; at most the one
        # submission in flight at the kill is missing and reported uncertain; all others finished.
        counts = submitted(emulator, WORKER_PROMPTS)
        assert max(counts.values()) == 1, "no prompt submitted twice"
        rows = manifest(worker_results)
        statuses = Counter(row["status"] for row in rows)
        uncertain = statuses["uncertain"]
        assert uncertain <= 1, statuses
        assert statuses["finished"] == len(WORKER_PROMPTS) - uncertain, statuses
        assert len(WORKER_PROMPTS) - uncertain <= sum(counts.values()) <= len(WORKER_PROMPTS)
        tries = airflow.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'generate'",
            (WORKER_CRASH, worker_run),
        )
        assert tries[0]["try_number"] == 2, "the second try finished the batch"
        summary = airflow.xcom(WORKER_CRASH, worker_run, "generate")
        assert summary["finished"] == statuses["finished"]
        assert summary["uncertain"] == uncertain
        print(f"\nworker crash: {at_kill} submitted at the kill, {sum(counts.values())} in all, {statuses}")

        # The killed triggerer: another one finished the window; one submission each, first try.
        assert submitted(emulator, TRIGGERER_PROMPTS) == Counter(dict.fromkeys(TRIGGERER_PROMPTS, 1))
        assert Counter(row["status"] for row in manifest(triggerer_results)) == {
            "finished": len(TRIGGERER_PROMPTS)
        }
        tries = airflow.query(
            "SELECT try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = 'generate'",
            (TRIGGERER_CRASH, triggerer_run),
        )
        assert tries[0]["try_number"] == 1, "no retry hid the lost triggerer"
        jobs = airflow.query("SELECT id FROM job WHERE job_type = 'TriggererJob'")
        assert len({row["id"] for row in jobs} - old_jobs) >= 1, "a new triggerer job took the window"
        # No image URL and no key in any trigger row seen while they lived.
        sampled = [row.kwargs for found in airflow.triggers_seen().values() for row in found]
        assert sampled
        assert not [kwargs for kwargs in sampled if "/images/" in kwargs or emulator.api_key in kwargs]
