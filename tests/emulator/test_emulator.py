"""The GetImage.io emulator, exercised over real loopback HTTP (no mocks).

The emulator is what every other test trusts to behave like the remote service, faults
included, so its own behaviour is pinned here: timeline, images, errors, knobs, faults,
stats (connection counting included), TLS, the CLI process and the pytest plugin.
"""

from __future__ import annotations

import dataclasses
import email.utils
import io
import json
import logging
import os
import re
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import aiohttp
import pytest
import requests
from PIL import Image

from airflow_provider_getimage.emulator import DEFAULT_API_KEY, Emulator, EmulatorConfig, Fault
from airflow_provider_getimage.emulator.cli import build_parser, config_from_args
from airflow_provider_getimage.emulator.images import render_png

REPO_ROOT = Path(__file__).resolve().parents[2]
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def start_emulator():
    """Start emulators with short latencies; all stopped at teardown.

    Local rather than the plugin's fixture so these tests run whether or not the package
    (and so its ``pytest11`` entry point) is installed; the plugin has its own test below.
    """
    started: list[Emulator] = []

    def start(**knobs) -> Emulator:
        emulator = Emulator(**{"latency": 0.3, "seed": 0, **knobs})
        emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emu(start_emulator) -> Emulator:
    return start_emulator()


def auth(emulator: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.api_key}"}


def submit(emulator: Emulator, session=requests, **body) -> requests.Response:
    body.setdefault("prompt", "a lighthouse in a storm")
    return session.post(f"{emulator.url}/v1/diffusions", json=body, headers=auth(emulator), timeout=5)


def get(emulator: Emulator, diffusion_id: str, session=requests) -> requests.Response:
    return session.get(f"{emulator.url}/v1/diffusions/{diffusion_id}", headers=auth(emulator), timeout=5)


