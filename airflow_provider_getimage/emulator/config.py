"""Knobs and scripted faults of the GetImage.io emulator.

Standard library only: the pytest plugin and the package ``__init__`` import this module eagerly,
so it must stay cheap (no aiohttp, no cryptography).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

DEFAULT_API_KEY = "emulator-key"
"""The API key an emulator accepts unless told otherwise."""

ImageFormat = Literal["strings", "objects"]
FaultKind = Literal["status", "status_after", "drop", "drop_after", "delay", "body", "diffusion_status"]

FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)
IMAGE_FORMATS: tuple[str, ...] = get_args(ImageFormat)


def _as_str_tuple(name: str, value: Any) -> tuple[str, ...]:
    """Normalise a knob that holds strings, so ``"key"`` and ``["key"]`` both mean one entry."""
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, Iterable):
        raise ValueError(f"{name} must be a string or a list of strings, got {value!r}")
    items = tuple(value)
    if not all(isinstance(item, str) for item in items):
        raise ValueError(f"{name} must hold strings only, got {value!r}")
    return items


def _check_share(name: str, value: float) -> None:
    """Reject a probability outside [0, 1], which would silently mean 'never' or 'always'."""
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")


def knob(
    help: str,
    *,
    flag: str | None = None,
    metavar: str | None = None,
    cli_default: Any = dataclasses.MISSING,
    startup_only: bool = False,
) -> dict[str, Any]:
    """The ``metadata`` of an :class:`EmulatorConfig` field, from which ``cli.py`` makes its flag.

    Kept beside the field so a new knob is one edit: its default, type and ``--help`` line together.

    :param help: the flag's ``--help`` line; every knob needs one.
    :param flag: the flag's name, when it is not ``--`` plus the field name with dashes.
    :param metavar: the placeholder shown in ``--help``.
    :param cli_default: the flag's default, when the command differs from the fixtures and
        :class:`Emulator` (``--port`` listens on 8000, an in-process emulator on a free port).
    :param startup_only: the knob is fixed once the server listens (a new socket or certificate
        would be needed), so :meth:`EmulatorConfig.updated` refuses it while running.
    """
    metadata: dict[str, Any] = {"help": help, "startup_only": startup_only}
    if flag is not None:
        metadata["flag"] = flag
    if metavar is not None:
        metadata["metavar"] = metavar
    if cli_default is not dataclasses.MISSING:
        metadata["cli_default"] = cli_default
    return metadata


@dataclass(frozen=True)
class EmulatorConfig:
    """Every knob of the emulator; all of them are CLI flags and fixture keyword arguments.

    Frozen so a snapshot handed to a test never changes under it; runtime changes
    (:meth:`Emulator.configure`, ``POST /_emulator/config``) swap in a new instance.
    Timing knobs apply to diffusions created after the change. Each field's :func:`knob`
    metadata is its ``getimage-emulator`` flag, so a new knob needs no edit elsewhere.
    """

    host: str = field(default="127.0.0.1", metadata=knob("address to bind", startup_only=True))
    port: int = field(
        default=0,
        metadata=knob("port to bind; 0 picks a free one", cli_default=8000, startup_only=True),
    )
    api_keys: tuple[str, ...] = field(
        default=(DEFAULT_API_KEY,),
        metadata=knob("accepted API key, repeatable", flag="--api-key", metavar="KEY"),
    )
    latency: float = field(default=2.0, metadata=knob("seconds per generation"))
    latency_jitter: float = field(default=0.0, metadata=knob("uniform +/- seconds on latency"))
    failure_rate: float = field(default=0.0, metadata=knob("share of diffusions ending FAILED"))
    failing_prompts: tuple[str, ...] = field(
        default=(),
        metadata=knob(
            "prompts containing TEXT (case-insensitive) end FAILED; repeatable",
            flag="--fail-prompt",
            metavar="TEXT",
        ),
    )
    rate_limit: float | None = field(
        default=None, metadata=knob("max /v1 requests per second before answering 429")
    )
    retry_after: float = field(default=1.0, metadata=knob("Retry-After seconds sent with 429"))
    error_rate: float = field(default=0.0, metadata=knob("share of /v1 requests answered 5xx"))
    drop_rate: float = field(default=0.0, metadata=knob("share of /v1 requests whose connection drops"))
    tls: bool = field(
        default=False, metadata=knob("serve HTTPS with a freshly minted certificate", startup_only=True)
    )
    cert_dir: str | None = field(
        default=None, metadata=knob("where to write the TLS files (default: a temp dir)", startup_only=True)
    )
    image_format: ImageFormat = field(default="strings", metadata=knob("shape of `images` entries"))
    images_per_diffusion: int = field(default=4, metadata=knob("images per diffusion"))
    image_size: int = field(default=256, metadata=knob("PNG width and height"))
    seed: int | None = field(default=None, metadata=knob("seed for every random decision"))

    def __post_init__(self) -> None:
        """Validate and normalise, so a bad knob fails at start instead of mid-test."""
        object.__setattr__(self, "api_keys", _as_str_tuple("api_keys", self.api_keys))
        object.__setattr__(self, "failing_prompts", _as_str_tuple("failing_prompts", self.failing_prompts))
        if not self.api_keys or not all(self.api_keys):
            raise ValueError("api_keys must hold at least one non-empty key")
        for name in ("latency", "latency_jitter", "retry_after"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if value < 0:
                raise ValueError(f"{name} must not be negative, got {value!r}")
        for name in ("failure_rate", "error_rate", "drop_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a number, got {value!r}")
            _check_share(name, value)
        if self.rate_limit is not None and (
            isinstance(self.rate_limit, bool)
            or not isinstance(self.rate_limit, int | float)
            or self.rate_limit <= 0
        ):
            raise ValueError(f"rate_limit must be a positive number or None, got {self.rate_limit!r}")
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image_format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if not isinstance(self.images_per_diffusion, int) or not 0 <= self.images_per_diffusion <= 64:
            raise ValueError(f"images_per_diffusion must be 0..64, got {self.images_per_diffusion!r}")
        if not isinstance(self.image_size, int) or not 8 <= self.image_size <= 2048:
            raise ValueError(f"image_size must be an int in 8..2048, got {self.image_size!r}")
        if not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ValueError(f"port must be an int in 0..65535, got {self.port!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an int or None, got {self.seed!r}")

    @classmethod
    def knob_names(cls) -> tuple[str, ...]:
        """Names accepted by :meth:`updated`, the fixtures and ``POST /_emulator/config``."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def updated(self, knobs: Mapping[str, Any], *, running: bool = False) -> EmulatorConfig:
        """Return a copy with ``knobs`` applied; ``running`` refuses knobs bound to the socket.

        :raises ValueError: on an unknown knob, a startup-only knob while running, or a bad value.
        """
        unknown = sorted(set(knobs) - set(self.knob_names()))
        if unknown:
            raise ValueError(f"unknown knob(s): {', '.join(unknown)}")
        if running:
            fixed = sorted(STARTUP_ONLY_KNOBS & set(knobs))
            if fixed:
                raise ValueError(f"knob(s) cannot change while running: {', '.join(fixed)}")
        return dataclasses.replace(self, **dict(knobs))


