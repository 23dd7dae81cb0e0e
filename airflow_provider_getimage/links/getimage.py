"""Operator extra link: open this task instance's generated images from the Airflow UI."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, TaskDeferred, XCom, conf

from airflow_provider_getimage.plugins.gallery_page import gallery_url

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.providers.common.compat.sdk import BaseOperator, Context, TaskInstanceKey

__all__ = ["GetImageImagesLink", "logs_gallery_url", "task_gallery_url"]


def task_gallery_url(dag_id: str, run_id: str, task_id: str, map_index: int | None = -1) -> str:
    """The gallery page of one task instance, absolute under ``[api] base_url`` when that is set."""
    return gallery_url(
        conf.get("api", "base_url", fallback="") or "",
        dag_id,
        run_id,
        task_id,
        -1 if map_index is None else map_index,
    )


class GetImageImagesLink(BaseOperatorLink):
    """
    Link to the gallery page of this task instance (served by the ``getimage_gallery`` plugin).

    The page shows this run's images with their prompt, model, diffusion id, status and timings.
    The link is empty until the task pushed its diffusion to XCom (``diffusion_id`` right after
    the submission, ``diffusion`` for a sensor). Airflow 3 computes it in the worker when the try
    ends or defers and stores it in XCom; it is absolute under ``[api] base_url`` when that is set,
    else a path the UI resolves against its own origin.

    An operator whose ``diffusion_pushed`` is False (this try pushed nothing) gets an empty link
    without an XCom read: in Airflow 3 reading a missing XCom logs an ERROR ("XCom not found"),
    which a task that failed before submitting should not leave behind.
    """

    name = "GetImage.io images"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        pushed = getattr(operator, "diffusion_pushed", None)
        if pushed is False:
            return ""
        if pushed is None and not any(
            XCom.get_value(ti_key=ti_key, key=key) for key in ("diffusion_id", "diffusion")
        ):
            return ""
        return task_gallery_url(ti_key.dag_id, ti_key.run_id, ti_key.task_id, ti_key.map_index)


@contextlib.contextmanager
def logs_gallery_url(operator: Any, context: Context) -> Iterator[None]:
    """
    End the try's log with the gallery's URL, once the task pushed its diffusion.

    Logged when the block ends or fails (a failed diffusion's page shows the reason), not when it
    defers: the try that resumes logs it.
    """
    deferred = False
    try:
        yield
    except TaskDeferred:
        deferred = True
        raise
    finally:
        if not deferred and getattr(operator, "diffusion_pushed", False):
            _log_gallery_url(operator, context)


def _log_gallery_url(operator: Any, context: Context) -> None:
    """The log line itself; a task instance without its ids (a test's stand-in) gets none."""
    ti = context.get("ti")
    dag_id, run_id = getattr(ti, "dag_id", None), getattr(ti, "run_id", None)
    if not isinstance(dag_id, str) or not isinstance(run_id, str):
        return
    map_index = getattr(ti, "map_index", -1)
    url = task_gallery_url(dag_id, run_id, operator.task_id, map_index if isinstance(map_index, int) else -1)
    where = "" if url.startswith(("http://", "https://")) else " (a path on the Airflow UI's address)"
    operator.log.info("GetImage.io gallery of this task: %s%s", url, where)
