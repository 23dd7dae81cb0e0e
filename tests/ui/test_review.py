"""
The review step on a real Airflow deployment: a person picks an image, downstream gets exactly it.

One deployment (every API app, scheduler, dag-processor, triggerer; no login: all users are
admins) serves ``tests/e2e/review_dags``: ``generate`` (four emulator images) -> ``review`` ->
``receive`` (returns what it was handed). Each test starts a run and waits for ``review`` to ask.

In a real browser: headless Chromium opens the task's Required Actions page, sees the prompt as
text and the four thumbnails decoded (``naturalWidth > 0``), picks "Image 2" and responds; the run
ends and ``receive`` got exactly the second URL. A screenshot of the form is saved in ``tmp_path``.

Through the REST API (Airflow's HITL endpoints, as a chat bot or a script would answer): an option
that is not this run's is refused with 400; "Image 3" hands on the third URL; "Reject all" skips
the review and its downstream task (``on_reject="skip"``). Without Chromium only the browser test
skips; before Airflow 3.1 (no human-in-the-loop) the module skips.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from harness import AirflowDeployment, DeploymentError, keyed_emulator
from tests.airflow_compat import requires_airflow

if TYPE_CHECKING:
    from collections.abc import Iterator

    from playwright.sync_api import Page

    from airflow_provider_getimage.emulator import Emulator

pytestmark = [
    pytest.mark.e2e,
    requires_airflow("3.1", "human-in-the-loop operators (GetImageReviewOperator)"),
]

REVIEW_DAGS = Path(__file__).resolve().parents[1] / "e2e" / "review_dags"
DAG_ID = "e2e_review"
#: Markup and a URL: the form must show both as text, with no link.
PROMPT = "a *red* fox [in snow](http://evil.example/) <b>bold</b>"
LATENCY = 1.0
ASK_TIMEOUT = 180.0
RUN_TIMEOUT = 150.0
IMAGES_JS = "Array.from(document.querySelectorAll('img[alt^=\"Image \"]')).map(i => [i.alt, i.naturalWidth])"


@pytest.fixture(scope="module")
def emulator() -> Iterator[Emulator]:
    with keyed_emulator(LATENCY) as started:
        yield started


@pytest.fixture(scope="module")
def airflow(emulator: Emulator) -> Iterator[AirflowDeployment]:
    deployment = AirflowDeployment(
        REVIEW_DAGS,
        extra_env={**emulator.airflow_env(), "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30"},
        api_apps="all",
        keep_home=bool(os.environ.get("GETIMAGE_E2E_KEEP_HOME")),
    )
    with deployment:
        deployment.wait_until_parsed(DAG_ID)
        yield deployment
    print(f"\nairflow deployment: {deployment.report()}")


def asking_run(airflow: AirflowDeployment) -> str:
    """
    Start a run; return its id once ``review`` waits for an answer and the scheduler has seen the
    parking worker end.

    Airflow 3.3 race, seen here: an answer that resumes the task before the scheduler has handled
    the executor event of the try that parked it fails the task ("finished with state success, but
    the task instance's state attribute is running"). A person takes seconds to answer; this test
    answers like one, after the scheduler logged the parked try as finished.
    """
    run_id = airflow.trigger(DAG_ID, {"prompt": PROMPT})
    finished_line = f"TaskInstance Finished: dag_id={DAG_ID}, task_id=review, run_id={run_id},"
    scheduler_log = airflow.home / "scheduler.log"

    def asking() -> bool:
        state = airflow.task_states(DAG_ID, run_id).get(("review", -1))
        if state in ("failed", "upstream_failed", "skipped"):
            raise DeploymentError(f"review ended {state} before asking:\n{airflow.describe(40)}")
        if state not in ("awaiting_input", "deferred"):
            return False
        return finished_line in scheduler_log.read_text(errors="replace")

    airflow.wait_for(asking, ASK_TIMEOUT, f"review of {run_id} to ask", check=("scheduler", "api-server"))
    return run_id


def hitl_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/review/-1/hitlDetails"


def finished(airflow: AirflowDeployment, run_id: str) -> dict[tuple[str, int], str | None]:
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT)
    states = airflow.task_states(DAG_ID, run_id)
    assert state == "success", f"{states}\n{airflow.describe(40)}"
    return states


def generated(airflow: AirflowDeployment, run_id: str) -> list[str]:
    urls = airflow.xcom(DAG_ID, run_id, "generate")
    assert isinstance(urls, list)
    assert len(urls) == 4
    return urls


# -- through the REST API --------------------------------------------------------------------
def test_the_form_holds_this_runs_images(airflow: AirflowDeployment) -> None:
    run_id = asking_run(airflow)
    detail: dict[str, Any] = airflow.api("GET", hitl_path(run_id))
    urls = generated(airflow, run_id)
    assert detail["options"] == ["Image 1", "Image 2", "Image 3", "Image 4", "Reject all"]
    assert detail["multiple"] is False
    for url in urls:
        assert f"]({url})" in detail["body"]
    shown = detail["body"].replace("\u2060", "")  # the word joiners that keep URLs from being links
    assert "**Prompt:** a \\*red\\* fox \\[in snow\\]\\(http\\://evil\\.example/\\)" in shown

    with pytest.raises(DeploymentError, match="-> 400"):
        airflow.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Image 9"], "params_input": {}})
    airflow.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Image 3"], "params_input": {}})

    finished(airflow, run_id)
    assert airflow.xcom(DAG_ID, run_id, "receive") == [urls[2]]
    assert airflow.xcom(DAG_ID, run_id, "review", "chosen_indexes") == [2]


def test_reject_all_skips_downstream(airflow: AirflowDeployment) -> None:
    run_id = asking_run(airflow)
    airflow.api("PATCH", hitl_path(run_id), json={"chosen_options": ["Reject all"], "params_input": {}})
    states = finished(airflow, run_id)
    assert states[("review", -1)] == "skipped"
    assert states[("receive", -1)] == "skipped"
    assert airflow.xcom(DAG_ID, run_id, "review", "chosen_indexes") == []


# -- in a real browser -----------------------------------------------------------------------
def test_a_reviewer_picks_image_2_in_the_ui(airflow: AirflowDeployment, page: Page, tmp_path: Path) -> None:
    run_id = asking_run(airflow)
    urls = generated(airflow, run_id)
    page.goto(f"{airflow.api_url}/dags/{DAG_ID}/runs/{run_id}/tasks/review/required_actions")
    page.get_by_text("e2e: pick the best fox").wait_for()
    page.wait_for_function(
        f"(() => {{ const s = {IMAGES_JS}; return s.length === 4 && s.every(([, w]) => w > 0); }})()",
        timeout=60_000,
    )
    images = page.evaluate(IMAGES_JS)
    assert [alt for alt, _ in images] == ["Image 1", "Image 2", "Image 3", "Image 4"]
    assert all(width > 0 for _, width in images), images
    srcs = page.evaluate("Array.from(document.querySelectorAll('img[alt^=\"Image \"]')).map(i => i.src)")
    assert srcs == urls
    # The prompt is text: its markup is shown, its URL is no link.
    prompt_line = page.locator("p", has_text="Prompt:").first.inner_text()
    assert prompt_line.replace("\u2060", "") == f"Prompt: {PROMPT}"
    assert page.locator("a[href*='evil']").count() == 0
    assert page.locator("b", has_text="bold").count() == 0
    page.screenshot(path=str(tmp_path / "review-form.png"), full_page=True)
    print(f"\nscreenshot of the review form: {tmp_path / 'review-form.png'}")

    page.get_by_role("combobox").first.click()
    page.get_by_role("option", name="Image 2", exact=True).click()
    page.get_by_role("button", name="Respond").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "review-form-chosen.png"))  # the choice and the button
    page.get_by_role("button", name="Respond").click()

    finished(airflow, run_id)
    assert airflow.xcom(DAG_ID, run_id, "receive") == [urls[1]]
    assert airflow.xcom(DAG_ID, run_id, "review", "chosen_indexes") == [1]
    detail = airflow.api("GET", hitl_path(run_id))
    assert detail["chosen_options"] == ["Image 2"]
    assert detail["response_received"] is True
