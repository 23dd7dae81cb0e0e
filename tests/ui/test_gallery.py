"""
The image gallery on a real Airflow deployment: extra link -> plugin page -> images.

Over HTTP, as the UI does: each task's extra link from the REST API, the plugin page it points to
(safe headers, no script, no key), and every image on it answering as a PNG.

In a real browser: Airflow's UI -> task instance -> extra link -> images load.

Headless Chromium (``tests/ui/conftest.py``) drives the UI of a real deployment (every API app,
scheduler, dag-processor, triggerer; no login: all users are admins) after one run of
``e2e_gallery`` against the emulator. For the blocking operator and for the deferrable sensor it
opens the task instance's Details tab, clicks the **GetImage.io images** extra link, and checks
the gallery page: every ``<img>`` decoded (``naturalWidth > 0``), the prompt shown as text, no
script run. The same page as the task instance's **GetImage.io gallery** tab (an iframe) too.
A screenshot of each page is saved under the test's ``tmp_path``. One deployment and one DAG run
serve both kinds of test; without Chromium only the browser tests skip.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import requests

from airflow_provider_getimage.plugins.gallery import RUN_TAB_NAME, TAB_NAME, GetImageGalleryPlugin
from airflow_provider_getimage.plugins.gallery_page import (
    SECURITY_HEADERS,
    gallery_path,
    history_path,
    run_path,
)
from harness import keyed_emulator
from tests.e2e.gallery import (
    DAG_ID,
    LATENCY,
    LINK_NAME,
    MAPPED_DAG_ID,
    MAPPED_PROMPTS,
    PROMPT,
    finished_mapped_run,
    finished_run,
    gallery_deployment,
    gallery_link,
)
from tests.plugins.page_parser import Page as HtmlPage
from tests.plugins.test_gallery_page import assert_own_script

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Dialog, Frame, Page

    from airflow_provider_getimage.emulator import Emulator
    from harness import AirflowDeployment

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
    with keyed_emulator(LATENCY) as started:
        yield started


@pytest.fixture(scope="module")
def airflow(emulator: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AirflowDeployment]:
    with gallery_deployment(emulator, tmp_path_factory.mktemp("images")) as deployment:
        yield deployment


@pytest.fixture(scope="module")
def run_id(airflow: AirflowDeployment) -> str:
    return finished_run(airflow)


@pytest.fixture(scope="module")
def mapped_run_id(airflow: AirflowDeployment) -> str:
    return finished_mapped_run(airflow)


@pytest.fixture(scope="module")
def screenshots() -> Path:
    """
    One folder for every view's screenshot, printed so a reviewer can open them.

    Outside pytest's own temporary folders, which later sessions rotate away:
    ``$GETIMAGE_SCREENSHOTS_DIR``, else a new folder under the system's temporary directory.
    """
    root = os.environ.get("GETIMAGE_SCREENSHOTS_DIR")
    if root:
        folder = Path(root)
        folder.mkdir(parents=True, exist_ok=True)
    else:
        folder = Path(tempfile.mkdtemp(prefix="getimage-gallery-screenshots-"))
    print(f"\ngallery screenshots: {folder}")
    return folder


# -- over HTTP ------------------------------------------------------------------------------
def extra_links(airflow: AirflowDeployment, run_id: str, task_id: str) -> dict[str, Any]:
    """What the UI's Details tab shows: ``GET .../taskInstances/{task}/links``."""
    path = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/links"
    return dict(airflow.api("GET", path)["extra_links"])


def open_gallery(airflow: AirflowDeployment, run_id: str, task_id: str) -> HtmlPage:
    """Follow the task's extra link to the plugin page; check the answer is a safe HTML page."""
    link = extra_links(airflow, run_id, task_id)[LINK_NAME]
    assert link == gallery_link(airflow, run_id, task_id)
    response = requests.get(link, timeout=30)
    assert response.status_code == 200, response.text[:2000]
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    return HtmlPage(response.text)


def assert_images_load(page: HtmlPage, urls: list[str]) -> None:
    """The page shows exactly the task's images, and each one answers as a PNG."""
    assert [img["src"] for img in page.all("img")] == urls
    for url in urls:
        image = requests.get(url, timeout=10)
        assert image.status_code == 200
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


def assert_safe(page: HtmlPage, raw: str, key: str) -> None:
    assert_own_script(page)
    assert "b" not in {tag for tag, _ in page.tags}
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert key not in raw


