# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Submit now, wait later: the operator returns the diffusion id, a deferrable sensor waits for it.

Useful when other work can run between the submission and the images, or when the wait should be
a task of its own (its own timeout, retries and soft_fail).
"""

from __future__ import annotations

import logging
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

log = logging.getLogger(__name__)

with DAG(
    dag_id="example_getimage_sensor",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as dag:
    # [START howto_sensor_getimage_diffusion]
    submit = GetImageDiffusionOperator(
        task_id="submit",
        prompt="a paper boat on a stormy sea, ink drawing",
        wait_for_completion=False,
    )
    wait = GetImageDiffusionSensor(
        task_id="wait",
        diffusion_id=submit.output,
        deferrable=True,
        poke_interval=2,
        timeout=30 * 60,
    )
    # [END howto_sensor_getimage_diffusion]

    @task
    def report(urls: list[str]) -> int:
        """Stand-in for post-processing: count the images."""
        log.info("%d image(s): %s", len(urls), urls)
        return len(urls)

    submit >> wait
    report(wait.output)
