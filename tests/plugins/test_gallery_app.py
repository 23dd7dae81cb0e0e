"""
The gallery inside Airflow's own API server app, in process, on DAG runs made by ``dag.test()``.

The app is Airflow's (``create_app``): the plugin is found through its entry point and mounted by
Airflow, requests pass Airflow's middlewares and auth manager (the simple one, with no
all-admins shortcut, so a login is really needed), and pages read the XComs and rendered fields
the operator and sensor wrote through real task runs against the emulator.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import requests

from airflow_provider_getimage.plugins.gallery import GetImageGalleryPlugin
from airflow_provider_getimage.plugins.gallery_page import PAGE_LIMIT, SECURITY_HEADERS, gallery_path
from tests import dag_runs
from tests.airflow_compat import airflow_before
from tests.plugins.page_parser import Page
from tests.plugins.test_gallery_page import assert_own_script

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG
    from fastapi.testclient import TestClient

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.usefixtures("airflow_db")

#: Whether the API server takes the UI's login cookie (``_token``) on every request: 3.1.1 and later.
COOKIE_LOGIN = not airflow_before("3.1.1")


@pytest.fixture(scope="module")
def operator_dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_operator_dags.py")


@pytest.fixture(scope="module")
def sensor_dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_deferrable_dags.py")


@pytest.fixture(scope="module")
def api(airflow_db: object) -> Iterator[TestClient]:
    """Airflow's API server app (REST API, UI and plugins), served in process."""
    from airflow.api_fastapi.app import create_app, purge_cached_app
    from fastapi.testclient import TestClient

    with TestClient(create_app(apps="core")) as client:
        yield client
    purge_cached_app()


