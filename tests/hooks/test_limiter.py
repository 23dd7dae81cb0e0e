"""One rate limit per connection (``max_requests_per_second``): shared, paused on 429, fair, closed."""

from __future__ import annotations

import asyncio
import collections
import json
import time
from typing import TYPE_CHECKING, Any

import pytest
import requests

from airflow_provider_getimage import _rules
from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook, GetImageHook
from airflow_provider_getimage.hooks.limiter import (
    ARRIVAL_JITTER,
    AsyncLimiter,
    LimiterClosedError,
    SyncLimiter,
    rate_limit_pause,
    sync_limiter,
)
from airflow_provider_getimage.hooks.sessions import SHARED_SESSIONS
from airflow_provider_getimage.hooks.settings import settings_from_connection
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator

FAST = _rules.RetryPolicy(max_attempts=4, backoff_base=0.05, backoff_max=0.2, retry_after_cap=5.0)


def limit_connection(monkeypatch: pytest.MonkeyPatch, emulator: Emulator, rate: float | None) -> None:
    """Point ``getimage_default`` at the emulator, with ``max_requests_per_second`` = ``rate``."""
    conn = json.loads(emulator.airflow_connection())
    extra = conn.get("extra") or {}
    extra = json.loads(extra) if isinstance(extra, str) else dict(extra)
    if rate is not None:
        extra["max_requests_per_second"] = rate
    conn["extra"] = extra
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))


def submit(emulator: Emulator, prompt: str) -> str:
    response = requests.post(
        f"{emulator.url}/v1/diffusions",
        json={"prompt": prompt},
        headers={"Authorization": f"Bearer {emulator.api_key}"},
        timeout=5,
    )
    return str(response.json()["id"])


# ------------------------------------------------------------------------------- the extra itself
@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, None), ("", None), (5, 5.0), ("2.5", 2.5), (0.1, 0.1)],
)
def test_extra_is_read(value: object, expected: float | None) -> None:
    extra = {} if value is None else {"max_requests_per_second": value}
    settings = settings_from_connection("c", "http://127.0.0.1:1", None, "secret-key-123", extra)
    assert settings.max_requests_per_second == expected


@pytest.mark.parametrize("value", [0, -1, "fast", True, float("inf"), float("nan")])
def test_bad_extra_names_the_connection_and_value(value: object) -> None:
    with pytest.raises(Exception, match=r"Connection 'c'.*max_requests_per_second"):
        settings_from_connection("c", None, None, "secret-key-123", {"max_requests_per_second": value})


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [(429, 2.0, 2.0), (429, None, 1.0), (429, 600.0, 5.0), (503, 2.0, None), (None, None, None)],
)
def test_rate_limit_pause(status: int | None, retry_after: float | None, expected: float | None) -> None:
    attempt = _rules.Attempt(failure="http", status_code=status, retry_after=retry_after)
    assert rate_limit_pause(attempt, cap=5.0) == expected


# ---------------------------------------------------------------------------- the async limiter
async def test_free_token_is_taken_at_once_then_requests_are_spaced() -> None:
    limiter = AsyncLimiter(50)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(11):
        await limiter.acquire()
    elapsed = loop.time() - start
    assert 0.19 <= elapsed < 0.5, elapsed  # 10 intervals of 20 ms after the first, free token
    limiter.close()


def busiest_second(arrivals: list[float]) -> int:
    """The most requests a service counting a sliding second (the emulator's --rate-limit) sees."""
    window: collections.deque[float] = collections.deque()
    busiest = 0
    for when in sorted(arrivals):
        while window and window[0] <= when - 1.0:
            window.popleft()
        window.append(when)
        busiest = max(busiest, len(window))
    return busiest


async def test_no_second_holds_more_than_the_rate_saved_tokens_and_jitter_included() -> None:
    # At 200/s the default saves 4 tokens; a service counting 200 in a sliding second must never
    # see 201, or its 429 pauses the whole connection: not when the saved tokens are spent at
    # once, nor when some requests take up to ARRIVAL_JITTER longer to arrive than the others.
    limiter = AsyncLimiter(200)
    loop = asyncio.get_running_loop()
    await asyncio.sleep(0.05)  # idle: the saved tokens fill up, then everyone asks at once
    handed: list[float] = []

    async def ask() -> None:
        await limiter.acquire()
        handed.append(loop.time())

    await asyncio.gather(*(ask() for _ in range(500)))
    assert 190 <= busiest_second(handed) <= 200  # near the rate, never above it
    # The worst stall: every request handed out in the first 20 ms arrives at its end.
    stalled = [max(when, handed[0] + ARRIVAL_JITTER) for when in handed]
    assert busiest_second(stalled) <= 200
    limiter.close()


