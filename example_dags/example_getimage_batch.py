# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Catalogue images at pipeline scale: a JSONL file of prompts -> one batch task -> one download.

``export_catalogue`` stands for an upstream export: it writes one JSONL line per product and
returns the file's URI. ``GetImageBatchOperator`` submits every prompt of that file at the API's
pace from one task, waits for them in the triggerer, and writes ``manifest.jsonl`` (and its state)
under ``results``. ``GetImageDownloadOperator`` then saves every image as ``<sku>_<n>.png``
(under ``$GETIMAGE_OUTPUT_DIR/<run id>/``, as in ``example_getimage``).
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_getimage.operators.getimage import GetImageBatchOperator, GetImageDownloadOperator

OUTPUT_DIR = os.path.abspath(
    os.environ.get("GETIMAGE_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "getimage-images")
)
PRODUCTS = {
    "sku-1001": "a ceramic mug",
    "sku-1002": "a linen tote bag",
    "sku-1003": "a brass desk lamp",
    "sku-1004": "a walnut cutting board",
    "sku-1005": "a wool throw blanket",
    "sku-1006": "a glass carafe",
}

with DAG(
    dag_id="example_getimage_batch",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as dag:

    @task
    def export_catalogue(run_id: str | None = None) -> str:
        """Write the catalogue's prompts as JSONL (one object per product); return the file's URI."""
        folder = os.path.join(OUTPUT_DIR, str(run_id))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "catalogue.jsonl")
        with open(path, "w", encoding="utf-8") as out:
            for sku, product in PRODUCTS.items():
                prompt = f"{product} on a white background, studio product photograph"
                out.write(json.dumps({"key": sku, "prompt": prompt}) + "\n")
        return "file://" + path

    # [START howto_operator_getimage_batch]
    catalogue = GetImageBatchOperator(
        task_id="generate",
        prompts=export_catalogue(),  # JSONL: {"key": "sku-1001", "prompt": "...", "model"?, "parameters"?}
        parameters={"aspect_ratio": "1:1"},  # every item's defaults; an item's own override them
        results="file://" + OUTPUT_DIR + "/{{ run_id }}/batch/",  # manifest.jsonl and state/
        max_submissions_per_second=5,
        max_in_flight=50,
        max_polls_per_second=10,
        poll_interval=2,
        timeout=30 * 60,
        max_failures=0,
        deferrable=True,
        retries=2,  # a retry re-attaches to the batch: nothing is paid twice
    )
    # [END howto_operator_getimage_batch]

    # [START howto_operator_getimage_download_batch]
    GetImageDownloadOperator(
        task_id="download",
        image_urls=catalogue.output,  # the batch's summary: the download reads its manifest
        destination="file://" + OUTPUT_DIR + "/{{ run_id }}/",
        max_concurrency=4,
    )
    # [END howto_operator_getimage_download_batch]
