"""
The whole-request deadline of the sync paths (``GetImageHook`` and the image downloads).

requests and urllib3 time out each read, not a request: a server that sends its status line and
headers one byte every (read timeout - epsilon) keeps a call busy indefinitely, and the body's own
bound (``transport.body_chunks``) only starts once the headers are in. Here one watchdog thread per
process shuts a late request's socket down at its deadline, which ends the blocked read at once.

It is plugged in through public hooks only: a requests ``HTTPAdapter`` subclass
(:class:`DeadlineAdapter`) whose pool managers make urllib3 connection pools of connection
classes that report to the calling thread's :class:`RequestDeadline` (``ConnectionCls``,
``pool_classes_by_scheme``). Arming a deadline costs a lock and a heap push, no thread per request.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

if TYPE_CHECKING:
    from types import TracebackType

__all__ = ["WATCHDOG", "DeadlineAdapter", "RequestDeadline", "Watchdog"]


class RequestDeadline:
    """
    One request's deadline: the connection it runs on registers here, and at the deadline the
    watchdog shuts that connection's socket down (the blocked read then ends at once).

    :param at: ``time.monotonic()`` seconds at which the request is over.
    :param timeout: the whole-request timeout it came from, for messages.
    :param watchdog: the watchdog it is armed on (told when the request is over).
    """

    __slots__ = ("_previous", "_watchdog", "at", "connection", "done", "expired", "timeout")

    def __init__(self, at: float, timeout: float, watchdog: Watchdog) -> None:
        self.at = at
        self.timeout = timeout
        self.connection: HTTPConnection | None = None
        self.expired = False
        """Set by the watchdog when the deadline passed before the request was done."""
        self.done = False
        """Set when the request is over (the watchdog then leaves it alone)."""
        self._previous: RequestDeadline | None = None
        self._watchdog = watchdog

    def watch(self, connection: HTTPConnection) -> None:
        """The request now runs on ``connection`` (called by the connection itself)."""
        self.connection = connection
        if self.expired:  # expired while the connection was being made: nothing else would end it
            _shut(connection)

    def expire(self) -> None:
        """The deadline passed: mark it and shut the connection's socket down."""
        self.expired = True
        if self.connection is not None:
            _shut(self.connection)

    # The calling thread's deadline while a ``with`` block runs (read by the connection classes).
    def __enter__(self) -> RequestDeadline:
        self._previous = getattr(_CURRENT, "deadline", None)
        _CURRENT.deadline = self
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        _CURRENT.deadline = self._previous
        self._watchdog.disarm(self)


def _shut(connection: HTTPConnection) -> None:
    """Shut a connection's socket down (both ways), from any thread; a closed socket is left alone."""
    sock: Any = connection.sock
    sock = getattr(sock, "socket", sock)  # urllib3's TLS-in-TLS transport wraps the real socket
    if isinstance(sock, socket.socket):
        # The plain socket's shutdown, also for an SSLSocket: its own would drop the TLS object
        # under the reading thread's feet. A socket already closed or never connected is left be.
        with contextlib.suppress(OSError):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)


_CURRENT = threading.local()


def current_deadline() -> RequestDeadline | None:
    """The calling thread's request deadline, inside a ``with WATCHDOG.arm(...)`` block."""
    return getattr(_CURRENT, "deadline", None)


class Watchdog:
    """
    One daemon thread that expires request deadlines as they pass.

    Deadlines sit in a heap; a request that ends in time marks its deadline done, and done
    deadlines are dropped from the heap's head on the next arm, so a hook's sequential requests
    keep it at one or two entries. The thread is woken only when a new deadline comes before the
    one it sleeps until; it is started on first use and again in a forked child.
    """

    def __init__(self) -> None:
        self._reset()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, RequestDeadline]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._sleeping_until = float("inf")

    def arm(self, timeout: float) -> RequestDeadline:
        """
        A deadline ``timeout`` seconds from now; use it as a context manager around the request
        (its connection finds it there) and the whole answer's reading.
        """
        deadline = RequestDeadline(time.monotonic() + timeout, timeout, self)
        with self._lock:
            heap = self._heap
            while heap and heap[0][2].done:
                heapq.heappop(heap)
            heapq.heappush(heap, (deadline.at, next(self._order), deadline))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="getimage-watchdog", daemon=True)
                self._thread.start()
            elif deadline.at < self._sleeping_until:
                self._wake.notify()
        return deadline

    def disarm(self, deadline: RequestDeadline) -> None:
        """The request is over: the watchdog will not touch its connection again."""
        with self._lock:
            deadline.done = True

    def pending(self) -> int:
        """Deadlines still in the heap, done ones not yet dropped included (for tests)."""
        with self._lock:
            return len(self._heap)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                heap = self._heap
                while heap and (heap[0][2].done or heap[0][0] <= now):
                    _, _, deadline = heapq.heappop(heap)
                    if not deadline.done:
                        # Never let one odd connection end the thread: every later deadline needs it.
                        with contextlib.suppress(Exception):
                            deadline.expire()
                self._sleeping_until = heap[0][0] if heap else float("inf")
                self._wake.wait(None if not heap else max(0.0, self._sleeping_until - now))


WATCHDOG = Watchdog()
"""The process's watchdog; every sync API request and image download arms a deadline on it."""


# ------------------------------------------------------------------ connections that report in
class _ReportingConnection(HTTPConnection):
    """A urllib3 connection that tells the calling thread's deadline it carries the request."""

    def connect(self) -> None:
        super().connect()
        deadline = current_deadline()
        if deadline is not None:
            deadline.watch(self)

    def request(self, *args: Any, **kwargs: Any) -> None:
        deadline = current_deadline()
        if deadline is not None:  # a pooled connection: connect() is not called again
            deadline.watch(self)
        super().request(*args, **kwargs)


class _ReportingHTTPSConnection(_ReportingConnection, HTTPSConnection):
    pass


class _ReportingPool(HTTPConnectionPool):
    ConnectionCls = _ReportingConnection


class _ReportingHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _ReportingHTTPSConnection


POOL_CLASSES: dict[str, type[HTTPConnectionPool]] = {"http": _ReportingPool, "https": _ReportingHTTPSPool}


class DeadlineAdapter(HTTPAdapter):
    """
    A requests adapter whose connections report to the calling thread's :class:`RequestDeadline`.

    Outside a ``with WATCHDOG.arm(...)`` block it behaves as a plain ``HTTPAdapter``. SOCKS
    proxies keep urllib3's own pools (and so only the per-read timeout in the header phase).

    :param socket_options: urllib3 socket options for new connections (TCP keep-alive, say);
        None keeps urllib3's defaults.
    """

    __attrs__ = [*HTTPAdapter.__attrs__, "socket_options"]

    def __init__(self, socket_options: list[tuple[int, int, int]] | None = None, **kwargs: Any) -> None:
        self.socket_options = socket_options
        super().__init__(**kwargs)

    def init_poolmanager(
        self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any
    ) -> None:
        if self.socket_options is not None:
            pool_kwargs["socket_options"] = self.socket_options
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)
        self.poolmanager.pool_classes_by_scheme = POOL_CLASSES

    def proxy_manager_for(self, proxy: str, **proxy_kwargs: Any) -> urllib3.PoolManager:
        manager = super().proxy_manager_for(proxy, **proxy_kwargs)
        if isinstance(manager, urllib3.ProxyManager):
            manager.pool_classes_by_scheme = POOL_CLASSES
        return manager
