"""The hooks against the emulator over real loopback HTTP: happy paths, faults, retries, errors."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage._rules import RetryPolicy
from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.hooks.getimage import (
    GetImageAsyncHook,
    GetImageAuthError,
    GetImageDiffusionFailed,
    GetImageError,
    GetImageHook,
    GetImageNotFoundError,
    GetImageRateLimitError,
    GetImageSubmitUncertainError,
    GetImageTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_getimage.emulator import Emulator

FAST = RetryPolicy(max_attempts=4, backoff_base=0.05, backoff_max=0.2, retry_after_cap=2.0)


def use_connection(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, **overrides: Any) -> None:
    """Point ``getimage_default`` at an emulator, with field overrides (password, host, extra)."""
    conn = json.loads(emulator.airflow_connection())
    conn.update(overrides)
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))


@pytest.fixture
def hook(getimage_airflow_conn: Emulator) -> GetImageHook:
    return GetImageHook(retry_policy=FAST)


# ------------------------------------------------------------------------------------ happy path
def test_submit_get_wait(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    record = hook.submit_diffusion("a red fox in snow")
    assert record["status"] == "NEW"
    assert hook.get_diffusion(record["id"])["status"] in ("NEW", "PROCESSING")
    final = hook.wait_for_diffusion(record["id"], poll_interval=0.1, timeout=10)
    assert final["status"] == "FINISHED"
    urls = hook.image_urls(final)
    assert len(urls) == 4
    assert all(url.startswith(getimage_airflow_conn.url) and url.endswith(".png") for url in urls)
    stats = getimage_airflow_conn.stats()
    assert stats["submissions"] == 1
    assert stats["connections"] == 1, "one keep-alive session serves every call of a hook"


def test_submit_sends_model_and_parameters_untouched(
    hook: GetImageHook, getimage_airflow_conn: Emulator
) -> None:
    params = {"size": "1024x1024", "negative_prompt": "blurry", "seed": 42, "style": {"chaos": 10}}
    hook.submit_diffusion("a lighthouse", model="sdxl", **params)
    (diffusion,) = getimage_airflow_conn.diffusions()
    assert diffusion["body"] == {"prompt": "a lighthouse", "model": "sdxl", **params}


def test_default_model_comes_from_connection(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, getimage_airflow_conn, extra={"default_model": "flux"})
    GetImageHook(retry_policy=FAST).submit_diffusion("a cat")
    assert getimage_airflow_conn.diffusions()[0]["body"]["model"] == "flux"


def test_images_as_objects_are_normalised(
    getimage_emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = getimage_emulator_factory(latency=0.2, image_format="objects", images_per_diffusion=2)
    use_connection(monkeypatch, emulator)
    hook = GetImageHook(retry_policy=FAST)
    final = hook.wait_for_diffusion(hook.submit_diffusion("objects")["id"], poll_interval=0.05, timeout=5)
    assert all(isinstance(image, dict) for image in final["images"])
    assert hook.image_urls(final) == [image["url"] for image in final["images"]]


def test_status_changes_logged_once_with_elapsed(
    hook: GetImageHook, capfd: pytest.CaptureFixture[str]
) -> None:
    diffusion_id = hook.submit_diffusion("logging")["id"]
    hook.wait_for_diffusion(diffusion_id, poll_interval=0.05, timeout=10)
    changes = [line for line in capfd.readouterr().out.splitlines() if f"Diffusion {diffusion_id}: " in line]
    assert [line.split(": ", 1)[1].split(" (")[0] for line in changes] == [
        "submitted -> NEW",
        "NEW -> PROCESSING",
        "PROCESSING -> FINISHED",
    ], "each status change logged exactly once, though polled many times"
    assert all("s elapsed)" in line for line in changes)


def test_unknown_status_is_running_and_warned_once(
    hook: GetImageHook, getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    getimage_airflow_conn.inject(Fault(kind="diffusion_status", value="QUEUED", method="GET", times=3))
    diffusion_id = hook.submit_diffusion("queued")["id"]
    assert hook.wait_for_diffusion(diffusion_id, poll_interval=0.05, timeout=10)["status"] == "FINISHED"
    warnings = [line for line in capfd.readouterr().out.splitlines() if "does not know" in line]
    assert len(warnings) == 1
    assert "'QUEUED'" in warnings[0]


# ---------------------------------------------------------------------------------- failures
def test_failed_diffusion_raises_with_id_and_message(
    hook: GetImageHook, getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    diffusion_id = hook.submit_diffusion("something forbidden")["id"]
    with pytest.raises(GetImageDiffusionFailed) as info:
        hook.wait_for_diffusion(diffusion_id, poll_interval=0.05, timeout=10)
    assert info.value.diffusion_id == diffusion_id
    assert diffusion_id in str(info.value)
    assert "FAILED" in str(info.value)
    assert "content filter" in str(info.value)


def test_never_finishing_diffusion_times_out(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.configure(latency=600)
    diffusion_id = hook.submit_diffusion("slow")["id"]
    started = time.monotonic()
    with pytest.raises(GetImageTimeoutError) as info:
        hook.wait_for_diffusion(diffusion_id, poll_interval=0.1, timeout=0.5)
    assert 0.4 < time.monotonic() - started < 3
    assert info.value.diffusion_id == diffusion_id
    assert "last status NEW" in str(info.value)


@pytest.mark.getimage_emulator(latency=3.0)
def test_wait_with_backoff_polls_less_often(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    """The worker's wait follows the same backoff rule as the trigger (one rule, in _rules)."""
    started = time.monotonic()
    final = hook.wait_for_diffusion(
        hook.submit_diffusion("a long one")["id"], poll_interval=0.05, timeout=10, max_poll_interval=0.4
    )
    assert final["status"] == "FINISHED"
    polls = getimage_airflow_conn.stats()["polls"]
    assert 10 <= polls < 0.6 * 3.0 / 0.05, f"{polls} polls; 60 without the backoff"
    assert time.monotonic() - started < 3.0 + 0.4 + 1.0


