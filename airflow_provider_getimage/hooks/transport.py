"""
The transport both hooks and the image downloads share: error mapping and the retry loop.

A transport error (requests or aiohttp) is mapped once to a ``Failure``; what to retry and how
long to wait is decided by ``_rules.retry_decision``; an attempt that will not be retried becomes
one ``GetImageError``. The sync loop (:func:`call_with_retries`) and its async twin
(:func:`call_with_retries_async`) differ only in how they sleep, as openai's clients do.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import aiohttp
import requests
import urllib3.exceptions
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from airflow_provider_getimage import _rules
from airflow_provider_getimage._rules import Attempt, Failure, RetryPolicy
from airflow_provider_getimage.exceptions import (
    GetImageAuthError,
    GetImageError,
    GetImageNotFoundError,
    GetImageRateLimitError,
    GetImageSubmitUncertainError,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from airflow_provider_getimage.hooks.settings import ApiSettings

__all__ = [
    "AnswerCut",
    "Retries",
    "aiohttp_failure",
    "api_error",
    "api_retries",
    "call_with_retries",
    "call_with_retries_async",
    "describe",
    "read_body",
    "read_body_async",
    "requests_failure",
    "timed_out",
    "urllib3_failure",
]

T = TypeVar("T")
CHUNK_SIZE = 64 * 1024
JITTER = random.Random()
"""The jitter of every retry wait: one generator for the process (seeding one per hook costs ~10 us)."""

ERROR_CLASSES: dict[_rules.ErrorKind, type[GetImageError]] = {
    "auth": GetImageAuthError,
    "not_found": GetImageNotFoundError,
    "rate_limit": GetImageRateLimitError,
    "ambiguous_submit": GetImageSubmitUncertainError,
    "tls": GetImageError,
    "request": GetImageError,
}


# ---------------------------------------------------------------------------------- error mapping
def describe(exc: BaseException) -> str:
    """A transport error in one short line: its type and message."""
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:200] + "..."


def requests_failure(exc: requests.RequestException) -> Attempt:
    """Map a requests error to a failed ``Attempt``: did the request provably never leave?"""
    return Attempt(failure=_requests_kind(exc), message=describe(exc))


def _requests_kind(exc: requests.RequestException) -> Failure:
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls"
    if isinstance(exc, ValueError):  # InvalidURL, InvalidHeader, MissingSchema: never sent
        return "local"
    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connect"
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return "read_timeout"
    if isinstance(exc, requests.exceptions.ConnectionError):
        cause = exc.args[0] if exc.args else None
        reason = cause.reason if isinstance(cause, MaxRetryError) else cause
        # urllib3's NewConnectionError (refused, unreachable) is a ConnectTimeoutError.
        if isinstance(reason, ConnectTimeoutError):
            return "connect"
    return "connection_lost"


def urllib3_failure(exc: urllib3.exceptions.HTTPError) -> Attempt:
    """Map an error raised while a streamed body is read (requests does not wrap those)."""
    if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
        return Attempt(failure="read_timeout", message=describe(exc))
    if isinstance(exc, urllib3.exceptions.DecodeError):
        return Attempt(failure="bad_body", message=describe(exc))
    return Attempt(failure="connection_lost", message=describe(exc))


def aiohttp_failure(exc: BaseException, timeout: float) -> Attempt:
    """
    Map an aiohttp error to a failed ``Attempt``, the async twin of :func:`requests_failure`.

    :param timeout: the session's whole-request timeout, named when it is what ran out.
    """
    kind = _aiohttp_kind(exc)
    if kind == "read_timeout" and not str(exc):  # the total timeout: aiohttp says nothing more
        return timed_out(timeout)
    return Attempt(failure=kind, message=describe(exc))


def _aiohttp_kind(exc: BaseException) -> Failure:
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls"
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect"
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return "read_timeout"
    return "connection_lost"


def api_error(
    method: str,
    path: str,
    attempt: Attempt,
    attempts: int,
    settings: ApiSettings,
    diffusion_id: str | None = None,
) -> GetImageError:
    """The error for an API call whose last attempt will not be retried; the key is scrubbed from it."""
    kind = _rules.error_kind(method, attempt)
    tries = f"after {attempts} attempts" if attempts > 1 else "after 1 attempt"
    message = f"GetImage.io {method} {path} failed {tries}: {attempt.message}"
    if kind == "ambiguous_submit":
        message += (
            ". The diffusion may have been created (and charged) even though no id came back; "
            "it was not submitted again. Check your GetImage.io account before retrying."
        )
    elif kind == "auth":
        message += f". Check the API key in connection {settings.conn_id!r}."
    elif kind == "tls":
        message += ". Set the connection extra 'verify' to the CA bundle of this server."
    return ERROR_CLASSES[kind](
        settings.scrub(message),
        status_code=attempt.status_code,
        diffusion_id=diffusion_id,
        retry_after=attempt.retry_after,
        transient=_rules.is_retryable(method, attempt),
    )


# ------------------------------------------------------------------------------- bounded bodies
def timed_out(timeout: float) -> Attempt:
    """The failed attempt of a request that did not complete within its whole-request ``timeout``."""
    return Attempt(failure="read_timeout", message=f"no complete answer within {timeout:g} s")


class AnswerCut(Exception):
    """A streamed answer abandoned mid-way (too slow, too large, broken); holds the failed attempt."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(attempt.message)
        self.attempt = attempt