def wait_terminal(emulator: Emulator, diffusion_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = get(emulator, diffusion_id).json()
        if record["status"] in ("FINISHED", "FAILED"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"diffusion {diffusion_id} not terminal after {timeout}s")


def assert_error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error["message"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the documented API ----------------------------------------------------------------------------


def test_submit_then_new_processing_finished(start_emulator):
    emulator = start_emulator(latency=3.0)  # NEW lasts 0.3 s (room for a loaded machine), then PROCESSING
    response = submit(emulator)
    assert response.status_code == 201
    created = response.json()
    assert set(created) == {"id", "status", "createdAt"}
    assert UUID_RE.match(created["id"])
    assert created["status"] == "NEW"
    assert ISO_MILLIS_Z.match(created["createdAt"])

    first = get(emulator, created["id"]).json()
    assert first["status"] == "NEW"
    assert first["progress"] == 0
    assert "images" not in first

    time.sleep(0.5)
    middle = get(emulator, created["id"]).json()
    assert middle["status"] == "PROCESSING"
    assert 0 < middle["progress"] < 100
    assert "images" not in middle
    assert "finishedAt" not in middle

    done = wait_terminal(emulator, created["id"])
    assert done["status"] == "FINISHED"
    assert done["progress"] == 100
    assert done["id"] == created["id"]
    assert done["prompt"] == "a lighthouse in a storm"
    assert done["model"] == "midjourney"
    assert done["createdAt"] == created["createdAt"]
    assert ISO_MILLIS_Z.match(done["finishedAt"])
    assert done["finishedAt"] > done["createdAt"]
    assert len(done["images"]) == 4
    for index, url in enumerate(done["images"]):
        assert url == f"{emulator.url}/images/{created['id']}/{index}.png"


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


def test_failing_prompt_ends_failed_with_message(start_emulator):
    emulator = start_emulator(latency=0.1, failing_prompts=("Forbidden",))
    bad = submit(emulator, prompt="something FORBIDDEN here").json()["id"]
    good = submit(emulator, prompt="something fine").json()["id"]
    failed = wait_terminal(emulator, bad)
    assert failed["status"] == "FAILED"
    assert "content filter" in failed["message"]
    assert "images" not in failed
    assert wait_terminal(emulator, good)["status"] == "FINISHED"


def test_failure_rate_one_fails_everything(start_emulator):
    emulator = start_emulator(latency=0, failure_rate=1.0)
    ids = [submit(emulator, prompt=f"p{i}").json()["id"] for i in range(3)]
    for diffusion_id in ids:
        record = wait_terminal(emulator, diffusion_id)
        assert record["status"] == "FAILED"
        assert record["message"]
    assert {d["outcome"] for d in emulator.diffusions()} == {"FAILED"}


def test_model_and_extra_parameters_are_stored_untouched(emu):
    body = {
        "prompt": "a red fox",
        "model": "stable-diffusion",
        "negative_prompt": "blurry",
        "size": "1024x1024",
        "seed": 42,
        "nested": {"a": [1, 2, {"b": None}]},
    }
    response = requests.post(f"{emu.url}/v1/diffusions", json=body, headers=auth(emu), timeout=5)
    assert response.status_code == 201
    [stored] = emu.diffusions()
    assert stored["body"] == body
    assert stored["model"] == "stable-diffusion"
    assert stored["id"] == response.json()["id"]
    assert stored["finishes_at"] == pytest.approx(stored["created_at"] + 0.3)
    assert get(emu, stored["id"]).json()["model"] == "stable-diffusion"
    over_http = requests.get(f"{emu.url}/_emulator/diffusions", timeout=5).json()
    assert over_http[0]["body"] == body


# -- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="missing"),
        pytest.param({"Authorization": "Bearer wrong-key"}, id="wrong-key"),
        pytest.param({"Authorization": f"Basic {DEFAULT_API_KEY}"}, id="wrong-scheme"),
        pytest.param({"Authorization": "Bearer "}, id="empty"),
    ],
)
def test_bad_or_missing_key_is_401(emu, headers):
    post = requests.post(f"{emu.url}/v1/diffusions", json={"prompt": "x"}, headers=headers, timeout=5)
    assert_error(post, 401, "unauthorized")
    assert post.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(requests.get(f"{emu.url}/v1/diffusions/x", headers=headers, timeout=5), 401, "unauthorized")
    assert emu.stats()["submissions"] == 0


def test_several_accepted_keys(start_emulator):
    emulator = start_emulator(api_keys=("first", "second"))
    assert emulator.api_key == "first"
    for key in ("first", "second"):
        response = requests.post(
            f"{emulator.url}/v1/diffusions",
            json={"prompt": "x"},
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert response.status_code == 201


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        pytest.param(json.dumps({"model": "midjourney"}), "prompt", id="missing-prompt"),
        pytest.param(json.dumps({"prompt": ""}), "prompt", id="empty-prompt"),
        pytest.param(json.dumps({"prompt": "   \n"}), "prompt", id="blank-prompt"),
        pytest.param(json.dumps({"prompt": 12}), "prompt", id="prompt-not-string"),
        pytest.param(json.dumps({"prompt": "x", "model": 3}), "model", id="model-not-string"),
        pytest.param("{not json", "not JSON", id="not-json"),
        pytest.param(json.dumps(["prompt", "x"]), "object", id="json-array"),
        pytest.param("", "not JSON", id="empty-body"),
    ],
)
def test_invalid_body_is_400(emu, data, needle):
    response = requests.post(
        f"{emu.url}/v1/diffusions",
        data=data,
        headers={**auth(emu), "Content-Type": "application/json"},
        timeout=5,
    )
    assert needle in assert_error(response, 400, "invalid_request")
    assert emu.stats()["submissions"] == 0


