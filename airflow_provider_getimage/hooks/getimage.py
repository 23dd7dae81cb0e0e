"""
Hooks for the GetImage.io API: ``GetImageHook`` (sync, for workers) and ``GetImageAsyncHook``
(async, for triggers).

Both are thin shells: the connection is read by ``hooks.settings``, an answer is judged by
``_rules``, a failed attempt is retried and mapped to an error by ``hooks.transport``, and the
async hook leases its session from ``hooks.sessions``. The errors are re-exported here (SPEC 4).
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from typing import TYPE_CHECKING, Any, ClassVar

import aiohttp
import requests
from airflow.providers.http.hooks.http import HttpAsyncHook, HttpHook, SessionConfig

from airflow_provider_getimage import _rules
from airflow_provider_getimage._rules import Attempt, RetryPolicy
from airflow_provider_getimage.exceptions import (
    GetImageAuthError,
    GetImageDiffusionFailed,
    GetImageError,
    GetImageNotFoundError,
    GetImageRateLimitError,
    GetImageSubmitUncertainError,
    GetImageTimeoutError,
)
from airflow_provider_getimage.hooks.deadlines import WATCHDOG, DeadlineAdapter
from airflow_provider_getimage.hooks.limiter import rate_limit_pause, sync_limiter
from airflow_provider_getimage.hooks.sessions import SHARED_SESSIONS
from airflow_provider_getimage.hooks.settings import (
    ApiSettings,
    bad_ca_bundle,
    connection_type_info,
    settings_from_connection,
    warn_if_plain_http,
)
from airflow_provider_getimage.hooks.transport import (
    AnswerCut,
    aiohttp_failure,
    api_retries,
    call_with_retries,
    call_with_retries_async,
    read_body,
    read_body_async,
    requests_failure,
    timed_out,
)
from airflow_provider_getimage.polling import DiffusionWatch, checked_record

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import TracebackType

    from airflow_provider_getimage.hooks.limiter import AsyncLimiter, SyncLimiter

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
CONNECTION_TEST_POLICY = RetryPolicy(max_attempts=2, backoff_base=0.5, backoff_max=1.0, retry_after_cap=2.0)
"""The UI's Test button answers within seconds: two quick attempts, not a minute of backoff."""


class _HookMixin:
    """What both hooks share: the connection type they serve, the retry policy, the API's answers."""

    conn_name_attr = "getimage_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = HOOK_NAME
    default_retry_policy: ClassVar[RetryPolicy] = RetryPolicy()
    """The policy of hooks made without one (tests shorten it; the default suits the public API)."""

    @staticmethod
    def image_urls(diffusion: Mapping[str, Any]) -> list[str]:
        """The image URLs of a finished record (strings or objects normalised; http(s) only, capped)."""
        return _rules.web_image_urls(diffusion)

    @staticmethod
    def _checked_submission(record: dict[str, Any], model: str, log: Any) -> dict[str, Any]:
        """
        A submission's answer must hold a usable new id and well-typed fields; the diffusion may
        exist and was charged either way, so a bad answer is never resent.
        """
        problem = _rules.record_problem(record)
        if problem is None and "id" not in record:
            problem = "it holds no diffusion id"
        elif problem is None and (id_problem := _rules.id_problem(record["id"])) is not None:
            problem = f"its diffusion id {_rules.clip(repr(record['id']), 80)} is not usable: {id_problem}"
        if problem is not None:
            raise GetImageSubmitUncertainError(
                f"GetImage.io accepted the submission but its answer is unusable: {problem}. The "
                "diffusion may exist and was charged; it was not submitted again. Check your "
                "GetImage.io account before retrying."
            )
        record = {**record, "id": record["id"].strip()}
        log.info("Submitted diffusion %s (model %s)", record["id"], model)
        return record


