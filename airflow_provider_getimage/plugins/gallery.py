"""
The ``getimage_gallery`` Airflow plugin: pages of a task instance's, a run's and a DAG's images.

Registered through the ``airflow.plugins`` entry point (and declared in the provider info). It
mounts a FastAPI app in the API server under ``/getimage`` (the page the
``GetImageImagesLink`` extra link opens) and adds its pages as tabs of the UI's views (external
views, Airflow 3.1+): a task instance's images (a mapped task's parent shows all its map indexes),
a DAG run's images, and a DAG's recent runs.

Every Airflow process loads plugins, task processes included (for macros and listeners), so this
module stays light: the FastAPI app and the database code it needs are imported by the API
server on the first request, not here.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_getimage.plugins.gallery_page import GALLERY_URL_PREFIX, MAP_INDEX_PLACEHOLDER

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["GalleryApp", "GetImageGalleryPlugin"]

PLUGIN_NAME = "getimage_gallery"
TAB_NAME = "GetImage.io gallery"
RUN_TAB_NAME = "GetImage.io run gallery"
HISTORY_TAB_NAME = "GetImage.io history"


class GalleryApp:
    """
    The gallery's ASGI app, built on its first request.

    A stand-in for the FastAPI app of :mod:`.gallery_app`, so that loading the plugin in a worker
    does not import FastAPI (about half a second per task process) or the API server's security
    and database modules.
    """

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._lock = threading.Lock()

    @property
    def app(self) -> ASGIApp:
        """The FastAPI app (built once; the API server has imported its dependencies already)."""
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from airflow_provider_getimage.plugins.gallery_app import create_app

                    self._app = create_app()
        return self._app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class GetImageGalleryPlugin(AirflowPlugin):
    """Serve the image gallery from the API server and show it as a task instance tab."""

    name = PLUGIN_NAME
    fastapi_apps: list[Any] = [
        {"app": GalleryApp(), "url_prefix": GALLERY_URL_PREFIX, "name": "GetImage.io gallery"},
    ]
    # The UI fills in the placeholders; it leaves {MAP_INDEX} as is for an unmapped task instance,
    # which the page reads as -1. No leading slash: the UI resolves it against its base URL.
    external_views: list[Any] = [
        {
            "name": TAB_NAME,
            "href": f"{GALLERY_URL_PREFIX.strip('/')}/gallery/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}"
            f"?map_index={MAP_INDEX_PLACEHOLDER}",
            "destination": "task_instance",
            "url_route": "getimage-gallery",
        },
        {
            "name": RUN_TAB_NAME,
            "href": f"{GALLERY_URL_PREFIX.strip('/')}/run/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "getimage-run-gallery",
        },
        {
            "name": HISTORY_TAB_NAME,
            "href": f"{GALLERY_URL_PREFIX.strip('/')}/dag/{{DAG_ID}}",
            "destination": "dag",
            "url_route": "getimage-history",
        },
    ]
