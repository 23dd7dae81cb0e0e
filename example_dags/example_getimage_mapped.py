# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Fan out: one deferrable generation per prompt (dynamic task mapping), then gather every URL.

Each mapped task submits once and waits in the triggerer, so a hundred prompts hold no worker slot
while they render. One ``GetImageDownloadOperator`` then saves every prompt's images, each file
named after its own diffusion (under ``$GETIMAGE_OUTPUT_DIR/<run id>/``, as in ``example_getimage``).
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageDownloadOperator

OUTPUT_DIR = os.path.abspath(
    os.environ.get("GETIMAGE_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "getimage-images")
)
PROMPTS = [
    "a red fox in fresh snow, photograph",
    "a blue whale seen from below, sunlight through water",
    "a green owl on a mossy branch, watercolor",
]

with DAG(
    dag_id="example_getimage_mapped",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as dag:
    # [START howto_operator_getimage_mapped]
    generated = GetImageDiffusionOperator.partial(
        task_id="generate",
        deferrable=True,
        poll_interval=2,
        timeout=30 * 60,
    ).expand(prompt=PROMPTS)
    # [END howto_operator_getimage_mapped]

    @task
    def gather(urls_per_prompt: list[list[str]]) -> list[str]:
        """Every image URL of the fan-out, in prompt order."""
        return [url for urls in urls_per_prompt for url in urls]

    gather(generated.output)

    # [START howto_operator_getimage_download_mapped]
    # One task for every prompt's images; for one download per prompt, map it the same way:
    # GetImageDownloadOperator.partial(task_id=..., destination=...).expand(image_urls=generated.output)
    GetImageDownloadOperator(
        task_id="download",
        image_urls=generated.output,
        destination="file://" + OUTPUT_DIR + "/{{ run_id }}/",
    )
    # [END howto_operator_getimage_download_mapped]
