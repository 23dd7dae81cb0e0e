"""The images the emulator draws (``images.py``) and serves like a CDN."""

from __future__ import annotations

import io
import time

import requests
from PIL import Image

from airflow_provider_getimage.emulator.images import render_png
from tests.emulator.helpers import (
    assert_error,
    submit,
    wait_terminal,
)


def test_images_are_valid_deterministic_pngs(start_emulator):
    emulator = start_emulator(latency=0, image_size=96, images_per_diffusion=2)
    cat = wait_terminal(emulator, submit(emulator, prompt="a cat").json()["id"])
    cat_again = wait_terminal(emulator, submit(emulator, prompt="a cat").json()["id"])
    dog = wait_terminal(emulator, submit(emulator, prompt="a dog").json()["id"])

    def download(url: str) -> bytes:
        response = requests.get(url, timeout=5)  # no Authorization: the CDN is public
        assert response.status_code == 200
        assert response.headers["Content-Type"] == "image/png"
        return response.content

    cat_bytes = [download(url) for url in cat["images"]]
    for data in cat_bytes:
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        image = Image.open(io.BytesIO(data))
        image.load()
        assert image.format == "PNG"
        assert image.size == (96, 96)
        assert len(image.getcolors(96 * 96) or []) > 10  # a picture, not a flat fill

    assert [download(url) for url in cat_again["images"]] == cat_bytes  # same prompt, same bytes
    assert cat_bytes[0] != cat_bytes[1]  # each index its own picture
    cat_pixels = Image.open(io.BytesIO(cat_bytes[0])).convert("RGB").tobytes()
    dog_pixels = Image.open(io.BytesIO(download(dog["images"][0]))).convert("RGB").tobytes()
    differing = sum(a != b for a, b in zip(cat_pixels, dog_pixels, strict=True))
    assert differing > len(cat_pixels) // 4  # visibly different, not a pixel or two

    stats = emulator.stats()
    assert stats["image_downloads"] == 5
    assert stats["requests"] == stats["submissions"] + stats["polls"]  # images are not API requests


def test_png_rendering_is_fast_and_default_size():
    start = time.perf_counter()
    data = render_png(f"speed check {time.time()}", 0, 256)
    assert time.perf_counter() - start < 0.1
    image = Image.open(io.BytesIO(data))
    assert image.size == (256, 256)


def test_unknown_image_and_unfinished_image_are_404(start_emulator):
    emulator = start_emulator(latency=30)
    diffusion_id = submit(emulator).json()["id"]
    assert_error(requests.get(f"{emulator.url}/images/{diffusion_id}/0.png", timeout=5), 404, "not_found")
    assert_error(requests.get(f"{emulator.url}/images/nope/0.png", timeout=5), 404, "not_found")


def test_images_as_objects(start_emulator):
    emulator = start_emulator(latency=0, image_format="objects", images_per_diffusion=3, image_size=64)
    record = wait_terminal(emulator, submit(emulator).json()["id"])
    assert [entry["index"] for entry in record["images"]] == [0, 1, 2]
    for entry in record["images"]:
        assert entry["width"] == entry["height"] == 64
        assert entry["url"].startswith(f"{emulator.url}/images/{record['id']}/")
        assert requests.get(entry["url"], timeout=5).status_code == 200
