"""
Downloads of generated images over HTTP: streamed, size-capped, retried, with no credential.

Image URLs are public links (the service's CDN), so nothing here reads the GetImage.io connection
or sends a credential: the session has no auth, reads no ``~/.netrc`` and strips
``Authorization`` on redirects. Attempts go through the same retry loop as the API calls
(:func:`~airflow_provider_getimage.hooks.transport.call_with_retries`): a GET of an image is safe
to repeat. What is done with the bytes (``storage.ImageStore``) is the caller's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypedDict, TypeVar

import requests

from airflow_provider_getimage import __version__, _rules
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.deadlines import WATCHDOG, DeadlineAdapter
from airflow_provider_getimage.hooks.transport import (
    AnswerCut,
    Retries,
    body_chunks,
    call_with_retries,
    requests_failure,
    timed_out,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from airflow_provider_getimage.hooks.deadlines import RequestDeadline

__all__ = [
    "DEFAULT_DOWNLOAD_ATTEMPTS",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_IMAGE_BYTES",
    "FetchOptions",
    "ImageFetcher",
]

T = TypeVar("T")

DEFAULT_MAX_IMAGE_BYTES = 50 * 1024 * 1024
"""The largest image accepted (50 MiB): far above any generated image, low enough to stop a runaway."""
DEFAULT_DOWNLOAD_TIMEOUT = 60.0
"""Seconds one attempt at one image may take in all: connecting, the answer and the whole body."""
DEFAULT_DOWNLOAD_ATTEMPTS = 4
"""Attempts per image in all: transient errors (network, 5xx, 429) are retried with backoff."""
DEFAULT_RETRY_POLICY = _rules.RetryPolicy(backoff_base=1.0, backoff_max=10.0, retry_after_cap=30.0)


class FetchOptions(TypedDict, total=False):
    """The limits of :class:`ImageFetcher`, passed through by ``storage.ImageStore``."""

    max_image_bytes: int
    request_timeout: float
    attempts: int
    retry_policy: _rules.RetryPolicy | None


class _NoCredentials(requests.auth.AuthBase):
    """An explicit "no auth": stops requests from adding ``~/.netrc`` credentials to image requests."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers.pop("Authorization", None)
        return request


class _AnonymousSession(requests.Session):
    """A session that never sends credentials, not even after a redirect (requests re-reads netrc then)."""

    def rebuild_auth(self, prepared_request: requests.PreparedRequest, response: requests.Response) -> None:
        prepared_request.headers.pop("Authorization", None)


class ImageFetcher:
    """
    GET image URLs on one keep-alive session, and hand each image's bytes to a writer as they arrive.

    :param log: the task's logger (a stdlib or structlog logger).
    :param max_image_bytes: a larger answer fails the download (the writer stops mid-stream).
    :param request_timeout: seconds one attempt at one image may take in all, the whole body included.
    :param attempts: attempts per image, the first included.
    :param retry_policy: backoff bounds; ``max_attempts`` is taken from ``attempts``.
    """

    def __init__(
        self,
        log: Any,
        *,
        max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES,
        request_timeout: float = DEFAULT_DOWNLOAD_TIMEOUT,
        attempts: int = DEFAULT_DOWNLOAD_ATTEMPTS,
        retry_policy: _rules.RetryPolicy | None = None,
    ) -> None:
        self.log = log
        self.max_image_bytes = max_image_bytes
        self.request_timeout = request_timeout
        self.timeout = (min(_rules.CONNECT_TIMEOUT, request_timeout), request_timeout)
        base = retry_policy or DEFAULT_RETRY_POLICY
        self.policy = _rules.RetryPolicy(
            max_attempts=attempts,
            backoff_base=base.backoff_base,
            backoff_max=base.backoff_max,
            retry_after_cap=base.retry_after_cap,
        )
        self._session = _AnonymousSession()
        self._session.auth = _NoCredentials()
        self._session.headers["User-Agent"] = f"airflow-provider-getimage/{__version__}"
        adapter = DeadlineAdapter()
        self._session.mount("https://", adapter)
        self._session.mount("http://", adapter)

    def __enter__(self) -> ImageFetcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def fetch(self, url: str, write: Callable[[str, Iterator[bytes]], T]) -> T:
        """
        Download ``url`` and return ``write(content_type, chunks)``, retrying transient failures.

        ``write`` sees the chunks as they arrive; a transport error mid-stream surfaces inside it
        (so it can clean up) and the whole image is fetched again.

        :raises GetImageError: the answer was not an image, too large, or still failing after
            every attempt (the message names the URL and the last error).
        """

        def give_up(attempt: _rules.Attempt, number: int) -> GetImageError:
            return GetImageError(
                f"Could not download image {url} (attempt {number} of {self.policy.max_attempts}): "
                f"{attempt.message}",
                status_code=attempt.status_code,
                retry_after=attempt.retry_after,
                transient=_rules.is_retryable("GET", attempt),
            )

        return call_with_retries(
            lambda: self._attempt(url, write),
            lambda: Retries("GET", f"Download of {url}", self.policy, self.log, give_up),
        )

    def _attempt(self, url: str, write: Callable[[str, Iterator[bytes]], T]) -> T | _rules.Attempt:
        # The watchdog bounds the whole attempt, status line and headers included (hooks.deadlines).
        with WATCHDOG.arm(self.request_timeout) as deadline:
            return self._attempt_within(url, write, deadline)

    def _attempt_within(
        self, url: str, write: Callable[[str, Iterator[bytes]], T], deadline: RequestDeadline
    ) -> T | _rules.Attempt:
        try:
            with self._session.get(url, stream=True, timeout=self.timeout) as response:
                if not 200 <= response.status_code < 300:
                    head = next(response.iter_content(2048), b"")
                    return _rules.read_response(
                        response.status_code, head, response.headers.get("Retry-After")
                    )
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if not content_type.startswith("image/"):
                    raise GetImageError(
                        f"{url} answered with Content-Type {content_type or 'none'!r}, not an image: "
                        "nothing was saved.",
                        status_code=response.status_code,
                    )
                declared = response.headers.get("Content-Length", "")
                if declared.isdigit() and int(declared) > self.max_image_bytes:
                    raise GetImageError(
                        f"{url} is {int(declared)} bytes, more than max_image_bytes "
                        f"({self.max_image_bytes}): nothing was saved.",
                        status_code=response.status_code,
                    )
                return write(content_type, self._chunks(response, url, deadline.at))
        except requests.RequestException as exc:
            return timed_out(self.request_timeout) if deadline.expired else requests_failure(exc)
        except AnswerCut as cut:
            return cut.attempt

    def _chunks(self, response: requests.Response, url: str, deadline: float) -> Iterator[bytes]:
        """The body in chunks, stopped with an error once it passes ``max_image_bytes``."""
        size = 0
        for chunk in body_chunks(response, deadline=deadline, timeout=self.request_timeout):
            size += len(chunk)
            if size > self.max_image_bytes:
                raise GetImageError(
                    f"{url} is larger than max_image_bytes ({self.max_image_bytes}): nothing was saved.",
                    status_code=response.status_code,
                )
            yield chunk
