"""
``GetImageDownloadOperator`` and its storage module.

DAG-level behaviour (templated destinations, mapped generations, naming, memory://) runs through
``dag.test()`` with the generation on the emulator, which serves real PNGs. The failure paths of
a download (a 503, a connection cut mid-image, a wrong content type, a redirect, a netrc file)
are played by a scripted image host on loopback (``tests/operators/image_server.py``), since the
emulator keeps its image route clean.
"""

from __future__ import annotations

import io
import os
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import fsspec
import pytest
import requests
from airflow.providers.common.compat.sdk import DAG, ObjectStoragePath
from PIL import Image

from airflow_provider_getimage import _rules, storage
from airflow_provider_getimage.emulator.images import render_png
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.operators.getimage import GetImageDownloadOperator
from tests import dag_runs
from tests.airflow_compat import airflow_before
from tests.operators.image_server import Answer, ImageServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow.sdk import DAG as SdkDAG

    from airflow_provider_getimage.emulator import Emulator

PNG = render_png("a test picture", 0, 64)
FAST_RETRIES = _rules.RetryPolicy(backoff_base=0.01, backoff_max=0.02, retry_after_cap=0.05)


OLD_PATHS = pytest.mark.skipif(
    airflow_before("3.3"),
    reason="Airflow before 3.3 uses universal-pathlib 0.2, whose ObjectStoragePath writes memory:// "
    "paths as memory:/// and accepts an unknown scheme until it is used (tested here on 3.3 only)",
)
#: dag.test() on Airflow 3.3 prints task logs to stdout; older releases keep them in log handlers.
TASK_LOGS_ON_STDOUT = not airflow_before("3.3")


def local_path(uri: str) -> str:
    """The local path of a ``file://`` URI the operator returned."""
    parts = urlsplit(uri)
    assert parts.scheme == "file", uri
    assert parts.netloc == "", uri
    return parts.path


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden ones too: a leftover ``.part`` must show)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


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


@pytest.mark.parametrize(
    ("destination", "conn_id", "expected"),
    [
        ("/data/images/", None, "file:///data/images"),
        ("file:///data/images/", None, "file:///data/images"),
        ("s3://bucket/images/", "aws_default", "s3://aws_default@bucket/images"),
        (("ObjectStoragePath", "gs://bucket/x/"), None, "gs://bucket/x"),
        pytest.param("memory://space/x", None, "memory://space/x", marks=OLD_PATHS),
    ],
)
def test_destination_forms(destination: Any, conn_id: str | None, expected: str) -> None:
    if isinstance(destination, tuple):  # built here, not at collection: see the skip below
        try:
            destination = ObjectStoragePath(destination[1])
        except TypeError as err:  # universal-pathlib before Airflow 3.1
            pytest.skip(f"this Airflow's ObjectStoragePath needs the Google provider for gs://: {err}")
    path = storage.destination_path(destination, conn_id)
    assert str(path).rstrip("/") == expected
    assert storage.conn_id_of(path) == conn_id


def test_rendered_objectstoragepath_keeps_its_connection() -> None:
    path = ObjectStoragePath("s3://bucket/{{ run_id }}/", conn_id="aws_images")
    rendered = storage.rendered_destination(path, lambda text: text.replace("{{ run_id }}", "run_1"))
    assert str(rendered) == "s3://aws_images@bucket/run_1"
    assert storage.conn_id_of(rendered) == "aws_images"


@OLD_PATHS
def test_unknown_scheme_names_the_destination() -> None:
    with pytest.raises(ValueError, match="'nosuchscheme://b/x': no filesystem for scheme 'nosuchscheme'"):
        storage.destination_path("nosuchscheme://b/x")
    with pytest.raises(ValueError, match="connection 'my_conn' cannot be used"):
        storage.filesystem(storage.destination_path("memory://b/x", "my_conn"))


@pytest.mark.parametrize(
    ("content_type", "ext"),
    [("image/png", "png"), ("image/jpeg", "jpg"), ("image/webp", "webp"), ("image/x-fancy", "img")],
)
def test_extension_from_content_type(content_type: str, ext: str) -> None:
    assert storage.extension(content_type) == ext


# -------------------------------------------------------------------------- downloads, atomicity
@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer().start()
    try:
        yield server
    finally:
        server.stop()


def store(destination: str, **kwargs: Any) -> storage.ImageStore:
    import logging

    kwargs.setdefault("retry_policy", FAST_RETRIES)
    return storage.ImageStore(storage.destination_path(destination), logging.getLogger("test"), **kwargs)


def test_transient_errors_are_retried_then_the_whole_image_is_saved(
    image_server: ImageServer, tmp_path: Path
) -> None:
    url = image_server.script(
        "/a.png",
        Answer(status=503, content_type="text/plain", body=b"busy"),
        Answer(body=PNG, cut_after=100),  # the connection dies mid-image
        Answer(status=429, content_type="text/plain", headers={"Retry-After": "0"}),
        Answer(body=PNG),
    )
    with store(str(tmp_path)) as images:
        uri = images.save(url, "d1", 0)
    assert uri == f"file://{tmp_path}/d1_0.png"
    assert (tmp_path / "d1_0.png").read_bytes() == PNG
    assert files_in(tmp_path) == ["d1_0.png"]
    assert image_server.hits("/a.png") == 4