def body_chunks(
    response: requests.Response, *, deadline: float, timeout: float, chunk_size: int = CHUNK_SIZE
) -> Iterator[bytes]:
    """
    The body of a streamed ``requests`` answer, chunk by chunk as it arrives, until ``deadline``.

    A socket timeout bounds each read, not the answer: a server that trickles a byte a second is
    never timed out by it. Each read here returns what one receive brings (``read1``), and the
    answer is abandoned once the deadline (``time.monotonic()``) has passed, so the whole answer
    takes at most its deadline plus one read timeout (or just its deadline, under the watchdog of
    ``hooks.deadlines``, whose shut socket reads as an early end: that is a timeout, not the end).

    :param timeout: the whole-request timeout the deadline came from, for the message.
    :raises AnswerCut: past the deadline, or when the connection broke mid-answer.
    """
    while True:
        try:
            chunk = response.raw.read1(chunk_size, decode_content=True)
        except urllib3.exceptions.HTTPError as exc:
            if time.monotonic() >= deadline:  # the watchdog shut the socket (hooks.deadlines)
                raise AnswerCut(timed_out(timeout)) from None
            raise AnswerCut(urllib3_failure(exc)) from None
        if not chunk:
            if time.monotonic() >= deadline:  # an end the watchdog made is no end of the answer
                raise AnswerCut(timed_out(timeout))
            return
        if time.monotonic() > deadline:
            raise AnswerCut(timed_out(timeout))
        yield chunk


def body_limit(status_code: int, settings: ApiSettings) -> tuple[int, bool]:
    """
    How much of an API answer to read, and whether more is a failure: a success is read whole up to
    ``max_response_bytes`` (more fails the attempt); of an error only its start is read, to be summarised.
    """
    if 200 <= status_code < 300:
        return settings.max_response_bytes, True
    return _rules.ERROR_BODY_LIMIT, False


def read_body(
    response: requests.Response, settings: ApiSettings, *, deadline: float, timeout: float
) -> bytes:
    """
    A streamed API answer's body, bounded in size (:func:`body_limit`) and done by ``deadline``.

    :raises AnswerCut: a success larger than ``max_response_bytes``, too slow, or broken off.
    """
    limit, strict = body_limit(response.status_code, settings)
    declared = response.headers.get("Content-Length", "")
    if strict and declared.isdigit() and int(declared) > limit:
        raise AnswerCut(_rules.too_large(limit, "max_response_bytes", response.status_code))
    body = bytearray()
    for chunk in body_chunks(response, deadline=deadline, timeout=timeout):
        body += chunk
        if len(body) > limit:
            if strict:
                raise AnswerCut(_rules.too_large(limit, "max_response_bytes", response.status_code))
            break
    return bytes(body[:limit])


