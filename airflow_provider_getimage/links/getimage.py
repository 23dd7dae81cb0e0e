"""Operator extra link: open this task instance's generated images from the Airflow UI."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperatorLink, XCom

from airflow_provider_getimage import _rules

if TYPE_CHECKING:
    from airflow.providers.common.compat.sdk import BaseOperator, TaskInstanceKey

__all__ = ["GetImageImagesLink"]


class GetImageImagesLink(BaseOperatorLink):
    """
    Link to the images of this task instance's diffusion, read from its XCom ``diffusion``.

    Links to the first image of this run (not a constant page); empty until the diffusion finished.
    """

    name = "GetImage.io images"

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        record: Any = XCom.get_value(ti_key=ti_key, key="diffusion")
        if not isinstance(record, dict):
            return ""
        urls = _rules.image_urls(record)
        return urls[0] if urls else ""