def test_failure_mid_stream_leaves_no_partial_file_and_keeps_the_previous_one(
    image_server: ImageServer, tmp_path: Path
) -> None:
    (tmp_path / "d1_0.png").write_bytes(b"the previous run's image")
    url = image_server.script("/a.png", Answer(body=PNG, cut_after=len(PNG) // 2))
    with (
        store(str(tmp_path), attempts=3) as images,
        pytest.raises(GetImageError, match="attempt 3 of 3") as err,
    ):
        images.save(url, "d1", 0)
    assert url in str(err.value)
    assert err.value.transient
    assert image_server.hits("/a.png") == 3
    assert files_in(tmp_path) == ["d1_0.png"], "no .part file left"
    assert (tmp_path / "d1_0.png").read_bytes() == b"the previous run's image"


def test_crash_before_the_move_leaves_nothing_at_the_target(
    image_server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = image_server.script("/a.png", Answer(body=PNG))
    with store(str(tmp_path)) as images:

        def crash(*_: object, **__: object) -> None:
            raise OSError("disk gone")

        monkeypatch.setattr(images.fs, "mv", crash)
        with pytest.raises(OSError, match="disk gone"):
            images.save(url, "d1", 0)
    assert files_in(tmp_path) == []


def test_failure_mid_stream_on_memory_leaves_no_partial_object(image_server: ImageServer) -> None:
    url = image_server.script("/a.png", Answer(body=PNG, cut_after=50))
    folder = f"/atomic-{time.monotonic_ns()}"
    with store(f"memory:/{folder}", attempts=2) as images, pytest.raises(GetImageError):
        images.save(url, "d1", 0)
    memory = fsspec.filesystem("memory")
    assert not memory.exists(folder) or memory.ls(folder, detail=False) == []


def test_rerun_replaces_the_same_names(image_server: ImageServer, tmp_path: Path) -> None:
    first = image_server.script("/a.png", Answer(body=PNG))
    second = image_server.script("/b.png", Answer(body=PNG[::-1], content_type="image/png"))
    with store(str(tmp_path)) as images:
        assert images.save(first, "d1", 0) == images.save(second, "d1", 0)
    assert files_in(tmp_path) == ["d1_0.png"]
    assert (tmp_path / "d1_0.png").read_bytes() == PNG[::-1]


@pytest.mark.parametrize(
    "answer",
    [
        Answer(content_type="text/html", body=b"<html>sign in</html>"),
        Answer(content_type="application/json", body=b"{}"),
        Answer(content_type=None, body=PNG),
    ],
)
def test_only_images_are_saved_and_not_retried(
    image_server: ImageServer, tmp_path: Path, answer: Answer
) -> None:
    url = image_server.script("/a.png", answer)
    with (
        store(str(tmp_path)) as images,
        pytest.raises(GetImageError, match="not an image: nothing was saved"),
    ):
        images.save(url, "d1", 0)
    assert image_server.hits("/a.png") == 1
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("content_length", [True, False], ids=["declared", "streamed"])
def test_size_cap(image_server: ImageServer, tmp_path: Path, content_length: bool) -> None:
    url = image_server.script("/a.png", Answer(body=PNG, content_length=content_length))
    with (
        store(str(tmp_path), max_image_bytes=100) as images,
        pytest.raises(GetImageError, match="max_image_bytes"),
    ):
        images.save(url, "d1", 0)
    assert image_server.hits("/a.png") == 1
    assert files_in(tmp_path) == []


def test_client_errors_are_not_retried(image_server: ImageServer, tmp_path: Path) -> None:
    url = image_server.script("/a.png", Answer(status=404, content_type="text/plain", body=b"gone"))
    with store(str(tmp_path)) as images, pytest.raises(GetImageError, match="HTTP 404: gone") as err:
        images.save(url, "d1", 0)
    assert err.value.status_code == 404
    assert image_server.hits("/a.png") == 1


def test_extension_and_safe_name(image_server: ImageServer, tmp_path: Path) -> None:
    url = image_server.script("/a", Answer(body=b"\xff\xd8jpeg", content_type="image/jpeg; charset=binary"))
    with store(str(tmp_path)) as images:
        uri = images.save(url, "../../etc/passwd:1", 2)
    assert uri == f"file://{tmp_path}/etc_passwd_1_2.jpg", "a hostile id cannot leave the folder"


def test_no_credentials_even_from_netrc_or_after_a_redirect(
    image_server: ImageServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert requests.utils.get_netrc_auth(image_server.url) == ("someone", "s3cret"), (
        "plain requests would send it"
    )
    image_server.script("/final.png", Answer(body=PNG))
    url = image_server.script(
        "/a.png", Answer(status=302, content_type=None, headers={"Location": "/final.png"})
    )
    with store(str(tmp_path / "out")) as images:
        images.save(url, "d1", 0)
    assert [path for path, _ in image_server.requests] == ["/a.png", "/final.png"]
    for _, headers in image_server.requests:
        assert "authorization" not in {name.lower() for name in headers}
        assert headers["User-Agent"].startswith("airflow-provider-getimage/")


def test_emulator_counts_image_requests_that_carry_a_key(getimage_emulator: Emulator) -> None:
    """The counter the DAG tests rely on does count a leaked key (so their zero means something)."""
    headers = {"Authorization": f"Bearer {getimage_emulator.api_key}"}
    base = f"{getimage_emulator.url}/v1/diffusions"
    diffusion_id = requests.post(base, json={"prompt": "a key leak"}, headers=headers, timeout=5).json()["id"]
    deadline = time.monotonic() + 10
    record: dict[str, Any] = {}
    while record.get("status") != "FINISHED" and time.monotonic() < deadline:
        time.sleep(0.05)
        record = requests.get(f"{base}/{diffusion_id}", headers=headers, timeout=5).json()
    requests.get(record["images"][0], headers=headers, timeout=5).raise_for_status()
    requests.get(record["images"][1], timeout=5).raise_for_status()
    stats = getimage_emulator.stats()
    assert (stats["image_downloads"], stats["image_downloads_with_authorization"]) == (2, 1)
