"""The emulated API's HTTP surface (``app.py``): the documented endpoints and their errors.

Over real loopback HTTP (no mocks), as every other test meets the emulator.
"""

from __future__ import annotations

import json
import time

import pytest
import requests

from airflow_provider_getimage.emulator import DEFAULT_API_KEY
from tests.emulator.helpers import (
    ISO_MILLIS_Z,
    UUID_RE,
    assert_error,
    auth,
    get,
    submit,
    wait_terminal,
)


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
