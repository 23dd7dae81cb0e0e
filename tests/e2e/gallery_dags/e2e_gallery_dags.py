"""
The DAG the gallery's end-to-end and browser tests run on a real deployment.

``generate`` waits for its images on a worker; ``submit`` only submits and the deferrable sensor
``wait`` waits for that diffusion in the triggerer. The prompt comes from the run's conf and the
tests pass one full of markup: the gallery must show it as text.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

DAG_ID = "e2e_gallery"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"prompt": "a lighthouse on a cliff at dawn, watercolor"},
):
    GetImageDiffusionOperator(
        task_id="generate", prompt="{{ params.prompt }}", poll_interval=0.5, timeout=120
    )
    submit = GetImageDiffusionOperator(
        task_id="submit", prompt="{{ params.prompt }} (then a sensor)", wait_for_completion=False
    )
    submit >> GetImageDiffusionSensor(
        task_id="wait",
        diffusion_id="{{ ti.xcom_pull(task_ids='submit', key='diffusion_id') }}",
        deferrable=True,
        poke_interval=1,
        timeout=120,
    )
