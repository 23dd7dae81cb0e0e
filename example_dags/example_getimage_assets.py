# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Assets with meaning: a producer DAG generates and stores images, a consumer DAG runs on them.

The download task has the ``Asset`` among its outlets, so its asset event carries ``extra``: the
diffusion id(s), the stored files (and, on a generation task's event, the model, the prompt and
the image URLs). The consumer is scheduled on the asset and reads that extra from
``triggering_asset_events``: no XCom crosses DAGs, no path is hard-coded twice.
"""

from __future__ import annotations

import logging
import os
import tempfile
from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageDownloadOperator

log = logging.getLogger(__name__)

OUTPUT_DIR = os.path.abspath(
    os.environ.get("GETIMAGE_OUTPUT_DIR") or os.path.join(tempfile.gettempdir(), "getimage-images")
)

# [START howto_assets_getimage_producer]
IMAGES = Asset(name="getimage_example_images", uri="getimage://example/images")

with DAG(
    dag_id="example_getimage_assets_producer",
    schedule=None,
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as producer:
    generate = GetImageDiffusionOperator(
        task_id="generate",
        prompt="a greenhouse full of ferns, morning light, photograph",
        poll_interval=1,
    )
    store = GetImageDownloadOperator(
        task_id="store",
        image_urls=generate.output,
        destination="file://" + OUTPUT_DIR + "/assets/{{ run_id }}/",
        outlets=[IMAGES],  # the event's extra: diffusion_ids, files, file_count
    )
# [END howto_assets_getimage_producer]

# [START howto_assets_getimage_consumer]
with DAG(
    dag_id="example_getimage_assets_consumer",
    schedule=[IMAGES],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    tags=["example", "getimage"],
) as consumer:

    @task
    def use_images(triggering_asset_events: Any = None) -> list[str]:
        """Stand-in for the next step: list the stored files every triggering event announced."""
        files: list[str] = []
        for events in (triggering_asset_events or {}).values():
            for event in events:
                files.extend(event.extra.get("files", []))
                log.info(
                    "Diffusion(s) %s stored %s", event.extra.get("diffusion_ids"), event.extra.get("files")
                )
        return files

    use_images()
# [END howto_assets_getimage_consumer]
