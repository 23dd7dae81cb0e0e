"""The emulated GetImage.io API as an aiohttp application: routes, handlers, faults on the wire.

It fakes the remote API over real sockets, faults included, so a client is tested on the
wire (connection reuse, retries, duplicate POSTs) rather than against mocks. It shares no code
with the provider's hooks on purpose: a wrong rule must not hide on both sides. What to do with
a request is decided in :mod:`.state`; :meth:`EmulatorApp._serve` is the one place a
:class:`~.config.Fault` becomes a response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from airflow_provider_getimage.emulator.config import Fault
from airflow_provider_getimage.emulator.images import render_png
from airflow_provider_getimage.emulator.state import iso_utc

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator.state import EmulatorState

log = logging.getLogger("airflow_provider_getimage.emulator")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

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
_IMAGE_PATH = "/images/{diffusion_id}/{index:\\d+}.png"


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
