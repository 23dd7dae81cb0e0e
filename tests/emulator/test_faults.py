"""Faults on the wire: the random knobs (rate limit, 5xx, drops) and scripted :class:`Fault` s.

Both are the same fault type, decided in ``state.py`` and served by ``app.py``; these tests see
them as a client does.
"""

from __future__ import annotations

import email.utils
import logging
import time

import aiohttp
import pytest
import requests

from airflow_provider_getimage.emulator import Fault
from tests.emulator.helpers import (
    assert_error,
    auth,
    get,
    submit,
)


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
