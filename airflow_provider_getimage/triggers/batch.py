"""
``GetImageBatchTrigger``: wait in the triggerer for one window of a batch's diffusions.

Its kwargs are ids, numbers and the conn id (bounded: at most ``MAX_WINDOW`` ids, packed: about
30 bytes an id); its one event holds ids and short failure reasons, never image URLs (the worker
re-reads the finished ones).
It polls through the loop's shared session (``GetImageAsyncHook``), most-likely-done first
(``batch_window.WindowWait``), within its ``max_polls_per_second`` budget.
"""

from __future__ import annotations

import asyncio
import base64
import time
import zlib
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_provider_getimage import _rules
from airflow_provider_getimage._rules import RetryPolicy
from airflow_provider_getimage.batch_window import WindowWait
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.lazy import async_hook_class

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

__all__ = ["MAX_WINDOW", "GetImageBatchTrigger", "pack_ids", "pack_times", "unpack_ids", "unpack_times"]

MAX_WINDOW = 10_000
"""The most diffusions one trigger waits for (its row stays about 300 kB, its event about 400 kB)."""

ID_SEPARATOR = "\n"
"""Joins the packed ids: whitespace, which no diffusion id holds (``_rules.id_problem``)."""

WINDOW_RETRY_POLICY = RetryPolicy(max_attempts=1)
"""The window's polls are not retried by the hook: a 429 or an outage goes to ``WindowWait``,
which pauses the whole window (a 429, within its budget) or polls the item again later, and one
slow item does not hold up the others while the hook backs off."""


def _pack(text: str) -> str:
    return base64.b64encode(zlib.compress(text.encode("ascii"), 9)).decode("ascii")


def _unpack(packed: str, what: str) -> str:
    try:
        return zlib.decompress(base64.b64decode(packed, validate=True)).decode("ascii")
    except (ValueError, zlib.error) as err:
        raise ValueError(f"{what} is no packed window ({err}): {_rules.clip(repr(packed), 80)}.") from None


def pack_ids(diffusion_ids: list[str]) -> str:
    """The ids joined by a character no id holds, compressed, base64 (kwargs stay small)."""
    return _pack(ID_SEPARATOR.join(diffusion_ids))


def unpack_ids(packed: str) -> list[str]:
    return _unpack(packed, "diffusion_ids").split(ID_SEPARATOR)


def pack_times(submitted_at: list[float]) -> dict[str, Any]:
    """Epoch seconds as the first one and whole-millisecond steps from one to the next, packed."""
    first = submitted_at[0]
    offsets = [round((t - first) * 1000) for t in submitted_at]
    steps = [b - a for a, b in zip([0, *offsets], offsets, strict=False)]
    return {"from": first, "ms": _pack(",".join(map(str, steps)))}


def unpack_times(packed: dict[str, Any]) -> list[float]:
    try:
        first = float(packed["from"])
        steps = [int(step) for step in _unpack(str(packed["ms"]), "submitted_at").split(",")]
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"submitted_at is no packed window: {err}.") from None
    offset, times = 0, []
    for step in steps:
        offset += step
        times.append(first + offset / 1000)
    return times


class GetImageBatchTrigger(BaseTrigger):
    """
    Poll a window of diffusions until enough ended for the worker to submit more.

    Fires (one event) when ``fire_after`` of them finished, failed or passed their deadline, when
    all did, or on a refused key. Transient errors are polled through; a 429 pauses the window.

    :param diffusion_ids: the window's diffusions (at most ``MAX_WINDOW``), a list or packed
        (``pack_ids``, as ``serialize`` writes them; a list is what earlier versions wrote).
    :param submitted_at: epoch seconds each was submitted (same length), a list or packed
        (``pack_times``, to the millisecond).
    :param getimage_conn_id: the GetImage.io connection.
    :param poll_interval: seconds between two polls of one diffusion.
    :param max_polls_per_second: the window's poll budget.
    :param timeout: seconds after its submission a diffusion is given up.
    :param fire_after: how many ended diffusions fire the event.
    :param typical: a generation time learned by earlier windows (seconds), or None.
    """

    def __init__(
        self,
        diffusion_ids: list[str] | str,
        submitted_at: list[float] | dict[str, Any],
        getimage_conn_id: str = _rules.DEFAULT_CONN_ID,
        poll_interval: float = _rules.DEFAULT_POLL_INTERVAL,
        max_polls_per_second: float = 10.0,
        timeout: float = _rules.DEFAULT_WAIT_TIMEOUT,
        fire_after: int = 1,
        typical: float | None = None,
    ) -> None:
        super().__init__()
        if isinstance(diffusion_ids, str):
            diffusion_ids = unpack_ids(diffusion_ids)
        if isinstance(submitted_at, dict):
            submitted_at = unpack_times(submitted_at)
        if not diffusion_ids or len(diffusion_ids) > MAX_WINDOW:
            raise ValueError(f"a batch window holds 1 to {MAX_WINDOW} diffusions, got {len(diffusion_ids)}.")
        if len(submitted_at) != len(diffusion_ids):
            raise ValueError("submitted_at must give one time per diffusion id.")
        self.diffusion_ids = [_rules.check_diffusion_id(i) for i in diffusion_ids]
        self.submitted_at = [float(t) for t in submitted_at]
        self.getimage_conn_id = getimage_conn_id
        self.poll_interval = _rules.check_poll_interval(poll_interval)
        self.max_polls_per_second = _rules.check_positive("max_polls_per_second", max_polls_per_second)
        self.timeout = _rules.check_positive("timeout", timeout)
        self.fire_after = int(fire_after)
        self.typical = None if typical is None else float(typical)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "diffusion_ids": pack_ids(self.diffusion_ids),
                "submitted_at": pack_times(self.submitted_at),
                "getimage_conn_id": self.getimage_conn_id,
                "poll_interval": self.poll_interval,
                "max_polls_per_second": self.max_polls_per_second,
                "timeout": self.timeout,
                "fire_after": self.fire_after,
                "typical": self.typical,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        payload = await self._wait()
        yield TriggerEvent(payload)

    async def _wait(self) -> dict[str, Any]:
        """Poll until the window has drained enough; the event's payload."""
        wait = WindowWait(
            self.diffusion_ids,
            self.submitted_at,
            self.poll_interval,
            self.max_polls_per_second,
            self.timeout,
            self.fire_after,
            self.typical,
        )
        hook_class = await async_hook_class()
        conn_id = self.getimage_conn_id
        async with hook_class(getimage_conn_id=conn_id, retry_policy=WINDOW_RETRY_POLICY) as hook:
            while True:
                action, value = wait.step()
                if action == "done":
                    break
                if action == "sleep":
                    await asyncio.sleep(float(value))  # type: ignore[arg-type]
                    continue
                position = int(value)  # type: ignore[arg-type]
                deadline = self.submitted_at[position] + self.timeout
                try:
                    record = await hook.get_diffusion(self.diffusion_ids[position], deadline=deadline)
                except GetImageError as err:
                    wait.on_error(position, err, time.time())
                else:
                    wait.on_record(position, record, time.time())
        self.log.info(
            "Batch window of %d: %d finished, %d failed, %d expired after %d polls",
            len(self.diffusion_ids),
            len(wait.outcome.finished),
            len(wait.outcome.failed),
            len(wait.outcome.expired),
            wait.polls,
        )
        return wait.outcome.payload()
