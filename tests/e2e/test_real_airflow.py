"""
The example DAGs in a real Airflow 3 deployment: scheduler, LocalExecutor workers, triggerer.

``dag.test()`` runs a deferred task's trigger inline and takes its first event only, so only a
real deployment shows the deferrable path as users get it: the task leaves its worker
(``deferred``, with a ``trigger_id``), the triggerer polls, the task resumes on a worker. Every
DAG runs once, all runs at the same time (about 35 s in all on 2 cores); the emulator answers over
loopback and counts submissions, which are matched to tasks through their ``diffusion_id`` XCom.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator
    from harness import AirflowDeployment

pytestmark = pytest.mark.e2e

BLOCKING = "example_getimage"
DEFERRABLE = "example_getimage_deferrable"
SENSOR = "example_getimage_sensor"
MAPPED = "example_getimage_mapped"
#: Prompts for the DAGs that take one, unique so each run's submissions can be counted.
CONF: dict[str, dict[str, Any]] = {
    BLOCKING: {"prompt": "e2e blocking: a lighthouse on a cliff, oil painting"},
    DEFERRABLE: {"prompt": "e2e deferrable: a city at night, neon"},
    SENSOR: {},
    MAPPED: {},
}
RUN_TIMEOUT = 150.0
TRIGGER_CLASSPATH = "airflow_provider_getimage.triggers.getimage.GetImageDiffusionTrigger"
TRIGGER_KWARGS = {"diffusion_id", "getimage_conn_id", "poll_interval", "end_time"}


@pytest.fixture(scope="module")
def runs(airflow_deployment: AirflowDeployment) -> dict[str, str]:
    """One run of every example DAG, all triggered at once so they share the wait: dag id -> run id."""
    for dag_id in CONF:
        airflow_deployment.wait_until_parsed(dag_id)
    return {dag_id: airflow_deployment.trigger(dag_id, conf) for dag_id, conf in CONF.items()}


def finished(airflow: AirflowDeployment, runs: dict[str, str], dag_id: str) -> str:
    """Wait for the DAG's run to succeed; return its run id."""
    run_id = runs[dag_id]
    state = airflow.wait_for_run(dag_id, run_id, timeout=RUN_TIMEOUT)
    assert state == "success", airflow.task_states(dag_id, run_id)
    return run_id


def assert_one_submission(
    airflow: AirflowDeployment,
    emulator: Emulator,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
) -> str:
    """
    The task submitted exactly one diffusion; return its id.

    The emulator knows the diffusion from the ``diffusion_id`` XCom; no other diffusion carries
    its prompt, so the task did not submit twice (a resumed task must not submit again).
    """
    diffusion_id = airflow.xcom(dag_id, run_id, task_id, "diffusion_id", map_index)
    by_id = {diffusion["id"]: diffusion for diffusion in emulator.diffusions()}
    assert diffusion_id in by_id, f"{task_id}[{map_index}] pushed an id the emulator never issued"
    prompt = by_id[diffusion_id]["prompt"]
    assert [d["id"] for d in by_id.values() if d["prompt"] == prompt] == [diffusion_id]
    return str(diffusion_id)


def generated_urls(
    airflow: AirflowDeployment,
    emulator: Emulator,
    dag_id: str,
    run_id: str,
    task_id: str,
    map_index: int = -1,
) -> list[str]:
    """A generating task's ``return_value``: its one diffusion's image URLs."""
    diffusion_id = assert_one_submission(airflow, emulator, dag_id, run_id, task_id, map_index)
    urls = airflow.xcom(dag_id, run_id, task_id, "return_value", map_index)
    assert_image_urls(urls, emulator, diffusion_id)
    return list(urls)


def assert_image_urls(urls: Any, emulator: Emulator, diffusion_id: str) -> None:
    assert isinstance(urls, list)
    assert urls
    assert all(
        isinstance(url, str) and url.startswith(f"{emulator.url}/images/{diffusion_id}/") for url in urls
    )


