"""
The GetImage.io rules, in one place, with no I/O and no Airflow imports.

Both hooks, the operator, the sensor and the trigger call these functions, so a status is
classified, a response is read and a retry is decided the same way on every path. Keeping them
pure makes them testable as tables and keeps the sync and async clients from drifting apart
(they differ only in how they send and how they sleep).
"""

from __future__ import annotations

import email.utils
import functools
import itertools
import json
import math
import re
import time
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlsplit

__all__ = [
    "DEFAULT_BASE_URL",
    "DEFAULT_MODEL",
    "DIFFUSIONS_PATH",
    "Attempt",
    "RetryPolicy",
    "StatusWatch",
    "TokenBucket",
    "base_url",
    "bounded_record",
    "check_diffusion_id",
    "check_max_poll_interval",
    "check_poll_interval",
    "classify",
    "clip",
    "diffusion_path",
    "error_message",
    "failure_message",
    "failure_reason",
    "headers",
    "image_urls",
    "is_batch_result",
    "is_web_url",
    "next_poll_delay",
    "parse_max_bytes",
    "parse_retry_after",
    "parse_timeout",
    "parse_verify",
    "read_response",
    "record_problem",
    "retry_decision",
    "scrub",
    "scrub_value",
    "secret_forms",
    "split_record",
    "submit_body",
    "too_large",
    "web_image_urls",
]

DEFAULT_BASE_URL = "https://api.getimage.io"
DEFAULT_CONN_ID = "getimage_default"
DEFAULT_MODEL = "midjourney"
DIFFUSIONS_PATH = "/v1/diffusions"
DEFAULT_REQUEST_TIMEOUT = 30.0
"""Seconds one API request may take in all: connecting, sending, and the whole answer."""
DEFAULT_MAX_RESPONSE_BYTES = 1024 * 1024
"""The largest API answer read (1 MiB; a diffusion record is about 1 kB): extra ``max_response_bytes``."""
ERROR_BODY_LIMIT = 8 * 1024
"""Of an error answer (4xx/5xx) only this much is read before it is summarised."""
CONNECT_TIMEOUT = 10.0
DEFAULT_POLL_INTERVAL = 5.0
DEFAULT_WAIT_TIMEOUT = 3600.0
BACKOFF_SHARE = 0.1
"""With a ``max_poll_interval``, the wait between polls is this share of the time waited so far."""
MESSAGE_LIMIT = 300
"""Longest error text taken from a response body, so a HTML error page cannot flood a log."""
TEXT_LIMIT = 2000
"""Longest free text from the service (a failure reason) kept in a message, a log line or an event."""
RECORD_LIMIT = 64 * 1024
"""Largest record (as JSON) kept in XCom or a trigger event; a larger one is cut (``bounded_record``)."""
MAX_IMAGES = 100
"""Most image URLs taken from one diffusion; more are ignored."""
MAX_URL_LENGTH = 2048
"""Longest image URL taken, in characters as JSON (escapes included); a longer one is no image."""
IMAGE_URLS_LIMIT = MAX_IMAGES * (MAX_URL_LENGTH + 4)
"""The most bytes a diffusion's image URLs take as a JSON list (a trigger event carries them apart)."""
MAX_ID_LENGTH = 200
"""Longest diffusion id accepted (the service's are 36-character UUIDs)."""
MAX_PROMPT_LENGTH = 10_000
"""Longest prompt accepted, in characters: generous, but a runaway template fails before it is paid for."""
MIN_POLL_INTERVAL = 0.05
"""Shortest ``poll_interval`` accepted, in seconds: rules out a busy loop against the API."""

SUCCESS_STATUSES = frozenset({"FINISHED"})
FAILURE_STATUSES = frozenset({"FAILED", "ERROR", "CANCELED", "CANCELLED", "REJECTED", "EXPIRED"})
RUNNING_STATUSES = frozenset({"NEW", "PROCESSING"})
"""The running statuses seen from the service; any other unknown status is logged once."""
KNOWN_STATUSES = SUCCESS_STATUSES | FAILURE_STATUSES | RUNNING_STATUSES