def token(role: str | None = "viewer") -> str:
    """A JWT of the simple auth manager for a user of this role (None: a user with no role)."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    return get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=f"user-{role}", role=role))


def get_page(api: TestClient, path: str, role: str | None = "viewer") -> tuple[int, Page, Any]:
    response = api.get(f"/{path}", headers={"Authorization": f"Bearer {token(role)}"})
    assert response.headers["content-type"].startswith("text/html")
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
    return response.status_code, Page(response.text), response


def link(dag_run: DagRun, task_id: str, map_index: int = -1) -> str:
    """The extra link the task stored at its end (Airflow 3 evaluates links in the worker)."""
    return str(dag_runs.xcom(dag_run, task_id, "_link_GetImageImagesLink", map_index))


def set_xcom(dag_run: DagRun, task_id: str, key: str, value: Any, map_index: int = -1) -> None:
    from airflow.models.xcom import XComModel

    XComModel.set(
        key, value, dag_id=dag_run.dag_id, task_id=task_id, run_id=dag_run.run_id, map_index=map_index
    )


def documented_shape(record: dict[str, Any]) -> dict[str, Any]:
    """The record as GetImage.io documents it: no prompt, no model (the emulator adds both)."""
    return {key: value for key, value in record.items() if key not in ("prompt", "model")}


def test_the_plugin_is_mounted_and_listed(api: TestClient) -> None:
    response = api.get("/api/v2/plugins", headers={"Authorization": f"Bearer {token('admin')}"})
    assert response.status_code == 200
    (plugin,) = [p for p in response.json()["plugins"] if p["name"] == GetImageGalleryPlugin.name]
    assert plugin["fastapi_apps"] == [
        {"app": "airflow_provider_getimage.plugins.gallery.GalleryApp", "url_prefix": "/getimage",
         "name": "GetImage.io gallery"}
    ]  # fmt: skip
    if airflow_before("3.1"):  # no external views, no import-error listing yet
        assert "external_views" not in plugin
        return
    tab, run_tab, history_tab = plugin["external_views"]
    assert tab["destination"] == "task_instance"
    assert tab["href"] == "getimage/gallery/{DAG_ID}/{RUN_ID}/{TASK_ID}?map_index={MAP_INDEX}"
    assert (run_tab["destination"], run_tab["href"]) == ("dag_run", "getimage/run/{DAG_ID}/{RUN_ID}")
    assert (history_tab["destination"], history_tab["href"]) == ("dag", "getimage/dag/{DAG_ID}")
    errors = api.get("/api/v2/plugins/importErrors", headers={"Authorization": f"Bearer {token('admin')}"})
    assert errors.json()["total_entries"] == 0, errors.json()


def test_operator_page_shows_the_runs_images_behind_an_airflow_login(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    dag_run = dag_runs.run(operator_dags["getimage_operator_wait"], prompt="a snowy owl <b>&</b>")
    urls = dag_runs.xcom(dag_run, "generate")
    diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
    path = gallery_path(dag_run.dag_id, dag_run.run_id, "generate")
    assert link(dag_run, "generate") == f"/{path}"  # no [api] base_url here: a path on this server

    # Airflow's auth manager decides: no credentials, a user with no role, then a viewer.
    anonymous = api.get(f"/{path}")
    assert anonymous.status_code == 401
    if COOKIE_LOGIN:
        assert "Log in to Airflow" in Page(anonymous.text).visible
    else:  # the UI's login cannot reach this page: say so, and how to open it anyway
        assert "does not pass its login on to plugin pages" in Page(anonymous.text).visible
    assert anonymous.headers["content-security-policy"] == SECURITY_HEADERS["Content-Security-Policy"]
    status, page, _ = get_page(api, path, role=None)
    assert status == 403
    assert "may not read" in page.visible
    status, page, _ = get_page(api, path)
    assert status == 200
    # The browser's way: the UI's session cookie, no header (Airflow 3.1.1+ reads it).
    api.cookies.set("_token", token())
    try:
        assert api.get(f"/{path}").status_code == (200 if COOKIE_LOGIN else 401)
    finally:
        api.cookies.clear()

    assert [img["src"] for img in page.all("img")] == urls
    for text in ("a snowy owl <b>&</b>", "midjourney", diffusion_id, "FINISHED", "Generation took"):
        assert text in page.visible
    assert "b" not in {tag for tag, _ in page.tags}
    assert "Record from" not in page.visible
    # Every image the page shows is served (by the emulator), as a PNG.
    for url in urls:
        assert urlsplit(url).netloc == urlsplit(getimage_airflow_conn.url).netloc
        image = requests.get(url, timeout=10)
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG\r\n\x1a\n")


def test_documented_record_shape_takes_prompt_and_model_from_the_rendered_fields(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    dag_run = dag_runs.run(operator_dags["getimage_operator_wait"], prompt="a quiet harbour")
    record = dag_runs.xcom(dag_run, "generate", "diffusion")
    set_xcom(dag_run, "generate", "diffusion", documented_shape(record))

    _, page, _ = get_page(api, gallery_path(dag_run.dag_id, dag_run.run_id, "generate"))
    assert "a quiet harbour" in page.visible  # the rendered template {{ params.prompt }}
    assert "midjourney" in page.visible
    assert len(page.all("img")) == len(record["images"])


def test_submitter_and_sensor_pages_share_one_diffusion(
    api: TestClient, sensor_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    """``submit`` (no wait) shows the images its sensors received; a sensor shows the prompt submitted."""
    dag_run = dag_runs.run(sensor_dags["getimage_sensor_modes"])
    diffusion_id = dag_runs.xcom(dag_run, "submit", "diffusion_id")
    urls = dag_runs.xcom(dag_run, "wait_deferred")
    for task_id in ("submit", "wait_deferred"):
        assert link(dag_run, task_id) == f"/{gallery_path(dag_run.dag_id, dag_run.run_id, task_id)}"
    for task_id in ("submit", "wait_poke", "wait_reschedule", "wait_deferred"):
        record = dag_runs.xcom(dag_run, task_id, "diffusion")
        set_xcom(dag_run, task_id, "diffusion", documented_shape(record))

    _, submit, _ = get_page(api, gallery_path(dag_run.dag_id, dag_run.run_id, "submit"))
    assert [img["src"] for img in submit.all("img")] == urls
    assert "FINISHED" in submit.visible  # its own record says NEW: a sensor's final one is shown
    assert "Record fromtask wait_deferred of this run" in submit.visible  # the first, by task id

    _, sensor, _ = get_page(api, gallery_path(dag_run.dag_id, dag_run.run_id, "wait_deferred"))
    assert [img["src"] for img in sensor.all("img")] == urls
    assert diffusion_id in sensor.visible
    assert "a blue whale" in sensor.visible  # rendered by submit: the sensor only knows the id
    assert "Record from" not in sensor.visible


def test_mapped_task_instances_and_pages_without_a_gallery(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    dag_run = dag_runs.run(operator_dags["getimage_operator_mapped"])
    prompts = {}
    for map_index in range(3):
        path = gallery_path(dag_run.dag_id, dag_run.run_id, "generate", map_index)
        assert link(dag_run, "generate", map_index) == f"/{path}"
        status, page, _ = get_page(api, path)
        assert status == 200
        (prompts[map_index],) = [p for p in ("a red fox", "a blue whale", "a green owl") if p in page.visible]
        assert len(page.all("img")) == 4
    assert prompts == {0: "a red fox", 1: "a blue whale", 2: "a green owl"}  # the order of .expand()

    # The UI's tab leaves {MAP_INDEX} unreplaced on an unmapped task instance: read as -1.
    gather = gallery_path(dag_run.dag_id, dag_run.run_id, "gather")
    status, page, _ = get_page(api, f"{gather}?map_index={{MAP_INDEX}}")
    assert status == 404
    assert "No diffusion" in page.visible
    assert "ended without a GetImage.io diffusion" in page.visible
    assert "Task statesuccess" in page.visible

    generate = gallery_path(dag_run.dag_id, dag_run.run_id, "generate")
    status, page, _ = get_page(api, f"{generate}?map_index=7")
    assert status == 404
    assert "Airflow has no task instance" in page.visible
    status, page, _ = get_page(api, f"{generate}?map_index=first")
    assert status == 400
    status, page, _ = get_page(api, gallery_path("no_such_dag", "no_such_run", "no_such_task"))
    assert status == 404
    status, page, _ = get_page(api, "getimage/elsewhere")
    assert status == 404
    assert "Not found" in page.visible


def test_a_hostile_record_is_a_bounded_page_not_a_server_error(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    """What a broken service may have stored: wrong types and huge fields, read back from the database."""
    dag_run = dag_runs.run(operator_dags["getimage_operator_wait"], prompt="a quiet harbour")
    path = gallery_path(dag_run.dag_id, dag_run.run_id, "generate")
    deep: object = "x"
    for _ in range(100):
        deep = [deep]
    record = dag_runs.xcom(dag_run, "generate", "diffusion")
    hostile = {
        "images": 5, "status": "FINISHED", "createdAt": '"' * 1_000_000, "finishedAt": ["\u0000"],
        "prompt": "<script>alert(1)</script>" * 10_000, "model": deep, "parameters": deep,
    }  # fmt: skip
    set_xcom(dag_run, "generate", "diffusion", {**record, **hostile})
    status, page, response = get_page(api, path)
    assert status == 200
    assert len(response.content) <= PAGE_LIMIT
    assert "The record's images is a number, not a list: no image can be shown." in page.visible
    assert_own_script(page)

    set_xcom(dag_run, "generate", "diffusion", {**record, "status": deep, "images": record["images"] * 2_500})
    status, page, response = get_page(api, path)
    assert status == 200
    assert len(response.content) <= PAGE_LIMIT
    assert len(page.all("img")) == 100
    assert f"… and {len(record['images']) * 2_500 - 100} more images, not shown here" in page.visible
    assert "a list, not text (not shown)" in page.visible  # the status