def test_bad_key_is_auth_error_after_one_request(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, getimage_airflow_conn, password="wrong-key-0123456789")
    with pytest.raises(GetImageAuthError) as info:
        GetImageHook(retry_policy=FAST).submit_diffusion("a cat")
    assert info.value.status_code == 401
    assert "wrong-key-0123456789" not in str(info.value)
    stats = getimage_airflow_conn.stats()
    assert (stats["requests"], stats["submissions"]) == (1, 0)


def test_unknown_id_is_not_found_without_retry(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    with pytest.raises(GetImageNotFoundError) as info:
        hook.get_diffusion("no-such-diffusion")
    assert info.value.status_code == 404
    assert info.value.diffusion_id == "no-such-diffusion"
    assert getimage_airflow_conn.stats()["requests"] == 1


def test_bad_request_is_not_retried(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.inject(Fault(kind="status", status=400, method="POST"))
    with pytest.raises(GetImageError, match="HTTP 400") as info:
        hook.submit_diffusion("a cat")
    assert not isinstance(info.value, GetImageSubmitUncertainError)
    assert getimage_airflow_conn.stats()["requests"] == 1


# ------------------------------------------------------------------------------------ retries
def test_429_with_retry_after_is_retried(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    diffusion_id = hook.submit_diffusion("rate")["id"]
    getimage_airflow_conn.inject(Fault(kind="status", status=429, retry_after="1", method="GET", times=2))
    started = time.monotonic()
    assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id
    assert time.monotonic() - started >= 1.9, "Retry-After: 1 was honoured twice"
    assert getimage_airflow_conn.stats()["polls"] == 3


def test_429_on_submit_is_retried_once_submitted(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.inject(Fault(kind="status", status=429, retry_after="0", method="POST", times=2))
    hook.submit_diffusion("rate on submit")
    stats = getimage_airflow_conn.stats()
    assert (stats["requests"], stats["submissions"]) == (3, 1)


def test_rate_limit_exhausted(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.inject(Fault(kind="status", status=429, retry_after="0", method="GET", times=10))
    with pytest.raises(GetImageRateLimitError) as info:
        hook.get_diffusion("x")
    assert info.value.retry_after == 0
    assert getimage_airflow_conn.stats()["requests"] == FAST.max_attempts


def test_5xx_retried_then_success(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    diffusion_id = hook.submit_diffusion("flaky")["id"]
    getimage_airflow_conn.inject(
        Fault(kind="status", status=502, method="GET"),
        Fault(kind="status", status=500, method="GET"),
        Fault(kind="status", status=503, method="GET"),
    )
    assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id
    assert getimage_airflow_conn.stats()["polls"] == 4


def test_5xx_exhausted_on_get(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.inject(Fault(kind="status", status=500, method="GET", times=10))
    with pytest.raises(GetImageError, match="after 4 attempts: HTTP 500"):
        hook.get_diffusion("x")


def test_503_on_submit_is_retried_once_submitted(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.inject(Fault(kind="status", status=503, method="POST"))
    hook.submit_diffusion("busy")
    assert getimage_airflow_conn.stats()["submissions"] == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(kind="status_after", status=500, method="POST"),
        Fault(kind="status_after", status=502, method="POST"),
        Fault(kind="drop_after", method="POST"),
    ],
    ids=["500-after-create", "502-after-create", "drop-after-create"],
)
def test_ambiguous_submit_is_not_resubmitted(
    hook: GetImageHook, getimage_airflow_conn: Emulator, fault: Fault
) -> None:
    getimage_airflow_conn.inject(fault)
    with pytest.raises(GetImageSubmitUncertainError, match="may have been created"):
        hook.submit_diffusion("paid once")
    stats = getimage_airflow_conn.stats()
    assert (stats["requests"], stats["submissions"]) == (1, 1)


def test_dropped_connection_on_get_is_retried(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    diffusion_id = hook.submit_diffusion("drop")["id"]
    getimage_airflow_conn.inject(Fault(kind="drop", method="GET", times=2))
    assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id
    assert getimage_airflow_conn.stats()["dropped"] == 2


def test_slow_response_hits_request_timeout_then_retries(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, getimage_airflow_conn, extra={"request_timeout": 0.3})
    hook = GetImageHook(retry_policy=FAST)
    diffusion_id = hook.submit_diffusion("slow answer")["id"]
    getimage_airflow_conn.inject(Fault(kind="delay", delay=1.5, method="GET"))
    started = time.monotonic()
    assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id
    assert time.monotonic() - started < 1.4, "the read timeout cut the slow answer short"


def test_non_json_answer_on_get_is_retried(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    diffusion_id = hook.submit_diffusion("html")["id"]
    getimage_airflow_conn.inject(Fault(kind="body", body="<html>maintenance</html>", method="GET"))
    assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id


def test_unreachable_server_fails_without_submitting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_GETIMAGE_DEFAULT",
        json.dumps({"conn_type": "getimage", "host": "http://127.0.0.1:9", "password": "k"}),
    )
    with pytest.raises(GetImageError, match="after 4 attempts") as info:
        GetImageHook(retry_policy=FAST).submit_diffusion("nobody home")
    assert not isinstance(info.value, GetImageSubmitUncertainError), "a refused connection took nothing"


# ----------------------------------------------------------------------------- connection
def test_connection_without_key_fails_before_any_request(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_connection(monkeypatch, getimage_airflow_conn, password="")
    with pytest.raises(GetImageError, match="no API key"):
        GetImageHook().submit_diffusion("a cat")
    assert getimage_airflow_conn.stats()["requests"] == 0


def test_connection_with_bad_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_GETIMAGE_DEFAULT",
        json.dumps({"conn_type": "getimage", "host": "ftp://files.example.com", "password": "k"}),
    )
    with pytest.raises(GetImageError, match=r"'ftp://files\.example\.com' is not an http"):
        GetImageHook().submit_diffusion("a cat")


def test_bad_input_fails_before_any_request(hook: GetImageHook, getimage_airflow_conn: Emulator) -> None:
    with pytest.raises(ValueError, match="prompt"):
        hook.submit_diffusion("  ")
    with pytest.raises(ValueError, match="poll_interval"):
        hook.wait_for_diffusion("x", poll_interval=0)
    assert getimage_airflow_conn.stats()["requests"] == 0


def test_test_connection(
    hook: GetImageHook, getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    assert getimage_airflow_conn.url in message
    use_connection(monkeypatch, getimage_airflow_conn, password="wrong-key-0123456789")
    ok, message = GetImageHook().test_connection()
    assert not ok
    assert message == (
        f"{getimage_airflow_conn.url} refused the API key (HTTP 401): "
        "check the API Key (password) of this connection."
    )
    assert "wrong-key-0123456789" not in message
    assert getimage_airflow_conn.stats()["submissions"] == 0, "testing a connection spends no credits"


def test_tls_with_ca_bundle(
    getimage_emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = getimage_emulator_factory(tls=True, latency=0.2)
    assert emulator.url.startswith("https://")
    use_connection(monkeypatch, emulator)  # carries verify=<the emulator's CA bundle>
    hook = GetImageHook(retry_policy=FAST)
    hook.wait_for_diffusion(hook.submit_diffusion("secure")["id"], poll_interval=0.05, timeout=5)
    use_connection(monkeypatch, emulator, extra={})
    with pytest.raises(GetImageError, match="verify"):
        GetImageHook(retry_policy=FAST).submit_diffusion("untrusted")
    assert emulator.stats()["submissions"] == 1


def test_form_metadata_on_hook() -> None:
    behaviour = GetImageHook.get_ui_field_behaviour()
    assert set(behaviour["hidden_fields"]) == {"login", "schema", "port"}
    assert behaviour["relabeling"]["password"] == "API Key"
    assert behaviour["placeholders"]["host"] == "https://api.getimage.io"
    pytest.importorskip("wtforms", reason="the hook's form widgets need wtforms (a dev dependency)")
    widgets = GetImageHook.get_connection_form_widgets()
    assert set(widgets) == {
        "default_model",
        "request_timeout",
        "verify",
        "max_response_bytes",
        "max_requests_per_second",
    }
    assert widgets["verify"].args[0] == "Verify TLS"


# ------------------------------------------------------------------------------------- async
@pytest.fixture
def async_hook(getimage_airflow_conn: Emulator) -> GetImageAsyncHook:
    return GetImageAsyncHook(retry_policy=FAST)


async def test_async_submit_and_poll_share_one_session(
    async_hook: GetImageAsyncHook, getimage_airflow_conn: Emulator
) -> None:
    async with async_hook:
        record = await async_hook.submit_diffusion("async fox", seed=3)
        for _ in range(5):
            polled = await async_hook.get_diffusion(record["id"])
        assert polled["id"] == record["id"]
    stats = getimage_airflow_conn.stats()
    assert (stats["submissions"], stats["polls"], stats["connections"]) == (1, 5, 1)
    assert getimage_airflow_conn.diffusions()[0]["body"]["seed"] == 3


async def test_async_retries_5xx_and_drops(
    async_hook: GetImageAsyncHook, getimage_airflow_conn: Emulator
) -> None:
    async with async_hook:
        diffusion_id = (await async_hook.submit_diffusion("async flaky"))["id"]
        getimage_airflow_conn.inject(
            Fault(kind="status", status=503, method="GET"),
            Fault(kind="drop", method="GET"),
            Fault(kind="status", status=429, retry_after="0", method="GET"),
        )
        assert (await async_hook.get_diffusion(diffusion_id))["id"] == diffusion_id
    assert getimage_airflow_conn.stats()["polls"] == 4


async def test_async_errors(
    async_hook: GetImageAsyncHook, getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with async_hook:
        with pytest.raises(GetImageNotFoundError):
            await async_hook.get_diffusion("missing")
        getimage_airflow_conn.inject(Fault(kind="drop_after", method="POST"))
        with pytest.raises(GetImageSubmitUncertainError):
            await async_hook.submit_diffusion("lost answer")
    use_connection(monkeypatch, getimage_airflow_conn, password="wrong-key-0123456789")
    async with GetImageAsyncHook(retry_policy=FAST) as bad:
        with pytest.raises(GetImageAuthError) as info:
            await bad.get_diffusion("x")
    assert "wrong-key-0123456789" not in str(info.value)


async def test_async_tls_with_ca_bundle(
    getimage_emulator_factory: Callable[..., Emulator], monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator = getimage_emulator_factory(tls=True)
    use_connection(monkeypatch, emulator)
    async with GetImageAsyncHook(retry_policy=FAST) as hook:
        record = await hook.submit_diffusion("secure async")
        assert (await hook.get_diffusion(record["id"]))["id"] == record["id"]


def test_the_hooks_use_no_private_name_of_the_http_provider() -> None:
    """Subclassing HttpHook / HttpAsyncHook stays on their public API: no private attribute or method."""
    import ast
    import inspect

    from airflow.providers.http.hooks import http

    import airflow_provider_getimage.hooks.getimage as module

    base_private = {
        name
        for base in (http.HttpHook(), http.HttpAsyncHook())
        for name in (*vars(base), *dir(type(base)))
        if name.startswith("_") and not name.startswith("__")
    }
    used = {
        node.attr
        for node in ast.walk(ast.parse(inspect.getsource(module)))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }
    assert used & base_private == set()
