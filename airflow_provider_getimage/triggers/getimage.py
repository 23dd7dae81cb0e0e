"""
Trigger that waits for a GetImage.io diffusion in the triggerer, without a worker slot.

Its kwargs are ids and numbers only (never the key or a header: trigger rows are plain JSON in the
metadata database). It polls through ``GetImageAsyncHook`` (no blocking call on the event loop),
keeps the one deadline (``end_time``) itself, and yields exactly one event.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError, GetImageTimeoutError
from airflow_provider_getimage.polling import diffusion_failed, poll_error, read_poll

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook

__all__ = ["DiffusionEvent", "GetImageDiffusionTrigger", "result_from_event"]

EventStatus = Literal["success", "failed", "timeout", "error"]


class DiffusionEvent(TypedDict):
    """The payload of the trigger's one event."""

    status: EventStatus
    diffusion_id: str
    message: str
    diffusion: NotRequired[dict[str, Any]]


class GetImageDiffusionTrigger(BaseTrigger):
    """
    Poll a diffusion until it is FINISHED, failed, or ``end_time`` passes.

    Transient errors (network, timeouts, 5xx, 429) are retried by the hook with backoff and, once
    its attempts are spent, by the next poll: they never end the trigger. A refused key or an
    unknown id end it with an ``error`` event.

    :param diffusion_id: the diffusion to wait for.
    :param getimage_conn_id: the GetImage.io connection, fetched asynchronously in the triggerer.
    :param poll_interval: seconds between polls.
    :param end_time: epoch seconds after which the trigger yields ``timeout``; None waits forever.
    :param max_poll_interval: optional backoff cap for long generations (see
        :func:`~airflow_provider_getimage._rules.next_poll_delay`); None polls every ``poll_interval``.
        Only serialized when set, so the default kwargs stay the four above.
    """

    def __init__(
        self,
        diffusion_id: str,
        getimage_conn_id: str = _rules.DEFAULT_CONN_ID,
        poll_interval: float = _rules.DEFAULT_POLL_INTERVAL,
        end_time: float | None = None,
        max_poll_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.diffusion_id = _rules.check_diffusion_id(diffusion_id)
        self.getimage_conn_id = getimage_conn_id
        self.poll_interval = _rules.check_positive("poll_interval", poll_interval)
        self.end_time = end_time
        self.max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, self.poll_interval)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        kwargs: dict[str, Any] = {
            "diffusion_id": self.diffusion_id,
            "getimage_conn_id": self.getimage_conn_id,
            "poll_interval": self.poll_interval,
            "end_time": self.end_time,
        }
        if self.max_poll_interval is not None:
            kwargs["max_poll_interval"] = self.max_poll_interval
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    def _event(self, status: EventStatus, message: str, record: dict[str, Any] | None = None) -> TriggerEvent:
        payload: DiffusionEvent = {"status": status, "diffusion_id": self.diffusion_id, "message": message}
        if record is not None:
            payload["diffusion"] = record
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._wait()
        yield event

    async def _wait(self) -> TriggerEvent:
        """Poll until an outcome; return the one event (so ``run`` can only yield once)."""
        started = time.monotonic()
        watch = _rules.StatusWatch()
        hook_class = (
            _async_hook_class()
            if _HOOKS_MODULE in sys.modules
            else await asyncio.to_thread(_async_hook_class)
        )
        # The first poll waits a random part of an interval: a thousand mapped tasks deferred at once
        # then spread their polls instead of hitting the API (and the pool) in lockstep. The task
        # checked the diffusion just before deferring, so this costs no detection time.
        delay = random.uniform(0, self.poll_interval)
        async with hook_class(getimage_conn_id=self.getimage_conn_id) as hook:
            while True:
                await asyncio.sleep(self._until_deadline(delay))
                event = await self._poll(hook, watch, time.monotonic() - started)
                if event is not None:
                    return event
                if self._until_deadline(1.0) <= 0:
                    return self._event(
                        "timeout",
                        f"Diffusion {self.diffusion_id} was not finished by the deadline "
                        f"(last status {watch.last or 'unknown'}); it may still finish.",
                    )
                delay = _rules.next_poll_delay(
                    self.poll_interval, self.max_poll_interval, time.monotonic() - started
                )

    def _until_deadline(self, seconds: float) -> float:
        """``seconds``, cut short by the deadline (0 once it has passed)."""
        if self.end_time is None:
            return seconds
        return max(0.0, min(seconds, self.end_time - time.time()))

    async def _poll(
        self, hook: GetImageAsyncHook, watch: _rules.StatusWatch, elapsed: float
    ) -> TriggerEvent | None:
        """One poll: the final event, or None while the diffusion runs (or an outage passes)."""
        try:
            record = await hook.get_diffusion(self.diffusion_id)
        except GetImageError as err:
            if not err.transient:
                return self._event("error", str(err))
            poll = poll_error(self.log, self.diffusion_id, err)
        else:
            poll = read_poll(self.log, self.diffusion_id, record, watch, elapsed)
        if poll.outcome == "success":
            return self._event("success", f"Diffusion {self.diffusion_id} finished.", poll.record)
        if poll.outcome == "failed":
            return self._event("failed", _rules.failure_message(poll.record), poll.record)
        return None


_HOOKS_MODULE = "airflow_provider_getimage.hooks.getimage"


def _async_hook_class() -> type[GetImageAsyncHook]:
    """
    Import the hook module (requests, aiohttp, the HTTP provider: about 0.15 s) in a thread.

    The triggerer imports this module and starts ``run`` on its event loop; a heavy import there
    would stall every other trigger, so this module keeps it out of its top-level imports (and
    once it is loaded, the thread hop is skipped).
    """
    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook

    return GetImageAsyncHook


def result_from_event(event: Mapping[str, Any] | None) -> dict[str, Any]:
    """
    The final record from the trigger's event, or the error it stands for.

    Shared by the operator's and the sensor's ``execute_complete``, so both fail the same way and
    always name the diffusion.
    """
    if not event or "status" not in event:
        raise GetImageError(f"The GetImage.io trigger sent no usable event: {event!r}")
    diffusion_id = str(event.get("diffusion_id") or "<unknown>")
    message = str(event.get("message") or "")
    status = event["status"]
    if status == "success" and isinstance(event.get("diffusion"), dict):
        return dict(event["diffusion"])
    if status == "failed":
        record = event.get("diffusion") or {"status": "FAILED", "message": message}
        raise diffusion_failed(diffusion_id, record)
    if status == "timeout":
        raise GetImageTimeoutError(message, diffusion_id=diffusion_id)
    raise GetImageError(f"Waiting for diffusion {diffusion_id} failed: {message}", diffusion_id=diffusion_id)