def test_non_json_content_type_is_415(emu):
    response = requests.post(
        f"{emu.url}/v1/diffusions",
        data=json.dumps({"prompt": "x"}),
        headers={**auth(emu), "Content-Type": "text/plain"},
        timeout=5,
    )
    assert_error(response, 415, "unsupported_media_type")
    with_charset = requests.post(
        f"{emu.url}/v1/diffusions",
        data=json.dumps({"prompt": "x"}),
        headers={**auth(emu), "Content-Type": "application/json; charset=utf-8"},
        timeout=5,
    )
    assert with_charset.status_code == 201


def test_unknown_diffusion_and_route_are_json_404(emu):
    assert "nope" in assert_error(get(emu, "nope"), 404, "not_found")
    assert_error(requests.get(f"{emu.url}/v2/whatever", timeout=5), 404, "not_found")
    assert_error(requests.delete(f"{emu.url}/v1/diffusions", timeout=5), 405, "method_not_allowed")


# -- knobs -----------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(start_emulator):
    emulator = start_emulator(rate_limit=3, retry_after=1.2)
    session = requests.Session()
    statuses = [get(emulator, "missing", session).status_code for _ in range(5)]
    assert statuses == [404, 404, 404, 429, 429]
    limited = get(emulator, "missing", session)
    assert_error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "2"  # whole seconds, rounded up
    assert requests.get(f"{emulator.url}/_emulator/stats", timeout=5).status_code == 200  # never limited
    stats = emulator.stats()
    assert stats["rate_limited"] == 3
    assert stats["responses_by_status"] == {"404": 3, "429": 3}
    time.sleep(1.05)  # the window slides
    assert get(emulator, "missing", session).status_code == 404


def test_error_rate_one_gives_5xx_and_500_502_post_creates(start_emulator):
    emulator = start_emulator(error_rate=1.0, seed=3)
    statuses = []
    for i in range(12):
        response = submit(emulator, prompt=f"p{i}")
        assert response.json()["error"]["code"] in ("server_error", "bad_gateway", "service_unavailable")
        statuses.append(response.status_code)
    assert set(statuses) == {500, 502, 503}
    created = sum(status != 503 for status in statuses)
    stats = emulator.stats()
    assert stats["submissions"] == stats["diffusions"] == created  # 500/502 after creating, 503 before
    assert [d["prompt"] for d in emulator.diffusions()] == [
        f"p{i}" for i, status in enumerate(statuses) if status != 503
    ]
    assert stats["errors_injected"] == 12
    assert get(emulator, "anything").status_code in (500, 502, 503)


def test_drop_rate_one_closes_connections(start_emulator, caplog):
    caplog.set_level(logging.WARNING)
    emulator = start_emulator(drop_rate=1.0)
    for _ in range(4):
        with pytest.raises(requests.ConnectionError):
            submit(emulator)
    with pytest.raises(requests.ConnectionError):
        get(emulator, "anything")
    stats = emulator.stats()
    assert stats["dropped"] == 5
    assert stats["responses_by_status"] == {}
    assert 0 <= stats["submissions"] <= 4  # POSTs drop before or after creating, at random
    assert requests.get(f"{emulator.url}/_emulator/health", timeout=5).status_code == 200
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # no tracebacks


def test_latency_jitter_is_seeded(start_emulator):
    def latencies(seed: int) -> list[float]:
        emulator = start_emulator(latency=10, latency_jitter=5, seed=seed)
        for i in range(5):
            submit(emulator, prompt=f"p{i}")
        return [round(d["finishes_at"] - d["created_at"], 3) for d in emulator.diffusions()]

    first, again = latencies(7), latencies(7)
    assert first == again
    assert all(5 <= value <= 15 for value in first)
    assert len(set(first)) > 1


# -- scripted faults -------------------------------------------------------------------------------


