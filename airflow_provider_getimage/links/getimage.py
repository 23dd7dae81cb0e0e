"""Operator extra link: open this task instance's generated images from the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom, conf

from airflow_provider_getimage.plugins.gallery_page import gallery_url

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

__all__ = ["GetImageImagesLink"]


class GetImageImagesLink(BaseOperatorLink):
    """
    Link to the gallery page of this task instance (served by the ``getimage_gallery`` plugin).

    The page shows this run's images with their prompt, model, diffusion id, status and timings.
    The link is empty until the task pushed its diffusion to XCom (``diffusion_id`` right after
    the submission, ``diffusion`` for a sensor). Airflow 3 computes it in the worker when the try
    ends or defers and stores it in XCom; it is absolute under ``[api] base_url`` when that is set,
    else a path the UI resolves against its own origin.
    """

    name = "GetImage.io images"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        if not any(XCom.get_value(ti_key=ti_key, key=key) for key in ("diffusion_id", "diffusion")):
            return ""
        return gallery_url(
            conf.get("api", "base_url", fallback="") or "",
            ti_key.dag_id,
            ti_key.run_id,
            ti_key.task_id,
            ti_key.map_index,
        )