class GetImageHook(_HookMixin, HttpHook):
    """
    Talk to GetImage.io from a worker, synchronously.

    One ``requests`` session (keep-alive) per hook; every request ends within the connection's
    ``request_timeout`` in all, headers and body included (``hooks.deadlines``); GETs are retried
    with backoff, a submission only where it provably was not taken.

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
        self.retry_policy = retry_policy or self.default_retry_policy
        self._settings: ApiSettings | None = None
        self._session: requests.Session | None = None
        self._limiter: SyncLimiter | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form for UIs that read it from the hook; the provider info is the source."""
        behaviour = connection_type_info()["ui-field-behaviour"]
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
        fields = connection_type_info()["conn-fields"]
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
            warn_if_plain_http(self.log, self._settings)
            self._limiter = sync_limiter(self._settings)
        return self._settings

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> requests.Session:
        """The hook's one keep-alive session, with auth and JSON headers set (and no connection extra)."""
        if self._session is None:
            settings = self.settings
            self.base_url = settings.base_url
            if isinstance(settings.verify, str) and not os.path.isfile(settings.verify):
                raise bad_ca_bundle(settings, FileNotFoundError(settings.verify))
            session = requests.Session()
            session.headers.update(_rules.headers(settings.api_key))
            session.verify = settings.verify
            # A DeadlineAdapter (the whole-request deadline), with HttpHook's TCP keep-alive options;
            # an adapter given to the hook is mounted as it is (its header phase then has only the
            # per-read timeout).
            keep_alive = getattr(self.keep_alive_adapter, "socket_options", None)
            adapter = self.adapter or DeadlineAdapter(socket_options=keep_alive)
            session.mount("https://", adapter)
            session.mount("http://", adapter)
            self._session = session
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
    def _attempt(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any] | Attempt:
        session, settings = self.get_conn(), self.settings
        if self._limiter is not None:
            self._limiter.acquire()
        # The watchdog bounds the whole request, status line and headers included (hooks.deadlines).
        with WATCHDOG.arm(settings.timeout) as deadline:
            try:
                response = session.request(
                    method,
                    settings.base_url + path,
                    json=body,
                    timeout=(min(_rules.CONNECT_TIMEOUT, settings.timeout), settings.timeout),
                    # Per request: requests lets REQUESTS_CA_BUNDLE override a session's verify.
                    verify=settings.verify,
                    allow_redirects=False,
                    stream=True,  # read by read_body: bounded in size and in time
                )
            except requests.RequestException as exc:
                return timed_out(settings.timeout) if deadline.expired else requests_failure(exc)
            with response:
                try:
                    raw = read_body(response, settings, deadline=deadline.at, timeout=settings.timeout)
                except AnswerCut as cut:
                    return cut.attempt
        attempt = _rules.read_response(
            response.status_code, raw, response.headers.get("Retry-After"), settings.secrets
        )
        if attempt.data is not None:
            return attempt.data
        if self._limiter is not None and (
            pause := rate_limit_pause(attempt, self.retry_policy.retry_after_cap)
        ):
            self._limiter.pause_for(pause)
        return attempt

    def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        diffusion_id: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        return call_with_retries(
            lambda: self._attempt(method, path, body),
            lambda: api_retries(
                method, path, self.settings, self.retry_policy, self.log, diffusion_id, deadline
            ),
        )

    # ------------------------------------------------------------------------------------ API
    def submit_diffusion(self, prompt: str, model: str | None = None, **parameters: Any) -> dict[str, Any]:
        """
        Submit a prompt; returns the new diffusion record (``id``, ``status``, ``createdAt``).

        The input is checked before anything is sent: a submission costs credits. Extra generation
        parameters are sent untouched. A submission is never sent twice for one call.
        """
        body = _rules.submit_body(prompt, model or self.settings.default_model, parameters)
        record = self._request("POST", _rules.DIFFUSIONS_PATH, body)
        return self._checked_submission(record, body["model"], self.log)

    def get_diffusion(self, diffusion_id: str, *, deadline: float | None = None) -> dict[str, Any]:
        """
        The current record of a diffusion (``status``; ``images`` once FINISHED).

        :param deadline: epoch seconds after which no retry starts (a wait's own deadline).
        """
        diffusion_id = _rules.check_diffusion_id(diffusion_id)
        path = _rules.diffusion_path(diffusion_id)
        record = self._request("GET", path, diffusion_id=diffusion_id, deadline=deadline)
        return checked_record(record, diffusion_id)

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
        poll_interval = _rules.check_poll_interval(poll_interval)
        timeout = _rules.check_positive("timeout", timeout)
        max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, poll_interval)
        watch = DiffusionWatch(diffusion_id, self.log, end_time=time.time() + timeout)
        while True:
            poll = watch.check(functools.partial(self.get_diffusion, deadline=watch.end_time))
            if poll.error is not None:
                raise poll.error
            if poll.outcome == "success":
                return poll.record
            if watch.expired():
                raise watch.timeout_error(f"after {timeout:g} s")
            time.sleep(watch.next_delay(poll_interval, max_poll_interval))

    def test_connection(self) -> tuple[bool, str]:
        """
        Check the key for the UI's Test button without spending credits.

        Asks for a diffusion id that cannot exist: 404 means the key was accepted, 401/403 not.
        A refusal names the URL, not the connection id nor the probe's path: the UI and the REST
        API test a copy of the connection saved under a random id, which would only confuse.
        """
        saved, self.retry_policy = self.retry_policy, CONNECTION_TEST_POLICY
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


