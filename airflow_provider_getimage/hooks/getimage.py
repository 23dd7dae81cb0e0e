"""
Hooks for the GetImage.io API: the only module of the provider that does HTTP.

``GetImageHook`` (sync, requests, for workers) and ``GetImageAsyncHook`` (aiohttp, for triggers)
are thin shells over ``_rules``: they send, map transport errors to a ``Failure`` once, and sleep
between attempts; what to retry and what an answer means is decided by the shared rules.
"""

from __future__ import annotations

import asyncio
import os
import random
import ssl
import time
import uuid
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import aiohttp
import requests
from airflow.providers.http.hooks.http import HttpAsyncHook, HttpHook, SessionConfig
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

from airflow_provider_getimage import _rules
from airflow_provider_getimage._rules import Attempt, Failure, RetryPolicy
from airflow_provider_getimage.exceptions import (
    GetImageAuthError,
    GetImageDiffusionFailed,
    GetImageError,
    GetImageNotFoundError,
    GetImageRateLimitError,
    GetImageSubmitUncertainError,
    GetImageTimeoutError,
)
from airflow_provider_getimage.polling import diffusion_failed, poll_error, read_poll

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping
    from types import TracebackType

__all__ = [
    "GetImageAsyncHook",
    "GetImageAuthError",
    "GetImageDiffusionFailed",
    "GetImageError",
    "GetImageHook",
    "GetImageNotFoundError",
    "GetImageRateLimitError",
    "GetImageSubmitUncertainError",
    "GetImageTimeoutError",
]

CONN_TYPE = "getimage"
DEFAULT_CONN_ID = _rules.DEFAULT_CONN_ID
HOOK_NAME = "GetImage.io"
POOL_SIZE = 100
"""Most connections one shared async session keeps open to the API (aiohttp's own default)."""
POOL_WAIT_TIMEOUT = 60.0
"""Seconds a request may wait for a free pooled connection plus connecting, when thousands poll."""
MIN_SCRUBBED_KEY = 6
"""Shorter keys are not scrubbed from messages: replacing every "k" would garble them, not hide one."""

_ERROR_CLASSES: dict[_rules.ErrorKind, type[GetImageError]] = {
    "auth": GetImageAuthError,
    "not_found": GetImageNotFoundError,
    "rate_limit": GetImageRateLimitError,
    "ambiguous_submit": GetImageSubmitUncertainError,
    "tls": GetImageError,
    "request": GetImageError,
}


@dataclass(frozen=True)
class ApiSettings:
    """What a hook needs from its connection, read and checked once."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str
    timeout: float
    verify: bool | str


def settings_from_connection(
    conn_id: str, host: str | None, port: int | None, password: str | None, extra: Mapping[str, Any]
) -> ApiSettings:
    """
    Check a connection's fields and turn them into ``ApiSettings``.

    :raises GetImageError: naming the connection and the bad field (never its value for the key).
    """
    if not password or not password.strip():
        raise GetImageError(
            f"Connection {conn_id!r} has no API key: put the GetImage.io API key in its password field."
        )
    try:
        url = _rules.base_url(host, port)
        timeout = _rules.parse_timeout(_rules.extra_value(extra, "request_timeout"))
    except ValueError as err:
        raise GetImageError(f"Connection {conn_id!r}: {err}") from None
    model = _rules.extra_value(extra, "default_model")
    return ApiSettings(
        conn_id=conn_id,
        base_url=url,
        api_key=password.strip(),
        default_model=str(model).strip() if model else _rules.DEFAULT_MODEL,
        timeout=timeout,
        verify=_rules.parse_verify(_rules.extra_value(extra, "verify")),
    )


def _connection_type_info() -> dict[str, Any]:
    """This provider's connection type as declared in its provider info (one source for the form)."""
    from airflow_provider_getimage.get_provider_info import get_provider_info

    (info,) = get_provider_info()["connection-types"]
    return dict(info)


def _warn_if_plain_http(log: Any, settings: ApiSettings) -> None:
    """The key travels in a header: over plain http to another machine, anyone on the path reads it."""
    if settings.base_url.startswith("http://") and not _rules.is_loopback(settings.base_url):
        log.warning(
            "Connection %s sends the API key over plain http to %s; use https.",
            settings.conn_id,
            settings.base_url,
        )