async def test_waiters_are_served_earliest_due_first() -> None:
    limiter = AsyncLimiter(100, burst=1)
    await limiter.acquire()  # the free token: everyone below waits
    served: list[float] = []

    async def poll(due: float) -> None:
        await limiter.acquire(due)
        served.append(due)

    dues = [5.0, 1.0, 4.0, 2.0, 3.0, 0.5]
    tasks = [asyncio.create_task(poll(due)) for due in dues]
    await asyncio.gather(*tasks)
    assert served == sorted(dues)
    limiter.close()


async def test_a_due_in_the_future_is_a_wait_of_its_own() -> None:
    # A trigger queues its next poll instead of sleeping first: no token before its due time, and
    # one that arrives later but is due sooner goes first (the limiter's timer is moved up for it).
    limiter = AsyncLimiter(100)
    loop = asyncio.get_running_loop()
    start = loop.time()
    served: dict[str, float] = {}

    async def poll(name: str, due: float) -> None:
        await limiter.acquire(due)
        served[name] = loop.time()

    late = asyncio.create_task(poll("late", start + 0.3))
    await asyncio.sleep(0.01)
    await poll("soon", start + 0.1)
    await late
    assert start + 0.099 <= served["soon"] < start + 0.3, served["soon"] - start  # before "late" was due
    assert start + 0.299 <= served["late"] < start + 1.0, served["late"] - start
    limiter.close()


async def test_a_crowd_is_served_two_tokens_per_wake_up(monkeypatch: pytest.MonkeyPatch) -> None:
    # At 200/s the limiter saves 4 tokens; it hands them out two at a time, so a crowd of waiting
    # polls wakes the loop 100 times a second, not 200 (a wake-up costs more CPU than the poll's
    # Python). A late timer (a loaded machine) finds more tokens free: fewer wake-ups, never more.
    wake_ups = [0]
    hand_out = AsyncLimiter._hand_out

    def counted(self: AsyncLimiter) -> None:
        wake_ups[0] += 1
        hand_out(self)

    monkeypatch.setattr(AsyncLimiter, "_hand_out", counted)
    limiter = AsyncLimiter(200)
    await limiter.acquire()
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(40)))
    # The first 3 take the saved tokens at once; the other 37 wait: 19 wake-ups, one for the
    # token the first waiter was alone for (two per token before this limiter).
    assert wake_ups[0] <= 20, wake_ups[0]
    assert loop.time() - start >= 0.17  # still no faster than the rate: 37 tokens at 193/s
    limiter.close()


async def test_cancelled_waiter_gives_its_turn_away() -> None:
    limiter = AsyncLimiter(20)
    await limiter.acquire()
    first = asyncio.create_task(limiter.acquire(1.0))
    second = asyncio.create_task(limiter.acquire(2.0))
    await asyncio.sleep(0)
    first.cancel()
    start = asyncio.get_running_loop().time()
    await second
    assert asyncio.get_running_loop().time() - start < 0.1, "the cancelled waiter's token went to the next"
    limiter.close()


async def test_fair_under_load_no_starvation() -> None:
    """40 pollers asking 4x what 100/s gives: each gets its share, lateness grows evenly."""
    limiter = AsyncLimiter(100)
    loop = asyncio.get_running_loop()
    counts: collections.Counter[int] = collections.Counter()
    worst_wait: dict[int, float] = collections.defaultdict(float)
    start = loop.time()
    stop = start + 1.5

    async def poller(number: int) -> None:
        while loop.time() < stop:
            due = loop.time()
            await limiter.acquire(due)
            worst_wait[number] = max(worst_wait[number], loop.time() - due)
            counts[number] += 1
            await asyncio.sleep(0.1)  # every 0.1 s: 400 requests/s asked of 100

    await asyncio.gather(*(poller(n) for n in range(40)))
    total, elapsed = sum(counts.values()), loop.time() - start
    assert 0.8 * elapsed * 100 <= total <= elapsed * 100 + 1, (total, elapsed)  # the rate, no more
    assert max(counts.values()) - min(counts.values()) <= 1, counts
    # 40 waiters at 100/s: nobody waits much longer than one round of the others (0.4 s).
    assert max(worst_wait.values()) < 0.6, worst_wait
    limiter.close()


