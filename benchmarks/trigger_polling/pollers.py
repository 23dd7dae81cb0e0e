"""
The three ways to wait for N diffusions on one event loop, and the loop that drives them.

- ``provider``: N ``GetImageDiffusionTrigger(...).run()`` generators, each consumed for its one
  event, as the triggerer does.
- ``baseline``: the anchor pattern (``HttpSensorTrigger``): one ``HttpAsyncHook`` per task and
  ``await hook.run(endpoint=...)`` with no session, i.e. a new ``aiohttp.ClientSession``, so a new
  TCP + TLS handshake, per poll.
- ``floor``: one shared ``aiohttp.ClientSession`` (default settings) and N tasks GET-ing and
  parsing the JSON on the provider's schedule: what polling costs with no provider code at all.

Each loader imports what its mode needs and returns a factory: an async context manager that
yields ``poll(diffusion_id)``, one coroutine per diffusion. Everything the factory and ``poll``
do runs inside the measured window; the loader's imports do not.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from benchmarks.trigger_polling.common import API_KEY, BASELINE_CONN_ID, PROVIDER_CONN_ID

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine

    Poll = Callable[[str], Coroutine[Any, Any, "PollerResult"]]
    PollerFactory = Callable[[float], contextlib.AbstractAsyncContextManager[Poll]]

HOOK_MODULE = "airflow_provider_getimage.hooks.getimage"


@dataclass
class PollerResult:
    """What one poller ended with: when it saw FINISHED (epoch s) and the errors on the way."""

    seen_at: float | None
    errors: int = 0
    sample: str | None = None


def _is_finished(record: Any) -> bool:
    return isinstance(record, dict) and str(record.get("status", "")).upper() == "FINISHED"


async def _poll_until_finished(get: Callable[[], Awaitable[Any]], interval: float) -> PollerResult:
    """GET a diffusion every ``interval`` until it is FINISHED; errors are counted, then polled past."""
    result = PollerResult(seen_at=None)
    while True:
        try:
            record = await get()
        except Exception as exc:
            result.errors += 1
            result.sample = f"{type(exc).__name__}: {exc}"[:300]
        else:
            if _is_finished(record):
                result.seen_at = time.time()
                return result
        await asyncio.sleep(interval)


def load_provider(interval: float, *, hook_loaded: bool = True) -> PollerFactory:
    """
    N triggers, each consumed for its one event like the triggerer does.

    :param hook_loaded: import the hook module now, as a triggerer that has run this provider's
        triggers before has it; False leaves it to the first trigger (a fresh triggerer), whose
        lazy import then falls inside the window.
    """
    if hook_loaded:
        import airflow_provider_getimage.hooks.getimage  # noqa: F401
    from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

    @contextlib.asynccontextmanager
    async def pollers(deadline: float) -> AsyncIterator[Poll]:
        async def poll(diffusion_id: str) -> PollerResult:
            trigger = GetImageDiffusionTrigger(
                diffusion_id=diffusion_id,
                getimage_conn_id=PROVIDER_CONN_ID,
                poll_interval=interval,
                # After the benchmark's own cap, so the trigger's deadline never fires first.
                end_time=deadline + 5.0,
            )
            result = PollerResult(seen_at=None, errors=0, sample="no event")
            events = 0
            async for event in trigger.run():
                events += 1
                if events > 1:
                    result.errors += 1
                    result.sample = "more than one event"
                    continue
                payload = event.payload
                if isinstance(payload, dict) and payload.get("status") == "success":
                    result.seen_at, result.sample = time.time(), None
                else:
                    result.errors += 1
                    status = payload.get("status") if isinstance(payload, dict) else payload
                    message = payload.get("message") if isinstance(payload, dict) else ""
                    result.sample = f"event {status}: {message}"
            return result

        yield poll

    return pollers


def load_baseline(interval: float) -> PollerFactory:
    """The anchor pattern: ``HttpAsyncHook.run()`` with no session, so one ClientSession per poll."""
    from airflow.providers.http.hooks.http import HttpAsyncHook

    headers = {"Authorization": f"Bearer {API_KEY}"}

    @contextlib.asynccontextmanager
    async def pollers(_deadline: float) -> AsyncIterator[Poll]:
        async def poll(diffusion_id: str) -> PollerResult:
            # One hook per poller, as HttpSensorTrigger.run() makes one; each run() opens a session.
            hook = HttpAsyncHook(method="GET", http_conn_id=BASELINE_CONN_ID)

            async def get() -> Any:
                response = await hook.run(endpoint=f"/v1/diffusions/{diffusion_id}", headers=headers)
                return await response.json()

            return await _poll_until_finished(get, interval)

        yield poll

    return pollers


def load_floor(interval: float, base_url: str, ca_bundle: str) -> PollerFactory:
    """
    The floor: one shared ``aiohttp.ClientSession`` with default settings, nothing else.

    Its aiohttp import and TLS context are made in the window, as the provider's are (the hook
    module's import, the session's CA bundle): a fresh triggerer has not loaded aiohttp, so a bare
    aiohttp poller started there pays its import too. Where aiohttp is loaded already (the
    steady profile), the import is a dictionary lookup.
    """

    @contextlib.asynccontextmanager
    async def pollers(_deadline: float) -> AsyncIterator[Poll]:
        import aiohttp

        context = ssl.create_default_context(cafile=ca_bundle)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:

            async def poll(diffusion_id: str) -> PollerResult:
                url = f"{base_url}/v1/diffusions/{diffusion_id}"

                async def get() -> Any:
                    async with session.get(url, ssl=context) as response:
                        record = await response.json()
                        if response.status != 200:
                            raise RuntimeError(f"HTTP {response.status}")
                        return record

                # The provider's schedule: first poll after a random part of the interval.
                await asyncio.sleep(random.uniform(0, interval))
                return await _poll_until_finished(get, interval)

            yield poll

    return pollers


async def _as_triggerer_runs(index: int, poll: Poll, diffusion_id: str) -> PollerResult:
    """
    ``poll`` with the log context the triggerer binds in each trigger's task (``run_trigger``).

    Every log line of the trigger then carries these fields, as in a triggerer's trigger log.
    """
    import structlog

    structlog.contextvars.bind_contextvars(
        trigger_id=index + 1,
        ti_id=str(uuid.UUID(int=index + 1)),
        dag_id="bench_trigger_polling",
        task_id="wait",
        run_id="manual__bench",
        try_number=1,
        map_index=index,
    )
    return await poll(diffusion_id)


async def drive(
    ids: list[str], factory: PollerFactory, deadline: float, *, trigger_context: bool = False
) -> dict[str, Any]:
    """
    Start one task per id at once, wait until ``deadline`` (epoch s), cancel the stragglers.

    :param trigger_context: bind the triggerer's per-trigger log context in each task first.
    """
    seen: dict[str, float] = {}
    errors, crashed = 0, 0
    samples: list[str] = []
    async with factory(deadline) as poll:
        tasks = {
            asyncio.create_task(
                _as_triggerer_runs(index, poll, diffusion_id) if trigger_context else poll(diffusion_id)
            ): diffusion_id
            for index, diffusion_id in enumerate(ids)
        }
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task, diffusion_id in tasks.items():
        if task in pending:
            continue
        exc = task.exception()
        if exc is not None:
            crashed += 1
            errors += 1
            if len(samples) < 5:
                samples.append(f"crashed: {type(exc).__name__}: {exc}"[:300])
            continue
        result = task.result()
        errors += result.errors
        if result.sample and len(samples) < 5:
            samples.append(result.sample)
        if result.seen_at is not None:
            seen[diffusion_id] = result.seen_at
    return {
        "seen_at": seen,
        "errors": errors,
        "crashed": crashed,
        "cut_off": len(pending),
        "error_samples": samples,
    }
