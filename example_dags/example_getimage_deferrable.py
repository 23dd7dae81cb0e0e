# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Generate an image without holding a worker slot while the GPU works.

With ``deferrable=True`` the operator submits, pushes ``diffusion_id``, and hands the wait to the
triggerer (``GetImageDiffusionTrigger``); the worker slot is free until the images are ready.
Needs a running ``airflow triggerer``.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

with DAG(
    dag_id="example_getimage_deferrable",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
    params={"prompt": Param("an isometric city at night, neon, rain", type="string", minLength=1)},
) as dag:
    # [START howto_operator_getimage_deferrable]
    generate = GetImageDiffusionOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        deferrable=True,
        poll_interval=2,
        timeout=30 * 60,
    )
    # [END howto_operator_getimage_deferrable]
