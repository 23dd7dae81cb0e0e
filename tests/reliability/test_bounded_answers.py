"""
Answers bounded in size and in time, whatever the server sends (issue 11, items 1 and 2).

Each hostile answer (``tests/reliability/runaway_server.py``) is played against the worker's
wait, the trigger and an image download. Times are asserted as ratios of the configured
timeouts, not as wall-clock races; memory in a child process with an address-space limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import textwrap
import time
from typing import TYPE_CHECKING

import pytest

from airflow_provider_getimage import _rules, storage
from airflow_provider_getimage.exceptions import (
    GetImageError,
    GetImageSubmitUncertainError,
    GetImageTimeoutError,
)
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger
from tests.reliability.runaway_server import RunawayServer

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

pytestmark = pytest.mark.usefixtures("fast_retries")

REQUEST_TIMEOUT = 1.5
WAIT_TIMEOUT = 2.0
KEY = "hostile-test-key-123"


def connect(monkeypatch: pytest.MonkeyPatch, server: RunawayServer, **extra: object) -> None:
    conn = {"conn_type": "getimage", "host": server.url, "password": KEY}
    conn["extra"] = {"request_timeout": REQUEST_TIMEOUT, **extra}  # type: ignore[assignment]
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))


@pytest.fixture(params=["endless", "huge", "trickle"])
def hostile(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[RunawayServer]:
    server = RunawayServer(request.param).start()
    connect(monkeypatch, server)
    try:
        yield server
    finally:
        server.stop()


def test_the_workers_wait_ends_within_one_request_timeout_of_its_deadline(
    hostile: RunawayServer, capfd: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    with pytest.raises(GetImageTimeoutError):
        GetImageHook().wait_for_diffusion("d-1", poll_interval=0.2, timeout=WAIT_TIMEOUT)
    assert time.monotonic() - started <= WAIT_TIMEOUT + 2 * REQUEST_TIMEOUT
    reasons = "".join(capfd.readouterr())  # the hook's retry and poll lines (Airflow logs to stdout)
    expected = "max_response_bytes" if hostile.behaviour != "trickle" else f"within {REQUEST_TIMEOUT:g} s"
    assert expected in reasons


def test_the_trigger_times_out_at_its_end_time(hostile: RunawayServer) -> None:
    async def first_event() -> dict[str, object]:
        trigger = GetImageDiffusionTrigger("d-1", poll_interval=0.2, end_time=time.time() + WAIT_TIMEOUT)
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("no event")

    started = time.monotonic()
    payload = asyncio.run(first_event())
    assert payload["status"] == "timeout"
    assert time.monotonic() - started <= WAIT_TIMEOUT + 2 * REQUEST_TIMEOUT


def test_a_huge_answer_to_a_submission_may_have_been_created(monkeypatch: pytest.MonkeyPatch) -> None:
    server = RunawayServer("huge").start()
    connect(monkeypatch, server)
    try:
        with pytest.raises(GetImageSubmitUncertainError, match="larger than 1048576 bytes") as err:
            GetImageHook().submit_diffusion("a cat")
    finally:
        server.stop()
    assert "may have been created" in str(err.value)
    assert server.requests == 1, "a submission whose answer was too large is never sent again"


def test_the_size_cap_is_a_connection_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    server = RunawayServer("huge").start()
    connect(monkeypatch, server, max_response_bytes=4096)
    try:
        with pytest.raises(GetImageError, match="larger than 4096 bytes") as err:
            GetImageHook().get_diffusion("d-1")
    finally:
        server.stop()
    assert err.value.transient, "a poll's oversized answer is polled through, not a failed task"


@pytest.mark.parametrize("value", ["0", "-5", "1.5", "lots", True])
def test_a_bad_size_cap_names_the_extra(monkeypatch: pytest.MonkeyPatch, value: object) -> None:
    server = RunawayServer("huge")
    connect(monkeypatch, server, max_response_bytes=value)
    with pytest.raises(GetImageError, match="max_response_bytes"):
        GetImageHook().get_diffusion("d-1")
    assert server.requests == 0
    server.stop()


def test_an_error_answer_is_summarised_from_its_start_only(monkeypatch: pytest.MonkeyPatch) -> None:
    server = RunawayServer("huge_error").start()
    connect(monkeypatch, server)
    started = time.monotonic()
    try:
        with pytest.raises(GetImageError, match="HTTP 500") as err:
            GetImageHook(retry_policy=_rules.RetryPolicy(max_attempts=1)).get_diffusion("d-1")
    finally:
        server.stop()
    assert len(str(err.value)) < 1000
    assert time.monotonic() - started < REQUEST_TIMEOUT, "8 KiB are read, not 200 MB"


def test_a_trickling_image_fails_its_attempt_by_its_deadline(tmp_path: Path) -> None:
    server = RunawayServer("trickle", content_type="image/png").start()
    started = time.monotonic()
    try:
        with (
            storage.ImageStore(
                storage.destination_path(str(tmp_path)),
                logging.getLogger("test"),
                request_timeout=REQUEST_TIMEOUT,
                attempts=2,
                retry_policy=_rules.RetryPolicy(backoff_base=0.01, backoff_max=0.02),
            ) as images,
            pytest.raises(GetImageError, match=f"no complete answer within {REQUEST_TIMEOUT:g} s"),
        ):
            images.save(f"{server.url}/a.png", "d1", 0)
    finally:
        server.stop()
    assert time.monotonic() - started <= 2 * (REQUEST_TIMEOUT + 0.5)
    assert list(tmp_path.iterdir()) == [], "nothing partial is left"


@pytest.mark.parametrize("behaviour", ["endless", "huge"])
def test_memory_stays_bounded_under_an_address_space_limit(behaviour: str) -> None:
    """The sync hook in a child limited to its own size + 200 MB: a 200 MB answer would not fit."""
    code = textwrap.dedent(
        f"""
        import json, os, resource, sys
        from tests.reliability.runaway_server import RunawayServer
        server = RunawayServer({behaviour!r}).start()
        os.environ["AIRFLOW_CONN_GETIMAGE_DEFAULT"] = json.dumps(
            {{"conn_type": "getimage", "host": server.url, "password": "k" * 20}})
        from airflow_provider_getimage._rules import RetryPolicy
        from airflow_provider_getimage.exceptions import GetImageError
        from airflow_provider_getimage.hooks.getimage import GetImageHook
        hook = GetImageHook(retry_policy=RetryPolicy(max_attempts=2, backoff_base=0.01, backoff_max=0.02))
        with open("/proc/self/statm") as statm:
            size = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        limit = size + 200 * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        try:
            hook.get_diffusion("d-1")
        except GetImageError as err:
            print("bounded:", err)
            sys.exit(0)
        sys.exit("no error")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "max_response_bytes" in result.stdout
    assert "MemoryError" not in result.stderr
