"""Running the emulator (``runner.py``): lifecycle, connection counting, TLS, Airflow helpers."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import aiohttp
import pytest
import requests

from airflow_provider_getimage.emulator import DEFAULT_API_KEY, Emulator
from tests.emulator.helpers import (
    auth,
    get,
)


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
