"""The batch trigger on a real event loop against the emulator: bounded kwargs, one small event."""

from __future__ import annotations

import asyncio
import json
import random
import time
import uuid
from typing import TYPE_CHECKING

import pytest

from airflow_provider_getimage.triggers.batch import MAX_WINDOW, GetImageBatchTrigger, pack_ids, unpack_times
from tests.triggers.test_getimage import submit

if TYPE_CHECKING:
    from airflow.triggers.base import TriggerEvent

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.usefixtures("fast_retries")


async def events_of(trigger: GetImageBatchTrigger) -> list[TriggerEvent]:
    return [event async for event in trigger.run()]


def test_serialization_is_ids_and_numbers_packed(getimage_airflow_conn: Emulator) -> None:
    trigger = GetImageBatchTrigger(["d-1", "d-2"], [1.0, 2.0004], "my_conn", 3, 7, 60, 1, 12.5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_getimage.triggers.batch.GetImageBatchTrigger"
    assert kwargs == {
        "diffusion_ids": pack_ids(["d-1", "d-2"]),
        "submitted_at": {"from": 1.0, "ms": kwargs["submitted_at"]["ms"]},
        "getimage_conn_id": "my_conn",
        "poll_interval": 3.0,
        "max_polls_per_second": 7.0,
        "timeout": 60.0,
        "fire_after": 1,
        "typical": 12.5,
    }
    again = GetImageBatchTrigger(**json.loads(json.dumps(kwargs)))
    assert (again.diffusion_ids, again.submitted_at) == (["d-1", "d-2"], [1.0, 2.0]), "to the ms"
    assert again.serialize() == (classpath, kwargs)
    assert getimage_airflow_conn.api_key not in json.dumps(kwargs)


def test_a_row_written_by_the_list_form_still_loads() -> None:
    old = {"diffusion_ids": ["d-1", "d-2"], "submitted_at": [5.0, 3.5], "poll_interval": 3.0}
    trigger = GetImageBatchTrigger(**old)  # type: ignore[arg-type]
    assert (trigger.diffusion_ids, trigger.submitted_at) == (["d-1", "d-2"], [5.0, 3.5])
    assert unpack_times(trigger.serialize()[1]["submitted_at"]) == [5.0, 3.5], "out of order too"


def test_a_row_stays_small_at_the_largest_window() -> None:
    rng = random.Random(12)
    ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(MAX_WINDOW)]
    start = time.time()
    times = [start + n / 10 + rng.random() / 20 for n in range(MAX_WINDOW)]  # 10 submissions a second
    row = len(json.dumps(GetImageBatchTrigger(ids, times).serialize()[1]))
    assert row / MAX_WINDOW < 32, f"{row / MAX_WINDOW:.1f} bytes per UUID-shaped id"
    assert row < 320_000, f"the biggest row is {row} bytes"
    small = len(json.dumps(GetImageBatchTrigger(ids[:1000], times[:1000]).serialize()[1]))
    old = len(json.dumps({"diffusion_ids": ids[:1000], "submitted_at": times[:1000]}))
    assert small < old * 0.55, f"packed {small} bytes against {old} as lists"
    with pytest.raises(ValueError, match="1 to 10000"):
        GetImageBatchTrigger([f"d-{n}" for n in range(MAX_WINDOW + 1)], [0.0] * (MAX_WINDOW + 1))
    with pytest.raises(ValueError, match="no packed window"):
        GetImageBatchTrigger("not base64!", [0.0])


def test_also_importable_from_the_trigger_module() -> None:
    from airflow_provider_getimage.triggers import getimage

    assert getimage.GetImageBatchTrigger is GetImageBatchTrigger


@pytest.mark.getimage_emulator(latency=0.3, failing_prompts=("nsfw",))
def test_one_event_with_ids_and_reasons_only(getimage_airflow_conn: Emulator) -> None:
    ids = [submit(getimage_airflow_conn, f"window item {n}") for n in range(5)]
    ids.append(submit(getimage_airflow_conn, "nsfw item"))
    now = time.time()
    trigger = GetImageBatchTrigger(
        ids, [now] * len(ids), poll_interval=0.1, max_polls_per_second=50, fire_after=6
    )
    events = asyncio.run(events_of(trigger))
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "progress"
    assert sorted(payload["finished"]) == sorted(ids[:5])
    assert list(payload["failed"]) == [ids[5]]
    assert "http" not in json.dumps(payload), "no image URL in the event"
    assert 0.2 <= payload["typical"] < 2, "learned from the service's own times (latency 0.3 s)"
    polls = getimage_airflow_conn.stats()["polls"]
    assert polls <= 6 * 4, f"polled the likely-done ones, not in a loop: {polls} polls"


@pytest.mark.getimage_emulator(latency=0.2)
def test_fires_once_enough_drained(getimage_airflow_conn: Emulator) -> None:
    ids = [submit(getimage_airflow_conn, f"item {n}") for n in range(4)]
    now = time.time()
    trigger = GetImageBatchTrigger(ids, [now, now, now + 30, now + 30], poll_interval=0.1, fire_after=2)
    payload = asyncio.run(events_of(trigger))[0].payload
    assert sorted(payload["finished"]) == sorted(ids[:2]), "the likely-done ones first, then it fires"


@pytest.mark.getimage_emulator(latency=30)
def test_deadline_expires(getimage_airflow_conn: Emulator) -> None:
    ids = [submit(getimage_airflow_conn, "slow")]
    trigger = GetImageBatchTrigger(ids, [time.time()], poll_interval=0.1, timeout=0.5)
    started = time.monotonic()
    payload = asyncio.run(events_of(trigger))[0].payload
    assert payload["expired"] == ids
    assert time.monotonic() - started < 5


@pytest.mark.getimage_emulator(latency=0.2, rate_limit=6, retry_after=0.3)
def test_a_429_pauses_the_window_not_retried_by_the_hook(getimage_airflow_conn: Emulator) -> None:
    from airflow_provider_getimage.triggers.batch import WINDOW_RETRY_POLICY

    assert WINDOW_RETRY_POLICY.max_attempts == 1, "the window, not the hook, decides when to poll again"
    ids = []
    for n in range(5):
        ids.append(submit(getimage_airflow_conn, f"item {n}"))
        time.sleep(0.25)  # under the emulator's limit: the submissions are not what is tested
    before = getimage_airflow_conn.stats()
    now = time.time()
    trigger = GetImageBatchTrigger(ids, [now] * 5, poll_interval=0.05, max_polls_per_second=50, fire_after=5)
    payload = asyncio.run(events_of(trigger))[0].payload
    assert sorted(payload["finished"]) == sorted(ids), "every item read in the end"
    stats = getimage_airflow_conn.stats()
    assert stats["rate_limited"] > before["rate_limited"], "the emulator pushed back"
