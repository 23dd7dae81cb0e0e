"""
The pure side of a batch's wait: which diffusion of a window to poll next, and the batch's pacing.

Used by the batch trigger (in the triggerer) and by the batch operator's wait in the worker, so
both poll the same way. No I/O, no Airflow, no clock of its own (callers pass epoch seconds):
tests drive it with numbers, and the trigger module stays light.
"""

from __future__ import annotations

import datetime
import statistics
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageAuthError, GetImageError, GetImageRateLimitError

__all__ = ["BatchPacing", "PollPlan", "WindowOutcome", "WindowWait", "generation_seconds"]

ERROR_TEXT_LIMIT = 200
"""Characters of a failure reason carried in a trigger event (events stay small)."""

LEARNED_SAMPLES = 200
"""Generation times remembered to estimate the typical one (the most recent ones)."""


@dataclass
class PollPlan:
    """
    The order in which a window's diffusions are polled: most likely done first.

    A diffusion is not polled before it has run for the typical generation time (learned from the
    ones that finished, the median of their durations), then once every ``poll_interval``; among
    those due, the one that has run longest goes first. Before anything finished, ``typical`` is
    the hint given (from earlier windows); without one, the longest any entry was seen running
    (nothing is expected sooner: the window's items are alike), at least one ``poll_interval``.
    (A backoff on top, polling an entry again after half its age, was tried: it saw the first
    finish later and cost more polls in all.)

    :param submitted_at: epoch seconds each window entry was submitted.
    :param poll_interval: seconds between two polls of one diffusion.
    :param typical: a typical generation time already learned, or None.
    """

    submitted_at: list[float]
    poll_interval: float
    typical: float | None = None
    durations: list[float] = field(default_factory=list)
    last_polled: dict[int, float] = field(default_factory=dict)
    open: set[int] = field(init=False)
    running_for: float = 0.0
    """The longest an entry was seen running (seconds): a lower bound of the generation time."""

    def __post_init__(self) -> None:
        self.open = set(range(len(self.submitted_at)))

    @property
    def expected(self) -> float:
        """The generation time expected of a diffusion (seconds)."""
        if self.durations:
            return statistics.median(self.durations)
        return self.typical if self.typical is not None else max(self.poll_interval, self.running_for)

    def due(self, position: int, expected: float | None = None) -> float:
        """When an entry should be polled next (epoch seconds); ``expected`` if already computed."""
        first = self.submitted_at[position] + (self.expected if expected is None else expected)
        last = self.last_polled.get(position)
        return first if last is None else max(first, last + self.poll_interval)

    def next(self) -> tuple[int, float] | None:
        """The entry to poll next and when it is due; None once every entry is closed."""
        if not self.open:
            return None
        expected = self.expected  # a median: once per call, not once per open entry
        position = min(self.open, key=lambda p: (self.due(p, expected), self.submitted_at[p], p))
        return position, self.due(position, expected)

    def polled(self, position: int, now: float) -> None:
        """An entry was polled and is still running."""
        self.last_polled[position] = now
        self.running_for = max(self.running_for, now - self.submitted_at[position])

    def finished(self, position: int, now: float, took: float | None = None) -> None:
        """
        An entry finished: close it and learn its generation time.

        :param took: the generation time the service reports (``generation_seconds``); without
            it, the time until this poll saw it done, which is never less than ``expected`` and
            so would only ever grow the estimate.
        """
        self.close(position)
        observed = max(0.0, now - self.submitted_at[position])
        self.durations.append(min(took, observed) if took is not None and took >= 0 else observed)
        del self.durations[:-LEARNED_SAMPLES]

    def add(self, submitted_at: float) -> int:
        """A new entry (submitted since the plan began); its position."""
        self.submitted_at.append(submitted_at)
        self.open.add(len(self.submitted_at) - 1)
        return len(self.submitted_at) - 1

    def close(self, position: int) -> None:
        """An entry needs no more polls (failed, expired, or an error)."""
        self.open.discard(position)
        self.last_polled.pop(position, None)

    def learned(self) -> float | None:
        """The typical generation time to hand to the next window (None before any is known)."""
        return statistics.median(self.durations) if self.durations else self.typical


