"""
A whole run's gallery, a mapped task's parent, a download's files, a failed task's reason and a
DAG's history: inside Airflow's own API server app, on runs made by ``dag.test()``.

The pages read what real task runs wrote against the emulator (the mapped example DAG: 3 prompts x
4 images, then one download task), and pass Airflow's auth manager like the task page does.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from airflow.utils.session import create_session

from airflow_provider_getimage.plugins import gallery_app
from airflow_provider_getimage.plugins.gallery_page import (
    PAGE_LIMIT,
    TaskInfo,
    gallery_path,
    history_path,
    manifest_items,
    run_path,
    ui_path,
)
from tests import dag_runs
from tests.plugins.test_gallery_app import api, get_page, operator_dags, set_xcom, token
from tests.plugins.test_gallery_page import assert_own_script

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG
    from fastapi.testclient import TestClient

    from airflow_provider_getimage.emulator import Emulator

__all__ = ["api", "operator_dags"]  # fixtures shared with the task page's tests

pytestmark = pytest.mark.usefixtures("airflow_db")

PROMPTS = (
    "a red fox in fresh snow, photograph",
    "a blue whale seen from below, sunlight through water",
    "a green owl on a mossy branch, watercolor",
)


@pytest.fixture(scope="module")
def mapped_run(
    airflow_db: object, tmp_path_factory: pytest.TempPathFactory, getimage_emulator_module: Emulator
) -> DagRun:
    """One run of ``example_getimage_mapped`` (3 prompts x 4 images, then one download)."""
    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path_factory.mktemp("images")))
    for name, value in getimage_emulator_module.airflow_env().items():
        monkeypatch.setenv(name, value)
    try:
        path = dag_runs.EXAMPLE_DAGS / "example_getimage_mapped.py"
        dag = dag_runs.parse(path)["example_getimage_mapped"]
        dag_run = dag_runs.run(dag)
    finally:
        monkeypatch.undo()
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    return dag_run


@pytest.fixture(scope="module")
def getimage_emulator_module() -> Iterator[Emulator]:
    """An emulator for the module's one mapped run (the function-scoped fixture would run it per test)."""
    from airflow_provider_getimage.emulator import Emulator

    with Emulator(latency=0.2, seed=0) as emulator:
        yield emulator


def test_run_gallery_shows_every_map_index_grouped_by_task(api: TestClient, mapped_run: DagRun) -> None:
    status, page, response = get_page(api, run_path(mapped_run.dag_id, mapped_run.run_id))
    assert status == 200
    assert len(response.content) <= PAGE_LIMIT
    assert_own_script(page)
    urls = [url for index in range(3) for url in dag_runs.xcom(mapped_run, "generate", map_index=index)]
    assert len(urls) == 12
    assert [img["src"] for img in page.all("img")] == urls  # map index order, every image
    for prompt in PROMPTS:
        assert prompt in page.visible
    # Tasks in the order they ran: the download after the diffusions it saved.
    assert page.visible.index("generate (3 items)") < page.visible.index("download (1 item)")
    assert "Diffusions3" in page.visible
    files = dag_runs.xcom(mapped_run, "download")
    assert len(files) == 12
    assert [name for name in files if name in page.visible] == files[:5]  # the rest on its own page
    assert "… and 7 more files, on the task's page." in page.visible
    # Each card links to its task instance's page; the page links back to the run in the UI.
    hrefs = [str(a["href"]) for a in page.all("a")]
    for index in range(3):
        assert "../../../../" + gallery_path(mapped_run.dag_id, mapped_run.run_id, "generate", index) in hrefs
    assert "../../../../" + ui_path(mapped_run.dag_id, mapped_run.run_id) in hrefs


def test_a_mapped_tasks_parent_shows_all_its_map_indexes(api: TestClient, mapped_run: DagRun) -> None:
    """The task instance tab of a mapped task's parent: the UI leaves ``{MAP_INDEX}`` unreplaced."""
    parent = gallery_path(mapped_run.dag_id, mapped_run.run_id, "generate") + "?map_index={MAP_INDEX}"
    response = api.get(f"/{parent}", headers={"Authorization": f"Bearer {token()}"}, follow_redirects=False)
    assert response.status_code == 307
    status, page, _ = get_page(api, parent)  # followed, as the browser does
    assert status == 200
    assert len(page.all("img")) == 12
    assert "download (1 item)" not in page.visible
    assert "GetImage.io images of this task" in page.visible


def test_a_download_tasks_page_lists_its_stored_files(api: TestClient, mapped_run: DagRun) -> None:
    status, page, _ = get_page(api, gallery_path(mapped_run.dag_id, mapped_run.run_id, "download"))
    assert status == 200
    files = dag_runs.xcom(mapped_run, "download")
    assert "Stored files (12)" in page.visible
    assert [text for text in page.text if text in files] == files
    assert "No diffusion" not in page.visible


