"""The emulated GetImage.io service: state, aiohttp application and the in-process runner.

It fakes the remote API over real sockets, faults included, so a client is tested on the
wire (connection reuse, retries, duplicate POSTs) rather than against mocks. It shares no code
with the provider's hooks on purpose: a wrong rule must not hide on both sides.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import functools
import json
import logging
import random
import re
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import web

from airflow_provider_getimage.emulator.config import EmulatorConfig, Fault, format_retry_after
from airflow_provider_getimage.emulator.images import render_png
from airflow_provider_getimage.emulator.tls import TLSFiles, create_certificates, server_ssl_context

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger("airflow_provider_getimage.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Outcome = Literal["FINISHED", "FAILED"]

_ERROR_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
    500: "server_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}
_ERROR_MESSAGES = {
    429: "Too many requests, slow down",
    500: "Internal server error",
    502: "Bad gateway: the upstream generation service did not answer",
    503: "Service temporarily unavailable, try again later",
}
_RANDOM_FAILURES = (
    "Generation failed: the model returned no image",
    "Generation failed: upstream model timed out",
    "Generation failed: GPU worker lost",
)
_DIFFUSION_PATH = re.compile(r"^/v1/diffusions/(?P<diffusion_id>[^/]+)$")
_IMAGE_PATH = "/images/{diffusion_id}/{index:\\d+}.png"


def iso_utc(epoch: float) -> str:
    """Render a time the way the real API does: ``2023-01-01T00:00:00.000Z``."""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def error_response(
    status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """The API's error shape, ``{"error": {"code": ..., "message": ...}}``, for any status."""
    if code is None:
        code = _ERROR_CODES.get(status) or ("server_error" if status >= 500 else "client_error")
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="getimage.io"')
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=all_headers
    )


@dataclass
class Diffusion:
    """One generation job; its status is derived from the clock, never stored."""

    id: str
    prompt: str
    model: str
    body: dict[str, Any]
    created_at: float
    latency: float
    outcome: Outcome
    message: str | None
    image_count: int
    image_size: int
    image_format: str

    @property
    def finishes_at(self) -> float:
        return self.created_at + self.latency

    def status_at(self, now: float) -> str:
        """``NEW`` for min(10% of latency, 1 s), then ``PROCESSING``, then the outcome."""
        elapsed = now - self.created_at
        if elapsed >= self.latency:
            return self.outcome
        if elapsed < min(0.1 * self.latency, 1.0):
            return "NEW"
        return "PROCESSING"

    def progress_at(self, now: float) -> int:
        """0-100, for clients that show progress; 100 once terminal."""
        status = self.status_at(now)
        if status == "NEW":
            return 0
        if status == "PROCESSING":
            return min(99, int(100 * (now - self.created_at) / self.latency))
        return 100

    def image_url(self, base_url: str, index: int) -> str:
        return f"{base_url}/images/{self.id}/{index}.png"

    def record(self, now: float, base_url: str, status_override: str | None = None) -> dict[str, Any]:
        """The JSON a ``GET /v1/diffusions/{id}`` returns at ``now``."""
        status = self.status_at(now)
        data: dict[str, Any] = {
            "id": self.id,
            "status": status,
            "prompt": self.prompt,
            "model": self.model,
            "createdAt": iso_utc(self.created_at),
            "progress": self.progress_at(now),
        }
        if status == "FINISHED":
            data["finishedAt"] = iso_utc(self.finishes_at)
            urls = [self.image_url(base_url, index) for index in range(self.image_count)]
            if self.image_format == "objects":
                data["images"] = [
                    {"url": url, "width": self.image_size, "height": self.image_size, "index": index}
                    for index, url in enumerate(urls)
                ]
            else:
                data["images"] = urls
        elif status == "FAILED":
            data["message"] = self.message
        if status_override is not None:
            data["status"] = status_override
        return data

    def summary(self, now: float) -> dict[str, Any]:
        """The control-plane view (``GET /_emulator/diffusions``): everything a test may assert on."""
        return {
            "id": self.id,
            "prompt": self.prompt,
            "model": self.model,
            "body": self.body,
            "created_at": self.created_at,
            "finishes_at": self.finishes_at,
            "outcome": self.outcome,
            "message": self.message,
            "status": self.status_at(now),
        }