#: Knobs fixed once the server listens: changing them would need a new socket or certificate.
STARTUP_ONLY_KNOBS = frozenset(
    spec.name for spec in dataclasses.fields(EmulatorConfig) if spec.metadata["startup_only"]
)


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, served to the next ``times`` matching ``/v1/*`` requests.

    Scripted faults are deterministic, so a test can stage exactly the failure it wants to prove
    a client survives. The random knobs (``rate_limit``, ``error_rate``, ``drop_rate``) draw
    their outcome as a :class:`Fault` too, so one place turns every fault into a response.

    :param kind: ``status`` answers ``status`` at once (JSON error body unless ``body``);
        ``status_after`` processes the request first (a POST creates its diffusion) then answers
        ``status``, the ambiguous gateway-timeout case; ``drop`` closes the connection with no
        response before processing; ``drop_after`` processes the request then closes with no
        response; ``delay`` sleeps ``delay`` seconds then answers normally; ``body`` answers 200
        with the raw ``body`` as ``content_type``; ``diffusion_status`` answers a
        ``GET /v1/diffusions/{id}`` normally but with its ``status`` replaced by ``value``.
    :param method: HTTP method to match (``"GET"``, ``"POST"``), ``None`` for any.
    :param path: prefix of the request path to match, ``None`` for any ``/v1/`` path.
    :param times: how many matching requests get this fault before it is used up.
    :param retry_after: ``Retry-After`` header value for ``status`` faults (seconds or an HTTP-date).
    """

    kind: FaultKind
    status: int | None = None
    body: str | None = None
    content_type: str = "text/html"
    retry_after: str | None = None
    delay: float = 0.0
    value: str | None = None
    method: str | None = None
    path: str | None = None
    times: int = 1

    def __post_init__(self) -> None:
        """Validate now so a typo in a test fails at ``inject`` time, not as a mystery later."""
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"fault kind must be one of {FAULT_KINDS}, got {self.kind!r}")
        if self.kind in ("status", "status_after") and (
            not isinstance(self.status, int) or not 100 <= self.status <= 599
        ):
            raise ValueError(f"a {self.kind!r} fault needs an HTTP status code, got {self.status!r}")
        if self.kind == "body" and self.body is None:
            raise ValueError("a 'body' fault needs a body")
        if self.kind == "diffusion_status" and not isinstance(self.value, str):
            raise ValueError("a 'diffusion_status' fault needs a string value")
        if self.kind == "delay" and (not isinstance(self.delay, int | float) or self.delay < 0):
            raise ValueError(f"a 'delay' fault needs a non-negative delay, got {self.delay!r}")
        if not isinstance(self.times, int) or self.times < 1:
            raise ValueError(f"times must be a positive int, got {self.times!r}")
        if self.retry_after is not None and not isinstance(self.retry_after, str):
            object.__setattr__(self, "retry_after", format_retry_after(self.retry_after))
        if self.method is not None:
            object.__setattr__(self, "method", self.method.upper())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build a fault from its JSON form, as posted to ``/_emulator/faults``.

        :raises ValueError: on unknown fields or bad values.
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a fault must be a JSON object, got {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(unknown)}")
        if "kind" not in data:
            raise ValueError("a fault needs a 'kind'")
        try:
            return cls(**dict(data))
        except TypeError as exc:
            raise ValueError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        """JSON form, the inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    @property
    def serves_first(self) -> bool:
        """Whether the request is served first (a POST creates its diffusion), then the fault shows."""
        return self.kind in ("status_after", "drop_after")

    @property
    def drops(self) -> bool:
        """Whether the connection closes with no response at all."""
        return self.kind in ("drop", "drop_after")

    def matches(self, method: str, path: str) -> bool:
        """Whether this fault applies to a request; only ``/v1/`` requests are ever faulted."""
        if self.method is not None and self.method != method.upper():
            return False
        if self.path is not None:
            return path.startswith(self.path)
        return path.startswith("/v1/")


def format_retry_after(value: Any) -> str:
    """Render a numeric ``Retry-After`` as whole seconds, rounded up as RFC 9110 requires."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"retry_after must be a string or a number, got {value!r}")
    return str(max(0, math.ceil(value)))