def assert_deferred_then_success(
    airflow: AirflowDeployment,
    dag_id: str,
    run_id: str,
    task_id: str,
    diffusion_id: str,
    map_index: int = -1,
) -> int:
    """
    The task instance was seen deferred, on a trigger polling ``diffusion_id``, then succeeded.

    Returns the trigger id. The trigger row (deleted once it fired) was sampled while it lived:
    our trigger class, taken by a triggerer, kwargs naming the diffusion and nothing secret.
    """
    history = airflow.history(dag_id, run_id, task_id, map_index)
    states = [seen.state for seen in history]
    deferred = [seen for seen in history if seen.state == "deferred"]
    assert deferred, f"{task_id}[{map_index}] never seen deferred: {history}"
    assert all(seen.trigger_id is not None for seen in deferred), history
    assert states[-1] == "success", history
    assert states.index("deferred") < len(states) - 1
    # Resumed on a worker after the trigger fired, in the same try: no retry hid a failure.
    assert {seen.try_number for seen in history if seen.state is not None} == {1}, history
    trigger_ids = {seen.trigger_id for seen in deferred if seen.trigger_id is not None}
    assert len(trigger_ids) == 1, history
    trigger_id = trigger_ids.pop()

    rows = airflow.trigger_history(trigger_id)
    assert rows, f"trigger {trigger_id} was never sampled"
    assert rows[0].classpath == TRIGGER_CLASSPATH
    assert any(row.triggerer_id is not None for row in rows), rows  # a triggerer ran it
    kwargs = json.loads(rows[0].kwargs)
    assert kwargs["diffusion_id"] == diffusion_id
    assert set(kwargs) <= TRIGGER_KWARGS, kwargs  # SPEC 4: ids and numbers, never a key or header
    return trigger_id


def test_blocking_operator_generates_and_downloads(
    airflow_deployment: AirflowDeployment,
    runs: dict[str, str],
    e2e_emulator: Emulator,
    e2e_output_dir: Path,
) -> None:
    """``example_getimage``: the blocking operator waits on its worker, then the images are saved."""
    run_id = finished(airflow_deployment, runs, BLOCKING)

    urls = generated_urls(airflow_deployment, e2e_emulator, BLOCKING, run_id, "generate")
    record = airflow_deployment.xcom(BLOCKING, run_id, "generate", "diffusion")
    assert record["status"] == "FINISHED"
    assert record["prompt"] == CONF[BLOCKING]["prompt"]
    assert "deferred" not in airflow_deployment.seen_states(BLOCKING, run_id, "generate")

    diffusion_id = airflow_deployment.xcom(BLOCKING, run_id, "generate", "diffusion_id")
    assert_saved_pngs(
        airflow_deployment.xcom(BLOCKING, run_id, "download"), e2e_output_dir, [diffusion_id], len(urls)
    )


def assert_saved_pngs(uris: Any, output_dir: Path, diffusion_ids: list[str], per_diffusion: int) -> None:
    """``GetImageDownloadOperator``'s return value: ``file://`` URIs of PNGs, one folder per run."""
    assert isinstance(uris, list)
    paths = [Path(uri.removeprefix("file://")) for uri in uris]
    assert [uri.startswith("file:///") for uri in uris] == [True] * len(uris)
    assert [path.name for path in paths] == [
        f"{diffusion_id}_{index}.png" for diffusion_id in diffusion_ids for index in range(per_diffusion)
    ]
    for path in paths:
        assert path.is_relative_to(output_dir)
        assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert len({path.parent for path in paths}) == 1  # one folder per run


def test_deferrable_operator_waits_in_the_triggerer(
    airflow_deployment: AirflowDeployment, runs: dict[str, str], e2e_emulator: Emulator
) -> None:
    """``example_getimage_deferrable``: deferred with a trigger, resumed, one submission, URLs."""
    run_id = finished(airflow_deployment, runs, DEFERRABLE)

    diffusion_id = assert_one_submission(airflow_deployment, e2e_emulator, DEFERRABLE, run_id, "generate")
    assert_deferred_then_success(airflow_deployment, DEFERRABLE, run_id, "generate", diffusion_id)
    generated_urls(airflow_deployment, e2e_emulator, DEFERRABLE, run_id, "generate")
    record = airflow_deployment.xcom(DEFERRABLE, run_id, "generate", "diffusion")
    assert record["status"] == "FINISHED"