IMAGE_URL_KEYS = ("url", "imageUrl", "uri", "src")
_HOSTNAME = re.compile(r"^[A-Za-z0-9._~%:-]+$")
"""A host name, IPv4 or IPv6 address (``urlsplit`` strips IPv6 brackets): no spaces or quotes."""

Classification = Literal["success", "failed", "running"]
Failure = Literal[
    "connect", "local", "read_timeout", "connection_lost", "tls", "bad_body", "too_large", "http"
]
"""
Why an attempt failed: ``connect`` (no connection, nothing sent), ``local`` (the client refused to
send it), ``read_timeout`` / ``connection_lost`` (sent, answer lost or not complete in time),
``tls``, ``too_large`` (an answer over the size cap, abandoned), ``bad_body`` (2xx
that is not a JSON object) or ``http`` (an error status).
"""


# --------------------------------------------------------------------------------------- statuses
def classify(status: object) -> Classification:
    """Classify a diffusion status: FINISHED is success, the terminal set is failure, else running."""
    normalised = status.strip().upper() if isinstance(status, str) else ""
    if normalised in SUCCESS_STATUSES:
        return "success"
    if normalised in FAILURE_STATUSES:
        return "failed"
    return "running"


@dataclass(slots=True)
class StatusWatch:
    """
    Remember the last status seen for one diffusion, so each change is logged once.

    ``observe`` answers whether the status changed and whether it is an unknown status seen for
    the first time (so a caller warns once, not on every poll).
    """

    last: str | None = None
    # No set per watch until an unknown status shows up: a triggerer holds a watch per trigger.
    unknown_seen: frozenset[str] = frozenset()

    def observe(self, status: object) -> tuple[bool, bool]:
        text = status.strip().upper() if isinstance(status, str) else ""
        current = clip(text, 100) or "<missing>"
        changed = current != self.last
        self.last = current
        newly_unknown = current not in KNOWN_STATUSES and current not in self.unknown_seen
        if newly_unknown:
            self.unknown_seen |= {current}
        return changed, newly_unknown


def image_urls(diffusion: object) -> list[str]:
    """
    Normalise the ``images`` of a diffusion record to a list of URL strings (SPEC 1).

    An entry may be a URL string or an object holding the URL under one of ``IMAGE_URL_KEYS``;
    entries with no URL are skipped (the raw record keeps them). Never raises, whatever the record
    holds. What counts as an image of the task is :func:`web_image_urls`.
    """
    images = diffusion.get("images") if isinstance(diffusion, Mapping) else None
    if isinstance(images, (str, Mapping)):
        images = [images]
    if not isinstance(images, list):
        return []
    urls = (_entry_url(entry) for entry in images)
    return [url for url in urls if url]


def web_image_urls(diffusion: object) -> list[str]:
    """
    The image URLs that count as a diffusion's images: http(s) URLs of at most ``MAX_URL_LENGTH``
    characters as JSON (a ``javascript:`` or ``file:`` URL is no image), at most ``MAX_IMAGES`` of
    them, so they take at most ``IMAGE_URLS_LIMIT`` bytes wherever they are stored.
    """
    urls = (url for url in image_urls(diffusion) if _json_length(url) <= MAX_URL_LENGTH and is_web_url(url))
    return list(itertools.islice(urls, MAX_IMAGES))


def _json_length(text: str) -> int:
    """Characters of ``text`` once JSON-escaped (quotes excluded): a control character takes six."""
    if len(text) > MAX_URL_LENGTH:  # escapes only lengthen it: no need to escape a long one
        return len(text)
    return len(json.dumps(text)) - 2


def _entry_url(entry: object) -> str:
    """The URL of one ``images`` entry, stripped; empty when it holds none."""
    if isinstance(entry, Mapping):
        entry = next((entry[key] for key in IMAGE_URL_KEYS if _non_blank(entry.get(key))), None)
    return entry.strip() if isinstance(entry, str) else ""


def _non_blank(value: object) -> bool:
    return isinstance(value, str) and bool(value.strip())