def test_operator_link_opens_its_gallery(airflow: AirflowDeployment, run_id: str, emulator: Emulator) -> None:
    urls = airflow.xcom(DAG_ID, run_id, "generate")
    diffusion_id = airflow.xcom(DAG_ID, run_id, "generate", "diffusion_id")
    page = open_gallery(airflow, run_id, "generate")

    assert_images_load(page, urls)
    for text in (PROMPT, diffusion_id, "midjourney", "FINISHED", "Generation took", "Task statesuccess"):
        assert text in page.visible
    raw = requests.get(extra_links(airflow, run_id, "generate")[LINK_NAME], timeout=30).text
    assert_safe(page, raw, emulator.api_key)


def test_sensor_and_submitter_links_open_the_same_diffusion(
    airflow: AirflowDeployment, run_id: str, emulator: Emulator
) -> None:
    urls = airflow.xcom(DAG_ID, run_id, "wait")
    diffusion_id = airflow.xcom(DAG_ID, run_id, "submit", "diffusion_id")

    sensor = open_gallery(airflow, run_id, "wait")
    assert_images_load(sensor, urls)
    assert diffusion_id in sensor.visible
    assert f"{PROMPT} (then a sensor)" in sensor.visible

    submit = open_gallery(airflow, run_id, "submit")
    assert_images_load(submit, urls)  # its own record is the submission's (NEW): the sensor's is shown
    assert "Record fromtask wait of this run" in submit.visible


def test_the_plugin_runs_in_the_api_server(airflow: AirflowDeployment, run_id: str) -> None:
    plugins = airflow.api("GET", "/api/v2/plugins")["plugins"]
    (gallery,) = [plugin for plugin in plugins if plugin["name"] == "getimage_gallery"]
    assert gallery["external_views"][0]["destination"] == "task_instance"
    assert airflow.api("GET", "/api/v2/plugins/importErrors")["total_entries"] == 0

    missing = requests.get(f"{airflow.api_url}/getimage/gallery/{DAG_ID}/no_such_run/generate", timeout=30)
    assert missing.status_code == 404
    assert "Airflow has no task instance" in HtmlPage(missing.text).visible


# -- in Chromium ------------------------------------------------------------------------------
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
    assert page.locator("b").count() == 0
    assert page.locator("script").count() == 1  # the page's own, allowed by its hash
    assert dialogs == []  # the prompt's alert() never ran
    assert_pixel_sizes(page, len(urls))
    assert "UTC" not in page.locator("time").first.inner_text()  # shown in the viewer's local time
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


def assert_pixel_sizes(where: Page | Frame, count: int) -> None:
    """Each image's caption shows its pixel size, read from the decoded image by the page's script."""
    where.wait_for_function(f"document.querySelectorAll('.px:not(:empty)').length >= {count}")
    sizes = where.evaluate("Array.from(document.querySelectorAll('.px')).map(e => e.textContent)")
    assert len(sizes) == count
    assert all(re.fullmatch("\\d+ \u00d7 \\d+ px", size) for size in sizes), sizes


def gallery_url(airflow: AirflowDeployment, path: str) -> str:
    return f"{airflow.api_url}/{path}"


def test_run_gallery_of_the_mapped_example_shows_its_12_images_with_their_prompts(
    page: Page, airflow: AirflowDeployment, mapped_run_id: str, screenshots: Path
) -> None:
    """The acceptance check of issue 14: 3 prompts x 4 images, every image decoded, every prompt shown."""
    urls = [
        url
        for index in range(3)
        for url in airflow.xcom(MAPPED_DAG_ID, mapped_run_id, "generate", "return_value", index)
    ]
    assert len(urls) == 12
    page.goto(gallery_url(airflow, run_path(MAPPED_DAG_ID, mapped_run_id)))
    assert_images_decoded(page, urls)
    text = page.locator("body").inner_text()
    for prompt in MAPPED_PROMPTS:
        assert prompt in text
    assert "generate (3 items)" in text
    assert "download (1 item)" in text
    assert_pixel_sizes(page, 12)
    page.screenshot(path=str(screenshots / "run-gallery.png"), full_page=True)

    # Dark, as the UI's own theme setting (localStorage "theme") or the system's says.
    page.evaluate("localStorage.setItem('theme', 'dark')")
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    page.wait_for_function(ALL_DECODED_JS)
    page.screenshot(path=str(screenshots / "run-gallery-dark.png"), full_page=True)