@dataclass
class _Stats:
    requests: int = 0
    submissions: int = 0
    polls: int = 0
    polls_by_id: collections.Counter[str] = field(default_factory=collections.Counter)
    image_downloads: int = 0
    #: Image downloads that carried an ``Authorization`` header: image URLs are public, so a client
    #: that sends one is leaking a credential to whatever host serves the images.
    image_downloads_with_authorization: int = 0
    responses_by_status: collections.Counter[str] = field(default_factory=collections.Counter)
    rate_limited: int = 0
    dropped: int = 0
    faults_served: int = 0
    errors_injected: int = 0
    connections: int = 0


class EmulatorState:
    """Everything mutable, guarded by one lock so the test thread and the loop can both use it.

    No method awaits while holding the lock; critical sections are a few dict operations.
    """

    def __init__(self, config: EmulatorConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._rng = random.Random(config.seed)
        self._diffusions: dict[str, Diffusion] = {}
        #: Scripted faults in order, each with how many more requests it will be served to.
        self._faults: list[tuple[Fault, int]] = []
        self._stats = _Stats()
        self._window: collections.deque[float] = collections.deque()

    @property
    def config(self) -> EmulatorConfig:
        with self._lock:
            return self._config

    def configure(self, knobs: dict[str, Any], *, running: bool = True) -> EmulatorConfig:
        """Swap in a new config; a new ``seed`` reseeds the random generator.

        :raises ValueError: on an unknown knob, a startup-only knob or a bad value.
        """
        with self._lock:
            self._config = self._config.updated(knobs, running=running)
            if "seed" in knobs:
                self._rng.seed(self._config.seed)
            return self._config

    def reset(self) -> None:
        """Forget diffusions, stats, faults and the rate-limit window; keep the config."""
        with self._lock:
            self._diffusions.clear()
            self._faults.clear()
            self._stats = _Stats()
            self._window.clear()

    def add_faults(self, faults: Iterable[Fault]) -> int:
        """Queue faults after those already pending; return how many are pending."""
        with self._lock:
            self._faults.extend((fault, fault.times) for fault in faults)
            return len(self._faults)

    def pending_faults(self) -> list[dict[str, Any]]:
        with self._lock:
            return [{**fault.to_dict(), "remaining": remaining} for fault, remaining in self._faults]

    def count_connection(self) -> None:
        with self._lock:
            self._stats.connections += 1

    def count_response(self, status: int) -> None:
        with self._lock:
            self._stats.responses_by_status[str(status)] += 1

    def count_image_download(self, with_authorization: bool = False) -> None:
        with self._lock:
            self._stats.image_downloads += 1
            self._stats.image_downloads_with_authorization += with_authorization

    def stats(self) -> dict[str, Any]:
        """A JSON-ready copy of the counters."""
        with self._lock:
            stats = dataclasses.asdict(self._stats)
            stats["polls_by_id"] = dict(self._stats.polls_by_id)
            stats["responses_by_status"] = dict(sorted(self._stats.responses_by_status.items()))
            stats["diffusions"] = len(self._diffusions)
            stats["faults_pending"] = len(self._faults)
            return stats

    def diffusions(self) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            return [diffusion.summary(now) for diffusion in self._diffusions.values()]

    def get_diffusion(self, diffusion_id: str) -> Diffusion | None:
        with self._lock:
            return self._diffusions.get(diffusion_id)

    def admit(self, method: str, path: str) -> Fault | None:
        """Count a ``/v1/*`` request and decide its fault, or ``None`` to serve it normally.

        Scripted faults come first and in order, so a test's script is never pre-empted by the
        random knobs; a request matched by a scripted fault skips the knobs.
        """
        with self._lock:
            stats = self._stats
            stats.requests += 1
            poll = _DIFFUSION_PATH.match(path) if method == "GET" else None
            if poll is not None:
                stats.polls += 1
                stats.polls_by_id[poll["diffusion_id"]] += 1
            fault = self._next_scripted(method, path, is_poll=poll is not None)
            if fault is not None:
                stats.faults_served += 1
            else:
                fault = self._knob_fault(method)
            if fault is not None and fault.drops:
                stats.dropped += 1
            return fault

    def _next_scripted(self, method: str, path: str, *, is_poll: bool) -> Fault | None:
        """Use up one serving of the first pending fault that matches; the lock is held."""
        for position, (fault, remaining) in enumerate(self._faults):
            if not fault.matches(method, path) or (fault.kind == "diffusion_status" and not is_poll):
                continue
            if remaining > 1:
                self._faults[position] = (fault, remaining - 1)
            else:
                del self._faults[position]
            return fault
        return None

    def _knob_fault(self, method: str) -> Fault | None:
        """The fault the random knobs draw for one request (429, drop or 5xx); the lock is held."""
        config, rng = self._config, self._rng
        if config.rate_limit is not None:
            now = time.monotonic()
            window = self._window
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) + 1 > config.rate_limit:
                self._stats.rate_limited += 1
                return Fault("status", status=429, retry_after=format_retry_after(config.retry_after))
            window.append(now)
        if config.drop_rate and rng.random() < config.drop_rate:
            after = method == "POST" and rng.random() < 0.5
            return Fault("drop_after" if after else "drop")
        if config.error_rate and rng.random() < config.error_rate:
            self._stats.errors_injected += 1
            status = rng.choice((500, 502, 503))
            # A 503 is refused up front; a 500/502 on a POST comes after the work was done,
            # like a gateway timing out on a backend that carried on.
            after = method == "POST" and status != 503
            return Fault("status_after" if after else "status", status=status)
        return None

    def create_diffusion(self, prompt: str, model: str, body: dict[str, Any]) -> Diffusion:
        """Record a submission and decide now, reproducibly under ``seed``, how it will end."""
        with self._lock:
            config = self._config
            rng = self._rng
            latency = config.latency
            if config.latency_jitter:
                latency += rng.uniform(-config.latency_jitter, config.latency_jitter)
            latency = max(latency, 0.0)
            lowered = prompt.lower()
            needle = next((p for p in config.failing_prompts if p and p.lower() in lowered), None)
            outcome: Outcome = "FINISHED"
            message = None
            if needle is not None:
                outcome, message = "FAILED", f"Prompt rejected by content filter: matched {needle!r}"
            elif config.failure_rate and rng.random() < config.failure_rate:
                outcome, message = "FAILED", rng.choice(_RANDOM_FAILURES)
            diffusion_id = str(uuid.uuid1(node=rng.getrandbits(48) | 1 << 40, clock_seq=rng.getrandbits(14)))
            diffusion = Diffusion(
                id=diffusion_id,
                prompt=prompt,
                model=model,
                body=body,
                created_at=time.time(),
                latency=latency,
                outcome=outcome,
                message=message,
                image_count=config.images_per_diffusion,
                image_size=config.image_size,
                image_format=config.image_format,
            )
            self._diffusions[diffusion_id] = diffusion
            self._stats.submissions += 1
        log.debug(
            "Created diffusion %s (model %s, outcome %s in %.2fs)", diffusion_id, model, outcome, latency
        )
        return diffusion


