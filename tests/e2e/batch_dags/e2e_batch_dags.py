"""
DAGs for ``tests/e2e/test_batch_crashes.py``: batches a test disrupts (a worker, a triggerer killed).

Served by a real deployment, never by ``dag.test()``. Each run's ``results`` folder comes from its
conf, so the test reads the manifest and the state afterwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_getimage.operators.getimage import GetImageBatchOperator

START = datetime(2026, 1, 1)
WORKER_CRASH = "e2e_batch_worker_crash"
TRIGGERER_CRASH = "e2e_batch_triggerer_crash"
#: Prompts of each DAG, unique across the module's emulator (its counts are per prompt).
WORKER_PROMPTS = [f"e2e batch worker crash, item {i}: a tin robot" for i in range(40)]
TRIGGERER_PROMPTS = [f"e2e batch triggerer crash, item {i}: a kite" for i in range(12)]

# 40 submissions at 4 a second (10 s): the test SIGKILLs the task process after about half;
# the retry re-attaches (at most the one in flight is uncertain, tolerated by max_failures=1).
with DAG(dag_id=WORKER_CRASH, schedule=None, start_date=START, catchup=False, params={"results": ""}):
    GetImageBatchOperator(
        task_id="generate",
        prompts=WORKER_PROMPTS,
        results="{{ params.results }}",
        max_submissions_per_second=4,
        max_in_flight=40,
        max_polls_per_second=10,
        poll_interval=1,
        timeout=300,
        max_failures=1,
        deferrable=True,
        retries=1,
        retry_delay=timedelta(seconds=1),
    )

# 12 submitted at once, then one window waits in the triggerer, which the test SIGKILLs.
with DAG(dag_id=TRIGGERER_CRASH, schedule=None, start_date=START, catchup=False, params={"results": ""}):
    GetImageBatchOperator(
        task_id="generate",
        prompts=TRIGGERER_PROMPTS,
        results="{{ params.results }}",
        max_submissions_per_second=20,
        max_in_flight=12,
        max_polls_per_second=10,
        poll_interval=1,
        timeout=300,
        deferrable=True,
    )
