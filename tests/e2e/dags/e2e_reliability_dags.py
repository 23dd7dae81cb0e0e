"""
DAGs for ``tests/e2e/test_reliability.py``: generations that a test disrupts while they wait.

Served by a real deployment (``AirflowDeployment(dags_folder=<this folder>)``), never by
``dag.test()``. Polls are short (1 s) so a generation that finished is noticed at once.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

START = datetime(2026, 1, 1)
DURABLE_RETRY = "e2e_durable_retry"
#: Each ``e2e_deferred_fanout_<n>`` DAG generates ``n`` images at once, all deferred.
FANOUT_SIZES = (4, 20)

# A blocking wait on the worker, with one retry: a test SIGKILLs the task process mid-wait, and the
# retry must reconnect to the diffusion (its id is in the task state store) instead of resubmitting.
with DAG(
    dag_id=DURABLE_RETRY,
    schedule=None,
    start_date=START,
    catchup=False,
    params={"prompt": Param("e2e durable retry: a lighthouse in a storm", type="string", minLength=1)},
):
    GetImageDiffusionOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        deferrable=False,
        poll_interval=1,
        timeout=120,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

# Many generations deferred at once: a test kills a triggerer while they wait in it.
for size in FANOUT_SIZES:
    with DAG(dag_id=f"e2e_deferred_fanout_{size}", schedule=None, start_date=START, catchup=False):
        GetImageDiffusionOperator.partial(
            task_id="generate", deferrable=True, poll_interval=1, timeout=300
        ).expand(prompt=[f"e2e fan-out of {size}, image {i}: a paper boat on a lake" for i in range(size)])