def _bad_ca_bundle(settings: ApiSettings, err: BaseException) -> GetImageError:
    """The error for a ``verify`` extra naming a CA bundle that cannot be read (before any request)."""
    return GetImageError(
        f"Connection {settings.conn_id!r}: the CA bundle in extra 'verify' ({settings.verify}) "
        f"cannot be used: {type(err).__name__}: {err}"
    )


def _error_for(
    method: str, path: str, attempt: Attempt, attempts: int, settings: ApiSettings
) -> GetImageError:
    """Build the error for an attempt that will not be retried; the key is scrubbed from it."""
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
    if len(settings.api_key) >= MIN_SCRUBBED_KEY:
        message = message.replace(settings.api_key, "***")
    is_diffusion = path.startswith(_rules.DIFFUSIONS_PATH + "/")
    diffusion_id = unquote(path.rsplit("/", 1)[-1]) if is_diffusion else None
    return _ERROR_CLASSES[kind](
        message,
        status_code=attempt.status_code,
        diffusion_id=diffusion_id,
        retry_after=attempt.retry_after,
        transient=_rules.is_retryable(method, attempt),
    )


def _short(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 200 else text[:200] + "..."


def _requests_failure(exc: requests.RequestException) -> Failure:
    """Map a requests error to a ``Failure``: did the request provably never leave?"""
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


def _aiohttp_failure(exc: BaseException) -> Failure:
    """Map an aiohttp error to a ``Failure``, the async twin of ``_requests_failure``."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return "tls"
    if isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError)):
        return "connect"
    if isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return "read_timeout"
    return "connection_lost"


class _HookMixin:
    """What both hooks share: the connection type they serve and the image normalisation."""

    conn_name_attr = "getimage_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME

    @staticmethod
    def image_urls(diffusion: Mapping[str, Any]) -> list[str]:
        """The image URLs of a finished diffusion record (strings or objects, normalised)."""
        return _rules.image_urls(diffusion)


class GetImageHook(_HookMixin, HttpHook):
    """
    Talk to GetImage.io from a worker, synchronously.

    One ``requests`` session (keep-alive) per hook; every request has a connect and a read
    timeout; GETs are retried with backoff, a submission only where it provably was not taken.

    :param getimage_conn_id: the connection holding the API key (password) and base URL (host).
    :param retry_policy: how hard to retry; the default suits the public API.
    """

    def __init__(
        self,
        getimage_conn_id: str = DEFAULT_CONN_ID,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(method="GET", http_conn_id=getimage_conn_id, **kwargs)
        self.getimage_conn_id = getimage_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._settings: ApiSettings | None = None
        self._session: requests.Session | None = None
        self._random = random.Random()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for UIs that read it from the hook; the provider info is the source."""
        behaviour = _connection_type_info()["ui-field-behaviour"]
        return {
            "hidden_fields": list(behaviour["hidden-fields"]),
            "relabeling": dict(behaviour["relabeling"]),
            "placeholders": dict(behaviour["placeholders"]),
        }

    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        """Extra fields of the connection form (the provider info's ``conn-fields``), for older UIs."""
        from wtforms import StringField
        from wtforms.validators import Optional

        try:
            from flask_appbuilder.fieldwidgets import BS3TextFieldWidget

            widget: dict[str, Any] = {"widget": BS3TextFieldWidget()}
        except ImportError:
            widget = {}
        fields = _connection_type_info()["conn-fields"]
        return {
            name: StringField(
                field["label"], description=field.get("description", ""), validators=[Optional()], **widget
            )
            for name, field in fields.items()
        }

    # ---------------------------------------------------------------------------- connection
    @property
    def settings(self) -> ApiSettings:
        """The connection's settings, read once per hook."""
        if self._settings is None:
            conn = self.get_connection(self.getimage_conn_id)
            self._settings = settings_from_connection(
                self.getimage_conn_id, conn.host, conn.port, conn.password, conn.extra_dejson
            )
            _warn_if_plain_http(self.log, self._settings)
        return self._settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """The hook's one keep-alive session, with auth and JSON headers set."""
        if self._session is None:
            settings = self.settings
            self.base_url = settings.base_url
            self._base_url_initialized = True
            if isinstance(settings.verify, str) and not os.path.isfile(settings.verify):
                raise _bad_ca_bundle(settings, FileNotFoundError(settings.verify))
            session = requests.Session()
            session.headers.update(_rules.headers(settings.api_key))
            session.verify = settings.verify
            self._session = self._configure_session_from_mount_adapters(session)
        if headers:
            self._session.headers.update(headers)
        return self._session

    def close(self) -> None:
        """Close the session's pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __enter__(self) -> GetImageHook:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------ requests
    def _attempt(self, method: str, path: str, body: dict[str, Any] | None) -> Attempt:
        session = self.get_conn()
        try:
            response = session.request(
                method,
                self.settings.base_url + path,
                json=body,
                timeout=(_rules.CONNECT_TIMEOUT, self.settings.timeout),
                # Per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
                verify=self.settings.verify,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            return Attempt(failure=_requests_failure(exc), message=_short(exc))
        return _rules.read_response(response.status_code, response.text, response.headers.get("Retry-After"))

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        number = 0
        while True:
            number += 1
            attempt = self._attempt(method, path, body)
            if attempt.data is not None:
                return attempt.data
            wait = _rules.retry_decision(method, number, attempt, self.retry_policy, self._random.random())
            if wait is None:
                raise _error_for(method, path, attempt, number, self.settings)
            self.log.info(
                "GetImage.io %s %s: %s; retry %d of %d in %.1f s",
                method,
                path,
                attempt.message,
                number,
                self.retry_policy.max_attempts - 1,
                wait,
            )
            time.sleep(wait)

    # ------------------------------------------------------------------------------------ API
    def submit_diffusion(self, prompt: str, model: str | None = None, **parameters: Any) -> dict[str, Any]:
        """
        Submit a prompt; returns the new diffusion record (``id``, ``status``, ``createdAt``).

        The input is checked before anything is sent: a submission costs credits. Extra generation
        parameters are sent untouched. A submission is never sent twice for one call.
        """
        body = _rules.submit_body(prompt, model or self.settings.default_model, parameters)
        record = self._request("POST", _rules.DIFFUSIONS_PATH, body)
        diffusion_id = record.get("id")
        if not isinstance(diffusion_id, str) or not diffusion_id:
            raise GetImageSubmitUncertainError(
                "GetImage.io accepted the submission but its answer holds no diffusion id; "
                "it was not submitted again."
            )
        self.log.info("Submitted diffusion %s (model %s)", diffusion_id, body["model"])
        return record

    def get_diffusion(self, diffusion_id: str) -> dict[str, Any]:
        """The current record of a diffusion (``status``; ``images`` once FINISHED)."""
        diffusion_id = _rules.check_diffusion_id(diffusion_id)
        return self._request("GET", _rules.diffusion_path(diffusion_id))

    def wait_for_diffusion(
        self,
        diffusion_id: str,
        poll_interval: float = _rules.DEFAULT_POLL_INTERVAL,
        timeout: float = _rules.DEFAULT_WAIT_TIMEOUT,
        max_poll_interval: float | None = None,
    ) -> dict[str, Any]:
        """
        Poll until the diffusion is FINISHED and return its final record.

        Transient errors that outlast the hook's retries are polled through until the deadline.
        With ``max_poll_interval``, long generations are polled less often, up to that cap
        (:func:`~airflow_provider_getimage._rules.next_poll_delay`).

        :raises GetImageDiffusionFailed: on a terminal failure status, with the service's message.
        :raises GetImageTimeoutError: when ``timeout`` seconds pass first (the diffusion may still finish).
        """
        poll_interval = _rules.check_positive("poll_interval", poll_interval)
        timeout = _rules.check_positive("timeout", timeout)
        max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, poll_interval)
        started = time.monotonic()
        deadline = started + timeout
        watch = _rules.StatusWatch()
        while True:
            try:
                record = self.get_diffusion(diffusion_id)
            except GetImageError as err:
                poll = poll_error(self.log, diffusion_id, err)
            else:
                poll = read_poll(self.log, diffusion_id, record, watch, time.monotonic() - started)
            if poll.outcome == "success":
                return poll.record
            if poll.outcome == "failed":
                raise diffusion_failed(diffusion_id, poll.record)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise GetImageTimeoutError(
                    f"Diffusion {diffusion_id} was not finished after {timeout:g} s "
                    f"(last status {watch.last}); it may still finish.",
                    diffusion_id=diffusion_id,
                )
            delay = _rules.next_poll_delay(poll_interval, max_poll_interval, time.monotonic() - started)
            time.sleep(min(delay, remaining))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the key for the UI's Test button without spending credits.

        Asks for a diffusion id that cannot exist: 404 means the key was accepted, 401/403 not.
        A refusal names the URL, not the connection id nor the probe's path: the UI and the REST
        API test a copy of the connection saved under a random id, which would only confuse.
        """
        probe = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_max=1.0, retry_after_cap=2.0)
        saved, self.retry_policy = self.retry_policy, probe
        try:
            self.get_diffusion(f"connection-test-{uuid.uuid4()}")
        except GetImageNotFoundError:
            return True, f"Connected to {self.settings.base_url}: the API key was accepted."
        except GetImageAuthError as err:
            return False, (
                f"{self.settings.base_url} refused the API key (HTTP {err.status_code}): "
                "check the API Key (password) of this connection."
            )
        except GetImageError as err:
            return False, str(err)
        finally:
            self.retry_policy = saved
        return True, f"Connected to {self.settings.base_url}: the API key was accepted."