def _drop(request: web.Request) -> web.Response:
    """Close the connection with no response at all, as a crashed proxy or a reset would.

    ``abort()`` discards buffers and closes the socket at once (no TLS close_notify). aiohttp
    then fails to write the placeholder response returned here with a ``ConnectionResetError``,
    which it treats as a client disconnect: no traceback in the server logs.
    """
    transport = request.transport
    if transport is not None:
        transport.abort()
    return web.Response(status=204)


async def _call(handler: Handler, request: web.Request) -> web.StreamResponse:
    """Run a handler and turn aiohttp's HTTP exceptions (404 route, 405, 413) into API errors."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return error_response(exc.status, message)


def _status_response(fault: Fault) -> web.Response:
    """The canned answer of a ``status`` or ``status_after`` fault, scripted or drawn by a knob."""
    assert fault.status is not None
    headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else {}
    if fault.body is not None:
        return web.Response(
            status=fault.status, text=fault.body, content_type=fault.content_type, headers=headers
        )
    message = _ERROR_MESSAGES.get(fault.status, f"Injected fault: HTTP {fault.status}")
    return error_response(fault.status, message, headers=headers)


class EmulatorApp:
    """Routes and handlers over one :class:`EmulatorState`."""

    def __init__(self, state: EmulatorState) -> None:
        self.state = state

    def build(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware])
        app.router.add_post("/v1/diffusions", self.submit, name="submit_diffusion")
        app.router.add_get("/v1/diffusions/{diffusion_id}", self.get, name="get_diffusion")
        app.router.add_get(_IMAGE_PATH, self.image, name="image")
        app.router.add_get("/_emulator/health", self.health)
        app.router.add_get("/_emulator/stats", self.stats)
        app.router.add_post("/_emulator/reset", self.reset)
        app.router.add_get("/_emulator/faults", self.list_faults)
        app.router.add_post("/_emulator/faults", self.add_faults)
        app.router.add_get("/_emulator/config", self.get_config)
        app.router.add_post("/_emulator/config", self.set_config)
        app.router.add_get("/_emulator/diffusions", self.list_diffusions)
        return app

    # -- middleware: faults and knobs ------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Apply scripted faults and random knobs to ``/v1/*`` only; control and image routes stay clean."""
        if not request.path.startswith("/v1/"):
            return await _call(handler, request)
        fault = self.state.admit(request.method, request.path)
        response = await self._serve(fault, request, handler)
        if response is None:
            log.info("%s %s -> connection dropped", request.method, request.path)
            return _drop(request)
        log.debug("%s %s -> %s", request.method, request.path, response.status)
        self.state.count_response(response.status)
        return response

    async def _serve(
        self, fault: Fault | None, request: web.Request, handler: Handler
    ) -> web.StreamResponse | None:
        """The one place a fault becomes a response; ``None`` means drop the connection."""
        if fault is None:
            return await _call(handler, request)
        log.info("%s %s -> fault %s", request.method, request.path, fault.kind)
        if fault.kind == "delay":
            # A slow server has the request in hand: read the body first, so the work is still done
            # (and a submission still created) when the client has given up and closed.
            await request.read()
            await asyncio.sleep(fault.delay)
            return await _call(handler, request)
        if fault.kind == "body":
            assert fault.body is not None
            return web.Response(status=200, text=fault.body, content_type=fault.content_type)
        if fault.kind == "diffusion_status":  # admit() only matches it to GET /v1/diffusions/{id}
            return await _call(functools.partial(self.get, status_override=fault.value), request)
        if fault.serves_first:
            await _call(handler, request)
        return None if fault.drops else _status_response(fault)

    # -- the API ---------------------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> web.Response | None:
        """``None`` if the bearer key is accepted, else the 401 to send."""
        header = request.headers.get("Authorization", "")
        scheme, _, key = header.partition(" ")
        if not header:
            return error_response(401, "Missing Authorization header; send 'Authorization: Bearer <API key>'")
        if scheme.lower() != "bearer" or not key.strip():
            return error_response(401, "Authorization header must be 'Bearer <API key>'")
        if key.strip() not in self.state.config.api_keys:
            return error_response(401, "Invalid API key")
        return None

    @staticmethod
    def _base_url(request: web.Request) -> str:
        """The emulator's own origin as this client reached it, for image URLs that work from there."""
        return f"{request.scheme}://{request.host}"

    async def submit(self, request: web.Request) -> web.Response:
        """``POST /v1/diffusions``: validate, store the body untouched, answer 201 with the id."""
        denied = self._authorised(request)
        if denied is not None:
            return denied
        if request.content_type != "application/json":
            return error_response(
                415, f"Content-Type must be application/json, got {request.content_type or 'none'!r}"
            )
        raw = await request.read()
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return error_response(400, "Request body is not JSON")
        if not isinstance(body, dict):
            return error_response(400, f"Request body must be a JSON object, got {type(body).__name__}")
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return error_response(400, "'prompt' is required and must be a non-empty string")
        model = body.get("model")
        if model is None:
            model = "midjourney"
        elif not isinstance(model, str) or not model.strip():
            return error_response(400, "'model' must be a non-empty string")
        diffusion = self.state.create_diffusion(prompt, model, body)
        return web.json_response(
            {"id": diffusion.id, "status": "NEW", "createdAt": iso_utc(diffusion.created_at)},
            status=201,
            headers={"Location": f"/v1/diffusions/{diffusion.id}"},
        )

    async def get(self, request: web.Request, status_override: str | None = None) -> web.Response:
        """``GET /v1/diffusions/{id}``: the record with its status as of now.

        :param status_override: the ``status`` to report instead, for ``diffusion_status`` faults.
        """
        denied = self._authorised(request)
        if denied is not None:
            return denied
        diffusion_id = request.match_info["diffusion_id"]
        diffusion = self.state.get_diffusion(diffusion_id)
        if diffusion is None:
            return error_response(404, f"Diffusion {diffusion_id!r} not found")
        return web.json_response(diffusion.record(time.time(), self._base_url(request), status_override))

    async def image(self, request: web.Request) -> web.Response:
        """``GET /images/{id}/{index}.png``: the picture, no auth, like a CDN."""
        diffusion = self.state.get_diffusion(request.match_info["diffusion_id"])
        index = int(request.match_info["index"])
        if (
            diffusion is None
            or index >= diffusion.image_count
            or diffusion.status_at(time.time()) != "FINISHED"
        ):
            return error_response(404, "Image not found")
        loop = asyncio.get_running_loop()
        png = await loop.run_in_executor(None, render_png, diffusion.prompt, index, diffusion.image_size)
        if request.method == "GET":
            self.state.count_image_download("Authorization" in request.headers)
        return web.Response(
            body=png,
            content_type="image/png",
            headers={"Cache-Control": "public, max-age=86400, immutable"},
        )

    # -- control plane ---------------------------------------------------------------------------

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.stats())

    async def reset(self, request: web.Request) -> web.Response:
        self.state.reset()
        return web.json_response({"reset": True})

    async def list_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.pending_faults())

    async def add_faults(self, request: web.Request) -> web.Response:
        """Queue faults: a JSON list of fault objects (or a single one)."""
        try:
            data = await request.json()
        except ValueError:
            return error_response(400, "Request body is not JSON")
        items = data if isinstance(data, list) else [data]
        try:
            faults = [Fault.from_dict(item) for item in items]
        except ValueError as exc:
            return error_response(400, str(exc))
        return web.json_response({"pending": self.state.add_faults(faults)})

    async def get_config(self, request: web.Request) -> web.Response:
        return web.json_response(dataclasses.asdict(self.state.config))

    async def set_config(self, request: web.Request) -> web.Response:
        """Change knobs at runtime, e.g. ``{"latency": 60}``; 400 on an unknown knob or bad value."""
        try:
            data = await request.json()
        except ValueError:
            return error_response(400, "Request body is not JSON")
        if not isinstance(data, dict):
            return error_response(400, "Request body must be a JSON object of knobs")
        try:
            config = self.state.configure(data)
        except (ValueError, TypeError) as exc:
            return error_response(400, str(exc))
        return web.json_response(dataclasses.asdict(config))

    async def list_diffusions(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.diffusions())