def test_the_dag_history_shows_recent_runs_with_their_prompts(api: TestClient, mapped_run: DagRun) -> None:
    status, page, response = get_page(api, history_path(mapped_run.dag_id))
    assert status == 200
    assert len(response.content) <= PAGE_LIMIT
    assert mapped_run.run_id in page.visible
    for prompt in PROMPTS:
        assert prompt in page.visible
    # Other tests may have run the same example DAG in this database: count this run's images.
    urls = {url for index in range(3) for url in dag_runs.xcom(mapped_run, "generate", map_index=index)}
    assert len([img for img in page.all("img") if img["src"] in urls]) == 12  # 3 diffusions x 4
    assert "3 diffusions" in page.visible
    assert "Stored files" not in page.visible  # the history is about images and prompts
    assert "../../../" + run_path(mapped_run.dag_id, mapped_run.run_id) in [a["href"] for a in page.all("a")]


def test_unknown_run_bad_page_and_no_login(api: TestClient, mapped_run: DagRun) -> None:
    status, page, _ = get_page(api, run_path(mapped_run.dag_id, "no_such_run"))
    assert status == 404
    assert "Airflow has no run no_such_run" in page.visible
    status, _, _ = get_page(api, run_path(mapped_run.dag_id, mapped_run.run_id) + "?page=zero")
    assert status == 400
    status, page, _ = get_page(api, run_path(mapped_run.dag_id, mapped_run.run_id, page=99))
    assert status == 200  # past the end: the last page
    assert "generate (3 items)" in page.visible
    assert api.get(f"/{run_path(mapped_run.dag_id, mapped_run.run_id)}").status_code == 401
    assert api.get(f"/{history_path(mapped_run.dag_id)}").status_code == 401
    status, _, _ = get_page(api, run_path(mapped_run.dag_id, mapped_run.run_id), role=None)
    assert status == 403


def test_a_failed_tasks_page_says_why(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    dag_run = dag_runs.run(operator_dags["getimage_operator_wait"], prompt="something forbidden")
    assert dag_runs.states(dag_run) == {("generate", -1): "failed"}
    error = dag_runs.xcom(dag_run, "generate", "error")
    assert error["type"] == "GetImageDiffusionFailed"
    assert getimage_airflow_conn.api_key not in json.dumps(error)

    status, page, _ = get_page(api, gallery_path(dag_run.dag_id, dag_run.run_id, "generate"))
    assert status == 200
    assert f"The task failed: {error['message']}" in page.visible
    assert "Task statefailed" in page.visible
    # The request parameters, as the task rendered them.
    assert "seed7" in page.visible
    assert "negative_promptblurry" in page.visible

    status, page, _ = get_page(api, run_path(dag_run.dag_id, dag_run.run_id))
    assert status == 200
    assert error["message"][:100] in page.visible


def test_a_timed_out_task_says_so(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(latency=600)
    dag_run = dag_runs.run(operator_dags["getimage_operator_timeout"])
    _, page, _ = get_page(api, gallery_path(dag_run.dag_id, dag_run.run_id, "generate"))
    assert "The task failed:" in page.visible
    assert dag_runs.xcom(dag_run, "generate", "error")["type"] == "GetImageTimeoutError"


def test_a_batchs_manifest_is_read_bounded_and_only_by_its_name(
    api: TestClient, operator_dags: dict[str, DAG], getimage_airflow_conn: Emulator, tmp_path: Path
) -> None:
    """A batch's return value names its manifest; the run page shows its rows as items."""
    dag_run = dag_runs.run(operator_dags["getimage_operator_wait"], prompt="a quiet harbour")
    urls = dag_runs.xcom(dag_run, "generate")
    rows = [
        {"index": 0, "key": "k0", "prompt": "batch <b>one</b>", "image_urls": urls, "status": "finished",
         "error": None},
        {"index": 1, "key": "k1", "prompt": "batch two", "image_urls": [], "status": "failed",
         "error": "refused: <script>x</script>"},
    ]  # fmt: skip
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows) + "not json\n")
    set_xcom(dag_run, "generate", "return_value", {"manifest": f"file://{manifest}", "total": 2})
    with create_session() as session:
        items, _ = gallery_app.run_items(session, dag_run.dag_id, dag_run.run_id)
    # The operator is a diffusion operator: its return value is not read as a batch's.
    assert [item.kind for item in items] == ["diffusion"]

    info = TaskInfo(dag_run.dag_id, dag_run.run_id, "batch")
    read = gallery_app.read_manifest(f"file://{manifest}")
    assert not isinstance(read, str)
    batch, note = manifest_items(info, *read)
    assert [item.label for item in batch] == ["item #0 (k0)", "item #1 (k1)"]
    assert note == "1 row of the manifest could not be read"
    assert batch[0].image_urls == tuple(urls)
    assert gallery_app.read_manifest(f"file://{tmp_path}/other.json") == (
        "the batch's manifest is not a manifest.jsonl URI"
    )
    big = tmp_path / "big" / "manifest.jsonl"
    big.parent.mkdir()
    big.write_bytes((json.dumps(rows[0]) + "\n").encode() * (gallery_app.MANIFEST_BYTES // 100))
    whole = gallery_app.read_manifest(f"file://{big}")
    assert isinstance(whole, tuple)
    data, complete = whole
    assert not complete
    assert len(data) == gallery_app.MANIFEST_BYTES
    cut, note = manifest_items(info, data, complete)
    assert note is not None
    assert "too large to read whole" in note
    assert 0 < len(cut) < gallery_app.MANIFEST_BYTES // 100
