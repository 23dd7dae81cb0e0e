"""The emulated service's state: diffusions, counters, and which fault each request gets.

No aiohttp here: this is the part that decides (a diffusion's timeline from the clock, the
scripted faults and the random knobs), kept apart from the HTTP layer so it reads, and can be
tested, as plain Python. Every decision is a :class:`Fault` or ``None``; ``app.py`` turns it into
a response.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import logging
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow_provider_getimage.emulator.config import EmulatorConfig, Fault, format_retry_after

if TYPE_CHECKING:
    from collections.abc import Iterable

log = logging.getLogger("airflow_provider_getimage.emulator")

Outcome = Literal["FINISHED", "FAILED"]

_RANDOM_FAILURES = (
    "Generation failed: the model returned no image",
    "Generation failed: upstream model timed out",
    "Generation failed: GPU worker lost",
)
_DIFFUSION_PATH = re.compile(r"^/v1/diffusions/(?P<diffusion_id>[^/]+)$")


def iso_utc(epoch: float) -> str:
    """Render a time the way the real API does: ``2023-01-01T00:00:00.000Z``."""
    stamp = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


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
        """Use up one serving of the first pending fault that matches; the lock is held.

        :param is_poll: the request is ``GET /v1/diffusions/{id}``, the only one a
            ``diffusion_status`` fault can rewrite.
        """
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
        """The fault the random knobs draw for one request (429, drop or 5xx); the lock is held.

        :param method: only a POST can be served before its fault (``*_after``), as a backend
            that carried on behind a failing gateway would create the diffusion.
        """
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
