"""The trigger on a real event loop against the emulator: one event per outcome, no secret kept."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage import _rules
from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.exceptions import GetImageDiffusionFailed, GetImageError, GetImageTimeoutError
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger, result_from_event

if TYPE_CHECKING:
    from airflow.triggers.base import TriggerEvent

    from airflow_provider_getimage.emulator import Emulator


pytestmark = pytest.mark.usefixtures("fast_retries")


def submit(emulator: Emulator, prompt: str = "a trigger test") -> str:
    import requests

    response = requests.post(
        f"{emulator.url}/v1/diffusions",
        json={"prompt": prompt, "model": "midjourney"},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=5,
    )
    response.raise_for_status()
    return str(response.json()["id"])


async def events_of(trigger: GetImageDiffusionTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def test_serialization_holds_ids_only(getimage_airflow_conn: Emulator) -> None:
    trigger = GetImageDiffusionTrigger("d-1", getimage_conn_id="my_conn", poll_interval=3, end_time=1234.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_getimage.triggers.getimage.GetImageDiffusionTrigger"
    assert kwargs == {
        "diffusion_id": "d-1",
        "getimage_conn_id": "my_conn",
        "poll_interval": 3.0,
        "end_time": 1234.5,
    }
    assert getimage_airflow_conn.api_key not in json.dumps(kwargs)
    rebuilt = GetImageDiffusionTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)


def test_backoff_cap_is_serialized_only_when_set(getimage_airflow_conn: Emulator) -> None:
    plain = GetImageDiffusionTrigger("d-1", poll_interval=3).serialize()[1]
    assert "max_poll_interval" not in plain
    classpath, kwargs = GetImageDiffusionTrigger("d-1", poll_interval=3, max_poll_interval=30).serialize()
    assert kwargs["max_poll_interval"] == 30.0
    assert GetImageDiffusionTrigger(**kwargs).serialize() == (classpath, kwargs)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"diffusion_id": ""}, "diffusion_id"),
        ({"diffusion_id": "x", "poll_interval": 0}, "poll_interval"),
        ({"diffusion_id": "x", "poll_interval": 5, "max_poll_interval": 1}, "max_poll_interval"),
    ],
)
def test_bad_arguments(bad: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GetImageDiffusionTrigger(**bad)


async def test_success_is_one_event_with_the_record(getimage_airflow_conn: Emulator) -> None:
    diffusion_id = submit(getimage_airflow_conn)
    connections_before = getimage_airflow_conn.stats()["connections"]
    events = await events_of(
        GetImageDiffusionTrigger(diffusion_id, poll_interval=0.1, end_time=time.time() + 30)
    )
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    assert payload["diffusion_id"] == diffusion_id
    assert payload["diffusion"]["status"] == "FINISHED"
    assert len(_rules.image_urls(payload["diffusion"])) == 4
    assert getimage_airflow_conn.stats()["polls"] > 3
    assert getimage_airflow_conn.stats()["connections"] == connections_before + 1, "one keep-alive session"
    assert result_from_event(payload)["id"] == diffusion_id


async def test_backoff_polls_a_long_generation_less_often(getimage_airflow_conn: Emulator) -> None:
    """With a cap, a 3 s generation polled every 0.05 s takes about half the polls, found in time."""
    latency, interval, cap = 3.0, 0.05, 0.5
    getimage_airflow_conn.configure(latency=latency)
    diffusion_id = submit(getimage_airflow_conn, "a long generation")
    started = time.monotonic()
    events = await events_of(
        GetImageDiffusionTrigger(
            diffusion_id, poll_interval=interval, end_time=time.time() + 30, max_poll_interval=cap
        )
    )
    waited = time.monotonic() - started
    assert [e.payload["status"] for e in events] == ["success"]
    polls = getimage_airflow_conn.stats()["polls"]
    assert polls < 0.6 * latency / interval, f"{polls} polls: no backoff"
    assert polls >= 10, f"{polls} polls: the first ten intervals are polled as asked"
    # Found at most a tenth of the wait (and at most the cap) late, plus loaded-machine room.
    assert waited < latency + cap + 1.0


async def test_failed_is_one_event_with_the_message(getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    diffusion_id = submit(getimage_airflow_conn, "a forbidden thing")
    events = await events_of(GetImageDiffusionTrigger(diffusion_id, poll_interval=0.1))
    assert [e.payload["status"] for e in events] == ["failed"]
    assert "content filter" in events[0].payload["message"]
    with pytest.raises(GetImageDiffusionFailed, match=diffusion_id) as info:
        result_from_event(events[0].payload)
    assert info.value.diffusion_id == diffusion_id


async def test_deadline_gives_timeout_event(getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.configure(latency=600)
    diffusion_id = submit(getimage_airflow_conn)
    started = time.monotonic()
    events = await events_of(
        GetImageDiffusionTrigger(diffusion_id, poll_interval=0.2, end_time=time.time() + 0.7)
    )
    assert 0.6 < time.monotonic() - started < 5.0, "ended at its 0.7 s deadline, not at the 600 s generation"
    assert [e.payload["status"] for e in events] == ["timeout"]
    with pytest.raises(GetImageTimeoutError) as info:
        result_from_event(events[0].payload)
    assert info.value.diffusion_id == diffusion_id


async def test_recovers_from_bursts_of_5xx_429_and_drops(getimage_airflow_conn: Emulator) -> None:
    diffusion_id = submit(getimage_airflow_conn)
    getimage_airflow_conn.inject(
        Fault(kind="status", status=503, method="GET", times=4),  # more than the hook's 3 attempts
        Fault(kind="status", status=429, retry_after="0", method="GET", times=2),
        Fault(kind="drop", method="GET", times=2),
        Fault(kind="status", status=502, method="GET", times=2),
    )
    events = await events_of(
        GetImageDiffusionTrigger(diffusion_id, poll_interval=0.05, end_time=time.time() + 30)
    )
    assert [e.payload["status"] for e in events] == ["success"]
    stats = getimage_airflow_conn.stats()
    assert stats["faults_served"] == 10
    assert stats["submissions"] == 1


async def test_unknown_id_and_bad_key_end_with_error(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = await events_of(GetImageDiffusionTrigger("no-such-id", poll_interval=0.05))
    assert [e.payload["status"] for e in events] == ["error"]
    assert "HTTP 404" in events[0].payload["message"]
    conn = json.loads(getimage_airflow_conn.airflow_connection())
    monkeypatch.setenv(
        "AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps({**conn, "password": "wrong-key-0123456789"})
    )
    events = await events_of(GetImageDiffusionTrigger("whatever", poll_interval=0.05))
    assert [e.payload["status"] for e in events] == ["error"]
    assert "HTTP 401" in events[0].payload["message"]
    assert "wrong-key-0123456789" not in json.dumps(events[0].payload)
    with pytest.raises(GetImageError, match="whatever"):
        result_from_event(events[0].payload)


async def test_still_running_trigger_can_be_cancelled(getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.configure(latency=600)
    diffusion_id = submit(getimage_airflow_conn)
    task = asyncio.create_task(events_of(GetImageDiffusionTrigger(diffusion_id, poll_interval=0.05)))
    await asyncio.sleep(0.5)
    assert not task.done(), "a running diffusion yields no event"
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.1)  # a request already on the wire when cancelled may still land
    polls = getimage_airflow_conn.stats()["polls"]
    assert polls >= 3
    await asyncio.sleep(0.3)
    assert getimage_airflow_conn.stats()["polls"] == polls, "no poll after cancellation"


async def test_event_loop_never_blocked(
    getimage_airflow_conn: Emulator, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio's debug mode reports any callback that holds the loop; none may come from polling."""
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = 0.05
    caplog.set_level(logging.WARNING, logger="asyncio")
    diffusion_id = submit(getimage_airflow_conn)
    # No full collection inside a callback: after Airflow's imports one walks the whole heap
    # (0.1 s and more on a loaded machine) in whichever callback it falls: the provider's or not
    # (a run under xdist once reported one callback of 0.11 s).
    gc.collect()
    gc.disable()
    try:
        events = await events_of(
            GetImageDiffusionTrigger(diffusion_id, poll_interval=0.05, end_time=time.time() + 30)
        )
    finally:
        gc.enable()
        loop.set_debug(False)
    assert events[0].payload["status"] == "success"
    slow = [r.getMessage() for r in caplog.records if r.name == "asyncio" and "took" in r.getMessage()]
    assert slow == []


def test_result_from_event_rejects_garbage() -> None:
    with pytest.raises(GetImageError, match="no usable event"):
        result_from_event(None)
    with pytest.raises(GetImageError, match="no usable event"):
        result_from_event({"unexpected": True})
