"""Shared helpers of the emulator tests: HTTP calls with the emulator's key, and error checks."""

from __future__ import annotations

import os
import re
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator

REPO_ROOT = Path(__file__).resolve().parents[2]
ISO_MILLIS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-1[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")


def auth(emulator: Emulator) -> dict[str, str]:
    return {"Authorization": f"Bearer {emulator.api_key}"}


def submit(emulator: Emulator, session=requests, **body) -> requests.Response:
    body.setdefault("prompt", "a lighthouse in a storm")
    return session.post(f"{emulator.url}/v1/diffusions", json=body, headers=auth(emulator), timeout=5)


def get(emulator: Emulator, diffusion_id: str, session=requests) -> requests.Response:
    return session.get(f"{emulator.url}/v1/diffusions/{diffusion_id}", headers=auth(emulator), timeout=5)


def wait_terminal(emulator: Emulator, diffusion_id: str, timeout: float = 5.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = get(emulator, diffusion_id).json()
        if record["status"] in ("FINISHED", "FAILED"):
            return record
        time.sleep(0.05)
    raise AssertionError(f"diffusion {diffusion_id} not terminal after {timeout}s")


def assert_error(response: requests.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str)
    assert error["message"]
    return error["message"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env() -> dict[str, str]:
    """This environment, with the repository importable, for a child Python process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env