def generation_seconds(record: dict[str, Any]) -> float | None:
    """``finishedAt - createdAt`` of a finished record, when both are ISO 8601 times; else None."""
    try:
        created = datetime.datetime.fromisoformat(str(record["createdAt"]).replace("Z", "+00:00"))
        finished = datetime.datetime.fromisoformat(str(record["finishedAt"]).replace("Z", "+00:00"))
        seconds = (finished - created).total_seconds()
    except (KeyError, TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


class BatchPacing:
    """
    A batch's request budgets: submissions (worker) and polls (worker or trigger).

    The one place a batch asks before it sends: a 429 pauses both budgets (the whole batch slows,
    not one item), honouring ``Retry-After``. A connection-wide limiter can be plugged in here.

    :param max_submissions_per_second: the submission budget.
    :param max_polls_per_second: the poll budget.
    """

    DEFAULT_RATE_LIMIT_PAUSE = 5.0
    """Seconds the batch pauses after a 429 that named no ``Retry-After``."""

    def __init__(self, max_submissions_per_second: float, max_polls_per_second: float) -> None:
        self.submissions = _rules.TokenBucket(max_submissions_per_second)
        self.polls = _rules.TokenBucket(max_polls_per_second)

    def before_submit(self, now: float) -> float:
        """Book a submission; the seconds to wait before sending it."""
        return self.submissions.take(now)

    def submit_free(self, now: float) -> bool:
        """Whether a submission could be sent now without waiting."""
        return self.submissions.wait(now) <= 0

    def before_poll(self, now: float) -> float:
        """Book a poll; the seconds to wait before sending it."""
        return self.polls.take(now)

    def rate_limited(self, now: float, retry_after: float | None) -> float:
        """A 429: hold every submission and poll back; returns the pause in seconds."""
        pause = retry_after if retry_after is not None and retry_after > 0 else self.DEFAULT_RATE_LIMIT_PAUSE
        self.submissions.pause_until(now + pause)
        self.polls.pause_until(now + pause)
        return pause


@dataclass
class WindowOutcome:
    """
    What a wait on one window came to: ids only, plus short failure reasons (no image URLs).

    ``records`` (finished records) is filled only by the worker's own wait; the trigger's event
    leaves it out and the worker re-reads the finished diffusions.
    """

    finished: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    expired: list[str] = field(default_factory=list)
    fatal: str | None = None
    typical: float | None = None
    records: dict[str, dict[str, Any]] = field(default_factory=dict)

    def payload(self) -> dict[str, Any]:
        """The trigger event's payload (bounded: ids and clipped reasons)."""
        return {
            "status": "error" if self.fatal is not None else "progress",
            "finished": self.finished,
            "failed": self.failed,
            "expired": self.expired,
            "message": self.fatal or "",
            "typical": self.typical,
        }

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> WindowOutcome:
        return cls(
            finished=[str(i) for i in payload.get("finished", [])],
            failed={str(k): str(v) for k, v in dict(payload.get("failed", {})).items()},
            expired=[str(i) for i in payload.get("expired", [])],
            fatal=payload.get("message") or None if payload.get("status") == "error" else None,
            typical=payload.get("typical"),
        )


Step = tuple[Literal["poll"], int] | tuple[Literal["sleep"], float] | tuple[Literal["done"], None]


class WindowWait:
    """
    The wait on one window of submitted diffusions, as a step machine with no I/O.

    The caller loops: :meth:`step` says poll entry ``p``, sleep, or done; the caller fetches and
    reports with :meth:`on_record` or :meth:`on_error`. The trigger and the worker's wait are
    that loop, async or not. Done when ``fire_after`` entries ended (finished, failed, expired),
    or all did, or a fatal error (a refused key).

    :param diffusion_ids: the window.
    :param submitted_at: epoch seconds each was submitted.
    :param poll_interval: seconds between two polls of one diffusion.
    :param max_polls_per_second: the window's poll budget.
    :param timeout: seconds after its submission an item is given up (``timeout`` in the manifest).
    :param fire_after: how many ended entries end the wait (the worker then submits more).
    :param typical: a generation time learned by earlier windows, or None.
    :param keep_records: keep the finished records (the worker's own wait) or only their ids.
    :param pacing: the budget to poll within (the worker's own, shared with its re-reads), or a
        new one of ``max_polls_per_second``.
    """

    def __init__(
        self,
        diffusion_ids: list[str],
        submitted_at: list[float],
        poll_interval: float,
        max_polls_per_second: float,
        timeout: float,
        fire_after: int,
        typical: float | None = None,
        keep_records: bool = False,
        pacing: BatchPacing | None = None,
    ) -> None:
        self.ids = list(diffusion_ids)
        self.plan = PollPlan(list(submitted_at), poll_interval, typical)
        self.pacing = pacing or BatchPacing(1.0, max_polls_per_second)
        self.timeout = timeout
        self.fire_after = fire_after
        self.keep_records = keep_records
        self.outcome = WindowOutcome()
        self.ended = 0
        self.polls = 0

    def step(self, now: float | None = None, monotonic: float | None = None) -> Step:
        """The next thing to do (``now``: epoch seconds; ``monotonic``: the pacing clock)."""
        now = time.time() if now is None else now
        monotonic = time.monotonic() if monotonic is None else monotonic
        for position in sorted(self.plan.open):
            if self.plan.submitted_at[position] + self.timeout <= now:
                self.plan.close(position)
                self.outcome.expired.append(self.ids[position])
                self.ended += 1
        enough = self.ended >= max(1, min(self.fire_after, len(self.ids)))
        if self.outcome.fatal is not None or enough or not self.plan.open:
            self.outcome.typical = self.plan.learned()
            return ("done", None)
        upcoming = self.plan.next()
        assert upcoming is not None  # some entry is open
        position, due = upcoming
        deadline = min(self.plan.submitted_at[p] + self.timeout for p in self.plan.open)
        if due > now:
            return ("sleep", min(due, deadline) - now)
        wait = self.pacing.polls.wait(monotonic)
        if wait > 0:
            return ("sleep", min(wait, max(0.0, deadline - now)) or wait)
        self.pacing.before_poll(monotonic)
        self.polls += 1
        return ("poll", position)

    def add(self, diffusion_id: str, submitted_at: float) -> None:
        """A diffusion submitted since the wait began joins it (the worker's wait between submissions)."""
        self.ids.append(diffusion_id)
        self.plan.add(submitted_at)

    def on_record(self, position: int, record: dict[str, Any], now: float | None = None) -> None:
        """A polled record (already checked by the hook)."""
        now = time.time() if now is None else now
        outcome = _rules.classify(record.get("status"))
        diffusion_id = self.ids[position]
        if outcome == "success":
            self.plan.finished(position, now, generation_seconds(record))
            self.outcome.finished.append(diffusion_id)
            if self.keep_records:
                self.outcome.records[diffusion_id] = record
            self.ended += 1
        elif outcome == "failed":
            self.plan.close(position)
            self.outcome.failed[diffusion_id] = _rules.clip(_rules.failure_reason(record), ERROR_TEXT_LIMIT)
            self.ended += 1
        else:
            self.plan.polled(position, now)

    def on_error(self, position: int, error: GetImageError, now: float | None = None) -> None:
        """A poll that failed after the hook's retries."""
        now = time.time() if now is None else now
        if isinstance(error, GetImageRateLimitError):
            # The whole window pauses; this entry was not read, so it stays first in line.
            self.pacing.rate_limited(time.monotonic(), error.retry_after)
            return
        if isinstance(error, GetImageAuthError):
            self.outcome.fatal = _rules.clip(str(error), ERROR_TEXT_LIMIT * 2)
        elif error.transient:
            self.plan.polled(position, now)  # an outage: poll again later
        else:  # an unknown id, an unusable record: this item cannot be read
            self.plan.close(position)
            self.outcome.failed[self.ids[position]] = _rules.clip(str(error), ERROR_TEXT_LIMIT)
            self.ended += 1
