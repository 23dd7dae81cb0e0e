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


def simulate(plan_typical: float | None, n: int = 600, rate: float = 10.0, latency: int = 59) -> int:
    """Polls a worker-side wait makes for n items submitted at ``rate``/s, each done after ``latency``."""
    submitted = [k / rate for k in range(n)]
    wait = WindowWait(["x"], [0.0], 5.0, 20.0, 3600.0, fire_after=10**9, typical=plan_typical)
    wait.ids, wait.plan = [], PollPlan([], 5.0, plan_typical)
    now, added = 0.0, 0
    while True:
        while added < n and submitted[added] <= now:
            wait.add(f"d-{added}", submitted[added])
            added += 1
        action, value = wait.step(now=now, monotonic=now)
        if action == "done" and added == n:
            return wait.polls
        if action == "poll":
            position = int(value)  # type: ignore[arg-type]
            done = now >= wait.plan.submitted_at[position] + latency
            times = {"createdAt": "2026-01-01T00:00:00Z", "finishedAt": f"2026-01-01T00:{latency:02.0f}:00Z"}
            wait.on_record(
                position, {"status": "FINISHED", **times} if done else {"status": "RUNNING"}, now=now
            )
            now += 0.001
        else:
            step = float(value) if action == "sleep" else 0.1  # type: ignore[arg-type]
            now += min(step, 0.1) if added < n else step


def test_an_unknown_generation_time_is_not_polled_for_at_full_budget() -> None:
    # 600 items at 10/s, 59 s each, poll_interval 5 s, 20 polls/s: due one interval after its
    # submission, each entry was polled 2.8 times (the budget full until the first finish); not
    # expected before the longest seen running, 1.9 (the first interval's entries, polled each one).
    polls = simulate(None)
    assert polls / 600 < 2.2, f"{polls / 600:.2f} polls per generation"
    assert simulate(59.0) / 600 < 1.2, "with the time known, about one poll an item"


def test_a_429_pauses_the_window_and_keeps_the_entry_first() -> None:
    wait = WindowWait(["a", "b"], [0.0, 1.0], 1.0, 100.0, 100.0, fire_after=2, typical=0.0)
    assert wait.step(now=5.0, monotonic=0.0) == ("poll", 0)
    wait.on_error(0, GetImageRateLimitError("slow down", status_code=429, retry_after=2.0, transient=True))
    assert wait.step(now=5.0)[0] == "sleep", "the budget is paused"
    assert wait.plan.next() == (0, 0.0), "not counted as a read: polled first once the pause ends"
    assert wait.polls == 1, "the refused poll counted against the budget"


def test_entries_join_a_wait_and_it_waits_for_them() -> None:
    wait = WindowWait(["a"], [0.0], 1.0, 100.0, 100.0, fire_after=10**9, typical=1.0)
    wait.add("b", 0.5)
    wait.on_record(0, {"status": "FINISHED"}, now=1.0)
    assert wait.step(now=1.0, monotonic=0.0) == ("sleep", 0.5), "due at 0.5 + the learned 1 s"
    assert wait.step(now=1.5, monotonic=0.5) == ("poll", 1)
    wait.on_record(1, {"status": "FINISHED"}, now=1.6)
    assert wait.step(now=1.6, monotonic=1.0) == ("done", None)
    assert wait.outcome.finished == ["a", "b"]
