"""
Every fault of the emulator on every path that talks to the API: submit, worker poll, trigger poll.

Each scenario states its expected outcome and how many diffusions the emulator created; the fault
table of docs/reliability.md is generated from this list
(``python -m tests.reliability.test_fault_matrix``) and a test keeps the two in step.
"""

from __future__ import annotations

import email.utils
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import pytest
import requests

from airflow_provider_getimage import _rules
from airflow_provider_getimage.emulator import Fault
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

if TYPE_CHECKING:
    from collections.abc import Callable

    from airflow_provider_getimage.emulator import Emulator

Path_ = Literal["submit", "worker poll", "trigger poll"]
RELIABILITY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
COMMAND = "make test  # or: .venv/bin/pytest tests/reliability/test_fault_matrix.py"


MATRIX_RETRIES = _rules.RetryPolicy(max_attempts=4, backoff_base=0.02, backoff_max=0.05, retry_after_cap=5.0)
"""The default retry rules with millisecond backoff (``Retry-After`` still honoured as sent)."""


def http_date(seconds_from_now: float) -> str:
    return email.utils.formatdate(time.time() + seconds_from_now, usegmt=True)


@dataclass(frozen=True)
class Scenario:
    """One fault on one path, with what must come of it."""

    fault: str
    path: Path_
    faults: Callable[[], tuple[Fault, ...]]
    outcome: str
    submissions: int
    knobs: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return f"{self.path}: {self.fault}".replace(" ", "-")


def post(*faults: Fault) -> tuple[Fault, ...]:
    return tuple(Fault(**{**f.to_dict(), "method": "POST"}) for f in faults)


def get(*faults: Fault) -> tuple[Fault, ...]:
    return tuple(Fault(**{**f.to_dict(), "method": "GET"}) for f in faults)


SLOW = {"request_timeout": 0.3}
SUBMIT: list[Scenario] = [
    Scenario(
        "429 x2, Retry-After in seconds",
        "submit",
        lambda: post(Fault("status", 429, retry_after="1", times=2)),
        "success",
        1,
    ),
    Scenario(
        "429 x2, Retry-After as HTTP date",
        "submit",
        lambda: post(Fault("status", 429, retry_after=http_date(1), times=2)),
        "success",
        1,
    ),
    Scenario(
        "429 on every attempt",
        "submit",
        lambda: post(Fault("status", 429, retry_after="0", times=9)),
        "GetImageRateLimitError",
        0,
    ),
    Scenario(
        "503 x3 (refused before processing)",
        "submit",
        lambda: post(Fault("status", 503, times=3)),
        "success",
        1,
    ),
    Scenario(
        "500 after the diffusion was created",
        "submit",
        lambda: post(Fault("status_after", 500)),
        "GetImageSubmitUncertainError",
        1,
    ),
    Scenario(
        "502 after the diffusion was created",
        "submit",
        lambda: post(Fault("status_after", 502)),
        "GetImageSubmitUncertainError",
        1,
    ),
    Scenario(
        "connection dropped after the server took it",
        "submit",
        lambda: post(Fault("drop_after")),
        "GetImageSubmitUncertainError",
        1,
    ),
    Scenario(
        "connection dropped before the server read it",
        "submit",
        lambda: post(Fault("drop")),
        "GetImageSubmitUncertainError",
        0,
    ),
    Scenario(
        "answer slower than the request timeout",
        "submit",
        lambda: post(Fault("delay", delay=1.0)),
        "GetImageSubmitUncertainError",
        1,
        extra=SLOW,
    ),
    Scenario(
        "200 with a non-JSON body",
        "submit",
        lambda: post(Fault("body", body="<html>proxy</html>")),
        "GetImageSubmitUncertainError",
        0,
    ),
]


