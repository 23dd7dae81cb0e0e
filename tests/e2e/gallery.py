"""
The gallery's end-to-end set-up (``tests/ui/test_gallery.py``): the deployment, the DAG and its run.

The module starts one deployment (about 15 s on an idle 2-core machine) and one run of
``e2e_gallery`` (a few seconds; the emulator takes 2 s per generation); its HTTP tests and its
browser tests then only read.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from harness import AirflowDeployment

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator

GALLERY_DAGS = Path(__file__).parent / "gallery_dags"
DAG_ID = "e2e_gallery"
MAPPED_DAG_ID = "example_getimage_mapped"
MAPPED_PROMPTS = (
    "a red fox in fresh snow, photograph",
    "a blue whale seen from below, sunlight through water",
    "a green owl on a mossy branch, watercolor",
)
#: The run's prompt: markup the gallery must show as text.
PROMPT = 'e2e gallery: a <b>bold</b> "fox" & <script>alert(1)</script>'
LINK_NAME = "GetImage.io images"
LATENCY = 2.0
RUN_TIMEOUT = 150.0


@contextlib.contextmanager
def gallery_deployment(emulator: Emulator, output_dir: Path | None = None) -> Iterator[AirflowDeployment]:
    """
    A real Airflow (every API app, scheduler, dag-processor, triggerer) serving ``gallery_dags/``.

    ``GETIMAGE_E2E_KEEP_HOME=1`` keeps its home (logs, database) for a look afterwards.
    """
    deployment = AirflowDeployment(
        GALLERY_DAGS,
        extra_env={
            **emulator.airflow_env(),
            # On a loaded 2-core machine the API server's first execution API calls took 20-50 s;
            # a task gives up after 5 tries of 5 s. Nothing here is about that path: wait longer.
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            # Where the mapped example's download task saves its PNGs (deleted with the home).
            "GETIMAGE_OUTPUT_DIR": str(output_dir) if output_dir is not None else "",
        },
        api_apps="all",
        keep_home=bool(os.environ.get("GETIMAGE_E2E_KEEP_HOME")),
    )
    with deployment:
        yield deployment
    print(f"\nairflow deployment: {deployment.report()}")


def finished_run(deployment: AirflowDeployment) -> str:
    """Run ``e2e_gallery`` once with :data:`PROMPT`; return its run id once it succeeded."""
    deployment.wait_until_parsed(DAG_ID)
    run_id = deployment.trigger(DAG_ID, {"prompt": PROMPT})
    started = time.monotonic()
    state = deployment.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    deployment.timings["run"] = time.monotonic() - started
    if state != "success":
        raise AssertionError(
            f"run {run_id} ended {state}: {deployment.task_states(DAG_ID, run_id)}\n{deployment.describe(40)}"
        )
    return run_id


def gallery_link(deployment: AirflowDeployment, run_id: str, task_id: str) -> str:
    """Where the task's extra link must point: its page under the API server's base URL."""
    return f"{deployment.api_url}/getimage/gallery/{DAG_ID}/{quote(run_id, safe='')}/{task_id}"


def finished_mapped_run(deployment: AirflowDeployment) -> str:
    """Run the mapped example once (3 prompts x 4 images, then the download); its run id on success."""
    deployment.wait_until_parsed(MAPPED_DAG_ID)
    run_id = deployment.trigger(MAPPED_DAG_ID)
    state = deployment.wait_for_run(MAPPED_DAG_ID, run_id, timeout=RUN_TIMEOUT)
    if state != "success":
        raise AssertionError(
            f"run {run_id} ended {state}: {deployment.task_states(MAPPED_DAG_ID, run_id)}\n"
            f"{deployment.describe(40)}"
        )
    return run_id
