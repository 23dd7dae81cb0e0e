"""
One rate limit per connection: ``max_requests_per_second``, shared by every caller of a process.

A triggerer runs thousands of ``GetImageDiffusionTrigger`` on one event loop. Each polling on its
own, they ask the API for N / poll_interval requests a second, and when it answers 429 each backs
off alone, so the limit is hit again and again. Here every request of a connection on a loop first
takes a token from one :class:`AsyncLimiter` (held with the loop's shared session in
``hooks.sessions`` and closed with it); a 429 pauses the whole limiter, not only the request that got
it. Requests that must wait are served earliest-due first (a heap, not a FIFO of sleeps), so a poll
that has waited longest goes next and lateness grows evenly with load, never by starvation.

:class:`SyncLimiter` is the same budget for a worker's threads (the sync hook, a batch's
submissions). Both are thin clocks-and-sleeps over ``_rules.TokenBucket``, the one pure rule.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import TYPE_CHECKING

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_getimage.hooks.settings import ApiSettings

__all__ = [
    "DEFAULT_429_PAUSE",
    "AsyncLimiter",
    "LimiterClosedError",
    "SyncLimiter",
    "rate_limit_pause",
    "sync_limiter",
]

DEFAULT_429_PAUSE = 1.0
"""Seconds every request of a limited connection waits after a 429 that says no ``Retry-After``."""
LAG_ALLOWANCE = 0.02
"""
Seconds of tokens an event loop's lateness may catch up. A timer fires a little late on a busy loop;
with no tokens saved at all each late timer would lose its lag, and at 200 requests/s on a loaded
loop a limiter sent only half its rate. 20 ms of tokens (4 at 200/s) keeps the rate, and bunches
requests by at most that much.
"""

ARRIVAL_JITTER = 0.02
"""
Seconds by which two requests' trips to the service may differ. A service counts its limit on
arrival: a request held up 20 ms (a garbage collection or a descheduled process, on either side)
arrives beside the ones sent after it, and a second of arrivals then holds 1.02 s of hand-outs. The
tokens flow that much slower, so such a stall costs no 429 (each one pauses every poll for a second).
"""

DUE_TOLERANCE = 0.001
"""Seconds early a queued request may go: a timer set for its due time may fire that much before."""


class LimiterClosedError(GetImageError):
    """A request still waited for a token when its connection's limiter was closed."""


def rate_limit_pause(attempt: _rules.Attempt, cap: float) -> float | None:
    """
    How long a failed attempt pauses the whole connection: its ``Retry-After`` (capped) on a 429.

    :param cap: the retry policy's ``retry_after_cap``: a service asking for an hour stalls no one
        for more than the retry loop itself would wait.
    :return: seconds, or None when the attempt was no 429.
    """
    if attempt.status_code != 429:
        return None
    wait = attempt.retry_after if attempt.retry_after is not None else DEFAULT_429_PAUSE
    return max(0.0, min(wait, cap))