async def read_body_async(response: aiohttp.ClientResponse, settings: ApiSettings) -> bytes:
    """
    The async twin of :func:`read_body`; its deadline is the session's total timeout.

    :raises AnswerCut: a success larger than ``max_response_bytes``.
    """
    limit, strict = body_limit(response.status, settings)
    declared = response.content_length
    if strict and declared is not None and declared > limit:
        raise AnswerCut(_rules.too_large(limit, "max_response_bytes", response.status))
    if declared is not None and declared <= limit:
        return await response.read()  # aiohttp reads no more than Content-Length: one call per poll
    body = bytearray()
    while chunk := await response.content.read(CHUNK_SIZE):
        body += chunk
        if len(body) > limit:
            if strict:
                raise AnswerCut(_rules.too_large(limit, "max_response_bytes", response.status))
            break
    return bytes(body[:limit])


# ------------------------------------------------------------------------------------ retry loop
@dataclass
class Retries:
    """
    The retry state of one call: its attempts so far, the shared decision and the log line.

    :param method: the HTTP method (a POST retries only where it provably was not taken).
    :param what: the call, for the log line and the error (``"GET /v1/diffusions/x"``).
    :param policy: attempts and backoff bounds.
    :param log: the caller's logger; each retry is logged once at INFO, with its wait.
    :param give_up: builds the error for the last failed attempt, given the number of attempts.
    :param deadline: epoch seconds after which no new attempt starts (a wait's own deadline).
    :param scrub: cleans a message before it is logged (``ApiSettings.scrub`` for API calls).
    """

    method: str
    what: str
    policy: RetryPolicy
    log: Any
    give_up: Callable[[Attempt, int], BaseException]
    deadline: float | None = None
    rng: random.Random = JITTER
    attempts: int = 0
    scrub: Callable[[str], str] = str

    def wait_after(self, attempt: Attempt) -> float:
        """Seconds to wait before trying again after a failed ``attempt``; raises once it is final."""
        self.attempts += 1
        wait = _rules.retry_decision(self.method, self.attempts, attempt, self.policy, self.rng.random())
        if wait is None or (self.deadline is not None and time.time() + wait >= self.deadline):
            raise self.give_up(attempt, self.attempts)
        self.log.info(
            "%s: %s; retry %d of %d in %.1f s",
            self.what,
            self.scrub(attempt.message),
            self.attempts,
            self.policy.max_attempts - 1,
            wait,
        )
        return wait


def api_retries(
    method: str,
    path: str,
    settings: ApiSettings,
    policy: RetryPolicy,
    log: Any,
    diffusion_id: str | None = None,
    deadline: float | None = None,
) -> Retries:
    """The retry state of one API call; its last error names the diffusion, when there is one."""

    def give_up(attempt: Attempt, attempts: int) -> GetImageError:
        return api_error(method, path, attempt, attempts, settings, diffusion_id)

    return Retries(
        method, f"GetImage.io {method} {path}", policy, log, give_up, deadline, scrub=settings.scrub
    )


def call_with_retries(
    send: Callable[[], T | Attempt], retries: Callable[[], Retries], first: Attempt | None = None
) -> T:
    """
    Call ``send`` until it returns a result (not a failed ``Attempt``), sleeping between tries.

    :param retries: makes the retry state, on the first failure only (most calls never need it).
    :param first: the failed first attempt, when the caller made it itself (see the async hook).
    """
    state: Retries | None = None
    outcome = send() if first is None else first
    while isinstance(outcome, Attempt):
        state = state or retries()
        time.sleep(state.wait_after(outcome))
        outcome = send()
    return outcome


async def call_with_retries_async(
    send: Callable[[], Awaitable[T | Attempt]], retries: Callable[[], Retries], first: Attempt | None = None
) -> T:
    """The twin of :func:`call_with_retries` for an event loop: it sleeps without blocking."""
    state: Retries | None = None
    outcome = await send() if first is None else first
    while isinstance(outcome, Attempt):
        state = state or retries()
        await asyncio.sleep(state.wait_after(outcome))
        outcome = await send()
    return outcome