def is_web_url(url: str) -> bool:
    """Whether ``url`` is http(s) with a host: what may be fetched or shown as an image."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return False
    return parts.scheme.lower() in ("http", "https") and bool(host)


def failure_message(diffusion: object) -> str:
    """
    The reason a diffusion failed, as the service put it, or its status when it gave none.

    Whole, for a page that cuts it its own way; messages and events use :func:`failure_reason`.
    """
    found = _message_from(diffusion)
    if not found:
        status = diffusion.get("status") if isinstance(diffusion, Mapping) else None
        found = f"diffusion ended with status {status!s}"
    return found


def failure_reason(diffusion: object) -> str:
    """:func:`failure_message` cut to ``TEXT_LIMIT``: a 5 MB reason must not become a 5 MB error or event."""
    return clip(failure_message(diffusion))


def clip(text: str, limit: int = TEXT_LIMIT) -> str:
    """``text`` cut to ``limit`` characters, saying so, so free text from the service stays bounded."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... [{len(text) - limit} more characters cut]"


# ------------------------------------------------------------------------------------ records
RECORD_TEXT_FIELDS = ("status", "message", "detail", "createdAt", "finishedAt")


def _kind(value: object) -> str:
    """A JSON value's type, in JSON's words (for messages)."""
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number" if isinstance(value, (int, float)) else type(value).__name__)


def record_problem(record: object) -> str | None:
    """
    What is wrong with the types of a diffusion record, or None when every field read is usable.

    The fields the provider reads are checked: ``id`` (a string), the text fields (a string or
    null), ``error`` (a string, an object or null), ``images`` (a list of strings and objects, a
    single string or object, or null). Never raises: the caller turns the answer into its error.
    """
    if not isinstance(record, dict):
        return f"the answer is {_kind(record)}, not a JSON object"
    if "id" in record and not isinstance(record["id"], str):
        return f"field 'id' is {_kind(record['id'])}, expected a string"
    for name in RECORD_TEXT_FIELDS:
        if record.get(name) is not None and not isinstance(record[name], str):
            return f"field {name!r} is {_kind(record[name])}, expected a string"
    error = record.get("error")
    if error is not None and not isinstance(error, (str, dict)):
        return f"field 'error' is {_kind(error)}, expected a string or an object"
    images = record.get("images")
    if images is None or isinstance(images, (str, dict)):
        return None
    if not isinstance(images, list):
        return f"field 'images' is {_kind(images)}, expected a list"
    for position, entry in enumerate(images):
        if not isinstance(entry, (str, dict)):
            return f"field 'images[{position}]' is {_kind(entry)}, expected a URL string or an object"
    return None


def bounded_record(record: Mapping[str, Any], limit: int = RECORD_LIMIT) -> dict[str, Any]:
    """
    A record small enough for XCom or a trigger event: its JSON is at most ``limit`` bytes.

    A record that fits is kept as it is; a larger one is cut (:func:`split_record`).
    """
    return split_record(record, limit)[0]


def split_record(
    record: Mapping[str, Any], limit: int = RECORD_LIMIT
) -> tuple[dict[str, Any], list[str] | None]:
    """
    A record cut to at most ``limit`` bytes of JSON, and the image URLs when it had to be cut.

    A record that fits comes back whole, with None. A larger one is cut to ``id``, ``status``,
    ``finishedAt``, the failure reason (clipped) and as many of its image URLs
    (:func:`web_image_urls`) as fit, with a ``truncated`` note saying how many; all its image
    URLs come back apart (at most ``IMAGE_URLS_LIMIT`` bytes), for a trigger event to carry them
    to the task, whose result they are.
    """
    try:
        size = _json_size(record)
    except (TypeError, ValueError, RecursionError):
        size = limit + 1
    if size <= limit:
        return dict(record), None
    kept: dict[str, Any] = {
        name: clip(record[name], MAX_ID_LENGTH)
        for name in ("id", "status", "finishedAt")
        if isinstance(record.get(name), str)
    }
    if classify(record.get("status")) == "failed":
        kept["error"] = failure_reason(record)
    urls = web_image_urls(record)

    def note(count: int) -> str:
        return (
            f"the record was {size} bytes, over the {limit}-byte cap: only id, status, finishedAt, "
            f"the failure reason and {count} of its {len(urls)} image URLs were kept"
        )

    room = limit - _json_size({**kept, "images": [], "truncated": note(len(urls))})
    count = 0
    for url in urls:
        room -= _json_size(url) + 2  # the URL and its ", " separator
        if room < 0:
            break
        count += 1
    kept["images"] = urls[:count]
    kept["truncated"] = note(count)
    if _json_size(kept) > limit:  # only with a limit below a few kilobytes: keep the note alone
        kept = {"truncated": note(0)}
    return kept, urls