@dataclass
class _Lease:
    session: asyncio.Future[aiohttp.ClientSession]
    users: int = 0


@dataclass
class _LoopState:
    leases: dict[ApiSettings, _Lease] = field(default_factory=dict)
    settings: dict[str, asyncio.Future[ApiSettings]] = field(default_factory=dict)


class _SharedSessions:
    """
    One connection lookup and one aiohttp session per event loop and connection, for all hooks.

    A triggerer runs all its triggers on one event loop: a thousand deferred tasks of one
    connection then share one keep-alive pool of at most ``POOL_SIZE`` connections, instead of a
    TCP and TLS handshake per trigger (or, as in ``HttpSensorTrigger``, per poll), and one
    connection lookup instead of a thousand (Airflow's async lookup costs about 0.5 ms of CPU and
    passes through one worker thread). Concurrent first users wait for the same lookup and the
    same session. The last user to release the session closes it and forgets the lookup, so an
    edited connection is read again by the next trigger.
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
        leases = self._state().leases
        lease = leases.get(settings)
        if lease is None or (lease.session.done() and lease.session.result().closed):
            lease = leases[settings] = _Lease(asyncio.ensure_future(_new_session(settings)))
        lease.users += 1
        try:
            return await asyncio.shield(lease.session)
        except BaseException:
            # A session that could not be made (say, a missing CA bundle) is not kept: the next
            # hook tries again once the connection is fixed.
            lease.users -= 1
            if lease.session.done() and leases.get(settings) is lease:
                del leases[settings]
            raise

    async def release(self, settings: ApiSettings) -> None:
        state = self._state()
        lease = state.leases.get(settings)
        if lease is None:
            return
        lease.users -= 1
        if lease.users <= 0:
            del state.leases[settings]
            state.settings.pop(settings.conn_id, None)
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
            raise _bad_ca_bundle(settings, err) from None
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=POOL_SIZE, ssl=ssl_setting),
        headers=_rules.headers(settings.api_key),
        # ``connect`` covers waiting for a pooled connection; ``sock_connect`` the TCP connect itself.
        timeout=aiohttp.ClientTimeout(
            total=None,
            connect=POOL_WAIT_TIMEOUT,
            sock_connect=_rules.CONNECT_TIMEOUT,
            sock_read=settings.timeout,
        ),
    )


SHARED_SESSIONS = _SharedSessions()


class GetImageAsyncHook(_HookMixin, HttpAsyncHook):
    """
    Talk to GetImage.io from an event loop (triggers), with no blocking call.

    The connection is read with the compat provider's async helpers, once per hook. Requests go
    through the event loop's shared session for the connection (``SHARED_SESSIONS``), leased on
    first use and given back by ``close()`` (or ``async with``).

    :param getimage_conn_id: the connection holding the API key (password) and base URL (host).
    :param retry_policy: how hard to retry; the default suits the public API.
    """

    def __init__(
        self, getimage_conn_id: str = DEFAULT_CONN_ID, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(method="GET", http_conn_id=getimage_conn_id)
        self.getimage_conn_id = getimage_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._settings: ApiSettings | None = None
        self._session: aiohttp.ClientSession | None = None
        self._random = random.Random()

    async def get_settings(self) -> ApiSettings:
        """The connection's settings: one asynchronous lookup per event loop, shared by its hooks."""
        if self._settings is None:
            self._settings = await SHARED_SESSIONS.settings(self.getimage_conn_id, self._lookup_settings)
        return self._settings

    async def _lookup_settings(self) -> ApiSettings:
        from airflow.providers.common.compat.connection import get_async_connection, get_async_extra_dejson

        conn = await get_async_connection(self.getimage_conn_id, hook=self)
        extra = await get_async_extra_dejson(conn)
        settings = settings_from_connection(self.getimage_conn_id, conn.host, conn.port, conn.password, extra)
        _warn_if_plain_http(self.log, settings)
        return settings

    async def config(self) -> SessionConfig:
        """``HttpAsyncHook``'s session config, from this provider's connection rules."""
        settings = await self.get_settings()
        return SessionConfig(base_url=settings.base_url, headers=_rules.headers(settings.api_key))

    async def _get_session(self) -> aiohttp.ClientSession:
        """This loop's shared session for the connection, leased once per hook."""
        if self._session is None:
            self._session = await SHARED_SESSIONS.acquire(await self.get_settings())
        return self._session

    async def close(self) -> None:
        """Give the shared session back; the last hook to do so closes it."""
        if self._session is not None and self._settings is not None:
            self._session = None
            await SHARED_SESSIONS.release(self._settings)

    async def __aenter__(self) -> GetImageAsyncHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _attempt(self, method: str, path: str, body: dict[str, Any] | None) -> Attempt:
        session = await self._get_session()
        settings = await self.get_settings()
        try:
            async with session.request(
                method, settings.base_url + path, json=body, allow_redirects=False
            ) as response:
                raw = await response.read()  # bytes: json.loads needs no charset guess
                return _rules.read_response(response.status, raw, response.headers.get("Retry-After"))
        except (TimeoutError, aiohttp.ClientError) as exc:
            return Attempt(failure=_aiohttp_failure(exc), message=_short(exc))

    async def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        number = 0
        while True:
            number += 1
            attempt = await self._attempt(method, path, body)
            if attempt.data is not None:
                return attempt.data
            wait = _rules.retry_decision(method, number, attempt, self.retry_policy, self._random.random())
            if wait is None:
                raise _error_for(method, path, attempt, number, await self.get_settings())
            self.log.info(
                "GetImage.io %s %s: %s; retry %d of %d in %.1f s",
                method,
                path,
                attempt.message,
                number,
                self.retry_policy.max_attempts - 1,
                wait,
            )
            await asyncio.sleep(wait)

    async def submit_diffusion(
        self, prompt: str, model: str | None = None, **parameters: Any
    ) -> dict[str, Any]:
        """Submit a prompt from an event loop; same checks and retry rules as the sync hook."""
        settings = await self.get_settings()
        body = _rules.submit_body(prompt, model or settings.default_model, parameters)
        record = await self._request("POST", _rules.DIFFUSIONS_PATH, body)
        if not isinstance(record.get("id"), str) or not record["id"]:
            raise GetImageSubmitUncertainError(
                "GetImage.io accepted the submission but its answer holds no diffusion id; "
                "it was not submitted again."
            )
        self.log.info("Submitted diffusion %s (model %s)", record["id"], body["model"])
        return record

    async def get_diffusion(self, diffusion_id: str) -> dict[str, Any]:
        """The current record of a diffusion (``status``; ``images`` once FINISHED)."""
        diffusion_id = _rules.check_diffusion_id(diffusion_id)
        return await self._request("GET", _rules.diffusion_path(diffusion_id))