def test_drop_fault_with_requests(emu, caplog):
    caplog.set_level(logging.WARNING)
    emu.inject(Fault("drop", method="GET"))
    session = requests.Session()
    diffusion_id = submit(emu, session).json()["id"]
    with pytest.raises(requests.ConnectionError):
        get(emu, diffusion_id, session)
    assert get(emu, diffusion_id, session).status_code == 200  # used up after one request
    stats = emu.stats()
    assert stats["dropped"] == stats["faults_served"] == 1
    assert stats["polls"] == 2
    assert stats["responses_by_status"] == {"200": 1, "201": 1}
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_drop_after_post_creates_but_never_answers(emu):
    emu.inject(Fault("drop_after", method="POST"))
    with pytest.raises(requests.ConnectionError):
        submit(emu, prompt="ambiguous")
    stats = emu.stats()
    assert stats["submissions"] == 1
    assert stats["dropped"] == 1
    assert [d["prompt"] for d in emu.diffusions()] == ["ambiguous"]


def test_drop_before_post_creates_nothing(emu):
    emu.inject(Fault("drop", method="POST", path="/v1/diffusions"))
    with pytest.raises(requests.ConnectionError):
        submit(emu)
    assert emu.stats()["submissions"] == 0


@pytest.mark.asyncio
async def test_drop_fault_with_aiohttp_client(emu):
    emu.inject(Fault("drop", method="POST"))
    async with aiohttp.ClientSession(headers=auth(emu)) as session:
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await session.post(f"{emu.url}/v1/diffusions", json={"prompt": "x"})
        async with session.post(f"{emu.url}/v1/diffusions", json={"prompt": "x"}) as response:
            assert response.status == 201
            diffusion_id = (await response.json())["id"]

        # aiohttp silently retries an idempotent request once after a disconnect, so a
        # GET needs two drops in a row to surface; the emulator sees both attempts.
        emu.inject(Fault("drop", method="GET", times=2))
        with pytest.raises((aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)):
            await session.get(f"{emu.url}/v1/diffusions/{diffusion_id}")
    stats = emu.stats()
    assert stats["polls"] == 2
    assert stats["dropped"] == 3
    assert stats["submissions"] == 1


def test_delay_fault(emu):
    emu.inject(Fault("delay", delay=0.4, method="POST"))
    start = time.monotonic()
    response = submit(emu)
    assert response.status_code == 201
    assert time.monotonic() - start >= 0.4
    assert emu.stats()["faults_pending"] == 0  # used up: the next POST is not delayed
    emu.inject(Fault("delay", delay=0.5))
    with pytest.raises(requests.ReadTimeout):
        requests.get(f"{emu.url}/v1/diffusions/x", headers=auth(emu), timeout=0.1)


def test_body_fault_answers_non_json_200(emu):
    emu.inject(Fault("body", body="<html>Cloudflare says hi</html>"))
    response = get(emu, "whatever")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text == "<html>Cloudflare says hi</html>"
    with pytest.raises(ValueError, match="Expecting value"):
        response.json()


def test_diffusion_status_fault(start_emulator):
    emu = start_emulator(latency=30)  # NEW for a whole second: no race with a loaded machine
    diffusion_id = submit(emu).json()["id"]
    emu.inject(Fault("diffusion_status", value="QUEUED", times=2))
    assert submit(emu).status_code == 201  # a POST does not consume it
    assert [get(emu, diffusion_id).json()["status"] for _ in range(3)] == ["QUEUED", "QUEUED", "NEW"]


def test_status_fault_passes_retry_after_http_date(emu):
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    emu.inject(
        Fault("status", status=503, retry_after=when),
        Fault("status", status=429, retry_after="7", method="POST"),
        Fault("status", status=502, body="<html>bad gateway</html>", content_type="text/html"),
    )
    unavailable = get(emu, "x")
    assert_error(unavailable, 503, "service_unavailable")
    assert unavailable.headers["Retry-After"] == when
    limited = submit(emu)
    assert_error(limited, 429, "rate_limited")
    assert limited.headers["Retry-After"] == "7"
    gateway = get(emu, "x")
    assert gateway.status_code == 502
    assert gateway.text == "<html>bad gateway</html>"
    assert "Retry-After" not in gateway.headers
    assert emu.stats()["submissions"] == 0
    assert emu.stats()["faults_served"] == 3


