# mypy: disable-error-code="arg-type"
# (DAG files pass XComArgs such as task.output where a task's value is typed: that is how DAGs are wired.)
"""
Generate an image with GetImage.io, then download it to a local folder.

Runs as is against the public API (set the ``getimage_default`` connection) or against the
local emulator (``make demo`` does that). The images land in ``$GETIMAGE_OUTPUT_DIR/<run id>/``
(default ``/tmp/getimage-images``), one file per image, named after the diffusion id.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
from airflow.providers.common.compat.sdk import DAG, Param, task

from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

DAG_ID = "example_getimage"
log = logging.getLogger(__name__)
MAX_IMAGE_BYTES = 50 * 1024 * 1024
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}


def output_dir() -> Path:
    """Where images go: ``$GETIMAGE_OUTPUT_DIR``, read when the task runs, else a temp folder."""
    return Path(os.environ.get("GETIMAGE_OUTPUT_DIR") or Path(tempfile.gettempdir()) / "getimage-images")


def _safe_name(text: str) -> str:
    """A file-name-safe form of an id (run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "image"


def download_images(urls: list[str], folder: Path, stem: str) -> list[Path]:
    """
    Download each image URL into ``folder`` as ``<stem>_<index><ext>``.

    Only http(s) URLs; the answer must be an image and at most ``MAX_IMAGE_BYTES``. Each file is
    streamed to a temporary file in the same folder and renamed into place, so a crash never leaves
    a half-written image behind. No API key is sent: image URLs are public links.
    """
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    with requests.Session() as session:
        for index, url in enumerate(urls):
            if urlsplit(url).scheme not in ("http", "https"):
                raise ValueError(f"Refusing to download {url!r}: only http(s) image URLs are allowed.")
            with session.get(url, stream=True, timeout=(10, 60)) as response:
                response.raise_for_status()
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not content_type.startswith("image/"):
                    raise ValueError(f"{url} answered {content_type or 'no content type'}, not an image.")
                target = folder / f"{_safe_name(stem)}_{index}{EXTENSIONS.get(content_type, '.img')}"
                fd, partial = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".part")
                try:
                    size = 0
                    with os.fdopen(fd, "wb") as out:
                        for chunk in response.iter_content(chunk_size=64 * 1024):
                            size += len(chunk)
                            if size > MAX_IMAGE_BYTES:
                                raise ValueError(f"{url} is larger than {MAX_IMAGE_BYTES} bytes.")
                            out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                    os.chmod(partial, 0o644)  # mkstemp makes 0600; an image is no secret
                    os.replace(partial, target)
                except BaseException:
                    Path(partial).unlink(missing_ok=True)
                    raise
            paths.append(target)
    return paths


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

    @task
    def download(urls: list[str], **context: Any) -> list[str]:
        """Save the generated images under the output folder, in a folder per run, and log where."""
        diffusion_id = context["ti"].xcom_pull(task_ids="generate", key="diffusion_id")
        folder = output_dir() / _safe_name(context["run_id"])
        paths = download_images(urls, folder, stem=diffusion_id)
        for path in paths:
            log.info("Saved image %s", path)
        return [str(path) for path in paths]

    download(generate.output)
