"""
The sync paths' whole-request deadline (``hooks.deadlines``): real sockets on loopback, real
requests sessions, times asserted as ratios of the configured timeout.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.deadlines import WATCHDOG, DeadlineAdapter, Watchdog
from airflow_provider_getimage.hooks.getimage import GetImageHook
from tests.reliability.hostile_server import HostileServer, Play, json_body

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator.runner import Emulator

TIMEOUT = 1.0
RECORD = {"id": "d1", "status": "PROCESSING"}
ONE_TRY = _rules.RetryPolicy(max_attempts=1)


@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile = HostileServer().start()
    yield hostile
    hostile.stop()


def connect(monkeypatch: pytest.MonkeyPatch, url: str, timeout: float = TIMEOUT) -> None:
    conn = {"conn_type": "getimage", "host": url, "password": "k" * 20, "extra": {"request_timeout": timeout}}
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))


def test_headers_that_trickle_end_the_request_at_its_deadline(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each header byte comes within the read timeout; the watchdog ends the request anyway."""
    server.play("/v1/diffusions/d1", Play(body=json_body(RECORD), stream="headers_trickle"))
    connect(monkeypatch, server.url)
    hook = GetImageHook(retry_policy=ONE_TRY)
    hook.get_conn()  # the connection read first (a cold Airflow 3.0 takes seconds): the request is timed
    started = time.monotonic()
    with pytest.raises(GetImageError, match=f"no complete answer within {TIMEOUT:g} s") as err:
        hook.get_diffusion("d1")
    assert time.monotonic() - started < 1.5 * TIMEOUT
    assert err.value.transient, "a late poll is polled again"


def test_a_pooled_connection_is_watched_too(server: HostileServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second request reuses the keep-alive connection (no connect): it still reports in."""
    server.play("/v1/diffusions/d1", Play(body=json_body(RECORD)))
    server.play("/v1/diffusions/d2", Play(body=json_body({**RECORD, "id": "d2"}), stream="headers_trickle"))
    connect(monkeypatch, server.url)
    with GetImageHook(retry_policy=ONE_TRY) as hook:
        assert hook.get_diffusion("d1")["id"] == "d1"
        assert isinstance(hook.get_conn().get_adapter(server.url), DeadlineAdapter)
        started = time.monotonic()
        with pytest.raises(GetImageError, match="no complete answer"):
            hook.get_diffusion("d2")
        assert time.monotonic() - started < 1.5 * TIMEOUT
    assert server.connections == 1, "the late request ran on the pooled connection"


@pytest.mark.usefixtures("getimage_airflow_conn")
def test_requests_in_time_are_untouched_and_leave_the_watchdog_empty() -> None:
    """A hundred polls in time: all answered, and the watchdog's heap does not grow with them."""
    with GetImageHook() as hook:
        diffusion_id = hook.submit_diffusion("a watched fox")["id"]
        for _ in range(100):
            assert hook.get_diffusion(diffusion_id)["id"] == diffusion_id
    assert WATCHDOG.pending() <= 2


def test_a_deadline_outside_a_request_shuts_nothing() -> None:
    watchdog = Watchdog()
    with watchdog.arm(0.05) as deadline:
        time.sleep(0.2)
    assert deadline.expired
    assert deadline.connection is None


def test_a_plain_session_with_the_adapter_keeps_working(getimage_emulator: Emulator) -> None:
    """Outside a deadline the adapter is a plain ``HTTPAdapter``, socket options included."""
    session = requests.Session()
    session.mount("http://", DeadlineAdapter(socket_options=[(6, 1, 1)]))  # TCP_NODELAY
    answer = session.get(getimage_emulator.url + "/_emulator/stats", timeout=5)
    assert answer.status_code == 200
