# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
``@task.getimage``: a TaskFlow function returns the prompt, the task generates it.

The function runs first (it may read XComs, params, a database...), its return value is checked
before anything is submitted, then the task behaves as ``GetImageDiffusionOperator``: it returns
the image URLs and pushes ``diffusion_id`` and ``diffusion``. Mapped with ``.expand()`` like any
TaskFlow task.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

log = logging.getLogger(__name__)
BANNERS = Asset(name="getimage_example_banners", uri="getimage://example/banners")

with DAG(
    dag_id="example_getimage_decorator",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as dag:
    # [START howto_decorator_getimage]
    @task.getimage(model="midjourney", poll_interval=1, timeout=15 * 60)
    def poster(subject: str) -> str:
        """The prompt: a string (or a mapping with prompt, model, parameters)."""
        return f"a travel poster of {subject}, art deco"

    @task.getimage(deferrable=True, poll_interval=1, outlets=[BANNERS])
    def banner(ds: str | None = None) -> dict[str, Any]:
        """A mapping overrides the decorator's model and parameters."""
        return {"prompt": f"a banner for the {ds} newsletter", "parameters": {"aspect_ratio": "3:1"}}

    posters = poster.expand(subject=["Lisbon", "Kyoto", "Valparaiso"])
    # [END howto_decorator_getimage]

    @task
    def count(urls: list[list[str]], banner_urls: list[str]) -> int:
        """Stand-in for post-processing: count the images."""
        total = sum(len(batch) for batch in urls) + len(banner_urls)
        log.info("%d image(s)", total)
        return total

    count(posters, banner())
