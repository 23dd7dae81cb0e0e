# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""DAGs the operator tests run through ``dag.test()`` (a DAG bundle of their own, see conftest)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

START = datetime(2026, 1, 1)

with DAG("getimage_operator_wait", schedule=None, start_date=START, params={"prompt": "a red fox"}):
    GetImageDiffusionOperator(
        task_id="generate",
        prompt="{{ params.prompt }}",
        parameters={"seed": 7, "negative_prompt": "{{ params.get('negative', 'blurry') }}"},
        poll_interval=0.1,
        timeout=30,
    )

with DAG("getimage_operator_submit_only", schedule=None, start_date=START):
    GetImageDiffusionOperator(task_id="submit", prompt="submit only", wait_for_completion=False)

with DAG("getimage_operator_timeout", schedule=None, start_date=START):
    GetImageDiffusionOperator(task_id="generate", prompt="too slow", poll_interval=0.1, timeout=1)

with DAG("getimage_operator_mapped", schedule=None, start_date=START):

    @task
    def gather(urls: list[list[str]]) -> list[str]:
        """Flatten the URL lists of every mapped generation."""
        return [url for task_urls in urls for url in task_urls]

    generated = GetImageDiffusionOperator.partial(task_id="generate", poll_interval=0.1, timeout=30).expand(
        prompt=["a red fox", "a blue whale", "a green owl"]
    )
    gather(generated.output)
