"""
The DAG of ``tests/e2e/test_celery.py``: deferred, blocking and batch generations on CeleryExecutor.

Served by a real CeleryExecutor deployment, never by ``dag.test()``. Every task runs in the pool
``getimage_api`` (made by the test), the way the scaling guide says to bound how many of the
provider's tasks submit and wait on workers at once across all workers. The batch writes its
progress and manifest under the run's ``results`` (conf: the test points it into the deployment's
home, so the key scan reads those files too).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import GetImageBatchOperator, GetImageDiffusionOperator

DAG_ID = "e2e_celery_mix"
POOL = "getimage_api"
DEFERRED = 6
BLOCKING = 4
BATCH = 12

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"results": Param(type="string", minLength=1)},  # no default: the test sets it
):
    # Deferred: they leave their worker and wait in a triggerer, which a test SIGKILLs.
    GetImageDiffusionOperator.partial(
        task_id="deferred", deferrable=True, poll_interval=1, timeout=300, pool=POOL, retries=1
    ).expand(prompt=[f"e2e celery deferred {i}: a kite over dunes" for i in range(DEFERRED)])
    # Blocking: they poll on their Celery worker, which a test SIGKILLs; each retry reconnects to its
    # diffusion through the task state store.
    GetImageDiffusionOperator.partial(
        task_id="blocking",
        deferrable=False,
        poll_interval=1,
        timeout=300,
        pool=POOL,
        retries=1,
        retry_delay=timedelta(seconds=1),
    ).expand(prompt=[f"e2e celery blocking {i}: a lantern in fog" for i in range(BLOCKING)])
    # A batch beside them: submitted from a worker, waiting in a triggerer (the SIGKILLed one too).
    GetImageBatchOperator(
        task_id="batch",
        prompts=[f"e2e celery batch {i}: a heron at dawn" for i in range(BATCH)],
        results="{{ params.results }}",
        deferrable=True,
        max_submissions_per_second=20,
        poll_interval=1,
        timeout=300,
        pool=POOL,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )
