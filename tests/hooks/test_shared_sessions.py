"""Async hooks of one connection share one keep-alive session per event loop, as the triggerer needs."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING

import pytest
import requests

from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook
from airflow_provider_getimage.hooks.sessions import POOL_SIZE, SHARED_SESSIONS
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator


def submit(emulator: Emulator, prompt: str) -> str:
    response = requests.post(
        f"{emulator.url}/v1/diffusions",
        json={"prompt": prompt},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=5,
    )
    return str(response.json()["id"])


async def test_hooks_share_one_session_until_the_last_closes(getimage_airflow_conn: Emulator) -> None:
    diffusion_id = submit(getimage_airflow_conn, "shared")
    connections_before = getimage_airflow_conn.stats()["connections"]
    first, second = GetImageAsyncHook(), GetImageAsyncHook()
    await first.get_diffusion(diffusion_id)
    await second.get_diffusion(diffusion_id)
    assert first._session is second._session
    settings = await first.get_settings()
    assert SHARED_SESSIONS.users(settings) == 2
    session = first._session
    assert session is not None
    await first.close()
    assert not session.closed, "still in use by the second hook"
    await second.get_diffusion(diffusion_id)
    await second.close()
    assert session.closed
    assert SHARED_SESSIONS.users(settings) == 0
    assert getimage_airflow_conn.stats()["connections"] == connections_before + 1


async def test_each_connection_has_its_own_session(
    getimage_airflow_conn: Emulator, getimage_emulator_factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = getimage_emulator_factory(api_keys=("other-key-123456",))
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_OTHER", other.airflow_connection())
    async with GetImageAsyncHook() as mine, GetImageAsyncHook("getimage_other") as theirs:
        await mine.get_diffusion(submit(getimage_airflow_conn, "mine"))
        await theirs.get_diffusion(submit(other, "theirs"))
        assert mine._session is not theirs._session


def test_one_session_per_event_loop(getimage_airflow_conn: Emulator) -> None:
    diffusion_id = submit(getimage_airflow_conn, "two loops")

    async def poll_once() -> object:
        async with GetImageAsyncHook() as hook:
            await hook.get_diffusion(diffusion_id)
            return hook._session

    first = asyncio.run(poll_once())
    second = asyncio.run(poll_once())
    assert first is not second
    assert getattr(first, "closed", False), "a loop's session is closed when its last user is done"


async def test_many_triggers_open_few_connections(getimage_airflow_conn: Emulator) -> None:
    """50 triggers polling 0.5 s generations: connections stay bounded by the pool, not by polls."""
    getimage_airflow_conn.configure(latency=1.0)
    ids = [submit(getimage_airflow_conn, f"crowd {n}") for n in range(50)]
    connections_before = getimage_airflow_conn.stats()["connections"]
    deadline = time.time() + 30

    async def one(diffusion_id: str) -> str:
        trigger = GetImageDiffusionTrigger(diffusion_id, poll_interval=0.1, end_time=deadline)
        events = [event.payload async for event in trigger.run()]
        return str(events[0]["status"])

    statuses = await asyncio.gather(*(one(d) for d in ids))
    assert statuses == ["success"] * 50
    stats = getimage_airflow_conn.stats()
    opened = stats["connections"] - connections_before
    assert opened <= min(50, POOL_SIZE)
    assert stats["polls"] >= 5 * opened, f"{stats['polls']} polls over {opened} connections: reused"


async def test_a_broken_pooled_connection_is_replaced(getimage_airflow_conn: Emulator) -> None:
    diffusion_id = submit(getimage_airflow_conn, "broken pool")
    async with GetImageAsyncHook() as hook:
        await hook.get_diffusion(diffusion_id)
        # The server drops the pooled connection (aiohttp resends an idempotent GET once by itself).
        getimage_airflow_conn.inject(Fault(kind="drop", method="GET", times=2))
        assert (await hook.get_diffusion(diffusion_id))["id"] == diffusion_id
        assert (await hook.get_diffusion(diffusion_id))["id"] == diffusion_id
    stats = getimage_airflow_conn.stats()
    assert stats["dropped"] == 2


def test_the_trigger_keeps_no_session_in_its_kwargs() -> None:
    _, kwargs = GetImageDiffusionTrigger("d-1", poll_interval=1).serialize()
    assert "session" not in json.dumps(kwargs)


async def test_concurrent_hooks_look_the_connection_up_once(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups = 0
    real_lookup = GetImageAsyncHook._lookup_settings

    async def counting_lookup(self: GetImageAsyncHook) -> object:
        nonlocal lookups
        lookups += 1
        return await real_lookup(self)

    monkeypatch.setattr(GetImageAsyncHook, "_lookup_settings", counting_lookup)
    diffusion_id = submit(getimage_airflow_conn, "one lookup")
    hooks = [GetImageAsyncHook() for _ in range(20)]
    await asyncio.gather(*(hook.get_diffusion(diffusion_id) for hook in hooks))
    assert lookups == 1
    assert len({id(hook._session) for hook in hooks}) == 1
    for hook in hooks:
        await hook.close()
    async with GetImageAsyncHook() as again:  # released by all: the next user reads it anew
        await again.get_diffusion(diffusion_id)
    assert lookups == 2


async def test_a_failed_lookup_is_not_cached(
    monkeypatch: pytest.MonkeyPatch, getimage_emulator: Emulator
) -> None:
    from airflow_provider_getimage.exceptions import GetImageError

    monkeypatch.setenv(
        "AIRFLOW_CONN_GETIMAGE_DEFAULT", '{"conn_type": "getimage", "host": "http://127.0.0.1:1"}'
    )
    with pytest.raises(GetImageError, match="no API key"):
        await GetImageAsyncHook().get_settings()
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", getimage_emulator.airflow_connection())
    assert (await GetImageAsyncHook().get_settings()).base_url == getimage_emulator.url


async def test_a_missing_ca_bundle_is_a_clear_error_and_not_kept(
    getimage_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from airflow_provider_getimage.exceptions import GetImageError

    conn = json.loads(getimage_emulator.airflow_connection())
    monkeypatch.setenv(
        "AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps({**conn, "extra": {"verify": "/no/ca.pem"}})
    )
    for _ in range(2):
        hook = GetImageAsyncHook()
        with pytest.raises(GetImageError, match=r"CA bundle in extra 'verify' \(/no/ca.pem\)"):
            await hook.get_diffusion("x")
        settings = await hook.get_settings()
        assert SHARED_SESSIONS.users(settings) == 0, "the failed session is not kept"
    assert getimage_emulator.stats()["requests"] == 0
