# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""Batch DAGs for ``dag.test()``: 50 prompts (one failing) in one task, deferrable and not."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Asset

from airflow_provider_getimage.operators.getimage import GetImageBatchOperator, GetImageDownloadOperator

START = datetime(2026, 1, 1)
PROMPTS = [f"catalogue item {n}" for n in range(48)] + [
    {"prompt": "a lamp, nsfw", "key": "lamp"},
    {"prompt": "a chair", "key": "chair", "model": "stable-diffusion", "parameters": {"seed": 7}},
]
"""50 items; the emulator's ``failing_prompts=("nsfw",)`` fails the lamp."""

for deferrable in (False, True):
    with DAG(
        f"getimage_batch_{'deferred' if deferrable else 'worker'}",
        schedule=None,
        start_date=START,
        params={"results": "/tmp/unset", "images": "/tmp/unset-images"},
    ):
        generate = GetImageBatchOperator(
            task_id="generate",
            prompts=PROMPTS,
            parameters={"size": "512x512"},
            results="{{ params.results }}",
            max_submissions_per_second=200,
            max_in_flight=20,
            max_polls_per_second=200,
            poll_interval=0.1,
            timeout=60,
            max_failures=1,
            deferrable=deferrable,
        )
        GetImageDownloadOperator(
            task_id="download", image_urls=generate.output, destination="{{ params.images }}"
        )

# A small batch that announces to an asset (its event's extra: counts, manifest, finished ids).
with DAG("getimage_batch_asset", schedule=None, start_date=START, params={"results": "/tmp/unset"}):
    GetImageBatchOperator(
        task_id="generate",
        prompts=[f"asset item {n}" for n in range(5)],
        results="{{ params.results }}",
        max_submissions_per_second=200,
        max_polls_per_second=200,
        poll_interval=0.1,
        timeout=60,
        deferrable=False,
        outlets=[Asset("file:///tmp/getimage/batch-asset")],
    )
