"""The batch's poll order and pacing, driven with numbers (no clock, no I/O)."""

from __future__ import annotations

import pytest

from airflow_provider_getimage.batch_window import (
    BatchPacing,
    PollPlan,
    WindowOutcome,
    WindowWait,
    generation_seconds,
)
from airflow_provider_getimage.exceptions import GetImageAuthError, GetImageError, GetImageRateLimitError


class TestPollPlan:
    def test_nothing_is_polled_before_the_typical_generation_time(self) -> None:
        plan = PollPlan([100.0, 101.0, 102.0], poll_interval=1.0, typical=30.0)
        assert plan.next() == (0, 130.0)

    def test_learns_the_generation_time_from_the_finished(self) -> None:
        plan = PollPlan([0.0, 0.0, 0.0, 50.0], poll_interval=1.0)
        assert plan.expected == 1.0  # before anything finished: one interval
        plan.finished(0, 40.0)
        plan.finished(1, 60.0)
        assert plan.expected == 50.0
        assert plan.next() == (2, 50.0)
        assert plan.learned() == 50.0

    def test_longest_running_first_then_every_interval(self) -> None:
        plan = PollPlan([10.0, 0.0, 5.0], poll_interval=2.0, typical=1.0)
        assert plan.next() == (1, 1.0)
        plan.polled(1, 1.0)
        assert plan.next() == (2, 6.0) or plan.next() == (1, 3.0)
        assert plan.next() == (1, 3.0)  # due again at 3.0, before entry 2 (6.0)
        plan.close(1)
        assert plan.next() == (2, 6.0)


class TestPacing:
    def test_a_429_pauses_submissions_and_polls(self) -> None:
        pacing = BatchPacing(max_submissions_per_second=10, max_polls_per_second=10)
        assert pacing.before_submit(0.0) == 0.0
        assert pacing.rate_limited(0.0, 3.0) == 3.0
        assert pacing.before_submit(0.0) == pytest.approx(3.0)
        assert pacing.before_poll(0.0) == pytest.approx(3.0)
        assert pacing.rate_limited(0.0, None) == BatchPacing.DEFAULT_RATE_LIMIT_PAUSE


class TestWindowWait:
    def wait(self, **kwargs: object) -> WindowWait:
        defaults: dict[str, object] = {
            "diffusion_ids": ["a", "b", "c"],
            "submitted_at": [0.0, 0.0, 0.0],
            "poll_interval": 1.0,
            "max_polls_per_second": 100.0,
            "timeout": 100.0,
            "fire_after": 2,
            "typical": 10.0,
        }
        return WindowWait(**{**defaults, **kwargs})  # type: ignore[arg-type]

    def test_sleeps_until_due_then_fires_after_enough_ended(self) -> None:
        wait = self.wait()
        assert wait.step(now=0.0, monotonic=0.0) == ("sleep", 10.0)
        assert wait.step(now=10.0, monotonic=10.0) == ("poll", 0)
        wait.on_record(0, {"status": "FINISHED", "images": ["https://x/1.png"]}, now=10.0)
        assert wait.step(now=10.0, monotonic=10.01) == ("poll", 1)
        wait.on_record(1, {"status": "FAILED", "message": "nsfw " * 100}, now=10.0)
        assert wait.step(now=10.0, monotonic=10.02) == ("done", None)
        payload = wait.outcome.payload()
        assert payload["finished"] == ["a"]
        assert len(payload["failed"]["b"]) < 250
        assert "images" not in str(payload), "no image URL in an event"
        assert WindowOutcome.from_payload(payload).failed == wait.outcome.failed

    def test_the_poll_budget_is_kept(self) -> None:
        wait = self.wait(max_polls_per_second=2.0, fire_after=3, typical=0.0)
        assert wait.step(now=0.0, monotonic=0.0)[0] == "poll"
        wait.on_record(0, {"status": "PROCESSING"}, now=0.0)
        action, seconds = wait.step(now=0.0, monotonic=0.0)
        assert action == "sleep"
        assert seconds == pytest.approx(0.5)

    def test_deadline_expires_entries(self) -> None:
        wait = self.wait(timeout=5.0, fire_after=3)
        assert wait.step(now=5.0, monotonic=0.0) == ("done", None)
        assert wait.outcome.expired == ["a", "b", "c"]

    def test_errors(self) -> None:
        wait = self.wait(fire_after=3, typical=0.0)
        wait.on_error(
            0, GetImageRateLimitError("slow down", status_code=429, retry_after=4.0, transient=True)
        )
        assert wait.pacing.polls.wait(0.0) > 0
        wait.on_error(1, GetImageError("gone", status_code=404))
        assert "b" in wait.outcome.failed
        wait.on_error(2, GetImageAuthError("refused", status_code=401))
        assert wait.step()[0] == "done"
        assert wait.outcome.payload()["status"] == "error"


@pytest.mark.parametrize(
    ("record", "seconds"),
    [
        ({"createdAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:42.5Z"}, 42.5),
        ({"createdAt": "2026-01-01T00:00:00+00:00", "finishedAt": "2026-01-01T00:01:00+00:00"}, 60.0),
        ({"createdAt": "2026-01-01T00:01:00Z", "finishedAt": "2026-01-01T00:00:00Z"}, None),
        ({"createdAt": "yesterday", "finishedAt": "today"}, None),
        ({"createdAt": "2026-01-01T00:00:00Z"}, None),
        ({"createdAt": 5, "finishedAt": 7}, None),
    ],
)
def test_generation_seconds(record: dict[str, object], seconds: float | None) -> None:
    assert generation_seconds(record) == seconds


def test_the_service_s_own_times_keep_the_estimate_from_ratcheting_up() -> None:
    plan = PollPlan([0.0] * 3, poll_interval=1.0, typical=10.0)
    for position in range(3):
        plan.finished(position, now=12.0, took=8.0)  # seen late (polled at 12 s), took 8 s
    assert plan.expected == 8.0
    observed = PollPlan([0.0], poll_interval=1.0, typical=10.0)
    observed.finished(0, now=12.0)
    assert observed.expected == 12.0
