"""
The DAG of ``benchmarks/deployment_check.py``: N deferrable generations, mapped, all at once.

Served by a real deployment (``AirflowDeployment(dags_folder=<this folder>)``), never by
``dag.test()``. The run's conf sets N, the poll interval and the deadline, so one parsed DAG
serves every size: an upstream task turns them into one set of operator arguments per
generation, and ``expand_kwargs`` maps over them, as a DAG computing its prompts at run time would.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

DAG_ID = "bench_deferred_mapped"
TASK_ID = "generate"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["benchmark", "getimage"],
    params={
        "n": Param(200, type="integer", minimum=1, maximum=10_000),
        "poll_interval": Param(5.0, type="number", exclusiveMinimum=0),
        "timeout": Param(3600.0, type="number", exclusiveMinimum=0),
        # Makes every prompt of a run unique, so each submission maps to one task.
        "tag": Param("bench", type="string", minLength=1),
    },
):

    @task
    def generations(params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """One set of operator arguments per generation: a unique prompt, the poll interval, the deadline."""
        params = params or {}
        return [
            {
                "prompt": f"{params['tag']} #{index}: a paper lantern over a river at dusk",
                "poll_interval": float(params["poll_interval"]),
                "timeout": float(params["timeout"]),
            }
            for index in range(int(params["n"]))
        ]

    GetImageDiffusionOperator.partial(task_id=TASK_ID, deferrable=True).expand_kwargs(generations())
