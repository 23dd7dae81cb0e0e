"""
A runaway HTTP server on loopback: answers that never end, are huge, or trickle a byte at a time.

The emulator behaves like the real service, faults included; this server behaves like what may
stand in front of it (a broken proxy, an attacker in the middle). Raw sockets, so it can break the
rules an HTTP library would keep: a body that never ends, headers that promise more than comes.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Literal

Behaviour = Literal["endless", "huge", "trickle", "huge_error"]

HUGE_BYTES = 200 * 1024 * 1024
"""What a ``huge`` answer announces (and would send, if read)."""


class RunawayServer:
    """Every request gets the same hostile answer; stops with the test (daemon threads, closed socket)."""

    def __init__(self, behaviour: Behaviour, content_type: str = "application/json") -> None:
        self.behaviour = behaviour
        self.content_type = content_type
        self.requests = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def start(self) -> RunawayServer:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._socket.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        self.requests += 1
        head = f"Content-Type: {self.content_type}\r\nConnection: close\r\n"
        try:
            client.recv(65536)
            if self.behaviour == "endless":
                client.sendall(f"HTTP/1.1 200 OK\r\n{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                chunk = b"[" * 65536
                while not self._stopped.is_set():
                    client.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            elif self.behaviour in ("huge", "huge_error"):
                status = "200 OK" if self.behaviour == "huge" else "500 Internal Server Error"
                client.sendall(f"HTTP/1.1 {status}\r\n{head}Content-Length: {HUGE_BYTES}\r\n\r\n".encode())
                chunk = b'{"status": "' + b"x" * 65536
                sent = 0
                while sent < HUGE_BYTES and not self._stopped.is_set():
                    client.sendall(chunk)
                    sent += len(chunk)
            else:  # trickle: a valid start, then one byte every 0.2 s, never the end
                client.sendall(f"HTTP/1.1 200 OK\r\n{head}Content-Length: 100000\r\n\r\n".encode())
                while not self._stopped.is_set():
                    client.sendall(b" ")
                    time.sleep(0.2)
        except OSError:
            pass  # the client gave up: what a bounded client does
        finally:
            client.close()
