# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
The DAG the review step's end-to-end and browser tests run on a real deployment.

``generate`` draws four images, ``review`` waits for a person's pick and ``receive`` returns the
URLs it was handed, so a test can compare them with the pick. The prompt comes from the run's conf.
"""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageReviewOperator

DAG_ID = "e2e_review"

with DAG(
    dag_id=DAG_ID,
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    params={"prompt": "a red fox in fresh snow"},
):
    generate = GetImageDiffusionOperator(
        task_id="generate", prompt="{{ params.prompt }}", poll_interval=0.5, timeout=120
    )
    review = GetImageReviewOperator(
        task_id="review",
        image_urls=generate.output,
        subject="e2e: pick the best fox",
        body="Pick **one** image.",
        on_reject="skip",
    )

    @task
    def receive(urls: list[str]) -> list[str]:
        """Return what the review handed downstream, for the test to read."""
        return urls

    receive(review.output)