def _url_host(host: str) -> str:
    """A host clients can dial: wildcard binds become loopback, IPv6 literals get brackets."""
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    if ":" in host:
        return f"[{host}]"
    return host


class ServerCore:
    """Serves one :class:`EmulatorState` on the running loop; used by :class:`Emulator` and the CLI.

    The listening socket is created here rather than through ``web.TCPSite`` so the protocol
    factory can be wrapped: each call is one accepted TCP connection, which is what
    ``stats()["connections"]`` counts (keep-alive reuse shows as fewer connections).
    """

    def __init__(self, state: EmulatorState, tls_files: TLSFiles | None = None) -> None:
        self.state = state
        self.tls_files = tls_files
        self.url: str | None = None
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        """Listen and return the base URL."""
        config = self.state.config
        app = EmulatorApp(self.state).build()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        self._runner = runner
        protocol_factory = runner.server
        assert protocol_factory is not None

        def counting_factory() -> asyncio.Protocol:
            self.state.count_connection()
            return protocol_factory()

        ssl_context = server_ssl_context(self.tls_files) if self.tls_files else None
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                counting_factory, config.host, config.port, ssl=ssl_context, reuse_address=True
            )
        except BaseException:
            await runner.cleanup()
            raise
        self.port = self._server.sockets[0].getsockname()[1]
        scheme = "https" if self.tls_files else "http"
        self.url = f"{scheme}://{_url_host(config.host)}:{self.port}"
        log.debug("GetImage.io emulator listening on %s", self.url)
        return self.url

    async def stop(self) -> None:
        """Stop accepting, close the connections (in-flight requests get a second), clean up.

        Transports still open after aiohttp's graceful close are aborted: a TLS close waits for
        the peer's close_notify, which an idle keep-alive client never sends, and a loop that
        ends first would leak the socket.
        """
        if self._server is not None:
            self._server.close()
        if self._runner is not None:
            server = self._runner.server
            handlers = server.connections if server is not None else []
            transports = [handler.transport for handler in handlers if handler.transport is not None]
            await self._runner.cleanup()
            self._runner = None
            for transport in transports:
                transport.abort()
            await asyncio.sleep(0)  # let the aborted transports close their sockets
        if self._server is not None:
            try:
                await asyncio.wait_for(self._server.wait_closed(), timeout=2.0)
            except TimeoutError:
                log.warning("Emulator connections still open after shutdown; abandoning them")
            self._server = None


