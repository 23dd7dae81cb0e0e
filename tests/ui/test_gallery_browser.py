"""
The image gallery in a real browser: Airflow's UI -> task instance -> extra link -> images load.

Headless Chromium (``tests/ui/conftest.py``) drives the UI of a real deployment (every API app,
scheduler, dag-processor, triggerer; no login: all users are admins) after one run of
``e2e_gallery`` against the emulator. For the blocking operator and for the deferrable sensor it
opens the task instance's Details tab, clicks the **GetImage.io images** extra link, and checks
the gallery page: every ``<img>`` decoded (``naturalWidth > 0``), the prompt shown as text, no
script run. The same page as the task instance's **GetImage.io gallery** tab (an iframe) too.
A screenshot of each page is saved under the test's ``tmp_path``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest

from airflow_provider_getimage.plugins.gallery import TAB_NAME
from tests.e2e.gallery import (
    DAG_ID,
    LINK_NAME,
    PROMPT,
    finished_run,
    gallery_deployment,
    gallery_emulator,
    gallery_link,
)

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from playwright.sync_api import Dialog, Frame, Page

    from airflow_provider_getimage.emulator import Emulator
    from tests.e2e.deployment import AirflowDeployment

pytestmark = pytest.mark.e2e

#: Every image of the document: decoded (complete with a width) or not.
IMAGES_JS = (
    "Array.from(document.images).map(i => ({src: i.src, complete: i.complete, width: i.naturalWidth}))"
)
ALL_DECODED_JS = (
    "Array.from(document.images).length > 0 && Array.from(document.images).every(i => i.complete)"
)


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with gallery_emulator() as started:
        yield started


@pytest.fixture(scope="module")
def airflow(emulator: Emulator) -> Iterator[AirflowDeployment]:
    with gallery_deployment(emulator) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def run_id(airflow: AirflowDeployment) -> str:
    return finished_run(airflow)


def task_url(airflow: AirflowDeployment, run_id: str, task_id: str, tab: str) -> str:
    return f"{airflow.api_url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}/tasks/{task_id}/{tab}"


def assert_images_decoded(where: Page | Frame, expected: list[str]) -> None:
    """Every <img> finished loading with a real width, and they are exactly the task's images."""
    where.wait_for_function(ALL_DECODED_JS)
    images: list[dict[str, Any]] = where.evaluate(IMAGES_JS)
    assert [image["src"] for image in images] == expected
    assert all(image["complete"] and image["width"] > 0 for image in images), images


@pytest.mark.parametrize("task_id", ["generate", "wait"])
def test_details_tab_link_opens_a_gallery_whose_images_load(
    page: Page, airflow: AirflowDeployment, run_id: str, task_id: str, tmp_path: Path
) -> None:
    urls = airflow.xcom(DAG_ID, run_id, task_id)
    link = gallery_link(airflow, run_id, task_id)
    dialogs: list[str] = []

    def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)

    page.goto(task_url(airflow, run_id, task_id, "details"))
    extra_link = page.get_by_role("link", name=LINK_NAME, exact=True)
    extra_link.wait_for()
    assert extra_link.get_attribute("href") == link
    extra_link.click()
    page.wait_for_url(link)  # same origin: the UI opens it in the same tab

    assert_images_decoded(page, urls)
    text = page.locator("body").inner_text()
    assert PROMPT in text  # markup shown as text
    assert "FINISHED" in text
    assert airflow.xcom(DAG_ID, run_id, "submit" if task_id == "wait" else task_id, "diffusion_id") in text
    assert page.locator("script, b").count() == 0
    assert dialogs == []  # the prompt's alert() never ran
    shot = tmp_path / f"gallery-{task_id}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_gallery_tab_of_the_task_instance(
    page: Page, airflow: AirflowDeployment, run_id: str, tmp_path: Path
) -> None:
    """The plugin's external view: a tab of the task instance page, showing the gallery in an iframe."""
    urls = airflow.xcom(DAG_ID, run_id, "generate")
    page.goto(task_url(airflow, run_id, "generate", "details"))
    tab = page.get_by_role("link", name=TAB_NAME)
    tab.first.wait_for()
    tab.first.click()
    page.wait_for_url("**/plugin/getimage-gallery")
    frame_element = page.locator(f"iframe[title='{TAB_NAME}']")
    frame_element.wait_for()
    frame = frame_element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    assert "/getimage/gallery/" in frame.url
    assert frame.url.endswith("/generate?map_index=%7BMAP_INDEX%7D") or frame.url.endswith(
        "/generate?map_index={MAP_INDEX}"
    ), frame.url
    assert_images_decoded(frame, urls)
    assert PROMPT in frame.locator("body").inner_text()
    page.screenshot(path=str(tmp_path / "gallery-tab.png"), full_page=True)
