"""
The image gallery on a real Airflow deployment: extra link -> plugin page -> images.

One deployment (api-server with every app, scheduler, dag-processor, triggerer) runs one DAG
against the emulator: a blocking operator, and a submit-only operator followed by a deferrable
sensor. The tests read each task's extra link through the REST API, as the UI does, fetch the page
it points to over HTTP from the API server's plugin, and fetch every image the page shows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_getimage.plugins.gallery_page import SECURITY_HEADERS
from tests.e2e.gallery import (
    DAG_ID,
    LINK_NAME,
    PROMPT,
    finished_run,
    gallery_deployment,
    gallery_emulator,
    gallery_link,
)
from tests.plugins.page_parser import Page

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator
    from tests.e2e.deployment import AirflowDeployment

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def e2e_emulator() -> Iterator[Emulator]:
    """Overrides the package's emulator: 2 s per generation, and a key of its own to search for."""
    with gallery_emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def airflow_deployment(e2e_emulator: Emulator) -> Iterator[AirflowDeployment]:
    """The gallery DAG on a real Airflow; named like the package's fixture, so failures print its logs."""
    with gallery_deployment(e2e_emulator) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def run_id(airflow_deployment: AirflowDeployment) -> str:
    return finished_run(airflow_deployment)


def extra_links(airflow: AirflowDeployment, run_id: str, task_id: str) -> dict[str, Any]:
    """What the UI's Details tab shows: ``GET .../taskInstances/{task}/links``."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links"
    return dict(airflow.api("GET", path)["extra_links"])


def open_gallery(airflow: AirflowDeployment, run_id: str, task_id: str) -> Page:
    """Follow the task's extra link to the plugin page; check the answer is a safe HTML page."""
    link = extra_links(airflow, run_id, task_id)[LINK_NAME]
    assert link == gallery_link(airflow, run_id, task_id)
    response = requests.get(link, timeout=30)
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    return Page(response.text)


def assert_images_load(page: Page, urls: list[str]) -> None:
    """The page shows exactly the task's images, and each one answers as a PNG."""
    assert [img["src"] for img in page.all("img")] == urls
    for url in urls:
        image = requests.get(url, timeout=10)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


def assert_safe(page: Page, raw: str, key: str) -> None:
    assert "script" not in {tag for tag, _ in page.tags}
    assert "b" not in {tag for tag, _ in page.tags}
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert key not in raw


def test_operator_link_opens_its_gallery(
    airflow_deployment: AirflowDeployment, run_id: str, e2e_emulator: Emulator
) -> None:
    urls = airflow_deployment.xcom(DAG_ID, run_id, "generate")
    diffusion_id = airflow_deployment.xcom(DAG_ID, run_id, "generate", "diffusion_id")
    page = open_gallery(airflow_deployment, run_id, "generate")

    assert_images_load(page, urls)
    for text in (PROMPT, diffusion_id, "midjourney", "FINISHED", "Generation took", "Task statesuccess"):
        assert text in page.visible
    raw = requests.get(extra_links(airflow_deployment, run_id, "generate")[LINK_NAME], timeout=30).text
    assert_safe(page, raw, e2e_emulator.api_key)


def test_sensor_and_submitter_links_open_the_same_diffusion(
    airflow_deployment: AirflowDeployment, run_id: str, e2e_emulator: Emulator
) -> None:
    urls = airflow_deployment.xcom(DAG_ID, run_id, "wait")
    diffusion_id = airflow_deployment.xcom(DAG_ID, run_id, "submit", "diffusion_id")

    sensor = open_gallery(airflow_deployment, run_id, "wait")
    assert_images_load(sensor, urls)
    assert diffusion_id in sensor.visible
    assert f"{PROMPT} (then a sensor)" in sensor.visible

    submit = open_gallery(airflow_deployment, run_id, "submit")
    assert_images_load(submit, urls)  # its own record is the submission's (NEW): the sensor's is shown
    assert "Record fromtask wait of this run" in submit.visible


def test_the_plugin_runs_in_the_api_server(airflow_deployment: AirflowDeployment, run_id: str) -> None:
    plugins = airflow_deployment.api("GET", "/api/v2/plugins")["plugins"]
    (gallery,) = [plugin for plugin in plugins if plugin["name"] == "getimage_gallery"]
    assert gallery["external_views"][0]["destination"] == "task_instance"
    assert airflow_deployment.api("GET", "/api/v2/plugins/importErrors")["total_entries"] == 0

    missing = requests.get(
        f"{airflow_deployment.api_url}/getimage/gallery/{DAG_ID}/no_such_run/generate", timeout=30
    )
    assert missing.status_code == 404
    assert "Airflow has no task instance" in Page(missing.text).visible