def prepare_tls(config: EmulatorConfig) -> tuple[TLSFiles | None, str | None]:
    """Mint certificates when ``config.tls``; return them and a temp dir to delete at stop."""
    if not config.tls:
        return None, None
    temp_dir = None
    directory = config.cert_dir
    if directory is None:
        directory = temp_dir = tempfile.mkdtemp(prefix="getimage-emulator-tls-")
    return create_certificates(directory, hosts=(config.host,)), temp_dir


class Emulator:
    """A GetImage.io emulator on a background thread, for tests and scripts in this process.

    ::

        with Emulator(latency=0.2, failing_prompts=("forbidden",)) as emulator:
            requests.post(f"{emulator.url}/v1/diffusions", ...)
            assert emulator.stats()["submissions"] == 1

    :param config: a full configuration; defaults to :class:`EmulatorConfig` defaults.
    :param knobs: individual :class:`EmulatorConfig` fields overriding ``config``.
    """

    def __init__(self, config: EmulatorConfig | None = None, **knobs: Any) -> None:
        base = config if config is not None else EmulatorConfig()
        self._state = EmulatorState(base.updated(knobs) if knobs else base)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._core: ServerCore | None = None
        self._tls_files: TLSFiles | None = None
        self._temp_dir: str | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> Emulator:
        """Start serving on a daemon thread; return once the socket listens.

        :raises RuntimeError: if already started or if the server could not start (e.g. port in use).
        """
        with self._lock:
            if self._thread is not None:
                raise RuntimeError("emulator already started")
            self._tls_files, self._temp_dir = prepare_tls(self._state.config)
            core = ServerCore(self._state, self._tls_files)
            ready = threading.Event()
            failure: list[BaseException] = []

            async def main() -> None:
                self._loop = asyncio.get_running_loop()
                self._stop_event = asyncio.Event()
                try:
                    await core.start()
                except BaseException as exc:
                    failure.append(exc)
                    ready.set()
                    return
                ready.set()
                try:
                    await self._stop_event.wait()
                finally:
                    await core.stop()

            thread = threading.Thread(
                target=asyncio.run, args=(main(),), name="getimage-emulator", daemon=True
            )
            thread.start()
            ready.wait()
            if failure:
                thread.join()
                self._loop = self._stop_event = None
                self._cleanup_tls()
                raise RuntimeError(f"GetImage.io emulator failed to start: {failure[0]}") from failure[0]
            self._thread, self._core = thread, core
            return self

    def stop(self) -> None:
        """Shut down and join the thread; safe to call twice or before :meth:`start`."""
        with self._lock:
            thread, loop, stop_event = self._thread, self._loop, self._stop_event
            if thread is None:
                return
            if loop is not None and stop_event is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):  # the loop closed in between
                    loop.call_soon_threadsafe(stop_event.set)
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("GetImage.io emulator thread did not stop within 10 s")
            self._thread = self._loop = self._stop_event = None
            self._cleanup_tls()

    def _cleanup_tls(self) -> None:
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None

    def __enter__(self) -> Emulator:
        return self.start() if self._thread is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = self._core.url if self._core is not None and self._thread is not None else "stopped"
        return f"<Emulator {where}>"

    # -- addresses -------------------------------------------------------------------------------

    def _started_core(self) -> ServerCore:
        if self._core is None or self._core.url is None:
            raise RuntimeError("emulator is not started; call start() or use it as a context manager")
        return self._core

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234`` (``https://`` in TLS mode, same host)."""
        url = self._started_core().url
        assert url is not None
        return url

    @property
    def port(self) -> int:
        port = self._started_core().port
        assert port is not None
        return port

    @property
    def api_key(self) -> str:
        """The first accepted key, the one to hand to a client under test."""
        return self._state.config.api_keys[0]

    @property
    def ca_bundle(self) -> str | None:
        """PEM file of the CA that signed the server certificate (TLS mode), else ``None``."""
        return self._tls_files.ca_bundle if self._tls_files is not None else None

    @property
    def config(self) -> EmulatorConfig:
        """The current knobs (a frozen snapshot)."""
        return self._state.config

    # -- control ---------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The same counters as ``GET /_emulator/stats``."""
        return self._state.stats()

    def reset(self) -> None:
        """Forget diffusions, stats and pending faults (the knobs stay)."""
        self._state.reset()

    def inject(self, *faults: Fault) -> None:
        """Queue scripted faults, served in order to the matching ``/v1/*`` requests."""
        self._state.add_faults(faults)

    def configure(self, **knobs: Any) -> EmulatorConfig:
        """Change knobs at runtime (host, port, tls and cert_dir excepted); return the new config."""
        return self._state.configure(knobs, running=self._thread is not None)

    def diffusions(self) -> list[dict[str, Any]]:
        """Every diffusion as ``GET /_emulator/diffusions`` lists it, with the body as received."""
        return self._state.diffusions()

    def airflow_connection(self, conn_type: str = "getimage", **extra: Any) -> str:
        """JSON for an ``AIRFLOW_CONN_<ID>`` variable pointing at this emulator.

        In TLS mode the extra carries ``verify`` = the CA bundle, so the hook verifies for real.
        """
        extras: dict[str, Any] = {}
        if self.ca_bundle is not None:
            extras["verify"] = self.ca_bundle
        extras.update(extra)
        connection = {"conn_type": conn_type, "host": self.url, "password": self.api_key, "extra": extras}
        return json.dumps(connection)

    def airflow_env(self, conn_id: str = "getimage_default", **extra: Any) -> dict[str, str]:
        """``{"AIRFLOW_CONN_<CONN_ID>": ...}``, ready for ``monkeypatch.setenv`` or ``subprocess`` env."""
        return {f"AIRFLOW_CONN_{conn_id.upper()}": self.airflow_connection(**extra)}
