"""
A hostile HTTP server on loopback: scripted answers per path that a broken or malicious API sends.

Unlike the emulator (a faithful stand-in) and ``tests/image_server.py`` (a misbehaving CDN), this
server plays an attacker or a broken proxy in front of the API: a body that never ends, a 200 MB
body, a body (or the status line and headers) that trickles one byte a second, a body that echoes
the request's headers (so the ``Authorization`` header comes back), or any JSON at all. A thread,
real sockets, HTTP/1.1.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

__all__ = ["Body", "HostileServer", "Play", "echo_headers", "json_body", "widest_record"]

Body = Literal["whole", "endless", "huge", "trickle", "headers_trickle"]
"""
How the answer goes out: ``whole`` (the bytes, with ``Content-Length``), ``endless`` (the bytes
repeated forever, no length), ``huge`` (200 MB declared and sent as fast as the client reads),
``trickle`` (one byte a second, no length), ``headers_trickle`` (the status line and headers one
byte a second, each byte within the client's read timeout, then the body whole).
"""
HUGE = 200 * 1024 * 1024


@dataclass(frozen=True)
class Play:
    """
    One scripted answer.

    :param status: the HTTP status.
    :param body: the bytes to send, or a function of the request's headers (to echo them).
    :param stream: how the body goes out (:data:`Body`).
    :param content_type: the ``Content-Type`` header.
    """

    status: int = 200
    body: bytes | Callable[[dict[str, str]], bytes] = b"{}"
    stream: Body = "whole"
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)

    def payload(self, request_headers: dict[str, str]) -> bytes:
        return self.body(request_headers) if callable(self.body) else self.body


def json_body(value: Any) -> bytes:
    """Any JSON value as a body."""
    return json.dumps(value).encode()


def widest_record(status: str, *, max_url_length: int = 2048, max_images: int = 100) -> dict[str, Any]:
    """
    A record at the maximum of every field the provider keeps, in the characters JSON escapes the
    widest: every free-text field far over its clip, and more image URLs than are counted, each
    exactly ``max_url_length`` characters as JSON (half of them non-ASCII). About 0.9 MB as UTF-8.
    """
    wide = "\u2028"  # a line separator: six bytes as escaped JSON, three as UTF-8
    prefix = "https://cdn.example.com/{:03d}/"
    urls = [
        (prefix.format(n) + "\u00e9" * 300).ljust(max_url_length - 5 * 300, "u")
        if n % 2
        else prefix.format(n).ljust(max_url_length, "u")
        for n in range(max_images + 20)
    ]
    return {
        "id": wide * 5_000,
        "status": status,
        "finishedAt": wide * 5_000,
        "message": wide * 50_000,
        "images": ["javascript:alert(1)", "https://cdn.example.com/" + "x" * 50_000, *urls],
        "blob": wide * 50_000,
    }


def echo_headers(template: Callable[[str], Any]) -> Callable[[dict[str, str]], bytes]:
    """A body that holds the request's headers (``Authorization`` included), as a careless server's."""

    def body(headers: dict[str, str]) -> bytes:
        return json_body(template(json.dumps(headers)))

    return body


class HostileServer:
    """Serve a :class:`Play` per path (any method); every request is counted per path."""

    def __init__(self) -> None:
        self._plays: dict[str, Play] = {}
        self.hits: dict[str, int] = {}
        self.connections = 0
        """TCP connections accepted (a keep-alive client makes one for many requests)."""
        self._lock = threading.Lock()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                with server._lock:
                    server.connections += 1
                super().setup()

            def do_GET(self) -> None:
                server._serve(self)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                server._serve(self)

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hostile-server", daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HostileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._closing.set()  # ends the endless and trickling bodies still being sent
        self._httpd.shutdown()
        self._httpd.server_close()

    def play(self, path: str, play: Play) -> str:
        """Answer ``path`` with ``play`` from now on; returns its URL."""
        with self._lock:
            self._plays[path] = play
        return self.url + path

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?")[0]
        with self._lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            play = self._plays.get(path, Play(404, json_body({"error": {"message": "unknown path"}})))
        payload = play.payload(dict(handler.headers.items()))
        if play.stream == "headers_trickle":
            self._trickle_head(handler, play, payload)
            return
        handler.send_response(play.status)
        handler.send_header("Content-Type", play.content_type)
        for name, value in play.headers.items():
            handler.send_header(name, value)
        if play.stream == "whole":
            handler.send_header("Content-Length", str(len(payload)))
        elif play.stream == "huge":
            handler.send_header("Content-Length", str(HUGE))
        else:
            handler.send_header("Connection", "close")  # the body ends when the connection does
        handler.end_headers()
        try:
            for chunk in self._chunks(play.stream, payload):
                handler.wfile.write(chunk)
                handler.wfile.flush()
        except OSError:  # the client gave up: what a bounded client does
            handler.close_connection = True

    def _trickle_head(self, handler: BaseHTTPRequestHandler, play: Play, payload: bytes) -> None:
        """The status line and headers one byte a second (the body whole, if the client waits)."""
        head = (
            f"HTTP/1.1 {play.status} Hostile\r\nContent-Type: {play.content_type}\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        handler.close_connection = True
        try:
            for byte in head:
                if self._closing.wait(1.0):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
            handler.wfile.write(payload)
        except OSError:  # the client gave up: what a bounded client does
            pass

    def _chunks(self, stream: Body, payload: bytes) -> Iterator[bytes]:
        if stream == "whole":
            yield payload
            return
        if stream == "trickle":
            for byte in payload:
                if self._closing.wait(1.0):
                    return
                yield bytes([byte])
            return
        block = (payload or b" ") * max(1, 64 * 1024 // max(1, len(payload)))
        sent = 0
        while not self._closing.is_set() and (stream == "endless" or sent < HUGE):
            piece = block if stream == "endless" else block[: HUGE - sent]
            sent += len(piece)
            yield piece
            if stream == "endless" and sent > 50 * HUGE:  # a safety stop for a client that never stops
                return