def test_status_after_fault_creates_then_errors(emu):
    emu.inject(Fault("status_after", status=504, method="POST"))
    assert_error(submit(emu), 504, "gateway_timeout")
    assert emu.stats()["submissions"] == 1


def test_faults_match_in_order_by_method_and_path_and_only_on_v1(emu):
    emu.inject(
        Fault("status", status=500, path="/v1/diffusions/special"),
        Fault("status", status=418, method="POST", times=2),
    )
    assert requests.get(f"{emu.url}/_emulator/stats", timeout=5).status_code == 200
    assert get(emu, "other").status_code == 404
    assert submit(emu).status_code == 418
    assert get(emu, "special-one").status_code == 500  # prefix match
    assert submit(emu).status_code == 418
    assert submit(emu).status_code == 201
    assert get(emu, "special-one").status_code == 404
    assert emu.stats()["faults_pending"] == 0


def test_faults_and_config_over_http(emu):
    faults = [
        {"kind": "status", "status": 503, "retry_after": 2, "method": "GET"},
        {"kind": "drop", "method": "POST"},
    ]
    answer = requests.post(f"{emu.url}/_emulator/faults", json=faults, timeout=5)
    assert answer.json() == {"pending": 2}
    pending = requests.get(f"{emu.url}/_emulator/faults", timeout=5).json()
    assert [f["kind"] for f in pending] == ["status", "drop"]
    response = get(emu, "x")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    with pytest.raises(requests.ConnectionError):
        submit(emu)

    bad_fault = requests.post(f"{emu.url}/_emulator/faults", json=[{"kind": "explode"}], timeout=5)
    assert_error(bad_fault, 400, "invalid_request")
    bad_field = requests.post(f"{emu.url}/_emulator/faults", json={"kind": "drop", "colour": 1}, timeout=5)
    assert "colour" in assert_error(bad_field, 400, "invalid_request")

    changed = requests.post(f"{emu.url}/_emulator/config", json={"latency": 60, "image_size": 32}, timeout=5)
    assert changed.status_code == 200
    assert changed.json()["latency"] == 60
    assert emu.config.latency == 60
    assert emu.config.image_size == 32
    unknown = requests.post(f"{emu.url}/_emulator/config", json={"latencyy": 1}, timeout=5)
    assert "latencyy" in assert_error(unknown, 400, "invalid_request")
    bad_value = requests.post(f"{emu.url}/_emulator/config", json={"failure_rate": 2}, timeout=5)
    assert_error(bad_value, 400, "invalid_request")
    fixed = requests.post(f"{emu.url}/_emulator/config", json={"port": 1}, timeout=5)
    assert "port" in assert_error(fixed, 400, "invalid_request")
    assert requests.get(f"{emu.url}/_emulator/config", timeout=5).json()["latency"] == 60


def test_runtime_configure_changes_new_diffusions(emu):
    quick = submit(emu).json()["id"]
    config = emu.configure(latency=60, failing_prompts=["nope"], api_keys="new-key")
    assert config.failing_prompts == ("nope",)
    assert config.api_keys == ("new-key",)
    assert emu.api_key == "new-key"
    slow = submit(emu).json()["id"]
    time.sleep(0.35)
    assert get(emu, quick).json()["status"] == "FINISHED"
    assert get(emu, slow).json()["status"] == "NEW"  # NEW lasts min(10% of latency, 1 s)
    with pytest.raises(ValueError, match="unknown knob"):
        emu.configure(not_a_knob=1)
    with pytest.raises(ValueError, match="cannot change while running"):
        emu.configure(tls=True)


# -- stats and reset -------------------------------------------------------------------------------