class AsyncLimiter:
    """
    One connection's request budget on one event loop.

    ``acquire`` returns at once while a token is free and nobody waits (the cost of a poll in the
    common case: two float comparisons). Otherwise the caller waits in a heap ordered by its
    ``due`` time; one timer hands out each token as it frees up, to the earliest-due waiter whose
    time has come. A ``due`` in the future is a wait of its own: a trigger queues its next poll
    instead of sleeping first, so each poll wakes the loop once, not once for its sleep and again
    for its token (on these VMs a wake-up of the loop costs more CPU than the limiter's Python).

    :param rate: at most this many tokens (requests) in any one second as the service counts it,
        saved tokens and ``ARRIVAL_JITTER`` included: the tokens flow at
        ``(rate - (burst - 1)) / (1 + ARRIVAL_JITTER)`` a second (193 at 200/s), so a service that
        counts ``rate`` in a sliding second never sees more from this limiter (without the saved
        tokens counted, 20 ms of them at 200/s sent 203 in some seconds; without the jitter, a
        stall of a few ms in either process did, 3 to 6 times in a 3-minute run, each 429 pausing
        every request for a second).
    :param burst: tokens saved up while idle; default ``rate x LAG_ALLOWANCE`` (at least 1), what a
        late timer needs to keep the rate while requests stay nearly evenly spaced.
    """

    __slots__ = ("_batch", "_bucket", "_closed", "_loop", "_order", "_rate", "_timer", "_waiters")

    def __init__(self, rate: float, burst: float | None = None) -> None:
        if burst is None:
            burst = max(1.0, rate * LAG_ALLOWANCE)
        if not rate > burst - 1:
            raise ValueError(f"burst ({burst!r}) must be less than rate + 1 ({rate!r} + 1)")
        self._rate = float(rate)
        self._bucket = _rules.TokenBucket((rate - (burst - 1)) / (1 + ARRIVAL_JITTER), burst)
        self._batch = max(1, int(burst // 2))
        """Tokens one hand-out waits for when that many wait: fewer wake-ups, the rate unchanged."""
        self._loop = asyncio.get_running_loop()
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        """Ties of ``due`` go in arrival order."""
        self._timer: asyncio.TimerHandle | None = None
        self._closed = False

    @property
    def rate(self) -> float:
        """The limit: requests a second (the tokens flow a little slower: the class's ``rate``)."""
        return self._rate

    @property
    def closed(self) -> bool:
        """True once :meth:`close` ran; no token is handed out after that."""
        return self._closed

    @property
    def waiting(self) -> int:
        """How many requests wait for a token now (cancelled ones may count until their turn)."""
        return len(self._waiters)

    async def acquire(self, due: float | None = None) -> None:
        """
        Wait for a token.

        :param due: when the request is meant to go (the loop's clock, ``loop.time()``): no token
            before then, and among the requests whose time has come the earliest due goes first.
            Default: now.
        :raises LimiterClosedError: the limiter was closed while waiting (or before).
        """
        if self._closed:
            raise LimiterClosedError("The connection's rate limiter is closed: its session was given back.")
        now = self._loop.time()
        if due is None or due <= now:
            if not self._waiters and self._bucket.wait(now) == 0.0:
                self._bucket.take(now)
                return
            due = now if due is None else due
        waiter: asyncio.Future[None] = self._loop.create_future()
        heapq.heappush(self._waiters, (due, next(self._order), waiter))
        self._schedule(now)
        await waiter  # cancelled: its entry is skipped when its turn comes

    def pause_for(self, seconds: float) -> None:
        """Hand out no token for ``seconds`` (a 429's ``Retry-After``, for all the connection's requests)."""
        if seconds > 0:
            self._bucket.pause_until(self._loop.time() + seconds)

    def close(self) -> None:
        """Stop handing out tokens; requests still waiting fail with :class:`LimiterClosedError`."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        waiters, self._waiters = self._waiters, []
        for _, _, waiter in waiters:
            if not waiter.done():
                waiter.set_exception(
                    LimiterClosedError("The connection's rate limiter was closed while this request waited.")
                )

    def _schedule(self, now: float) -> None:
        """Wake for the next hand-out: a token free and the first waiter due (sooner if one came)."""
        if not self._waiters or self._closed:
            return
        # Tokens in pairs (half the saved ones): one wake-up of the loop hands out two requests
        # 2 / rate apart instead of one each 1 / rate; the other half still absorbs a late timer.
        tokens = min(self._batch, len(self._waiters))
        when = max(now + self._bucket.wait(now, tokens), self._waiters[0][0])
        if self._timer is not None:
            if when >= self._timer.when():
                return
            self._timer.cancel()  # a new waiter is due before the one the timer was set for
        self._timer = self._loop.call_at(when, self._hand_out)

    def _hand_out(self) -> None:
        """Give each free token to the earliest-due live waiter whose time has come, then wait again."""
        self._timer = None
        now = self._loop.time()
        waiters = self._waiters
        while waiters:
            due, _, waiter = waiters[0]
            if waiter.done():  # its request was cancelled (a trigger ended): the token stays free
                heapq.heappop(waiters)
                continue
            if due > now + DUE_TOLERANCE or self._bucket.wait(now) > 0.0:
                break
            heapq.heappop(waiters)
            self._bucket.take(now)
            waiter.set_result(None)
        self._schedule(now)


class SyncLimiter:
    """
    The same budget for threads: one worker process's requests of a connection, in the order asked.

    ``TokenBucket.take`` books ahead, so callers are served in the order they asked and each sleeps
    only its own wait, outside the lock.

    :param rate: tokens (requests) a second.
    :param burst: tokens saved up while idle.
    :param clock: seconds, monotonic (tests pass their own).
    :param sleep: how to wait (tests pass their own).
    """

    def __init__(
        self,
        rate: float,
        burst: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._bucket = _rules.TokenBucket(rate, burst)
        self._lock = threading.Lock()
        self._clock = clock
        self._sleep = sleep

    @property
    def rate(self) -> float:
        """Requests a second."""
        return self._bucket.rate

    def acquire(self) -> float:
        """Wait for a token; return the seconds waited."""
        with self._lock:
            wait = self._bucket.take(self._clock())
        if wait > 0:
            self._sleep(wait)
        return wait

    def pause_for(self, seconds: float) -> None:
        """Hand out no token for ``seconds`` (a 429's ``Retry-After``, for every thread)."""
        if seconds > 0:
            with self._lock:
                self._bucket.pause_until(self._clock() + seconds)


_SYNC_LIMITERS: dict[tuple[str, str, float], SyncLimiter] = {}
_SYNC_LIMITERS_LOCK = threading.Lock()


def sync_limiter(settings: ApiSettings) -> SyncLimiter | None:
    """
    This process's :class:`SyncLimiter` for a connection, or None when it sets no limit.

    One per connection id, base URL and rate, for the life of the process: every ``GetImageHook``
    of the connection in a worker (a batch's submissions from several threads included) shares it.
    """
    rate = settings.max_requests_per_second
    if rate is None:
        return None
    key = (settings.conn_id, settings.base_url, rate)
    limiter = _SYNC_LIMITERS.get(key)
    if limiter is None:
        with _SYNC_LIMITERS_LOCK:
            limiter = _SYNC_LIMITERS.setdefault(key, SyncLimiter(rate))
    return limiter
