"""
``GetImageDownloadOperator``: its DAG-level behaviour and its parse-time checks.

DAG-level behaviour (templated destinations, mapped generations, naming, memory://) runs through
``dag.test()`` with the generation on the emulator, which serves real PNGs. The failure paths of
one download are in ``tests/test_storage.py``.
"""

from __future__ import annotations

import io
import os
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fsspec
import pytest
import requests
from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath
from PIL import Image

from airflow_provider_getimage.emulator.images import render_png
from airflow_provider_getimage.operators.getimage import GetImageDownloadOperator
from tests import dag_runs
from tests.airflow_compat import OLD_PATHS, airflow_before
from tests.image_server import files_in

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import DAG as SdkDAG

    from airflow_provider_getimage.emulator import Emulator

PNG = render_png("a test picture", 0, 64)


#: dag.test() on Airflow 3.3 prints task logs to stdout; older releases keep them in log handlers.
TASK_LOGS_ON_STDOUT = not airflow_before("3.3")


def local_path(uri: str) -> str:
    """The local path of a ``file://`` URI the operator returned."""
    parts = urlsplit(uri)
    assert parts.scheme == "file", uri
    assert parts.netloc == "", uri
    return parts.path


def assert_png(data: bytes) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.verify()


# ----------------------------------------------------------------------------------------- DAGs
@pytest.fixture(scope="module")
def dags() -> dict[str, SdkDAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_download_dags.py")


@pytest.mark.usefixtures("airflow_db")
class TestInDags:
    def test_file_destination_with_templated_run_id(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator, tmp_path: Path
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download"], dest=f"file://{tmp_path}")
        assert set(dag_runs.states(dag_run).values()) == {"success"}
        diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
        uris = dag_runs.xcom(dag_run, "download")
        folder = tmp_path / dag_run.run_id
        assert uris == [f"file://{folder}/{diffusion_id}_{index}.png" for index in range(4)]
        for uri in uris:
            with open(local_path(uri), "rb") as image:
                assert_png(image.read())
        assert files_in(tmp_path) == [f"{dag_run.run_id}/{diffusion_id}_{i}.png" for i in range(4)], (
            "no temporary file left behind"
        )
        stats = getimage_airflow_conn.stats()
        assert stats["image_downloads"] == 4
        assert stats["image_downloads_with_authorization"] == 0, "the API key never goes to image URLs"

    def test_plain_absolute_path_is_a_local_folder(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator, tmp_path: Path
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download"], dest=str(tmp_path))
        uris = dag_runs.xcom(dag_run, "download")
        assert [os.path.dirname(local_path(uri)) for uri in uris] == [str(tmp_path / dag_run.run_id)] * 4

    @OLD_PATHS
    def test_memory_destination_other_fsspec_scheme(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download_memory"])
        assert set(dag_runs.states(dag_run).values()) == {"success"}
        diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
        uris = dag_runs.xcom(dag_run, "download")
        folder = f"/getimage-tests/{dag_run.run_id}"
        assert uris == [f"memory:/{folder}/{diffusion_id}_{index}.png" for index in range(4)]
        memory = fsspec.filesystem("memory")
        assert sorted(memory.ls(folder, detail=False)) == [
            f"{folder}/{diffusion_id}_{index}.png" for index in range(4)
        ]
        for uri in uris:
            assert_png(memory.cat("/" + uri.removeprefix("memory://")))

    def test_bad_destination_fails_before_any_download(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download"], dest="nosuchscheme://bucket/images")
        assert dag_runs.states(dag_run) == {("generate", -1): "success", ("download", -1): "failed"}
        assert getimage_airflow_conn.stats()["image_downloads"] == 0
        if TASK_LOGS_ON_STDOUT:
            assert "destination 'nosuchscheme://bucket/images/manual__" in capfd.readouterr().out

    def test_mapped_generation_one_download_and_mapped_downloads(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator, tmp_path: Path
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download_mapped"], dest=str(tmp_path))
        states = dag_runs.states(dag_run)
        assert set(states.values()) == {"success"}, states
        assert sorted(i for (task_id, i) in states if task_id == "download_each") == [0, 1, 2]
        ids = [dag_runs.xcom(dag_run, "generate", "diffusion_id", i) for i in range(3)]
        assert len(set(ids)) == 3

        expected = [f"{diffusion_id}_{index}.png" for diffusion_id in ids for index in range(4)]
        gathered = dag_runs.xcom(dag_run, "download_all")
        assert gathered == [f"file://{tmp_path}/all/{name}" for name in expected], "URL order kept"
        for map_index, diffusion_id in enumerate(ids):
            assert dag_runs.xcom(dag_run, "download_each", map_index=map_index) == [
                f"file://{tmp_path}/each/{diffusion_id}_{index}.png" for index in range(4)
            ]
        assert files_in(tmp_path) == sorted([f"all/{n}" for n in expected] + [f"each/{n}" for n in expected])
        # Each file is the picture of its own diffusion and index, not a neighbour's.
        urls = [dag_runs.xcom(dag_run, "generate", map_index=i) for i in range(3)]
        for diffusion_id, diffusion_urls in zip(ids, urls, strict=True):
            for index, url in enumerate(diffusion_urls):
                served = requests.get(url, timeout=10).content
                assert (tmp_path / "all" / f"{diffusion_id}_{index}.png").read_bytes() == served
                assert (tmp_path / "each" / f"{diffusion_id}_{index}.png").read_bytes() == served

    def test_after_a_sensor(
        self, dags: dict[str, SdkDAG], getimage_airflow_conn: Emulator, tmp_path: Path
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download_sensor"], dest=str(tmp_path))
        assert set(dag_runs.states(dag_run).values()) == {"success"}
        diffusion_id = dag_runs.xcom(dag_run, "submit")
        assert dag_runs.xcom(dag_run, "wait", "diffusion_id") == diffusion_id
        assert files_in(tmp_path) == [f"{diffusion_id}_{index}.png" for index in range(4)]

    def test_urls_through_another_task_need_the_id(
        self,
        dags: dict[str, SdkDAG],
        getimage_airflow_conn: Emulator,
        tmp_path: Path,
        capfd: pytest.CaptureFixture[str],
    ) -> None:
        dag_run = dag_runs.run(dags["getimage_download_filtered"], dest=str(tmp_path))
        states = dag_runs.states(dag_run)
        assert states[("download_named", -1)] == "success"
        assert states[("download_unnamed", -1)] == "failed"
        diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
        assert files_in(tmp_path) == [f"named/{diffusion_id}_{index}.png" for index in range(2)]
        picked = dag_runs.xcom(dag_run, "pick")
        if TASK_LOGS_ON_STDOUT:
            message = f"No diffusion id for image URL {picked[0]!r}: diffusion_id is not set"
            assert message in capfd.readouterr().out


# ------------------------------------------------------------------------------ input checks
def operator(**kwargs: Any) -> GetImageDownloadOperator:
    with DAG("download_checks", schedule=None, start_date=datetime(2026, 1, 1)):
        return GetImageDownloadOperator(task_id="download", **kwargs)


URL = "https://cdn.example.com/images/a.png"


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"image_urls": []}, ValueError, "image_urls is empty"),
        ({"image_urls": ["file:///etc/passwd"]}, ValueError, "'file:///etc/passwd'.*only http"),
        ({"image_urls": [URL, "ftp://example.com/a.png"]}, ValueError, "'ftp://example.com/a.png'"),
        ({"image_urls": "data:image/png;base64,AAAA"}, ValueError, "'data:image/png;base64,AAAA'"),
        ({"image_urls": "https://"}, ValueError, "'https://'"),
        ({"image_urls": "['https://a/b.png']"}, ValueError, "list rendered as text"),
        ({"image_urls": [[URL], []]}, ValueError, "item 1 is an empty list"),
        ({"image_urls": [URL, 3]}, TypeError, "item 1 is int: 3"),
        ({"image_urls": {"url": URL}}, TypeError, "got dict"),
        ({"image_urls": URL, "destination": "images/out"}, ValueError, "'images/out' is a relative path"),
        ({"image_urls": URL, "destination": ""}, ValueError, "must not be empty"),
        ({"image_urls": URL, "destination": "file://data/images"}, ValueError, "names a host \\('data'\\)"),
        ({"image_urls": URL, "destination": "https://example.com/up/"}, ValueError, "is a web URL"),
        ({"image_urls": URL, "destination": 42}, TypeError, "got int: 42"),
        ({"image_urls": URL, "diffusion_id": " "}, ValueError, "diffusion_id must be a non-empty string"),
        ({"image_urls": URL, "diffusion_id": ["a", "b"]}, ValueError, "2 id\\(s\\) for 1 list"),
        ({"image_urls": URL, "max_image_bytes": 0}, ValueError, "max_image_bytes must be a positive integer"),
        ({"image_urls": URL, "download_attempts": 0}, ValueError, "download_attempts must be a positive"),
        ({"image_urls": URL, "request_timeout": -1}, ValueError, "request_timeout must be a positive"),
    ],
)
def test_bad_input_fails_the_dag_file_with_the_value(kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        operator(**kwargs)


def test_templates_and_xcom_args_are_checked_when_the_task_runs() -> None:
    op = operator(
        image_urls="{{ ti.xcom_pull(task_ids='generate') }}",
        destination="{{ params.dest }}",
        diffusion_id=["{{ ti.xcom_pull(task_ids='generate', key='diffusion_id') }}"],
    )
    assert op.template_fields == ("image_urls", "destination", "diffusion_id", "destination_conn_id")
    operator(image_urls=[URL], destination=ObjectStoragePath("s3://bucket/{{ run_id }}/"))
