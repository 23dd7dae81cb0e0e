"""
The emulator the clients poll: its own process (TLS on, loopback), driven over its control endpoints.

It runs apart from the client so that its CPU is not the client's; the benchmark reads its
counters (polls, connections, answers) to turn the client's CPU into a cost per poll.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import subprocess
import sys
import time
import urllib.request
from typing import TYPE_CHECKING, Any

from benchmarks.trigger_polling.common import API_KEY

if TYPE_CHECKING:
    from pathlib import Path


class EmulatorProcess:
    """The emulator in its own process (TLS on), driven over its control endpoints."""

    def __init__(self, workdir: Path, latency: float, jitter: float) -> None:
        import psutil

        self.cert_dir = workdir / "certs"
        ready_file = workdir / "emulator.url"
        self._log = (workdir / "emulator.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "airflow_provider_getimage.emulator",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--tls",
            "--cert-dir",
            str(self.cert_dir),
            "--latency",
            str(latency),
            "--latency-jitter",
            str(jitter),
            "--ready-file",
            str(ready_file),
            "--log-level",
            "WARNING",
        ]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start; see {workdir / 'emulator.log'}")
            time.sleep(0.05)
        self.url = ready_file.read_text().strip()
        self.ca_bundle = str(self.cert_dir / "ca.pem")
        self.ssl = ssl.create_default_context(cafile=self.ca_bundle)
        self.ps = psutil.Process(self.proc.pid)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One control request on its own connection (urllib closes it), so it counts as one."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self.ssl, timeout=60) as response:
            return json.load(response)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def submit_diffusions(
    emulator: EmulatorProcess, n: int, concurrency: int, latency: float, jitter: float
) -> list[str]:
    """
    Create the N diffusions up front, outside the measurement, so they all finish ``latency``
    (+/- ``jitter``) after the last submission.

    Submitting 5000 takes seconds: with one fixed latency the first diffusions would be half done
    (or finished) before any poller starts, and polls per generation and lateness would depend on
    N. So submission goes in chunks, each created with the latency plus the estimated time the
    remaining chunks will take (the emulator's latency applies to diffusions created after a change).
    """
    import aiohttp

    chunk = concurrency  # a small first chunk measures the rate; then twentieths
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=emulator.ssl)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    ids: list[str] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(index: int) -> str:
            body = {"prompt": f"benchmark diffusion {index}", "model": "midjourney"}
            async with session.post(f"{emulator.url}/v1/diffusions", json=body) as response:
                response.raise_for_status()
                record = await response.json()
                return str(record["id"])

        seconds_per_diffusion = 1 / 1500  # a first guess, until a chunk on warm connections is timed
        try:
            while len(ids) < n:
                ahead = (n - len(ids)) * seconds_per_diffusion
                # Blocking on purpose: nothing else runs on this loop between chunks.
                knobs = {"latency": latency + ahead, "latency_jitter": jitter}
                emulator.control("POST", "/_emulator/config", knobs)
                batch = range(len(ids), min(n, len(ids) + chunk))
                started = time.monotonic()
                ids += await asyncio.gather(*(one(index) for index in batch))
                if batch.start > 0:  # the first chunk also paid for the TLS handshakes
                    seconds_per_diffusion = (time.monotonic() - started) / len(batch)
                chunk = max(concurrency, math.ceil(n / 20))
        finally:
            emulator.control("POST", "/_emulator/config", {"latency": latency, "latency_jitter": jitter})
    return ids