def test_run_gallery_is_a_tab_of_the_dag_run(
    page: Page, airflow: AirflowDeployment, mapped_run_id: str, screenshots: Path
) -> None:
    page.goto(f"{airflow.api_url}/dags/{MAPPED_DAG_ID}/runs/{quote(mapped_run_id, safe='')}")
    tab = page.get_by_role("link", name=RUN_TAB_NAME)
    tab.first.wait_for()
    tab.first.click()
    page.wait_for_url("**/plugin/getimage-run-gallery")
    frame = _frame(page, RUN_TAB_NAME)
    assert_images_decoded(
        frame, [img for img in frame.evaluate("Array.from(document.images).map(i => i.src)")]
    )
    assert len(frame.evaluate("Array.from(document.images).map(i => i.src)")) == 12
    page.screenshot(path=str(screenshots / "run-tab.png"), full_page=True)


def test_a_mapped_tasks_parent_tab_shows_every_map_index(
    page: Page, airflow: AirflowDeployment, mapped_run_id: str, screenshots: Path
) -> None:
    """
    The task instance tab's URL as the UI fills it for a mapped task's parent ({MAP_INDEX} unreplaced).

    Airflow 3.3's page of a mapped task (``.../tasks/generate/mapped``) lists its map indexes and
    shows no plugin tab, so the URL is opened as the tab would open it.
    """
    tab = next(view for view in GetImageGalleryPlugin.external_views if view["name"] == TAB_NAME)
    href = (
        tab["href"]
        .replace("{DAG_ID}", MAPPED_DAG_ID)
        .replace("{RUN_ID}", quote(mapped_run_id, safe=""))
        .replace("{TASK_ID}", "generate")
    )
    page.goto(f"{airflow.api_url}/{href}")
    page.wait_for_function(ALL_DECODED_JS)
    images = page.evaluate(IMAGES_JS)
    assert len(images) == 12
    assert all(image["width"] > 0 for image in images)
    text = page.locator("body").inner_text()
    assert "No such task instance" not in text
    assert "GetImage.io images of this task" in text
    page.screenshot(path=str(screenshots / "mapped-parent.png"), full_page=True)


def test_download_and_history_pages(
    page: Page, airflow: AirflowDeployment, mapped_run_id: str, screenshots: Path
) -> None:
    files = airflow.xcom(MAPPED_DAG_ID, mapped_run_id, "download")
    page.goto(gallery_url(airflow, gallery_path(MAPPED_DAG_ID, mapped_run_id, "download")))
    text = page.locator("body").inner_text()
    assert "Stored files (12)" in text
    assert all(name in text for name in files)
    page.screenshot(path=str(screenshots / "download.png"), full_page=True)

    page.goto(gallery_url(airflow, history_path(MAPPED_DAG_ID)))
    page.wait_for_function(ALL_DECODED_JS)
    assert len(page.evaluate(IMAGES_JS)) == 12
    text = page.locator("body").inner_text()
    assert mapped_run_id in text
    for prompt in MAPPED_PROMPTS:
        assert prompt in text
    page.screenshot(path=str(screenshots / "history.png"), full_page=True)

    # Back to Airflow from a task's page: the link to the task instance.
    page.goto(gallery_url(airflow, gallery_path(MAPPED_DAG_ID, mapped_run_id, "generate", 1)))
    page.get_by_role("link", name="← Task instance in Airflow").click()
    page.wait_for_url(f"**/dags/{MAPPED_DAG_ID}/runs/**/tasks/generate/mapped/1")
    page.screenshot(path=str(screenshots / "task-page-back-in-airflow.png"), full_page=True)


def test_task_page_screenshot(page: Page, airflow: AirflowDeployment, run_id: str, screenshots: Path) -> None:
    page.goto(gallery_link(airflow, run_id, "generate"))
    page.wait_for_function(ALL_DECODED_JS)
    page.screenshot(path=str(screenshots / "task-page.png"), full_page=True)


def _frame(page: Page, title: str) -> Frame:
    element = page.locator(f"iframe[title='{title}']")
    element.wait_for()
    frame = element.element_handle().content_frame()
    assert frame is not None
    frame.wait_for_load_state()
    return frame
