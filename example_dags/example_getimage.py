# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Generate an image with GetImage.io, then save it to a folder with ``GetImageDownloadOperator``.

Runs as is against the public API (set the ``getimage_default`` connection) or against the
local emulator (``make demo`` does that). The images land in ``$GETIMAGE_OUTPUT_DIR/<run id>/``
(default ``<temp dir>/getimage-images``), one file per image, named ``<diffusion id>_<index>.png``.
Any ObjectStoragePath URI works as the destination instead: ``s3://bucket/images/{{ run_id }}/``
with ``destination_conn_id="aws_default"``, for instance.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageDownloadOperator

DAG_ID = "example_getimage"
#: Read when the DAG file is parsed; ``make demo`` and the tests set it for every Airflow process.
OUTPUT_DIR = os.path.abspath(
    os.environ.get("GETIMAGE_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "getimage-images")
)

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
    params={
        "prompt": Param(
            "a lighthouse on a cliff at dawn, watercolor",
            type="string",
            minLength=1,
            description="What to draw.",
        )
    },
) as dag:
    # [START howto_operator_getimage_diffusion]
    generate = GetImageDiffusionOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        model="midjourney",
        parameters={"aspect_ratio": "1:1"},
        poll_interval=2,
        timeout=15 * 60,
    )
    # [END howto_operator_getimage_diffusion]

    # [START howto_operator_getimage_download]
    download = GetImageDownloadOperator(
        task_id="download",
        image_urls=generate.output,
        destination="file://" + OUTPUT_DIR + "/{{ run_id }}/",
    )
    # [END howto_operator_getimage_download]
