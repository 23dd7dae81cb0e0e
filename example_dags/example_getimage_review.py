# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Generate four images, let a person pick one in Airflow's Required Actions form, keep only that one.

Needs Airflow 3.1+ (human-in-the-loop). The run waits at ``review`` until someone answers: in the
UI (Browse -> Required Actions, or the task's Required Actions tab) or through the REST API
(``PATCH /api/v2/dags/{dag}/dagRuns/{run}/taskInstances/review/-1/hitlDetails``). "Reject all"
skips ``review`` and ``download``, and ``regenerate`` (``trigger_rule="all_skipped"``) draws again.
After a day with no answer the first image is kept. The chosen image lands in
``$GETIMAGE_OUTPUT_DIR/<run id>/`` as ``<diffusion id>_<index>.png``, index as generated.
"""

from __future__ import annotations

import os
import tempfile
from datetime import datetime, timedelta

from airflow.providers.common.compat.sdk import DAG, Param

from airflow_provider_getimage.operators.getimage import (
    GetImageDiffusionOperator,
    GetImageDownloadOperator,
    GetImageReviewOperator,
)

DAG_ID = "example_getimage_review"
OUTPUT_DIR = os.path.abspath(
    os.environ.get("GETIMAGE_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "getimage-images")
)

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
    params={"prompt": Param("a red fox in fresh snow, photograph", type="string", minLength=1)},
) as dag:
    generate = GetImageDiffusionOperator(
        task_id="generate", prompt="{{ params.prompt }}", poll_interval=2, timeout=15 * 60
    )

    # [START howto_operator_getimage_review]
    review = GetImageReviewOperator(
        task_id="review",
        image_urls=generate.output,
        subject="Which image goes on the landing page?",
        body="Pick **one** image, or reject them all to draw again.",
        on_reject="skip",
        response_timeout=timedelta(days=1),
        defaults="Image 1",
    )

    download = GetImageDownloadOperator(
        task_id="download",
        image_urls=review.output,  # only the chosen URL(s)
        destination="file://" + OUTPUT_DIR + "/{{ run_id }}/",
    )
    generate >> download  # files are named after generate's diffusion id and image index
    # [END howto_operator_getimage_review]

    regenerate = GetImageDiffusionOperator(
        task_id="regenerate",
        prompt="{{ params.prompt }}, another take",
        trigger_rule="all_skipped",
        poll_interval=2,
        timeout=15 * 60,
    )
    review >> regenerate
