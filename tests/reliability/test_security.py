"""The API key never leaves the Authorization header: not in logs, errors, XCom or trigger kwargs."""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import pytest

from airflow_provider_getimage._rules import RetryPolicy
from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.exceptions import GetImageAuthError, GetImageError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from tests.fakes import RecordingTI, task_context

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_getimage.emulator import Emulator

SECRET = "sk-live-7f3a9c1e5b2d4f6a8c0e"
FAST = RetryPolicy(max_attempts=3, backoff_base=0.01, backoff_max=0.02, retry_after_cap=0.05)


@pytest.fixture
def secret_emulator(
    getimage_emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> Emulator:
    emulator = getimage_emulator_factory(api_keys=(SECRET,), latency=0.2)
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", emulator.airflow_connection())
    return emulator


def test_key_absent_from_logs_errors_and_xcom_through_faults(
    secret_emulator: Emulator, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret_emulator.inject(
        Fault(kind="status", status=503, method="POST"),
        Fault(kind="status", status=429, retry_after="0", method="GET"),
        Fault(kind="drop", method="GET", times=2),
        Fault(kind="status", status=500, method="GET"),
    )
    ti = RecordingTI()
    operator = GetImageDiffusionOperator(task_id="generate", prompt="a secret fox", poll_interval=0.05)
    operator.hook.retry_policy = FAST
    urls = operator.execute(task_context(ti))
    assert urls
    out = capfd.readouterr()
    assert "retry" in out.out, "the retries were logged"
    assert SECRET not in out.out + out.err
    assert SECRET not in caplog.text
    assert SECRET not in json.dumps(ti.pushed)
    rendered = {name: getattr(operator, name) for name in operator.template_fields}
    assert SECRET not in json.dumps(rendered)


def test_key_echoed_by_the_server_is_scrubbed_from_the_error(secret_emulator: Emulator) -> None:
    body = json.dumps({"error": {"code": "unauthorized", "message": f"key {SECRET} is suspended"}})
    secret_emulator.inject(Fault(kind="status", status=401, body=body, content_type="application/json"))
    with pytest.raises(GetImageAuthError) as info:
        GetImageHook(retry_policy=FAST).submit_diffusion("a cat")
    assert SECRET not in str(info.value)
    assert "key *** is suspended" in str(info.value)


def test_wrong_key_error_does_not_hold_the_key(
    secret_emulator: Emulator, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    wrong = "sk-live-0000000000wrong0000"
    conn = json.loads(secret_emulator.airflow_connection())
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps({**conn, "password": wrong}))
    with pytest.raises(GetImageError) as info:
        GetImageHook(retry_policy=FAST).submit_diffusion("a cat")
    assert wrong not in str(info.value)
    assert wrong not in repr(info.value.__dict__)
    out = capfd.readouterr()
    assert wrong not in out.out + out.err


def test_plain_http_to_a_remote_host_warns(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    for host, warned in (("http://api.example.com", True), ("http://127.0.0.1:8000", False), ("", False)):
        conn = {"conn_type": "getimage", "host": host, "password": SECRET}
        monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))
        assert GetImageHook().settings.base_url
        out = capfd.readouterr().out
        assert ("over plain http" in out) is warned, host
        assert SECRET not in out


def test_settings_repr_hides_the_key(secret_emulator: Emulator) -> None:
    settings = GetImageHook().settings
    assert SECRET not in repr(settings)
    assert settings.api_key == SECRET


async def test_plain_http_warning_on_the_async_hook_too(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook

    conn = {"conn_type": "getimage", "host": "http://api.example.com", "password": SECRET}
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))
    async with GetImageAsyncHook() as hook:
        await hook.get_settings()
    out = capfd.readouterr().out
    assert "over plain http" in out
    assert SECRET not in out