def poll_scenarios(path: Path_) -> list[Scenario]:
    return [
        Scenario(
            "429 x2, Retry-After in seconds",
            path,
            lambda: get(Fault("status", 429, retry_after="1", times=2)),
            "success",
            1,
        ),
        Scenario(
            "429 x2, Retry-After as HTTP date",
            path,
            lambda: get(Fault("status", 429, retry_after=http_date(1), times=2)),
            "success",
            1,
        ),
        Scenario(
            "5xx burst (500, 502, 503, 504)",
            path,
            lambda: get(*(Fault("status", code) for code in (500, 502, 503, 504))),
            "success",
            1,
        ),
        Scenario(
            "5xx outlasting every retry of a poll",
            path,
            lambda: get(Fault("status", 503, times=6)),
            "success",
            1,
        ),
        Scenario("connection dropped x2", path, lambda: get(Fault("drop", times=2)), "success", 1),
        Scenario(
            "answer slower than the request timeout x2",
            path,
            lambda: get(Fault("delay", delay=1.0, times=2)),
            "success",
            1,
            extra=SLOW,
        ),
        Scenario(
            "200 with a non-JSON body x2",
            path,
            lambda: get(Fault("body", body="<html>maintenance</html>", times=2)),
            "success",
            1,
        ),
        Scenario(
            "unknown status QUEUED x3",
            path,
            lambda: get(Fault("diffusion_status", value="QUEUED", times=3)),
            "success",
            1,
        ),
        Scenario("images as objects", path, lambda: (), "success", 1, knobs={"image_format": "objects"}),
    ]


SCENARIOS = SUBMIT + poll_scenarios("worker poll") + poll_scenarios("trigger poll")


def outcome_of(error: BaseException | None) -> str:
    return "success" if error is None else type(error).__name__


def run_scenario(
    scenario: Scenario, faults: tuple[Fault, ...], emulator: Emulator
) -> tuple[str, dict[str, Any] | None]:
    """Play one scenario against the emulator; the outcome name and the final record, if any."""
    hook = GetImageHook(retry_policy=MATRIX_RETRIES)
    if scenario.path == "submit":
        emulator.inject(*faults)
        try:
            hook.submit_diffusion("a fault-tolerant fox")
        except GetImageError as err:
            return outcome_of(err), None
        return "success", None
    diffusion_id = hook.submit_diffusion("a fault-tolerant fox")["id"]
    emulator.inject(*faults)
    if scenario.path == "worker poll":
        try:
            return "success", hook.wait_for_diffusion(diffusion_id, poll_interval=0.05, timeout=20)
        except GetImageError as err:
            return outcome_of(err), None
    import asyncio

    trigger = GetImageDiffusionTrigger(diffusion_id, poll_interval=0.05, end_time=time.time() + 20)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (payload,) = asyncio.run(events())
    return payload["status"], payload.get("diffusion")


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_fault(
    scenario: Scenario,
    getimage_emulator_factory: Callable[..., Emulator],
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    default_retry_policy: Callable[[_rules.RetryPolicy], _rules.RetryPolicy],
) -> None:
    default_retry_policy(MATRIX_RETRIES)  # the trigger's own hook too
    emulator = getimage_emulator_factory(latency=0.3, **scenario.knobs)
    conn = json.loads(emulator.airflow_connection())
    conn["extra"] = {**conn.get("extra", {}), **scenario.extra}
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", json.dumps(conn))

    faults = scenario.faults()
    outcome, record = run_scenario(scenario, faults, emulator)
    time.sleep(max((f.delay for f in faults), default=0))  # a slow server still finishes its work

    assert outcome == scenario.outcome
    assert emulator.stats()["submissions"] == scenario.submissions, "never paid twice"
    if record is not None:
        urls = _rules.image_urls(record)
        assert len(urls) == 4
        assert all(requests.get(url, timeout=5).headers["Content-Type"] == "image/png" for url in urls)
    if "QUEUED" in scenario.fault:
        assert capfd.readouterr().out.count("does not know") == 1, "an unknown status is warned once"


def markdown_table() -> str:
    """The fault table of docs/reliability.md for these scenarios."""
    lines = ["| path | fault | outcome | diffusions created |", "|---|---|---|---|"]
    for s in SCENARIOS:
        outcome = "success" if s.outcome == "success" else f"fails: `{s.outcome}`"
        lines.append(f"| {s.path} | {s.fault} | {outcome} | {s.submissions} |")
    return "\n".join(lines)


def test_docs_table_matches_the_scenarios() -> None:
    assert markdown_table() in RELIABILITY_PAGE.read_text(), (
        "docs/reliability.md's fault table is stale: python -m tests.reliability.test_fault_matrix prints it"
    )


if __name__ == "__main__":
    print(markdown_table())
