"""
``storage``: destinations, file names and atomic writes of downloaded images, and their HTTP side.

The failure paths of a download (a 503, a connection cut mid-image, a wrong content type, a
redirect, a netrc file) are played by a scripted image host on loopback (``tests/image_server.py``),
since the emulator keeps its image route clean.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

import fsspec
import pytest
import requests
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_getimage import _rules, storage
from airflow_provider_getimage.emulator.images import render_png
from airflow_provider_getimage.exceptions import GetImageError
from tests.airflow_compat import OLD_PATHS
from tests.image_server import Answer, ImageServer, files_in

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

PNG = render_png("a test picture", 0, 64)
FAST_RETRIES = _rules.RetryPolicy(backoff_base=0.01, backoff_max=0.02, retry_after_cap=0.05)


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
    digest = hashlib.sha256(b"../../etc/passwd:1").hexdigest()[:8]  # the id changed: its hash is added
    assert uri == f"file://{tmp_path}/etc_passwd_1_{digest}_2.jpg", "a hostile id cannot leave the folder"


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
