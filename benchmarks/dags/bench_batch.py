"""
The batch DAG of ``benchmarks/batch_check``: N prompts as one ``GetImageBatchOperator`` task.

Served by a real deployment beside ``bench_mapped.py`` (the mapped baseline of the same
benchmark), never by ``dag.test()``. The prompts come as the URI of a JSONL file and the results
folder as a URI, both from the run's conf (templated), so the metadata database holds two
strings for them, as in a catalogue pipeline. The operator's budgets are not templated fields:
the benchmark hands them to every component in ``GETIMAGE_BENCH_BATCH_KWARGS`` (JSON), read when
the file is parsed, so the dag-processor and the worker build the same task.
"""

from __future__ import annotations

import json
import os
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import GetImageBatchOperator

DAG_ID = "bench_batch"
TASK_ID = "generate"
KWARGS_ENV = "GETIMAGE_BENCH_BATCH_KWARGS"

#: ``max_submissions_per_second``, ``max_in_flight``, ``max_polls_per_second``, ``poll_interval``,
#: ``timeout``: what the benchmark sets (its ``--help``); the operator's defaults where unset.
BATCH_KWARGS = json.loads(os.environ.get(KWARGS_ENV) or "{}")

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["benchmark", "getimage"],
    params={
        "prompts": Param("file:///tmp/prompts.jsonl", type="string", minLength=1),
        "results": Param("file:///tmp/results", type="string", minLength=1),
    },
):
    GetImageBatchOperator(
        task_id=TASK_ID,
        prompts="{{ params.prompts }}",
        results="{{ params.results }}",
        deferrable=True,
        **BATCH_KWARGS,
    )
