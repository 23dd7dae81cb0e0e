"""The example DAG's image download: http(s) only, images only, capped, safe names, atomic writes."""

from __future__ import annotations

import importlib.util
import sys
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests
from PIL import Image

from tests import dag_runs

if TYPE_CHECKING:
    from pathlib import Path
    from types import ModuleType

    from airflow_provider_getimage.emulator import Emulator


@pytest.fixture(scope="module")
def example() -> ModuleType:
    """The example DAG file as a module, for its download helper."""
    path = dag_runs.EXAMPLE_DAGS / "example_getimage.py"
    spec = importlib.util.spec_from_file_location("example_getimage_for_download_tests", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def image_urls(getimage_emulator: Emulator) -> list[str]:
    """The image URLs of one finished diffusion on the emulator."""
    headers = {"Authorization": f"Bearer {getimage_emulator.api_key}"}
    base = f"{getimage_emulator.url}/v1/diffusions"
    diffusion_id = requests.post(base, json={"prompt": "a download"}, headers=headers, timeout=5).json()["id"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        record: dict[str, Any] = requests.get(f"{base}/{diffusion_id}", headers=headers, timeout=5).json()
        if record["status"] == "FINISHED":
            return list(record["images"])
        time.sleep(0.05)
    raise AssertionError("the emulator did not finish")


def files_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_downloads_real_pngs_with_safe_names(
    example: ModuleType, image_urls: list[str], tmp_path: Path
) -> None:
    paths = example.download_images(image_urls, tmp_path, stem="../../etc/passwd:1")
    assert [p.parent for p in paths] == [tmp_path] * 4, "a hostile stem cannot leave the folder"
    assert files_in(tmp_path) == [f"etc_passwd_1_{i}.png" for i in range(4)]
    for path in paths:
        with Image.open(path) as image:
            image.verify()
        assert path.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize(
    "url", ["file:///etc/passwd", "ftp://example.com/a.png", "data:image/png;base64,AAAA"]
)
def test_only_http_urls(example: ModuleType, url: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only http"):
        example.download_images([url], tmp_path, stem="x")
    assert files_in(tmp_path) == []


def test_only_images(example: ModuleType, getimage_emulator: Emulator, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="application/json, not an image"):
        example.download_images([f"{getimage_emulator.url}/_emulator/stats"], tmp_path, stem="x")
    assert files_in(tmp_path) == []


def test_size_cap_leaves_no_partial_file(
    example: ModuleType, image_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(example, "MAX_IMAGE_BYTES", 100)
    with pytest.raises(ValueError, match="larger than 100 bytes"):
        example.download_images(image_urls[:1], tmp_path, stem="x")
    assert files_in(tmp_path) == [], "the partial file was removed"


def test_crash_before_rename_leaves_no_half_file(
    example: ModuleType, image_urls: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash(*_: object) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(example.os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        example.download_images(image_urls[:1], tmp_path, stem="x")
    assert files_in(tmp_path) == []