def _json_size(value: object) -> int:
    """Bytes of ``value`` as JSON, as XCom and trigger events store it."""
    return len(json.dumps(value, default=str).encode())


# ------------------------------------------------------------------------------------ secrets
def secret_forms(secret: str) -> tuple[str, ...]:
    """
    The forms a secret may take in text a library or a service printed: as it is, ``repr``- and
    JSON-escaped (``\\/`` included), and percent-encoded; longest first, so a longer form is replaced whole.
    """
    raw = secret.encode("utf-8", "surrogatepass")  # quote() refuses a lone surrogate as text
    forms = {
        secret,
        repr(secret)[1:-1],
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),  # JSON may escape "/" (PHP does)
        quote(raw, safe=""),
        quote_plus(raw, safe=""),
    }
    return tuple(sorted((form for form in forms if form), key=len, reverse=True))


def scrub(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every form in ``secrets`` (see :func:`secret_forms`) replaced by ``***``."""
    for form in secrets:
        if form in text:
            text = text.replace(form, "***")
    return text


def scrub_value(value: Any, secrets: tuple[str, ...]) -> Any:
    """A JSON value with every string in it (keys included) scrubbed, for records from the service."""
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub(value, secrets)
    if isinstance(value, list):
        return [scrub_value(item, secrets) for item in value]
    if isinstance(value, dict):
        return {scrub(str(key), secrets): scrub_value(item, secrets) for key, item in value.items()}
    return value


# ------------------------------------------------------------------------------------ connection
def base_url(host: str | None, port: int | None = None) -> str:
    """
    The API base URL from a connection's host and port.

    An empty host means the public API. A host may carry a scheme and a port
    (``http://127.0.0.1:8000``); a bare host name gets ``https://``.

    :raises ValueError: naming the host when it is not an http(s) URL.
    """
    raw = (host or "").strip()
    if not raw:
        return DEFAULT_BASE_URL
    candidate = raw if "://" in raw else f"https://{raw}"
    parts = urlsplit(candidate)
    try:
        parsed_port = parts.port
    except ValueError:
        raise ValueError(f"Connection host {raw!r} has an invalid port.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or not _HOSTNAME.match(parts.hostname):
        raise ValueError(f"Connection host {raw!r} is not an http(s) URL such as {DEFAULT_BASE_URL}.")
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"Connection host {raw!r} must not hold credentials, a query or a fragment.")
    netloc = parts.netloc
    if port and parsed_port is None:
        netloc = f"{netloc}:{int(port)}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}"


def is_loopback(url: str) -> bool:
    """Whether a URL points at this machine (where plain http is no risk to the key)."""
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


def headers(api_key: str) -> dict[str, str]:
    """The request headers: bearer auth and JSON both ways."""
    from airflow_provider_getimage import __version__

    return {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": f"airflow-provider-getimage/{__version__}",
    }


def extra_value(extra: Mapping[str, Any], name: str, conn_type: str = "getimage") -> Any:
    """Read an extra by its plain name or the ``extra__<type>__<name>`` form older UIs store."""
    value = extra.get(name)
    if value in (None, ""):
        value = extra.get(f"extra__{conn_type}__{name}")
    return None if value == "" else value


def parse_verify(value: object) -> bool | str:
    """The ``verify`` extra: a bool (or its string form) or the path of a CA bundle. Default on."""
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() in ("", "true", "1", "yes", "on"):
        return True
    if text.lower() in ("false", "0", "no", "off"):
        return False
    return text


def _extra_number(value: object) -> float:
    """A connection extra as a number; NaN for what is none (a boolean, a word), so callers refuse it."""
    if isinstance(value, bool):
        return math.nan
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan


def parse_max_bytes(value: object) -> int:
    """The ``max_response_bytes`` extra: a positive whole number of bytes (default 1 MiB)."""
    if value is None or value == "":
        return DEFAULT_MAX_RESPONSE_BYTES
    number = _extra_number(value)
    if not math.isfinite(number) or number < 1 or number != int(number):
        raise ValueError(
            f"Connection extra max_response_bytes={value!r} must be a positive whole number of bytes."
        )
    return int(number)


def parse_max_rate(value: object) -> float | None:
    """The ``max_requests_per_second`` extra: a positive number, or None (empty) for no limit."""
    if value is None or value == "":
        return None
    number = _extra_number(value)
    if not math.isfinite(number) or number <= 0:
        raise ValueError(
            f"Connection extra max_requests_per_second={value!r} must be a positive number of "
            "requests a second (or empty for no limit)."
        )
    return number


def too_large(limit: int, setting: str, status_code: int | None = None) -> Attempt:
    """An answer abandoned because it passed its size cap (the cap and its setting named)."""
    return Attempt(
        failure="too_large",
        status_code=status_code,
        message=f"the answer is larger than {limit} bytes ({setting}); it was not read further",
    )


def parse_timeout(value: object) -> float:
    """The ``request_timeout`` extra in seconds; must be a positive number."""
    if value is None or value == "":
        return DEFAULT_REQUEST_TIMEOUT
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"Connection extra request_timeout={value!r} is not a number of seconds.") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"Connection extra request_timeout={value!r} must be a positive number of seconds.")
    return seconds


# -------------------------------------------------------------------------------------- requests
@functools.lru_cache(maxsize=8192)
def diffusion_path(diffusion_id: str) -> str:
    """The path of one diffusion, its id quoted so it cannot change the path (cached: each poll asks)."""
    return f"{DIFFUSIONS_PATH}/{quote(diffusion_id, safe='')}"


def id_problem(diffusion_id: object) -> str | None:
    """
    Why a value is no usable diffusion id, or None when it is one.

    An id becomes a URL path segment and a file name: ``.`` and ``..`` would change the path,
    control characters and whitespace have no place in it, and the service's ids are short.
    Surrounding whitespace (a rendered template's newline) is allowed; the caller strips it.
    """
    if not isinstance(diffusion_id, str):
        return f"it is {_kind(diffusion_id)}, not a string"
    text = diffusion_id.strip()
    if not text:
        return "it is empty or blank"
    if text in (".", ".."):
        return "it is a path segment ('.' or '..')"
    if len(text) > MAX_ID_LENGTH:
        return f"it is {len(text)} characters long, over the {MAX_ID_LENGTH}-character cap"
    if text.isascii() and text.isprintable() and " " not in text:
        return None  # the common case, without a look at each character (every poll checks its id)
    if any(char.isspace() or unicodedata.category(char)[0] == "C" for char in text):
        return "it holds whitespace or a control character"
    return None


def check_diffusion_id(diffusion_id: object) -> str:
    """
    A diffusion id, checked (:func:`id_problem`) and stripped.

    :raises ValueError: naming the (clipped) value and what is wrong with it.
    """
    if type(diffusion_id) is str:
        return _checked_text_id(diffusion_id)
    return _checked_id(diffusion_id)


@functools.lru_cache(maxsize=8192)
def _checked_text_id(diffusion_id: str) -> str:
    """:func:`check_diffusion_id` for a string, cached: a trigger checks its one id every poll."""
    return _checked_id(diffusion_id)


def _checked_id(diffusion_id: object) -> str:
    problem = id_problem(diffusion_id)
    shown = clip(repr(diffusion_id), 80)
    if not isinstance(diffusion_id, str) or not diffusion_id.strip():
        raise ValueError(f"diffusion_id must be a non-empty string, got {shown}.")
    if problem is not None:
        raise ValueError(f"diffusion_id {shown} is not a usable id: {problem}.")
    return str(diffusion_id).strip()


def check_prompt(prompt: object) -> str:
    """A prompt must be a non-blank string: an empty one would be paid for and fail."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a string, got {type(prompt).__name__}: {prompt!r}.")
    if not prompt.strip():
        raise ValueError(f"prompt must not be empty or blank, got {prompt!r}.")
    if len(prompt) > MAX_PROMPT_LENGTH:
        raise ValueError(
            f"prompt is {len(prompt)} characters long, over the {MAX_PROMPT_LENGTH}-character cap: "
            f"{clip(prompt, 60)!r}."
        )
    return prompt


def check_model(model: object) -> str:
    """A model must be a non-blank string."""
    if not isinstance(model, str):
        raise TypeError(f"model must be a string, got {type(model).__name__}: {model!r}.")
    if not model.strip():
        raise ValueError(f"model must not be empty or blank, got {model!r}.")
    return model.strip()


def check_parameters(parameters: object) -> dict[str, Any]:
    """Extra generation parameters must be a JSON object that does not repeat prompt or model."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise TypeError(
            f"parameters must be a dict (a JSON object), got {type(parameters).__name__}: {parameters!r}."
        )
    bad_keys = [key for key in parameters if not isinstance(key, str)]
    if bad_keys:
        raise TypeError(f"parameters keys must be strings, got {bad_keys!r}.")
    clash = sorted({"prompt", "model"} & set(parameters))
    if clash:
        raise ValueError(f"parameters must not contain {clash}: pass them as their own arguments.")
    try:
        json.dumps(parameters, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise TypeError(f"parameters must be JSON-serialisable: {err}.") from None
    return dict(parameters)


def check_positive(name: str, value: object) -> float:
    """A duration in seconds must be a positive, finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number of seconds, got {type(value).__name__}: {value!r}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}.")
    return float(value)


def check_poll_interval(value: object, name: str = "poll_interval") -> float:
    """A poll interval: a positive number of seconds, at least ``MIN_POLL_INTERVAL`` (no busy loop)."""
    seconds = check_positive(name, value)
    if seconds < MIN_POLL_INTERVAL:
        raise ValueError(
            f"{name} must be at least {MIN_POLL_INTERVAL:g} s, got {value!r}: "
            "shorter would poll the API in a busy loop."
        )
    return seconds


def check_max_poll_interval(max_poll_interval: object, poll_interval: float) -> float | None:
    """The backoff cap: None (no backoff), or seconds no shorter than ``poll_interval``."""
    if max_poll_interval is None:
        return None
    cap = check_positive("max_poll_interval", max_poll_interval)
    if cap < poll_interval:
        raise ValueError(
            f"max_poll_interval ({max_poll_interval!r}) must not be shorter than poll_interval "
            f"({poll_interval!r}): the backoff only ever polls less often."
        )
    return cap


def next_poll_delay(poll_interval: float, max_poll_interval: float | None, waited: float) -> float:
    """
    Seconds until the next poll, after ``waited`` seconds of waiting.

    Without a cap, always ``poll_interval``. With one, long generations are polled less often: a
    tenth (``BACKOFF_SHARE``) of the time waited so far, never less than ``poll_interval`` and never
    more than ``max_poll_interval``. So a quick generation is polled exactly as asked, and a slow
    one is noticed at most 10 % (and at most the cap) after it finished, at a fraction of the polls.
    A ``Retry-After`` from the service is honoured on top of this by the hook's retries.
    """
    if max_poll_interval is None:
        return poll_interval
    return min(max_poll_interval, max(poll_interval, waited * BACKOFF_SHARE))


def submit_body(prompt: object, model: object, parameters: object) -> dict[str, Any]:
    """The JSON body of a submission; extra parameters pass through untouched."""
    return {"prompt": check_prompt(prompt), "model": check_model(model), **check_parameters(parameters)}


# -------------------------------------------------------------------------------------- responses
@dataclass(frozen=True)
class Attempt:
    """
    What one HTTP attempt came to: a JSON object, or why it failed.

    ``failure`` is None on success. ``status_code`` is None when no response arrived.
    """

    data: dict[str, Any] | None = None
    failure: Failure | None = None
    status_code: int | None = None
    message: str = ""
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


def _message_from(body: object) -> str:
    if not isinstance(body, Mapping):
        return ""
    error = body.get("error")
    if isinstance(error, Mapping):
        nested = error.get("message")
        if isinstance(nested, str) and nested.strip():
            return nested.strip()
    for candidate in (error, body.get("message"), body.get("detail")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return ""


def error_message(status_code: int | None, text: str, secrets: tuple[str, ...] = ()) -> str:
    """
    A readable error from a response: the message the body holds, else the (truncated) text.

    Always carries the HTTP status, so ``"HTTP 401: Invalid API key"``. ``secrets`` are scrubbed
    before the text is cut, so no part of a key survives a cut through it.
    """
    try:
        body = json.loads(text) if text else None
    except (ValueError, RecursionError):
        body = None
    message = scrub(_message_from(body) or " ".join(text.split()), secrets)
    if len(message) > MESSAGE_LIMIT:
        message = message[:MESSAGE_LIMIT] + "..."
    prefix = f"HTTP {status_code}" if status_code is not None else "No response"
    return f"{prefix}: {message}" if message else prefix


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` in seconds, from its delta-seconds or HTTP-date form; None if absent or bad."""
    if not value:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def read_response(
    status_code: int, body: str | bytes, retry_after: str | None = None, secrets: tuple[str, ...] = ()
) -> Attempt:
    """
    Turn an HTTP answer into an ``Attempt``: a JSON object on 2xx, else a described failure.

    Every ``secrets`` form is scrubbed from the object and the message (a service that echoes the
    ``Authorization`` header must not put the key into records, logs or errors). Never raises.
    """
    if 200 <= status_code < 300:
        try:
            data = json.loads(body)
            if secrets and _may_hold(body, secrets):
                data = scrub_value(data, secrets)
        except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
            data = None
        if isinstance(data, dict):
            return Attempt(data=data, status_code=status_code)
        return Attempt(
            failure="bad_body",
            status_code=status_code,
            message=f"HTTP {status_code} with a body that is not a JSON object: "
            f"{scrub(_text(body), secrets)[:80]!r}",
        )
    return Attempt(
        failure="http",
        status_code=status_code,
        message=error_message(status_code, _text(body), secrets),
        retry_after=parse_retry_after(retry_after),
    )


def _may_hold(body: str | bytes, secrets: tuple[str, ...]) -> bool:
    """
    Whether a JSON body's decoded strings may hold a secret form: only when the body holds one
    itself or an escape (``\\``), since without escapes JSON strings are the body's own text.
    Lets the common answer skip the copy that :func:`scrub_value` makes of every record.
    """
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError:  # another encoding json.loads detects: scrub the slow way
            return True
    if "\\" in body or "\x00" in body:  # an escape, or UTF-16/32 that json.loads decodes otherwise
        return True
    return any(form in body for form in secrets)


def _text(body: str | bytes) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


# ---------------------------------------------------------------------------------------- retries
@dataclass(frozen=True)
class RetryPolicy:
    """
    How hard to retry: attempts in all, exponential backoff bounds, and the cap on ``Retry-After``.

    The default gives up after about a minute of backoff, long enough for a blip or a deploy.
    """

    max_attempts: int = 6
    backoff_base: float = 1.0
    backoff_max: float = 30.0
    retry_after_cap: float = 60.0


NEVER_RETRIED = frozenset({400, 401, 403, 404, 405, 409, 413, 415, 422})


def is_retryable(method: str, attempt: Attempt) -> bool:
    """
    Whether a failed attempt is worth repeating: transient for a GET, provably untaken for a POST.

    GETs retry on transport errors, bad bodies, 429 and 5xx. A submission (POST) is not
    idempotent: it retries only where the server provably did not take it (the connection
    failed before sending, 429, 503).
    """
    code = attempt.status_code
    if attempt.ok or attempt.failure in ("tls", "local") or (code is not None and code in NEVER_RETRIED):
        return False
    if method.upper() == "GET":
        return attempt.failure in ("connect", "read_timeout", "connection_lost", "bad_body", "too_large") or (
            code is not None and (code == 429 or code >= 500)
        )
    return attempt.failure == "connect" or code in (429, 503)


def retry_decision(
    method: str, attempt_number: int, attempt: Attempt, policy: RetryPolicy, jitter: float
) -> float | None:
    """
    Seconds to wait before the next attempt, or None to give up.

    Backoff is exponential with jitter (``jitter`` is a number in [0, 1) from the caller's RNG);
    a ``Retry-After`` on 429/503 wins, capped.
    """
    if attempt_number >= policy.max_attempts or not is_retryable(method, attempt):
        return None
    code = attempt.status_code
    if attempt.retry_after is not None and code in (429, 503):
        return min(attempt.retry_after, policy.retry_after_cap)
    ceiling = min(policy.backoff_max, policy.backoff_base * 2 ** (attempt_number - 1))
    return ceiling / 2 + ceiling / 2 * jitter


ErrorKind = Literal["auth", "not_found", "rate_limit", "ambiguous_submit", "tls", "request"]


def error_kind(method: str, attempt: Attempt) -> ErrorKind:
    """Which error an attempt that will not be retried amounts to (the hook maps it to a class)."""
    code = attempt.status_code
    if attempt.failure == "tls":
        return "tls"
    if code in (401, 403):
        return "auth"
    if code == 404:
        return "not_found"
    if code == 429:
        return "rate_limit"
    # A submission that reached the server and whose answer was lost or broken may have been taken.
    lost_answer = code is None and attempt.failure not in ("connect", "local", "tls")
    broken_answer = attempt.failure in ("bad_body", "too_large") or ((code or 0) >= 500 and code != 503)
    if method.upper() == "POST" and (lost_answer or broken_answer):
        return "ambiguous_submit"
    return "request"


# ---------------------------------------------------------------------------------------- batches
def is_batch_result(value: object) -> bool:
    """Whether ``value`` is a batch operator's return value (``{"manifest": <URI>, ...}``, SPEC 9)."""
    return isinstance(value, Mapping) and isinstance(value.get("manifest"), str)


# ---------------------------------------------------------------------------------------- pacing
class TokenBucket:
    """
    A request budget: ``rate`` tokens a second, at most ``burst`` saved up; the clock is the caller's.

    Pure (no sleeping, no clock of its own), so the worker's submissions, the batch trigger's polls
    and a connection's shared limiter pace themselves by one rule, and tests drive it with numbers.
    ``take`` books a token and says how long the caller must wait before using it; booking ahead
    keeps callers in the order they asked. ``pause_until`` holds every token back (a 429's
    ``Retry-After`` for all of a connection's requests, not only the one that got it).
    """

    __slots__ = ("_next", "_paused_until", "burst", "rate")

    def __init__(self, rate: float, burst: float = 1.0) -> None:
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"rate must be a positive number of requests a second, got {rate!r}")
        if not (math.isfinite(burst) and burst >= 1):
            raise ValueError(f"burst must be at least 1, got {burst!r}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._next = -math.inf
        """When the next token is free; ``burst`` tokens before that are saved up."""
        self._paused_until = -math.inf

    def take(self, now: float) -> float:
        """Book one token; return the seconds to wait (0 when one is free now)."""
        interval = 1.0 / self.rate
        earliest = max(self._next, now - (self.burst - 1) * interval, self._paused_until)
        self._next = earliest + interval
        return max(0.0, earliest - now)

    def pause_until(self, when: float) -> None:
        """Hand out no token before ``when`` (a clock value of the caller's)."""
        self._paused_until = max(self._paused_until, when)

    def wait(self, now: float, tokens: int = 1) -> float:
        """Seconds until ``tokens`` (at most ``burst``) are free, without booking them."""
        interval = 1.0 / self.rate
        earliest = max(self._next, now - (self.burst - 1) * interval, self._paused_until)
        return max(0.0, earliest + (tokens - 1) * interval - now)