class GetImageAsyncHook(_HookMixin, HttpAsyncHook):
    """
    Talk to GetImage.io from an event loop (triggers), with no blocking call.

    The connection is read with the compat provider's async helpers, once per event loop. Requests
    go through the loop's shared session for the connection (``hooks.sessions.SHARED_SESSIONS``),
    leased on first use and given back by ``close()`` (or ``async with``).

    :param getimage_conn_id: the connection holding the API key (password) and base URL (host).
    :param retry_policy: how hard to retry; the default suits the public API.
    """

    def __init__(
        self, getimage_conn_id: str = DEFAULT_CONN_ID, retry_policy: RetryPolicy | None = None
    ) -> None:
        super().__init__(method="GET", http_conn_id=getimage_conn_id)
        self.getimage_conn_id = getimage_conn_id
        self.retry_policy = retry_policy or self.default_retry_policy
        self._settings: ApiSettings | None = None
        self._session: aiohttp.ClientSession | None = None
        self._limiter: AsyncLimiter | None = None

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
        warn_if_plain_http(self.log, settings)
        return settings

    async def config(self) -> SessionConfig:
        """``HttpAsyncHook``'s session config, from this provider's connection rules."""
        settings = await self.get_settings()
        return SessionConfig(base_url=settings.base_url, headers=_rules.headers(settings.api_key))

    async def _get_session(self) -> aiohttp.ClientSession:
        """This loop's shared session for the connection, leased once per hook."""
        if self._session is None:
            settings = await self.get_settings()
            self._session = await SHARED_SESSIONS.acquire(settings)
            self._limiter = SHARED_SESSIONS.limiter(settings)
        return self._session

    async def close(self) -> None:
        """Give the shared session back; the last hook to do so closes it."""
        if self._session is not None and self._settings is not None:
            self._session = self._limiter = None
            await SHARED_SESSIONS.release(self._settings)

    async def __aenter__(self) -> GetImageAsyncHook:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _attempt(
        self, method: str, path: str, body: dict[str, Any] | None, due: float | None = None
    ) -> dict[str, Any] | Attempt:
        # The attributes first: every poll asks, and awaiting the lookups again costs two coroutines.
        session = self._session or await self._get_session()
        settings = self._settings or await self.get_settings()
        limiter = self._limiter
        if limiter is not None:
            await limiter.acquire(due)
        try:
            # The session's total timeout bounds the whole request, the answer included.
            async with session.request(
                method, settings.base_url + path, json=body, allow_redirects=False
            ) as response:
                raw = await read_body_async(response, settings)  # bytes: json.loads needs no charset guess
                attempt = _rules.read_response(
                    response.status, raw, response.headers.get("Retry-After"), settings.secrets
                )
        except (TimeoutError, aiohttp.ClientError) as exc:
            return aiohttp_failure(exc, settings.timeout)
        except AnswerCut as cut:
            return cut.attempt
        if attempt.data is not None:
            return attempt.data
        if limiter is not None and (pause := rate_limit_pause(attempt, self.retry_policy.retry_after_cap)):
            limiter.pause_for(pause)  # every request of the connection on this loop waits, not only this one
        return attempt

    async def _request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        diffusion_id: str | None = None,
        deadline: float | None = None,
    ) -> dict[str, Any]:
        # The first attempt before any retry state: most calls need no retry. No closure here
        # either (a closure's variables become cell objects on every call, retry or not): a
        # triggerer makes a thousand polls a second, and what is alive while they are in flight
        # reaches the collector's oldest generation. A retry keeps the first attempt's due time:
        # under a rate limit it goes before newer polls.
        due = asyncio.get_running_loop().time()
        first = await self._attempt(method, path, body, due)
        if not isinstance(first, Attempt):
            return first
        return await self._retry(first, method, path, body, diffusion_id, deadline, due)

    async def _retry(
        self,
        first: Attempt,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        diffusion_id: str | None,
        deadline: float | None,
        due: float,
    ) -> dict[str, Any]:
        """Retry a failed first attempt (``transport.call_with_retries_async``)."""
        settings = self._settings or await self.get_settings()
        return await call_with_retries_async(
            lambda: self._attempt(method, path, body, due),
            lambda: api_retries(method, path, settings, self.retry_policy, self.log, diffusion_id, deadline),
            first,
        )

    async def submit_diffusion(
        self, prompt: str, model: str | None = None, **parameters: Any
    ) -> dict[str, Any]:
        """Submit a prompt from an event loop; same checks and retry rules as the sync hook."""
        settings = await self.get_settings()
        body = _rules.submit_body(prompt, model or settings.default_model, parameters)
        record = await self._request("POST", _rules.DIFFUSIONS_PATH, body)
        return self._checked_submission(record, body["model"], self.log)

    @property
    def queues_polls(self) -> bool:
        """
        True once the connection's rate limiter serves this hook: ``get_diffusion(wait=...)`` then
        spends its wait in the limiter's queue, one wake-up of the loop per poll, where a sleep
        before the call would add a second.
        """
        return self._limiter is not None

    async def get_diffusion(
        self, diffusion_id: str, *, deadline: float | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        """
        The current record of a diffusion (``status``; ``images`` once FINISHED).

        :param deadline: epoch seconds after which no retry starts (a trigger's ``end_time``).
        :param wait: seconds before the request goes (a poll interval): queued in the connection's
            rate limiter when there is one (:attr:`queues_polls`), slept otherwise.
        """
        diffusion_id = _rules.check_diffusion_id(diffusion_id)
        path = _rules.diffusion_path(diffusion_id)
        # ``_request`` inlined: every trigger polls through here, one coroutine less in flight.
        if wait > 0 and self._limiter is None:
            await asyncio.sleep(wait)
            wait = 0.0
        due = asyncio.get_running_loop().time() + wait
        record = await self._attempt("GET", path, None, due)
        if isinstance(record, Attempt):
            record = await self._retry(record, "GET", path, None, diffusion_id, deadline, due)
        return checked_record(record, diffusion_id)
