"""Run the emulator, on the current event loop or on a background thread.

:class:`ServerCore` serves an :class:`~.state.EmulatorState` on the running loop (the CLI uses it
as is); :class:`Emulator` runs one on a daemon thread for tests and scripts, and owns the TLS
set-up, the URLs and the Airflow connection helpers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import tempfile
import threading
from typing import TYPE_CHECKING, Any

from aiohttp import web

from airflow_provider_getimage.emulator.app import EmulatorApp
from airflow_provider_getimage.emulator.config import EmulatorConfig, Fault
from airflow_provider_getimage.emulator.state import EmulatorState
from airflow_provider_getimage.emulator.tls import TLSFiles, create_certificates, server_ssl_context

if TYPE_CHECKING:
    from types import TracebackType

log = logging.getLogger("airflow_provider_getimage.emulator")


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
