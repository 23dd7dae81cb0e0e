"""
A distributed deployment: CeleryExecutor (Redis broker, PostgreSQL metadata and result backend),
two Celery workers, two triggerers, api-server, scheduler, dag-processor.

One run maps deferred and blocking generations beside a batch of ``BATCH`` prompts; while they
render, the Celery worker running a blocking task is SIGKILLed (its tasks' retries reconnect
through the task state store on the other worker) and a triggerer holding deferred tasks is
SIGKILLed (the other takes its triggers). Every task succeeds, the emulator took exactly one
submission per generation (mapped and batch items), the batch's manifest is complete, and the key
is in no file (the batch's results folder, in the home, included) and no table
(``celery_taskmeta`` included). Skips, saying why, where Redis, PostgreSQL or the
Celery provider is missing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from benchmarks.batch_check.run import read_manifest
from harness import COMPONENTS, AirflowDeployment, DatabaseUnavailable, keyed_emulator, postgres_database
from harness.celery import celery_env, redis_problem
from tests.e2e.test_reliability import (
    KEEP_HOME,
    TASK_HEARTBEAT_TIMEOUT,
    TRIGGERER_THRESHOLD,
    assert_key_nowhere,
    described_on_failure,
    triggerer_heartbeats,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.e2e

DAGS = Path(__file__).with_name("celery_dags")
DAG_ID, POOL, DEFERRED, BLOCKING, BATCH = "e2e_celery_mix", "getimage_api", 6, 4, 12
STATE_KEY = "getimage_diffusion_id"
WORKERS = ("celery-worker", "celery-worker-2")
TRIGGERERS = ("triggerer", "triggerer-2")
#: ``[triggerer] capacity``: 4 each, so the 6 deferred tasks and the batch's trigger (7) must
#: spread 4 / 3 over the two.
TRIGGERER_CAPACITY = 4
#: Seconds per generation: the kills, the heartbeat timeout and the retries all happen inside it.
LATENCY = 60.0


@pytest.fixture
def celery_postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database, once Redis and the Celery provider are known to be there."""
    if (problem := redis_problem()) is not None:
        pytest.skip(f"{problem}; the CeleryExecutor test needs its broker")
    for module in ("airflow.providers.celery", "redis", "asyncpg"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (make install pins it in the dev extra)")
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database(prefix="getimage_celery"))
        except DatabaseUnavailable as exc:
            pytest.skip(f"{exc}; the CeleryExecutor test needs it")
        yield url


def task_rows(airflow: AirflowDeployment, run_id: str) -> list[dict[str, Any]]:
    return airflow.query(
        "SELECT task_id, map_index, state, pid, try_number, pool FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
        (DAG_ID, run_id),
    )


def stored_ids(airflow: AirflowDeployment, run_id: str) -> dict[int, str]:
    """Map index -> the diffusion id each blocking task keeps in the task state store."""
    rows = airflow.query(
        "SELECT map_index, value FROM task_state_store WHERE dag_id = ? AND run_id = ? "
        "AND task_id = 'blocking' AND key = ?",
        (DAG_ID, run_id, STATE_KEY),
    )
    return {int(row["map_index"]): json.loads(row["value"]) for row in rows}


