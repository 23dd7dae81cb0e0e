"""
The per-event-loop pool: one connection lookup and one aiohttp session per loop and connection.

A triggerer runs all its triggers on one event loop: a thousand deferred tasks of one connection
then share one keep-alive pool of at most ``POOL_SIZE`` connections, instead of a TCP and TLS
handshake per trigger (or, as in ``HttpSensorTrigger``, per poll), and one connection lookup
instead of a thousand (Airflow's async lookup costs about 0.5 ms of CPU and passes through one
worker thread). A connection with ``max_requests_per_second`` also gets one rate limiter per
loop (``hooks.limiter.AsyncLimiter``), held and closed with the session.
"""

from __future__ import annotations

import asyncio
import ssl
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp

from airflow_provider_getimage import _rules
from airflow_provider_getimage.hooks.limiter import AsyncLimiter
from airflow_provider_getimage.hooks.settings import bad_ca_bundle

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from airflow_provider_getimage.hooks.settings import ApiSettings

__all__ = ["POOL_SIZE", "POOL_WAIT_TIMEOUT", "SHARED_SESSIONS", "SharedSessions"]

POOL_SIZE = 100
"""Most connections one shared async session keeps open to the API (aiohttp's own default)."""
POOL_WAIT_TIMEOUT = 60.0
"""Seconds a request may wait for a free pooled connection plus connecting, when thousands poll."""


@dataclass
class _Lease:
    session: asyncio.Future[aiohttp.ClientSession]
    limiter: AsyncLimiter | None = None
    users: int = 0


@dataclass
class _LoopState:
    leases: dict[ApiSettings, _Lease] = field(default_factory=dict)
    settings: dict[str, asyncio.Future[ApiSettings]] = field(default_factory=dict)


class SharedSessions:
    """
    Sessions and connection lookups shared by every async hook of an event loop.

    Concurrent first users wait for the same lookup and the same session. The last user to
    release the session closes it and forgets the lookup, so an edited connection is read again
    by the next trigger.
    """

    def __init__(self) -> None:
        self._by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._by_loop.get(loop)  # WeakKeyDictionary.setdefault makes a weakref per call
        if state is None:
            state = self._by_loop[loop] = _LoopState()
        return state

    async def settings(self, conn_id: str, lookup: Callable[[], Awaitable[ApiSettings]]) -> ApiSettings:
        """The connection's settings, looked up once for every hook on this loop."""
        cache = self._state().settings
        pending = cache.get(conn_id)
        if pending is None:
            pending = cache[conn_id] = asyncio.ensure_future(lookup())
            pending.add_done_callback(lambda done: _forget_failure(cache, conn_id, done))
        return await asyncio.shield(pending)

    async def acquire(self, settings: ApiSettings) -> aiohttp.ClientSession:
        """Lease this loop's session for ``settings`` (made on first use); give it back with ``release``."""
        leases = self._state().leases
        lease = leases.get(settings)
        if lease is None or (lease.session.done() and lease.session.result().closed):
            rate = settings.max_requests_per_second
            lease = leases[settings] = _Lease(
                asyncio.ensure_future(_new_session(settings)), AsyncLimiter(rate) if rate else None
            )
        lease.users += 1
        try:
            return await asyncio.shield(lease.session)
        except BaseException:
            # A session that could not be made (say, a missing CA bundle) is not kept: the next
            # hook tries again once the connection is fixed.
            lease.users -= 1
            if lease.session.done() and leases.get(settings) is lease:
                del leases[settings]
                if lease.limiter is not None:
                    lease.limiter.close()
            raise

    def limiter(self, settings: ApiSettings) -> AsyncLimiter | None:
        """
        The running loop's rate limiter for these settings (None without ``max_requests_per_second``
        or while no hook holds the session): every trigger of the connection takes its tokens from it.
        """
        lease = self._state().leases.get(settings)
        return None if lease is None else lease.limiter

    async def release(self, settings: ApiSettings) -> None:
        """Give a leased session back; the last user closes it (and its limiter) and forgets the lookup."""
        state = self._state()
        lease = state.leases.get(settings)
        if lease is None:
            return
        lease.users -= 1
        if lease.users <= 0:
            del state.leases[settings]
            state.settings.pop(settings.conn_id, None)
            if lease.limiter is not None:
                lease.limiter.close()
            await (await lease.session).close()

    def users(self, settings: ApiSettings) -> int:
        """How many hooks on the running loop hold the session of these settings (0 when none)."""
        lease = self._state().leases.get(settings)
        return 0 if lease is None else lease.users


def _forget_failure(
    cache: dict[str, asyncio.Future[ApiSettings]], conn_id: str, done: asyncio.Future[Any]
) -> None:
    """A failed lookup is not cached: the next hook tries again (the connection may be fixed)."""
    if (done.cancelled() or done.exception() is not None) and cache.get(conn_id) is done:
        del cache[conn_id]


async def _new_session(settings: ApiSettings) -> aiohttp.ClientSession:
    """A session for one connection; a CA bundle is read off the event loop (disk I/O)."""
    ssl_setting: bool | ssl.SSLContext = settings.verify if isinstance(settings.verify, bool) else True
    if isinstance(settings.verify, str):
        try:
            ssl_setting = await asyncio.to_thread(ssl.create_default_context, cafile=settings.verify)
        except (OSError, ssl.SSLError) as err:
            raise bad_ca_bundle(settings, err) from None
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=ssl_setting),
        headers=_rules.headers(settings.api_key),
        # ``total`` bounds the whole request (a server that trickles bytes is timed out too) with one
        # timer per request; ``sock_connect`` the TCP connect itself. No per-read timer: it would be
        # re-armed on every chunk, a cost per poll for nothing ``total`` does not already bound.
        timeout=aiohttp.ClientTimeout(
            total=settings.timeout,
            # Only when ``total`` would let a pool wait run longer: a connect timer that can never
            # fire first is one more timer armed and cancelled per poll, left in the loop's heap.
            connect=POOL_WAIT_TIMEOUT if settings.timeout > POOL_WAIT_TIMEOUT else None,
            sock_connect=_rules.CONNECT_TIMEOUT,
            sock_read=None,
        ),
    )


SHARED_SESSIONS = SharedSessions()
"""The process's pool; every ``GetImageAsyncHook`` leases from it."""
