"""
A scripted image host on loopback: real HTTP, answers chosen per request, every request recorded.

The emulator serves real images but keeps its image route clean of faults (a CDN is not the API),
so the download's failure paths (a 503, a connection cut mid-image, a wrong content type, a
redirect) are played by this small server instead. It is a real socket and a real HTTP/1.1
exchange, so ``requests`` sees exactly what it would see from a misbehaving CDN.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


@dataclass(frozen=True)
class Answer:
    """
    One scripted answer.

    :param body: the bytes to send.
    :param cut_after: send only this many bytes of the body, then close (after a full
        ``Content-Length``): the client sees the connection die mid-image.
    :param content_length: send ``Content-Length`` (off: the body ends when the connection closes).
    """

    status: int = 200
    content_type: str | None = "image/png"
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    cut_after: int | None = None
    content_length: bool = True


class ImageServer:
    """Serve scripted answers per path; the last answer of a path repeats once the script runs out."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scripts: dict[str, list[Answer]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                answer = server._next(self.path, dict(self.headers.items()))
                self.send_response(answer.status)
                if answer.content_type is not None:
                    self.send_header("Content-Type", answer.content_type)
                if answer.content_length:
                    self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                if answer.cut_after is not None or not answer.content_length:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                body = answer.body if answer.cut_after is None else answer.body[: answer.cut_after]
                self.wfile.write(body)
                self.wfile.flush()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: the test reads ``server.requests`` instead."""

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="image-server", daemon=True
        )

    def start(self) -> ImageServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def script(self, path: str, *answers: Answer) -> str:
        """Answer the next GETs of ``path`` with ``answers`` in order; return the full URL."""
        with self._lock:
            self._scripts[path] = list(answers)
        return self.url + path

    def hits(self, path: str) -> int:
        with self._lock:
            return sum(1 for seen, _ in self.requests if seen == path)

    def _next(self, path: str, headers: dict[str, str]) -> Answer:
        with self._lock:
            self.requests.append((path, headers))
            script = self._scripts.get(path)
            if not script:
                return Answer(status=404, content_type="text/plain", body=b"not scripted")
            return script.pop(0) if len(script) > 1 else script[0]


def files_in(folder: Path) -> list[str]:
    """Every file under ``folder`` (hidden ones too: a leftover ``.part`` must show)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