def test_deferrable_sensor_waits_for_a_submitted_diffusion(
    airflow_deployment: AirflowDeployment, runs: dict[str, str], e2e_emulator: Emulator
) -> None:
    """``example_getimage_sensor``: submit returns the id, the sensor defers, then reports the URLs."""
    run_id = finished(airflow_deployment, runs, SENSOR)

    diffusion_id = assert_one_submission(airflow_deployment, e2e_emulator, SENSOR, run_id, "submit")
    assert airflow_deployment.xcom(SENSOR, run_id, "submit") == diffusion_id  # wait_for_completion=False
    assert "deferred" not in airflow_deployment.seen_states(SENSOR, run_id, "submit")

    assert_deferred_then_success(airflow_deployment, SENSOR, run_id, "wait", diffusion_id)
    urls = airflow_deployment.xcom(SENSOR, run_id, "wait")
    assert_image_urls(urls, e2e_emulator, diffusion_id)
    assert airflow_deployment.xcom(SENSOR, run_id, "report") == len(urls)


def test_mapped_deferrable_generations(
    airflow_deployment: AirflowDeployment,
    runs: dict[str, str],
    e2e_emulator: Emulator,
    e2e_output_dir: Path,
) -> None:
    """``example_getimage_mapped``: each mapped task defers on a trigger of its own, submits once."""
    run_id = finished(airflow_deployment, runs, MAPPED)

    map_indexes = sorted(
        map_index
        for (task_id, map_index) in airflow_deployment.task_states(MAPPED, run_id)
        if task_id == "generate"
    )
    assert map_indexes == [0, 1, 2]
    diffusion_ids = [
        assert_one_submission(airflow_deployment, e2e_emulator, MAPPED, run_id, "generate", i)
        for i in map_indexes
    ]
    trigger_ids = {
        assert_deferred_then_success(airflow_deployment, MAPPED, run_id, "generate", diffusion_id, i)
        for i, diffusion_id in zip(map_indexes, diffusion_ids, strict=True)
    }
    assert len(trigger_ids) == len(set(diffusion_ids)) == len(map_indexes)
    urls = [
        generated_urls(airflow_deployment, e2e_emulator, MAPPED, run_id, "generate", i) for i in map_indexes
    ]
    assert airflow_deployment.xcom(MAPPED, run_id, "gather") == [url for batch in urls for url in batch]
    # One download task for all three prompts, each image named after its own diffusion.
    uris = airflow_deployment.xcom(MAPPED, run_id, "download")
    assert_saved_pngs(uris, e2e_output_dir, diffusion_ids, 4)


def test_no_duplicate_submission_and_no_secret_anywhere(
    airflow_deployment: AirflowDeployment, runs: dict[str, str], e2e_emulator: Emulator
) -> None:
    """
    Across all runs: one submission per generating task; the key in no trigger row, log or table.

    Trigger kwargs are plain JSON in the ``trigger`` table (SPEC 8), readable with DB access.
    """
    for dag_id in runs:
        finished(airflow_deployment, runs, dag_id)
    generating_tasks = 1 + 1 + 1 + 3  # blocking, deferrable, sensor's submit, three mapped
    stats = e2e_emulator.stats()
    assert stats["submissions"] == generating_tasks == len(e2e_emulator.diffusions()), stats
    assert stats["image_downloads"] == 4 + 3 * 4, stats  # example_getimage and the mapped example
    assert stats["image_downloads_with_authorization"] == 0, stats  # image URLs never get the key

    triggers = airflow_deployment.triggers_seen()
    assert len(triggers) == 1 + 1 + 3, triggers  # deferrable operator, sensor, three mapped
    for rows in triggers.values():
        for row in rows:
            assert row.classpath == TRIGGER_CLASSPATH
            assert e2e_emulator.api_key not in row.kwargs
            assert set(json.loads(row.kwargs)) <= TRIGGER_KWARGS

    # SPEC 8: the scheduler echoes task log lines unmasked, so the key must never be logged at all.
    assert airflow_deployment.files_containing(e2e_emulator.api_key) == []