def test_stats_count_requests_polls_and_responses(emu):
    session = requests.Session()
    first = submit(emu, session).json()["id"]
    second = submit(emu, session).json()["id"]
    for _ in range(3):
        get(emu, first, session)
    get(emu, second, session)
    get(emu, "unknown", session)
    submit(emu, session, prompt="")
    stats = requests.get(f"{emu.url}/_emulator/stats", timeout=5).json()
    assert stats["requests"] == 8
    assert stats["submissions"] == 2
    assert stats["diffusions"] == 2
    assert stats["polls"] == 5
    assert stats["polls_by_id"] == {first: 3, second: 1, "unknown": 1}
    assert stats["responses_by_status"] == {"200": 4, "201": 2, "400": 1, "404": 1}
    assert stats["rate_limited"] == stats["dropped"] == stats["faults_served"] == 0
    assert stats == {**emu.stats(), "connections": stats["connections"]}


def test_connections_count_keep_alive_reuse(emu):
    session = requests.Session()
    for _ in range(10):
        get(emu, "x", session)
    assert emu.stats()["connections"] == 1
    session.close()

    emu.reset()
    for _ in range(4):
        with requests.Session() as fresh:
            get(emu, "x", fresh)
    stats = emu.stats()
    assert stats["connections"] == 4
    assert stats["requests"] == 4


@pytest.mark.asyncio
async def test_connections_count_with_aiohttp_session(emu):
    async with aiohttp.ClientSession(headers=auth(emu)) as session:
        for _ in range(5):
            async with session.get(f"{emu.url}/v1/diffusions/x") as response:
                assert response.status == 404
                await response.read()
    for _ in range(3):
        async with (
            aiohttp.ClientSession(headers=auth(emu)) as one_shot,
            one_shot.get(f"{emu.url}/v1/diffusions/x") as response,
        ):
            await response.read()
    assert emu.stats()["connections"] == 4


def test_reset_clears_diffusions_stats_and_faults(emu):
    diffusion_id = submit(emu).json()["id"]
    emu.inject(Fault("status", status=500, times=5))
    assert requests.post(f"{emu.url}/_emulator/reset", timeout=5).status_code == 200
    stats = emu.stats()
    assert stats["diffusions"] == stats["submissions"] == stats["requests"] == 0
    assert stats["faults_pending"] == 0
    assert emu.diffusions() == []
    assert get(emu, diffusion_id).status_code == 404  # no fault left, diffusion gone
    assert emu.config.latency == 0.3  # knobs survive a reset


# -- TLS -------------------------------------------------------------------------------------------


def test_tls_with_ca_bundle(start_emulator):
    emulator = start_emulator(tls=True, latency=0, image_size=32)
    assert emulator.url.startswith("https://127.0.0.1:")
    assert emulator.ca_bundle is not None
    assert Path(emulator.ca_bundle).read_text().startswith("-----BEGIN CERTIFICATE-----")

    response = requests.post(
        f"{emulator.url}/v1/diffusions",
        json={"prompt": "secure"},
        headers=auth(emulator),
        verify=emulator.ca_bundle,
        timeout=5,
    )
    assert response.status_code == 201
    record = requests.get(
        f"{emulator.url}/v1/diffusions/{response.json()['id']}",
        headers=auth(emulator),
        verify=emulator.ca_bundle,
        timeout=5,
    ).json()
    assert record["images"][0].startswith(f"{emulator.url}/images/")
    assert requests.get(record["images"][0], verify=emulator.ca_bundle, timeout=5).status_code == 200

    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{emulator.url}/_emulator/health", verify=True, timeout=5)

    connection = json.loads(emulator.airflow_connection())
    assert connection["extra"]["verify"] == emulator.ca_bundle
    assert connection["host"] == emulator.url


@pytest.mark.asyncio
async def test_tls_with_aiohttp_and_ssl_context(start_emulator):
    emulator = start_emulator(tls=True)
    assert emulator.ca_bundle is not None
    context = ssl.create_default_context(cafile=emulator.ca_bundle)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{emulator.url}/_emulator/health", ssl=context) as answer,
    ):
        assert answer.status == 200
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            await session.get(f"{emulator.url}/_emulator/health")


