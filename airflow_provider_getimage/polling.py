"""
The one judge of a poll: the worker's wait, the sensor and the trigger all read a diffusion here.

A :class:`DiffusionWatch` follows one diffusion: it remembers its status (so each change is logged
once), keeps the clock and the deadline, and turns a polled record or a failed poll into one
:class:`Poll` value. The callers only fetch, sleep and act on the outcome. Kept apart from the
hooks (requests, aiohttp, the HTTP provider) so the trigger module stays light, and from the
operators so the sensor and the trigger import neither.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import (
    GetImageDiffusionFailed,
    GetImageError,
    GetImageTimeoutError,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from airflow.providers.common.compat.sdk import Context

__all__ = [
    "DiffusionWatch",
    "Outcome",
    "Poll",
    "checked_record",
    "diffusion_failed",
    "failure_recorded",
    "push_finished",
    "result_from_event",
]

Outcome = Literal["success", "failed", "running", "error"]
"""What a poll says of the wait: done, failed for good, not yet (or an outage), or cannot go on."""


@dataclass(frozen=True, slots=True)
class Poll:
    """
    What one poll came to.

    :param outcome: ``success`` (FINISHED), ``failed`` (a terminal failure status), ``running``
        (still generating, or a transient error the next poll may outlast), ``error`` (a refused
        key, an unknown id: polling again cannot help).
    :param record: the polled record; empty when the poll itself failed.
    :param error: for ``failed`` and ``error``, the error that ends the wait; else None.
    """

    outcome: Outcome
    record: dict[str, Any] = field(default_factory=dict)
    error: GetImageError | None = None


@dataclass(slots=True)  # no __dict__ per watch: a triggerer holds one per trigger
class DiffusionWatch:
    """
    One diffusion being waited for: its status so far, its clock and its deadline.

    :param diffusion_id: the diffusion.
    :param log: the caller's logger (task, sensor or trigger).
    :param end_time: epoch seconds after which the wait is over; None waits forever.
    """

    diffusion_id: str
    log: Any
    end_time: float | None = None
    started: float = field(default_factory=time.monotonic)
    status: _rules.StatusWatch = field(default_factory=_rules.StatusWatch)
    record: dict[str, Any] = field(default_factory=dict)
    """The latest record polled (empty before the first answer)."""
    debug: bool = field(init=False, default=False)
    """Whether the log takes DEBUG lines (asked once: every poll would log one)."""

    def __post_init__(self) -> None:
        enabled = getattr(self.log, "isEnabledFor", None)
        self.debug = bool(enabled(logging.DEBUG)) if callable(enabled) else True

    # ------------------------------------------------------------------------------ polls
    def check(self, fetch: Callable[[str], dict[str, Any]]) -> Poll:
        """Fetch the record (``hook.get_diffusion``) and judge it, or judge the failed fetch."""
        try:
            record = fetch(self.diffusion_id)
        except GetImageError as err:
            return self.judge_error(err)
        return self.judge(record)

    def judge(self, record: object, *, checked: bool = False) -> Poll:
        """
        Judge a polled record: a status change is logged once (INFO), an unknown status once
        (WARNING), every other poll at DEBUG. A record whose fields have the wrong types ends the
        wait (``error``): it names the field, where reading on would raise a raw ``TypeError``.

        :param checked: the record is one ``GetImageAsyncHook.get_diffusion`` returned, whose
            types it checked already (:func:`checked_record`): a triggerer's every poll, not
            checked twice.
        """
        if checked:
            record = cast("dict[str, Any]", record)
        else:
            try:
                record = checked_record(record, self.diffusion_id)
            except GetImageError as err:
                return Poll("error", error=err)
        status = record.get("status")
        previous = self.status.last
        changed, newly_unknown = self.status.observe(status)
        if newly_unknown:
            self.log.warning(
                "Diffusion %s reports status %r, which this provider does not know; treating it as running.",
                self.diffusion_id,
                self.status.last,
            )
        if changed:
            self.log.info(
                "Diffusion %s: %s -> %s (%.1f s elapsed)",
                self.diffusion_id,
                previous or "submitted",
                self.status.last,
                self.elapsed,
            )
        elif self.debug:  # skipped, not filtered: a disabled call still costs a logger bind a poll
            self.log.debug(
                "Diffusion %s still %s (%.1f s elapsed)", self.diffusion_id, self.status.last, self.elapsed
            )
        self.record = record
        outcome = _rules.classify(status)
        if outcome == "failed":
            return Poll("failed", record, diffusion_failed(self.diffusion_id, record))
        return Poll(outcome, record)

    def judge_error(self, error: GetImageError) -> Poll:
        """
        Judge a poll that failed after the hook's retries.

        A transient error (network, 5xx, 429) counts as still running, so an outage never ends a
        wait of minutes; any other error (a refused key, an unknown id) ends it.
        """
        if not error.transient:
            return Poll("error", error=error)
        self.log.warning("Diffusion %s: poll failed, will poll again: %s", self.diffusion_id, error)
        return Poll("running")

    # ------------------------------------------------------------------------------ clock
    @property
    def elapsed(self) -> float:
        """Seconds since the watch began."""
        return time.monotonic() - self.started

    @property
    def last_status(self) -> str:
        """The last status seen, for messages."""
        return self.status.last or "unknown"

    def until_deadline(self, seconds: float) -> float:
        """``seconds``, cut short by the deadline (0 once it has passed)."""
        if self.end_time is None:
            return seconds
        return max(0.0, min(seconds, self.end_time - time.time()))

    def expired(self) -> bool:
        """Whether the deadline has passed."""
        return self.until_deadline(1.0) <= 0

    def next_delay(self, poll_interval: float, max_poll_interval: float | None) -> float:
        """Seconds until the next poll (``_rules.next_poll_delay``), cut short by the deadline."""
        return self.until_deadline(_rules.next_poll_delay(poll_interval, max_poll_interval, self.elapsed))

    def timeout_message(self, when: str = "by the deadline") -> str:
        """Why the wait ended without an outcome; the diffusion may still finish."""
        return (
            f"Diffusion {self.diffusion_id} was not finished {when} "
            f"(last status {self.last_status}); it may still finish."
        )

    def timeout_error(self, when: str = "by the deadline") -> GetImageTimeoutError:
        """The error for a wait whose deadline passed first."""
        return GetImageTimeoutError(self.timeout_message(when), diffusion_id=self.diffusion_id)


def checked_record(record: object, diffusion_id: str | None) -> dict[str, Any]:
    """
    A diffusion record whose fields have the types the provider reads (``_rules.record_problem``).

    :raises GetImageError: naming the field and the diffusion (not transient: the service sent it).
    """
    problem = _rules.record_problem(record)
    if problem is not None:
        raise GetImageError(
            f"Diffusion {diffusion_id or '<unknown>'}: GetImage.io sent an unusable record: {problem}.",
            diffusion_id=diffusion_id,
        )
    return record  # type: ignore[return-value]  # record_problem checked it is a dict


def diffusion_failed(diffusion_id: str, record: Mapping[str, Any]) -> GetImageDiffusionFailed:
    """The error for a diffusion that ended in a terminal failure status (its reason clipped)."""
    status, reason = _rules.clip(str(record.get("status")), 100), _rules.failure_reason(record)
    return GetImageDiffusionFailed(
        f"Diffusion {diffusion_id} ended with status {status}: {reason}",
        diffusion_id=diffusion_id,
    )


def push_finished(context: Context, log: Any, diffusion_id: str, record: dict[str, Any]) -> list[str]:
    """
    Push a finished diffusion's record (XCom ``diffusion``) and return its image URLs.

    Shared by the operator and the sensor; both also (re)push ``diffusion_id``, so a downstream
    ``GetImageDownloadOperator`` can name the images after their diffusion. A FINISHED record with
    no image URL fails the task: downstream steps would otherwise run on nothing. The record is
    stored bounded (``_rules.bounded_record``), the URLs checked and capped (``_rules.web_image_urls``).
    """
    context["ti"].xcom_push(key="diffusion_id", value=diffusion_id)
    context["ti"].xcom_push(key="diffusion", value=_rules.bounded_record(record))
    urls = _rules.web_image_urls(record)
    if not urls:
        raise GetImageError(
            f"Diffusion {diffusion_id} is FINISHED but lists no image URL; "
            "its full record is in XCom 'diffusion'.",
            diffusion_id=diffusion_id,
        )
    log.info("Diffusion %s finished with %d image(s)", diffusion_id, len(urls))
    return urls


def result_from_event(event: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    The final record from a diffusion trigger's event, or the error it stands for.

    Shared by the operator's and the sensor's ``execute_complete``, so both fail the same way and
    always name the diffusion. A record the trigger had to cut comes with its image URLs apart
    (``images``); they are put back, so the task returns them all. An event of an older version
    has no ``images``: its cut record kept every URL.
    """
    if not event or "status" not in event:
        raise GetImageError(f"The GetImage.io trigger sent no usable event: {event!r}")
    diffusion_id = str(event.get("diffusion_id") or "<unknown>")
    message = _rules.clip(str(event.get("message") or ""))
    status = event["status"]
    if status == "success" and isinstance(event.get("diffusion"), dict):
        record = dict(event["diffusion"])
        if isinstance(event.get("images"), list):
            record["images"] = [url for url in event["images"] if isinstance(url, str)]
        return record
    if status == "failed":
        record = event.get("diffusion") or {"status": "FAILED", "message": message}
        raise diffusion_failed(diffusion_id, record)
    if status == "timeout":
        raise GetImageTimeoutError(message, diffusion_id=diffusion_id)
    raise GetImageError(f"Waiting for diffusion {diffusion_id} failed: {message}", diffusion_id=diffusion_id)


ERROR_LIMIT = 2_000
"""Longest failure reason kept in XCom ``error`` (the gallery page cuts it again)."""


@contextlib.contextmanager
def failure_recorded(context: Context) -> Iterator[None]:
    """
    Push why the task fails (XCom ``error``: ``message`` and ``type``), then fail as before.

    The gallery page of a failed task shows the reason; Airflow keeps no exception text in its
    database. The message is the provider's own, read through the hooks' key scrubber.
    """
    try:
        yield
    except (GetImageError, ValueError, TypeError) as err:
        reason = {"message": _rules.clip(str(err), ERROR_LIMIT), "type": type(err).__name__}
        with contextlib.suppress(Exception):  # the task's own error matters more than the note
            context["ti"].xcom_push(key="error", value=reason)
        raise
