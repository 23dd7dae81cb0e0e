"""
Trigger that waits for a GetImage.io diffusion in the triggerer, without a worker slot.

Its kwargs are ids and numbers only (never the key or a header: trigger rows are plain JSON in the
metadata database). It polls through ``GetImageAsyncHook`` (no blocking call on the event loop),
keeps the one deadline (``end_time``) itself, and yields exactly one event.
"""

from __future__ import annotations

import asyncio
import random
from typing import TYPE_CHECKING, Any, Literal, NotRequired, TypedDict

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.lazy import async_hook_class
from airflow_provider_getimage.polling import DiffusionWatch, Poll, result_from_event
from airflow_provider_getimage.triggers.batch import GetImageBatchTrigger

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


__all__ = ["DiffusionEvent", "GetImageBatchTrigger", "GetImageDiffusionTrigger", "result_from_event"]

EventStatus = Literal["success", "failed", "timeout", "error"]


class DiffusionEvent(TypedDict):
    """The payload of the trigger's one event."""

    status: EventStatus
    diffusion_id: str
    message: str
    diffusion: NotRequired[dict[str, Any]]
    """The final record, at most ``_rules.RECORD_LIMIT`` bytes as JSON (cut when larger)."""
    images: NotRequired[list[str]]
    """Only when ``diffusion`` was cut: all its image URLs (at most ``_rules.IMAGE_URLS_LIMIT`` bytes)."""


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
        self.poll_interval = _rules.check_poll_interval(poll_interval)
        self.end_time = end_time
        self.max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, self.poll_interval)

    @property
    def log(self) -> Any:
        """
        The class's logger (``LoggingMixin.logger()``), shared by its triggers: the same name and
        lines as one per instance, without a logger built and bound for each of a thousand triggers
        (about 0.1 ms of a trigger's start). The triggerer's per-trigger fields come from its
        context variables, not from the logger.
        """
        return type(self).logger()

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
        """
        The one event, bounded: its message clipped, its record cut to ``_rules.RECORD_LIMIT``; the
        image URLs of a cut record travel apart, so the task's result holds them all.
        """
        payload: DiffusionEvent = {
            "status": status,
            "diffusion_id": self.diffusion_id,
            "message": _rules.clip(message),
        }
        if record is not None:
            payload["diffusion"], urls = _rules.split_record(record)
            if urls is not None and status == "success":
                payload["images"] = urls
        return TriggerEvent(payload)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        event = await self._wait()
        yield event

    async def _wait(self) -> TriggerEvent:
        """Poll until an outcome; return the one event (so ``run`` can only yield once)."""
        watch = DiffusionWatch(self.diffusion_id, self.log, end_time=self.end_time)
        hook_class = await async_hook_class()
        # The first poll waits a random part of an interval: a thousand mapped tasks deferred at once
        # then spread their polls instead of hitting the API (and the pool) in lockstep. The task
        # checked the diffusion just before deferring, so this costs no detection time.
        delay = random.uniform(0, self.poll_interval)
        async with hook_class(getimage_conn_id=self.getimage_conn_id) as hook:
            while True:
                wait = watch.until_deadline(delay)
                if not hook.queues_polls:
                    # The sleep here, not in the hook: no coroutine of the hook's alive across it.
                    await asyncio.sleep(wait)
                    wait = 0.0
                # The hook called here, not through a helper coroutine, and the poll's verdict let go
                # before the next sleep: a thousand triggers poll a second, and whatever is alive
                # across a sleep ages into the collector's oldest generation (whole-heap passes).
                # Under a rate limit the wait is a place in the limiter's queue (one wake-up a poll).
                try:
                    record = await hook.get_diffusion(self.diffusion_id, deadline=self.end_time, wait=wait)
                except GetImageError as err:
                    poll = watch.judge_error(err)
                else:
                    poll = watch.judge(record, checked=True)
                if poll.outcome != "running":
                    return self._outcome_event(poll)
                del poll
                if watch.expired():
                    return self._event("timeout", watch.timeout_message())
                delay = watch.next_delay(self.poll_interval, self.max_poll_interval)

    def _outcome_event(self, poll: Poll) -> TriggerEvent:
        """The event for a poll that ends the wait (success, failed or error)."""
        if poll.outcome == "success":
            return self._event("success", f"Diffusion {self.diffusion_id} finished.", poll.record)
        if poll.outcome == "failed":
            return self._event("failed", _rules.failure_reason(poll.record), poll.record)
        return self._event("error", str(poll.error))
