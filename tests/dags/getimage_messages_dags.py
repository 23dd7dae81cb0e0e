# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""DAGs of the message tests (tests/test_messages.py): tasks that never submit, and the gallery log line."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageDownloadOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

START = datetime(2026, 1, 1)

# Both render to bad values, so both fail at run time before any request is sent.
with DAG(
    "getimage_messages_never_submitted",
    schedule=None,
    start_date=START,
    params={"prompt": "", "diffusion_id": ".."},
):
    GetImageDiffusionOperator(task_id="generate", prompt="{{ params.prompt }}", poll_interval=0.1, timeout=30)
    GetImageDiffusionSensor(task_id="wait", diffusion_id="{{ params.diffusion_id }}", poke_interval=0.1)

with DAG("getimage_messages_gallery_line", schedule=None, start_date=START):
    GetImageDiffusionOperator(task_id="blocking", prompt="a kite", poll_interval=0.1, timeout=30)
    GetImageDiffusionOperator(
        task_id="deferred", prompt="a kite", deferrable=True, poll_interval=0.1, timeout=30
    )
    GetImageDiffusionOperator(task_id="failing", prompt="nsfw kite", poll_interval=0.1, timeout=30)

# A download reading a mapped generation's outputs (Airflow's lazy sequence) to their end.
with DAG("getimage_messages_mapped_download", schedule=None, start_date=START):
    generated = GetImageDiffusionOperator.partial(task_id="generate", poll_interval=0.1, timeout=30).expand(
        prompt=["a red kite", "a blue kite"]
    )
    GetImageDownloadOperator(
        task_id="download",
        image_urls=generated.output,
        destination="memory://getimage-messages/{{ run_id }}/",
    )
