# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""Deferrable operator and sensor DAGs for ``dag.test()`` (which runs their trigger inline)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

START = datetime(2026, 1, 1)

with DAG("getimage_operator_deferrable", schedule=None, start_date=START, params={"prompt": "a red fox"}):
    GetImageDiffusionOperator(
        task_id="generate", prompt="{{ params.prompt }}", deferrable=True, poll_interval=0.1, timeout=30
    )

with DAG("getimage_operator_deferrable_timeout", schedule=None, start_date=START):
    GetImageDiffusionOperator(
        task_id="generate", prompt="slow", deferrable=True, poll_interval=0.1, timeout=1
    )

with DAG("getimage_sensor_modes", schedule=None, start_date=START, params={"prompt": "a blue whale"}):
    submit = GetImageDiffusionOperator(
        task_id="submit", prompt="{{ params.prompt }}", wait_for_completion=False
    )
    for name, extra in {
        "wait_poke": {"mode": "poke"},
        "wait_reschedule": {"mode": "reschedule"},
        "wait_deferred": {"deferrable": True},
    }.items():
        submit >> GetImageDiffusionSensor(
            task_id=name,
            diffusion_id="{{ ti.xcom_pull(task_ids='submit', key='diffusion_id') }}",
            poke_interval=0.2,
            timeout=60,
            **extra,
        )