async def test_pause_holds_every_waiter() -> None:
    limiter = AsyncLimiter(100)
    loop = asyncio.get_running_loop()
    await limiter.acquire()
    limiter.pause_for(0.5)
    start = loop.time()
    await asyncio.gather(*(limiter.acquire() for _ in range(3)))
    assert loop.time() - start >= 0.49
    limiter.close()


async def test_close_fails_waiters_and_later_callers() -> None:
    limiter = AsyncLimiter(1)
    await limiter.acquire()
    waiter = asyncio.create_task(limiter.acquire())
    await asyncio.sleep(0)
    limiter.close()
    with pytest.raises(LimiterClosedError):
        await waiter
    with pytest.raises(LimiterClosedError):
        await limiter.acquire()
    assert limiter.closed


# ----------------------------------------------------------------- shared through the session pool
async def test_hooks_of_a_connection_share_one_limiter_closed_with_the_session(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_connection(monkeypatch, getimage_airflow_conn, 50)
    diffusion_id = submit(getimage_airflow_conn, "shared limiter")
    first, second = GetImageAsyncHook(retry_policy=FAST), GetImageAsyncHook(retry_policy=FAST)
    await first.get_diffusion(diffusion_id)
    await second.get_diffusion(diffusion_id)
    settings = await first.get_settings()
    limiter = SHARED_SESSIONS.limiter(settings)
    assert limiter is not None
    assert limiter.rate == 50
    assert first._limiter is second._limiter is limiter
    await first.close()
    assert not limiter.closed, "the second hook still holds the session"
    await second.close()
    assert limiter.closed, "the last hook to give the session back closes its limiter"
    assert SHARED_SESSIONS.limiter(settings) is None
    async with GetImageAsyncHook(retry_policy=FAST) as third:
        await third.get_diffusion(diffusion_id)
        assert third._limiter is not None
        assert third._limiter is not limiter
        assert not third._limiter.closed


async def test_no_extra_no_limiter(getimage_airflow_conn: Emulator) -> None:
    async with GetImageAsyncHook(retry_policy=FAST) as hook:
        await hook.get_diffusion(submit(getimage_airflow_conn, "unlimited"))
        assert hook._limiter is None
        assert not hook.queues_polls


@pytest.mark.parametrize("rate", [None, 50])
async def test_a_polls_wait_is_slept_or_queued_and_nothing_goes_early(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch, rate: float | None
) -> None:
    limit_connection(monkeypatch, getimage_airflow_conn, rate)
    diffusion_id = submit(getimage_airflow_conn, "waited")
    async with GetImageAsyncHook(retry_policy=FAST) as hook:
        assert not hook.queues_polls  # no session yet: the first wait is a sleep
        await hook.get_diffusion(diffusion_id)
        assert hook.queues_polls is (rate is not None)
        polls = getimage_airflow_conn.stats()["polls"]
        loop = asyncio.get_running_loop()
        start = loop.time()
        poll = asyncio.create_task(hook.get_diffusion(diffusion_id, wait=0.6))
        await asyncio.sleep(0.2)
        assert getimage_airflow_conn.stats()["polls"] == polls, "the poll went before its wait"
        record = await poll
        assert loop.time() - start >= 0.599
    assert record["id"] == diffusion_id


async def run_triggers(emulator: Emulator, count: int) -> list[dict[str, Any]]:
    ids = [submit(emulator, f"crowd {n}") for n in range(count)]
    await asyncio.sleep(1.1)  # the submissions leave the service's one-second window
    triggers = [GetImageDiffusionTrigger(i, poll_interval=0.1, end_time=time.time() + 30) for i in ids]

    async def one(trigger: GetImageDiffusionTrigger) -> dict[str, Any]:
        events = [event.payload async for event in trigger.run()]
        assert len(events) == 1
        return events[0]

    return await asyncio.gather(*(one(trigger) for trigger in triggers))


@pytest.mark.getimage_emulator(latency=2.5, rate_limit=40, retry_after=1.0)
async def test_triggers_share_the_limit_and_get_no_429(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """30 triggers polling every 0.1 s ask 300 requests/s of a service that takes 40: with the
    connection's limit at 40/s, no request is refused and every trigger succeeds."""
    limit_connection(monkeypatch, getimage_airflow_conn, 40)
    before = getimage_airflow_conn.stats()
    events = await run_triggers(getimage_airflow_conn, 30)
    assert [event["status"] for event in events] == ["success"] * 30
    stats = getimage_airflow_conn.stats()
    refused = stats["responses_by_status"].get("429", 0) - before["responses_by_status"].get("429", 0)
    assert refused == 0, stats["responses_by_status"]


@pytest.mark.getimage_emulator(latency=2.5, rate_limit=40, retry_after=0.2)
async def test_without_the_limit_the_same_load_is_refused(getimage_airflow_conn: Emulator) -> None:
    """The control of the test above: the same triggers, no limit, and the service answers 429."""
    events = await run_triggers(getimage_airflow_conn, 30)
    assert [event["status"] for event in events] == ["success"] * 30
    assert getimage_airflow_conn.stats()["responses_by_status"].get("429", 0) > 0


async def test_429_pauses_every_poll_of_the_connection(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_connection(monkeypatch, getimage_airflow_conn, 100)
    first_id, other_id = submit(getimage_airflow_conn, "refused"), submit(getimage_airflow_conn, "other")
    async with GetImageAsyncHook(retry_policy=FAST) as hook, GetImageAsyncHook(retry_policy=FAST) as other:
        await other.get_diffusion(other_id)  # both hooks hold the session: one limiter
        getimage_airflow_conn.inject(Fault("status", status=429, retry_after="1", method="GET"))
        loop = asyncio.get_running_loop()
        refused = asyncio.create_task(hook.get_diffusion(first_id))
        await asyncio.sleep(0.2)  # the 429 has come back and paused the connection
        start = loop.time()
        await other.get_diffusion(other_id)
        waited = loop.time() - start
        await refused
    assert waited >= 0.6, f"the other hook's poll went after {waited:.2f} s, inside the 1 s pause"


async def test_without_the_limit_a_429_pauses_only_its_own_request(getimage_airflow_conn: Emulator) -> None:
    first_id, other_id = submit(getimage_airflow_conn, "refused"), submit(getimage_airflow_conn, "other")
    async with GetImageAsyncHook(retry_policy=FAST) as hook, GetImageAsyncHook(retry_policy=FAST) as other:
        await other.get_diffusion(other_id)
        getimage_airflow_conn.inject(Fault("status", status=429, retry_after="1", method="GET"))
        refused = asyncio.create_task(hook.get_diffusion(first_id))
        await asyncio.sleep(0.2)
        start = time.monotonic()
        await other.get_diffusion(other_id)
        assert time.monotonic() - start < 0.5
        await refused


# ------------------------------------------------------------------------------ the sync limiter
def test_sync_limiter_books_in_order_and_pauses() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)

    limiter = SyncLimiter(10, clock=lambda: clock[0], sleep=sleep)
    assert [limiter.acquire() for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    limiter.pause_for(2.0)
    assert limiter.acquire() == pytest.approx(2.0)
    assert slept == pytest.approx([0.1, 0.2, 2.0])


def test_sync_hooks_of_a_connection_share_one_limiter(
    getimage_airflow_conn: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    limit_connection(monkeypatch, getimage_airflow_conn, 20)
    diffusion_id = submit(getimage_airflow_conn, "sync")
    first, second = GetImageHook(retry_policy=FAST), GetImageHook(retry_policy=FAST)
    assert sync_limiter(first.settings) is sync_limiter(second.settings) is not None
    start = time.monotonic()
    for hook in (first, second) * 5:
        hook.get_diffusion(diffusion_id)
    # 10 requests at 20/s: at least 9 intervals of 50 ms (the first token may be saved up).
    assert time.monotonic() - start >= 0.4
    first.close()
    second.close()


async def test_a_late_loop_keeps_the_rate() -> None:
    """
    Timers fire late on a busy loop; the limiter still hands out its rate (``LAG_ALLOWANCE``).

    With no token saved, each late timer lost its lag: 2,000/s gave about 650/s here.
    """
    limiter = AsyncLimiter(2000)
    loop = asyncio.get_running_loop()

    async def one() -> None:
        for _ in range(5):
            await limiter.acquire()
            await asyncio.sleep(0)

    start = loop.time()
    await asyncio.gather(*(one() for _ in range(300)))
    rate = 1500 / (loop.time() - start)
    assert 1500 <= rate <= 2000 * 1.05, rate
    limiter.close()
