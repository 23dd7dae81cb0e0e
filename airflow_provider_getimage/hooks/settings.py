"""
A GetImage.io connection read once and checked: what both hooks need from it.

Kept apart from the hook classes so the rules for a connection (the key, the base URL, the
extras) are written once for the sync and the async hook, and testable without either.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "MIN_SCRUBBED_KEY",
    "ApiSettings",
    "bad_ca_bundle",
    "connection_type_info",
    "settings_from_connection",
    "warn_if_plain_http",
]

MIN_SCRUBBED_KEY = 6
"""Shorter keys are not scrubbed from messages: replacing every "k" would garble them, not hide one."""


@dataclass(frozen=True)
class ApiSettings:
    """What a hook needs from its connection, read and checked once."""

    conn_id: str
    base_url: str
    api_key: str = field(repr=False)
    default_model: str
    timeout: float
    verify: bool | str
    max_response_bytes: int = _rules.DEFAULT_MAX_RESPONSE_BYTES
    max_requests_per_second: float | None = None
    """The connection's shared rate limit (``hooks.limiter``); None sends as fast as callers ask."""

    @functools.cached_property
    def secrets(self) -> tuple[str, ...]:
        """The key in every form a service or a library may print it (``_rules.secret_forms``)."""
        if len(self.api_key) < MIN_SCRUBBED_KEY:
            return ()
        return _rules.secret_forms(self.api_key)

    def scrub(self, text: str) -> str:
        """
        ``text`` with this connection's API key replaced by ``***``, escaped forms included.

        The one scrubber: the hooks pass every error and retry line through it, and every answer
        through ``_rules.read_response`` with :attr:`secrets`, so nothing downstream sees the key.
        """
        return _rules.scrub(text, self.secrets)


def settings_from_connection(
    conn_id: str, host: str | None, port: int | None, password: str | None, extra: Mapping[str, Any]
) -> ApiSettings:
    """
    Check a connection's fields and turn them into ``ApiSettings``.

    :raises GetImageError: naming the connection and the bad field (never its value for the key).
    """
    if not password or not password.strip():
        raise GetImageError(
            f"Connection {conn_id!r} has no API key: put the GetImage.io API key in its password field."
        )
    key = password.strip()
    if any(char.isspace() or unicodedata.category(char)[0] == "C" for char in key):
        # Never sent: a line break would make requests print the header, key included.
        raise GetImageError(
            f"Connection {conn_id!r}: the API key (password) holds a line break, a control character "
            "or inner whitespace, so it cannot be sent in a header; paste it again as one line."
        )
    try:
        url = _rules.base_url(host, port)
        timeout = _rules.parse_timeout(_rules.extra_value(extra, "request_timeout"))
        max_bytes = _rules.parse_max_bytes(_rules.extra_value(extra, "max_response_bytes"))
        max_rate = _rules.parse_max_rate(_rules.extra_value(extra, "max_requests_per_second"))
    except ValueError as err:
        raise GetImageError(f"Connection {conn_id!r}: {err}") from None
    model = _rules.extra_value(extra, "default_model")
    return ApiSettings(
        conn_id=conn_id,
        base_url=url,
        api_key=key,
        default_model=str(model).strip() if model else _rules.DEFAULT_MODEL,
        timeout=timeout,
        verify=_rules.parse_verify(_rules.extra_value(extra, "verify")),
        max_response_bytes=max_bytes,
        max_requests_per_second=max_rate,
    )


def connection_type_info() -> dict[str, Any]:
    """This provider's connection type as declared in its provider info (one source for the form)."""
    from airflow_provider_getimage.get_provider_info import get_provider_info

    (info,) = get_provider_info()["connection-types"]
    return dict(info)


def warn_if_plain_http(log: Any, settings: ApiSettings) -> None:
    """The key travels in a header: over plain http to another machine, anyone on the path reads it."""
    if settings.base_url.startswith("http://") and not _rules.is_loopback(settings.base_url):
        log.warning(
            "Connection %s sends the API key over plain http to %s; use https.",
            settings.conn_id,
            settings.base_url,
        )


def bad_ca_bundle(settings: ApiSettings, err: BaseException) -> GetImageError:
    """The error for a ``verify`` extra naming a CA bundle that cannot be read (before any request)."""
    return GetImageError(
        f"Connection {settings.conn_id!r}: the CA bundle in extra 'verify' ({settings.verify}) "
        f"cannot be used: {type(err).__name__}: {err}"
    )