def test_celery_workers_and_triggerers_killed_every_generation_once(celery_postgres_url: str) -> None:
    settings = {
        **celery_env(celery_postgres_url, concurrency=4),
        "AIRFLOW__TRIGGERER__CAPACITY": str(TRIGGERER_CAPACITY),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "1",
    }
    with contextlib.ExitStack() as stack:
        emulator: Emulator = stack.enter_context(keyed_emulator(latency=LATENCY))
        # One rate limit per connection, in each triggerer and each worker process.
        connection = emulator.airflow_env(max_requests_per_second=20)
        airflow = AirflowDeployment(
            DAGS,
            extra_env={**connection, **settings},
            database_url=celery_postgres_url,
            components=(*COMPONENTS, "triggerer-2", *WORKERS),
            triggerer_health_check_threshold=TRIGGERER_THRESHOLD,
            keep_home=KEEP_HOME,
        )
        stack.callback(lambda: print(f"celery: {airflow.report()}"))
        stack.enter_context(airflow)
        stack.enter_context(described_on_failure(airflow))

        airflow.run_cli("pools", "set", POOL, "8", "GetImage.io tasks across all workers")
        airflow.wait_until_parsed(DAG_ID, timeout=180)
        results = airflow.home / "batch-results"
        run_id = airflow.trigger(DAG_ID, {"results": results.as_uri()})

        def all_rendering() -> dict[int, str] | None:
            rows = task_rows(airflow, run_id)
            states = Counter((row["task_id"], row["state"]) for row in rows)
            ids = stored_ids(airflow, run_id)
            owners = Counter(row["triggerer_id"] for row in airflow.query("SELECT triggerer_id FROM trigger"))
            ready = (
                states[("deferred", "deferred")] == DEFERRED
                and states[("blocking", "running")] == BLOCKING
                and states[("batch", "deferred")] == 1
                and len(ids) == BLOCKING
                and None not in owners
                and sorted(owners.values()) == [TRIGGERER_CAPACITY - 1, TRIGGERER_CAPACITY]
                and all(row["pid"] for row in rows if row["task_id"] == "blocking")
            )
            assert not [d for d in emulator.diffusions() if d["status"] == "FINISHED"], "latency too short"
            return ids if ready else None

        ids_before = airflow.wait_for(
            all_rendering, 150, "6 deferred and the batch over two triggerers, 4 blocking running"
        )

        # The Celery worker running blocking task 0: SIGKILLed with every process it started.
        rows = {(row["task_id"], row["map_index"]): row for row in task_rows(airflow, run_id)}
        victim = airflow.component_holding(int(rows[("blocking", 0)]["pid"]))
        assert victim in WORKERS, victim
        on_victim = [
            index
            for index in range(BLOCKING)
            if airflow.component_holding(int(rows[("blocking", index)]["pid"])) == victim
        ]
        airflow.kill(victim)
        airflow.kill("triggerer-2")  # returns once the process is gone: it beats no more
        before_kill = triggerer_heartbeats(airflow)
        killed_at = time.monotonic() - airflow.started_at

        def silent_triggerer() -> int | None:
            now = triggerer_heartbeats(airflow)
            silent = [job for job in before_kill if now.get(job) == before_kill[job]]
            beating = [job for job in before_kill if now.get(job) != before_kill[job]]
            return silent[0] if len(silent) == len(beating) == 1 else None

        survivors = ("scheduler", "api-server", "triggerer", *(name for name in WORKERS if name != victim))
        killed_triggerer = airflow.wait_for(
            silent_triggerer, 30, "the live triggerer's next heartbeat", check=survivors
        )
        assert airflow.wait_for_run(DAG_ID, run_id, timeout=300) == "success"
        print(
            f"\ncelery: killed {victim} (blocking {on_victim}) and triggerer job {killed_triggerer} "
            f"at {killed_at:.1f} s; {airflow.report()}"
        )

        final = {(row["task_id"], row["map_index"]): row for row in task_rows(airflow, run_id)}
        assert {row["state"] for row in final.values()} == {"success"}, final
        assert {row["pool"] for row in final.values()} == {POOL}
        for index in on_victim:  # retried on the other worker, reconnected, not resubmitted
            assert final[("blocking", index)]["try_number"] == 2, final[("blocking", index)]
        diffusions = emulator.diffusions()
        prompts = Counter(d["prompt"] for d in diffusions)
        assert len(prompts) == DEFERRED + BLOCKING + BATCH
        assert set(prompts.values()) == {1}, prompts
        assert emulator.stats()["submissions"] == DEFERRED + BLOCKING + BATCH
        batch_prompts = [f"e2e celery batch {i}: a heron at dawn" for i in range(BATCH)]
        manifest = read_manifest(results / "manifest.jsonl", batch_prompts, {d["id"] for d in diffusions})
        complete = manifest["finished"] == manifest["manifest_rows"] == manifest["ids_distinct"] == BATCH
        assert complete, manifest
        assert manifest["in_order"], manifest
        assert manifest["ids_unknown"] == 0, manifest
        assert (airflow.xcom(DAG_ID, run_id, "batch") or {}).get("finished") == BATCH
        for index, diffusion_id in ids_before.items():
            assert airflow.xcom(DAG_ID, run_id, "blocking", "diffusion_id", index) == diffusion_id
        for index in range(DEFERRED):
            diffusion_id = airflow.xcom(DAG_ID, run_id, "deferred", "diffusion_id", index)
            urls = airflow.xcom(DAG_ID, run_id, "deferred", map_index=index)
            assert urls
            assert all(url.startswith(f"{emulator.url}/images/{diffusion_id}/") for url in urls)
        assert "celery_taskmeta" in airflow.database_containing("SUCCESS")  # the result backend was used
        assert_key_nowhere(
            airflow, emulator.api_key, diffusion_id=ids_before[0], prompt=diffusions[0]["prompt"]
        )
