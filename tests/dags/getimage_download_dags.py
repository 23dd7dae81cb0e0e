# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""DAGs the download operator tests run through ``dag.test()`` (generation on the emulator, then download)."""

from __future__ import annotations

from datetime import datetime

from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath, XComArg, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator, GetImageDownloadOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

START = datetime(2026, 1, 1)
FAST = {"poll_interval": 0.1, "timeout": 30}
PROMPTS = ["a red fox", "a blue whale", "a green owl"]

with DAG("getimage_download", schedule=None, start_date=START, params={"prompt": "a koi", "dest": ""}):
    generate = GetImageDiffusionOperator(task_id="generate", prompt="{{ params.prompt }}", **FAST)
    GetImageDownloadOperator(
        task_id="download", image_urls=generate.output, destination="{{ params.dest }}/{{ run_id }}/"
    )

with DAG("getimage_download_memory", schedule=None, start_date=START):
    generate = GetImageDiffusionOperator(task_id="generate", prompt="an image kept in memory", **FAST)
    GetImageDownloadOperator(
        task_id="download",
        image_urls=generate.output,
        # An ObjectStoragePath with a template in it; memory:// is a scheme no provider registers.
        destination=ObjectStoragePath("memory://getimage-tests/{{ run_id }}/"),
    )

with DAG("getimage_download_mapped", schedule=None, start_date=START, params={"dest": ""}):
    generated = GetImageDiffusionOperator.partial(task_id="generate", **FAST).expand(prompt=PROMPTS)
    # One download over every prompt's images...
    GetImageDownloadOperator(
        task_id="download_all", image_urls=generated.output, destination="{{ params.dest }}/all/"
    )
    # ...and one download per prompt, mapped like the generation.
    GetImageDownloadOperator.partial(task_id="download_each", destination="{{ params.dest }}/each/").expand(
        image_urls=generated.output
    )

with DAG("getimage_download_sensor", schedule=None, start_date=START, params={"dest": ""}):
    submit = GetImageDiffusionOperator(
        task_id="submit", prompt="waited for by a sensor", wait_for_completion=False
    )
    wait = GetImageDiffusionSensor(task_id="wait", diffusion_id=submit.output, poke_interval=0.1, timeout=30)
    GetImageDownloadOperator(task_id="download", image_urls=wait.output, destination="{{ params.dest }}")

with DAG("getimage_download_filtered", schedule=None, start_date=START, params={"dest": ""}):
    generate = GetImageDiffusionOperator(task_id="generate", prompt="only some images", **FAST)

    @task
    def pick(urls: list[str]) -> list[str]:
        """Keep the last two images (a stand-in for a filter step between generation and download)."""
        return urls[2:]

    picked = pick(generate.output)
    # The URLs come from `pick`, not from a GetImage task: the id is given, the index is the list's.
    GetImageDownloadOperator(
        task_id="download_named",
        image_urls=picked,
        diffusion_id=XComArg(generate, key="diffusion_id"),
        destination="{{ params.dest }}/named/",
    )
    # Without it, the operator cannot tell which diffusion the URLs belong to, and says so.
    GetImageDownloadOperator(task_id="download_unnamed", image_urls=picked, destination="{{ params.dest }}")
