"""The sensor in poke, reschedule and deferrable modes through ``dag.test()`` against the emulator."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor
from tests import dag_runs
from tests.fakes import RecordingTI, task_context

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_provider_getimage.emulator import Emulator


pytestmark = pytest.mark.usefixtures("airflow_db")
SENSORS = ("wait_poke", "wait_reschedule", "wait_deferred")


@pytest.fixture(scope="module")
def dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_deferrable_dags.py")


def test_every_mode_returns_the_urls(dags: dict[str, DAG], getimage_airflow_conn: Emulator) -> None:
    dag_run = dag_runs.run(dags["getimage_sensor_modes"])
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    diffusion_id = dag_runs.xcom(dag_run, "submit", "diffusion_id")
    for sensor in SENSORS:
        urls = dag_runs.xcom(dag_run, sensor)
        assert len(urls) == 4, sensor
        assert dag_runs.xcom(dag_run, sensor, "diffusion")["id"] == diffusion_id
    assert getimage_airflow_conn.stats()["submissions"] == 1


def test_failed_diffusion_fails_every_mode_at_once(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    started = time.monotonic()
    dag_run = dag_runs.run(dags["getimage_sensor_modes"], prompt="a forbidden whale")
    assert time.monotonic() - started < 30, "the sensors failed at once, not at their 60 s timeout"
    states = dag_runs.states(dag_run)
    assert states[("submit", -1)] == "success"
    assert {states[(sensor, -1)] for sensor in SENSORS} == {"failed"}


def test_diffusion_id_is_templated() -> None:
    assert "diffusion_id" in GetImageDiffusionSensor.template_fields
    assert "getimage_conn_id" in GetImageDiffusionSensor.template_fields


def test_poke_keeps_waiting_through_an_outage(getimage_airflow_conn: Emulator) -> None:
    from airflow_provider_getimage._rules import RetryPolicy
    from airflow_provider_getimage.emulator import Fault
    from airflow_provider_getimage.hooks.getimage import GetImageHook

    diffusion_id = GetImageHook().submit_diffusion("an outage")["id"]
    sensor = GetImageDiffusionSensor(task_id="wait", diffusion_id=diffusion_id)
    sensor.hook.retry_policy = RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02)
    getimage_airflow_conn.inject(Fault(kind="status", status=503, method="GET", times=2))
    ti = RecordingTI()
    context = task_context(ti)
    assert sensor.poke(context).is_done is False, "a 503 outage is waited out, not a failure"
    time.sleep(0.6)
    done = sensor.poke(context)
    assert done.is_done
    assert done.xcom_value == ti.pushed["diffusion"]["images"]


def test_backoff_cap_reaches_airflow_backoff_and_the_trigger() -> None:
    sensor = GetImageDiffusionSensor(
        task_id="wait", diffusion_id="d-1", poke_interval=5, max_poll_interval=60
    )
    assert sensor.exponential_backoff is True
    assert sensor.max_wait == timedelta(seconds=60)
    plain = GetImageDiffusionSensor(task_id="plain", diffusion_id="d-1")
    assert plain.exponential_backoff is False
    with pytest.raises(ValueError, match="max_poll_interval"):
        GetImageDiffusionSensor(task_id="bad", diffusion_id="d-1", poke_interval=5, max_poll_interval=1)


@pytest.mark.getimage_emulator(latency=60)
def test_deferred_sensor_hands_the_cap_to_the_trigger(getimage_airflow_conn: Emulator) -> None:
    from airflow.providers.common.compat.sdk import TaskDeferred

    from airflow_provider_getimage.hooks.getimage import GetImageHook

    diffusion_id = GetImageHook().submit_diffusion("a slow one")["id"]
    sensor = GetImageDiffusionSensor(
        task_id="wait", diffusion_id=diffusion_id, deferrable=True, poke_interval=2, max_poll_interval=20
    )
    with pytest.raises(TaskDeferred) as info:
        sensor.execute(task_context(RecordingTI()))
    kwargs = info.value.trigger.serialize()[1]
    assert kwargs["max_poll_interval"] == 20.0
    assert kwargs["poll_interval"] == 2.0
