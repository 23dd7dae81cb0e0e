"""
The errors of the GetImage.io provider: one tree under ``GetImageError``.

Every error carries what a caller needs to act on it (``status_code``, ``diffusion_id``,
``retry_after``) as attributes, so nobody parses exception text. Messages never hold the API key.
"""

from __future__ import annotations

from airflow.providers.common.compat.sdk import AirflowException

__all__ = [
    "GetImageAuthError",
    "GetImageDiffusionFailed",
    "GetImageError",
    "GetImageNotFoundError",
    "GetImageRateLimitError",
    "GetImageSubmitUncertainError",
    "GetImageTimeoutError",
]


class GetImageError(AirflowException):
    """
    Base of every GetImage.io error.

    :param message: what went wrong, for a person.
    :param status_code: the HTTP status of the answer, when there was one.
    :param diffusion_id: the diffusion concerned, when known.
    :param retry_after: seconds the server asked to wait, when it did.
    :param transient: the failure may pass (network, 5xx, 429): a poller may try again later.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        diffusion_id: str | None = None,
        retry_after: float | None = None,
        transient: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        # Shadows AirflowException's class-level HTTPStatus (used by the API server for its own errors).
        self.status_code = status_code  # type: ignore[assignment]
        self.diffusion_id = diffusion_id
        self.retry_after = retry_after
        self.transient = transient


class GetImageAuthError(GetImageError):
    """The API key was refused (401/403). Never retried: a retry would be refused the same way."""


class GetImageNotFoundError(GetImageError):
    """The service does not know the diffusion id (404)."""


class GetImageRateLimitError(GetImageError):
    """Still rate limited (429) after every retry; ``retry_after`` holds the server's last hint."""


class GetImageSubmitUncertainError(GetImageError):
    """
    A submission reached the service but its answer was lost or failed (5xx, read timeout, drop).

    The diffusion may have been created and charged; it is not resubmitted automatically, so that
    nothing is paid twice.
    """


class GetImageDiffusionFailed(GetImageError):
    """The diffusion ended in a terminal failure status; carries its id and the service's message."""


class GetImageTimeoutError(GetImageError):
    """Gave up waiting for the diffusion (it may still finish); carries its id."""