def test_tls_files_are_removed_at_stop():
    emulator = Emulator(tls=True).start()
    bundle = emulator.ca_bundle
    assert bundle is not None
    assert Path(bundle).exists()
    emulator.stop()
    assert not Path(bundle).exists()


def test_tls_cert_dir_is_kept(tmp_path):
    with Emulator(tls=True, cert_dir=str(tmp_path)) as emulator:
        assert emulator.ca_bundle == str(tmp_path / "ca.pem")
        assert requests.get(f"{emulator.url}/_emulator/health", verify=emulator.ca_bundle, timeout=5).ok
    assert (tmp_path / "ca.pem").exists()


# -- runner, config, connection helper -------------------------------------------------------------


def test_runner_lifecycle():
    emulator = Emulator(latency=0.1)
    with pytest.raises(RuntimeError, match="not started"):
        _ = emulator.url
    emulator.stop()  # stopping a never-started emulator is harmless
    with emulator:
        assert emulator.url.startswith("http://127.0.0.1:")
        with pytest.raises(RuntimeError, match="already started"):
            emulator.start()
        port = emulator.port
        with pytest.raises(RuntimeError, match="failed to start"), Emulator(port=port):
            pass
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/_emulator/health", timeout=2)


def test_config_validation_and_knobs():
    config = EmulatorConfig(api_keys="single", failing_prompts=["a", "b"])  # type: ignore[arg-type]
    assert config.api_keys == ("single",)
    assert config.failing_prompts == ("a", "b")
    assert EmulatorConfig().api_keys == (DEFAULT_API_KEY,) == ("emulator-key",)
    assert Emulator(EmulatorConfig(latency=5), seed=3).config == EmulatorConfig(latency=5, seed=3)
    for bad in (
        {"failure_rate": 1.5},
        {"error_rate": -0.1},
        {"latency": -1},
        {"image_format": "dicts"},
        {"api_keys": ()},
        {"rate_limit": 0},
        {"image_size": 0},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each bad knob has its own message
            EmulatorConfig(**bad)
    with pytest.raises(ValueError, match="unknown knob"):
        Emulator(latencyy=1)


def test_fault_validation():
    assert Fault("drop", method="get").method == "GET"
    assert Fault("status", status=429, retry_after=1.2).retry_after == "2"  # type: ignore[arg-type]
    assert Fault.from_dict({"kind": "delay", "delay": 1}).delay == 1
    for bad in (
        {"kind": "nope"},
        {"kind": "status"},
        {"kind": "body"},
        {"kind": "diffusion_status"},
        {"kind": "drop", "times": 0},
        {"kind": "drop", "unknown": 1},
        {},
    ):
        with pytest.raises(ValueError):  # noqa: PT011 - each bad fault has its own message
            Fault.from_dict(bad)


def test_airflow_connection_json(emu):
    connection = json.loads(emu.airflow_connection(request_timeout=5))
    assert connection == {
        "conn_type": "getimage",
        "host": emu.url,
        "password": DEFAULT_API_KEY,
        "extra": {"request_timeout": 5},
    }
    env = emu.airflow_env()
    assert list(env) == ["AIRFLOW_CONN_GETIMAGE_DEFAULT"]
    assert json.loads(env["AIRFLOW_CONN_GETIMAGE_DEFAULT"])["host"] == emu.url


# -- processes: CLI and pytest plugin --------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def test_cli_serves_until_sigterm(tmp_path):
    port = free_port()
    ready = tmp_path / "ready"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "airflow_provider_getimage.emulator",
            "--port",
            str(port),
            "--ready-file",
            str(ready),
            "--latency",
            "0",
            "--api-key",
            "k1",
            "--api-key",
            "k2",
            "--fail-prompt",
            "boom",
            "--image-format",
            "objects",
        ],
        cwd=REPO_ROOT,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "emulator did not become ready"
            time.sleep(0.05)
        url = ready.read_text().strip()
        assert url == f"http://127.0.0.1:{port}"
        headers = {"Authorization": "Bearer k2"}
        created = requests.post(
            f"{url}/v1/diffusions", json={"prompt": "boom box"}, headers=headers, timeout=5
        )
        assert created.status_code == 201
        record = requests.get(
            f"{url}/v1/diffusions/{created.json()['id']}", headers=headers, timeout=5
        ).json()
        assert record["status"] == "FAILED"
        assert requests.get(f"{url}/_emulator/stats", timeout=5).json()["submissions"] == 1

        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=10)
        assert process.returncode == 0, stderr
        assert f"GetImage.io emulator listening on {url}" in stdout
        assert "Traceback" not in stderr
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_cli_rejects_bad_knobs():
    result = subprocess.run(
        [sys.executable, "-m", "airflow_provider_getimage.emulator", "--failure-rate", "3"],
        cwd=REPO_ROOT,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "failure_rate" in result.stderr


def test_every_knob_has_a_flag_with_help():
    """Flags are made from the config's fields: a new knob gets one, and must say what it does."""
    actions = {action.dest: action for action in build_parser()._actions}
    for spec in dataclasses.fields(EmulatorConfig):
        action = actions[spec.name]
        assert action.option_strings, spec.name
        assert (action.help or "").strip(), spec.name


def test_flags_map_onto_the_config():
    parser = build_parser()
    assert config_from_args(parser.parse_args([])) == EmulatorConfig(port=8000)
    args = parser.parse_args(
        ["--api-key", "k1", "--api-key", "k2", "--fail-prompt", "boom", "--tls", "--rate-limit", "2.5"]
    )
    config = config_from_args(args)
    assert config.api_keys == ("k1", "k2")  # given keys replace the default one
    assert config.failing_prompts == ("boom",)
    assert config.tls is True
    assert config.rate_limit == 2.5
    assert "(default: emulator-key)" in parser.format_help()


def test_pytest_plugin_fixtures(tmp_path):
    """Run the plugin in a child pytest, as a DAG author's project would load it."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_uses_plugin.py").write_text(
        textwrap.dedent(
            """
            import json
            import sys

            import pytest
            import requests


            def test_default_fixture(getimage_emulator):
                assert getimage_emulator.config.latency == 0.5
                assert getimage_emulator.config.seed == 0
                response = requests.get(getimage_emulator.url + "/_emulator/health", timeout=5)
                assert response.json() == {"status": "ok"}


            @pytest.mark.getimage_emulator(latency=0.1, image_format="objects")
            def test_marker_knobs(getimage_emulator):
                assert getimage_emulator.config.latency == 0.1
                assert getimage_emulator.config.image_format == "objects"


            def test_factory(getimage_emulator_factory):
                first = getimage_emulator_factory(failure_rate=1.0)
                second = getimage_emulator_factory()
                assert first.url != second.url
                assert first.config.failure_rate == 1.0
                assert first.config.latency == 0.5


            def test_airflow_conn(getimage_airflow_conn):
                import os

                conn = json.loads(os.environ["AIRFLOW_CONN_GETIMAGE_DEFAULT"])
                assert conn["host"] == getimage_airflow_conn.url
            """
        )
    )
    env = {**_env(), "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "airflow_provider_getimage.emulator.pytest_plugin",
            "-p",
            "no:cacheprovider",
            "--strict-markers",
            "-q",
            str(tmp_path),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


def test_plugin_import_is_light():
    """Pytest imports the plugin in every run, so it must not pull in the server stack."""
    code = (
        "import sys, airflow_provider_getimage.emulator.pytest_plugin, airflow_provider_getimage.emulator;"
        "heavy = [m for m in ('airflow_provider_getimage.emulator.runner', "
        "'airflow_provider_getimage.emulator.app', "
        "'airflow_provider_getimage.emulator.tls', 'aiohttp.web') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
