"""
``GetImageReviewOperator`` in Airflow: parse-time checks, the version gate, and the example DAG
run through ``dag.test()`` against the emulator while a reviewer answers from another thread.

The answer is written as Airflow's HITL REST handler writes it (the response columns, then
``handle_event_submit`` resumes the parked task); the REST endpoint itself and the UI are tested on
a real deployment in ``tests/ui/test_review.py``.
"""

from __future__ import annotations

import json
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

from tests import dag_runs
from tests.airflow_compat import airflow_before, dag_bag, requires_airflow

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

EXAMPLE = dag_runs.EXAMPLE_DAGS / "example_getimage_review.py"
URLS = [f"http://127.0.0.1:8000/images/d1/{index}.png" for index in range(4)]
ANSWER_TIMEOUT = 120.0


@pytest.mark.skipif(not airflow_before("3.1"), reason="the version gate shows on Airflow < 3.1 only")
def test_the_dag_fails_to_parse_before_airflow_3_1() -> None:
    errors = dag_bag(EXAMPLE).import_errors
    assert len(errors) == 1
    message = next(iter(errors.values()))
    assert "GetImageReviewOperator needs Apache Airflow 3.1 or newer" in message
    assert "this is Airflow 3.0" in message


def test_the_rest_of_the_provider_imports_before_airflow_3_1() -> None:
    """``operators.getimage`` loads the review module only when its name is asked for."""
    import airflow_provider_getimage.operators.getimage as operators

    assert "GetImageReviewOperator" not in vars(operators)
    assert operators.GetImageDiffusionOperator.__name__ == "GetImageDiffusionOperator"


@requires_airflow("3.1", "human-in-the-loop operators")
class TestParseTime:
    @pytest.mark.parametrize(
        ("kwargs", "error", "message"),
        [
            ({"image_urls": ["javascript:alert(1)"]}, ValueError, "Task 'review': image URL 'javascript"),
            ({"image_urls": [1, 2]}, TypeError, "Task 'review': image_urls must hold URL strings"),
            (
                {"image_urls": URLS, "on_reject": "retry"},
                ValueError,
                "Task 'review': on_reject must be",
            ),
            (
                {"image_urls": URLS, "defaults": "Approve"},
                ValueError,
                "Task 'review': defaults holds 'Appr",
            ),
            (
                {"image_urls": URLS, "defaults": ["Image 1", "Image 2"]},
                ValueError,
                "Task 'review': defaults holds 2 options but multiple=False",
            ),
        ],
    )
    def test_bad_arguments_fail_the_dag_file(self, kwargs: dict[str, Any], error: type, message: str) -> None:
        from airflow_provider_getimage.operators.getimage import GetImageReviewOperator

        with pytest.raises(error, match=message):
            GetImageReviewOperator(task_id="review", **kwargs)

    def test_templates_and_xcom_args_wait_for_run_time(self) -> None:
        from airflow_provider_getimage.operators.getimage import GetImageReviewOperator

        review = GetImageReviewOperator(task_id="review", image_urls="{{ ti.xcom_pull('generate') }}")
        assert review.options == ["Reject all"]  # the real options are built when the task runs
        assert set(review.template_fields) >= {"image_urls", "subject", "body", "prompt"}


# -- the example DAG, answered -------------------------------------------------------------------
def answer_when_asked(dag_id: str, chosen: list[str], done: threading.Event) -> None:
    """Wait for the review to park, then answer as the HITL REST handler does."""
    from airflow.models.hitl import HITLDetail
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import handle_event_submit
    from airflow.sdk.timezone import utcnow
    from airflow.triggers.base import TriggerEvent
    from airflow.utils.session import create_session
    from airflow.utils.state import TaskInstanceState
    from sqlalchemy import select

    deadline = time.monotonic() + ANSWER_TIMEOUT
    while time.monotonic() < deadline and not done.is_set():
        with create_session() as session:
            ti = session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id,
                    TaskInstance.task_id == "review",
                    TaskInstance.state == TaskInstanceState.AWAITING_INPUT,
                )
            ).first()
            detail = session.get(HITLDetail, ti.id) if ti is not None else None
            if ti is not None and detail is not None:
                detail.responded_by = {"id": "reviewer", "name": "Reviewer"}
                detail.responded_at = utcnow()
                detail.chosen_options = chosen
                detail.params_input = {}
                session.add(detail)
                handle_event_submit(
                    TriggerEvent(detail.as_resume_event_payload()), task_instance=ti, session=session
                )
                return
        time.sleep(0.3)


@pytest.fixture
def reviewer() -> Iterator[Any]:
    threads: list[threading.Thread] = []
    done = threading.Event()

    def start(dag_id: str, chosen: list[str]) -> None:
        thread = threading.Thread(target=answer_when_asked, args=(dag_id, chosen, done), daemon=True)
        thread.start()
        threads.append(thread)

    yield start
    done.set()
    for thread in threads:
        thread.join(timeout=10)


@requires_airflow("3.3", "the awaiting_input state that dag.test() waits in for a human answer")
@pytest.mark.usefixtures("airflow_db")
class TestExampleDag:
    def test_only_the_chosen_image_is_downloaded(
        self, getimage_airflow_conn: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Any
    ) -> None:
        monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
        dag = dag_runs.parse(EXAMPLE)["example_getimage_review"]
        reviewer(dag.dag_id, ["Image 2"])
        dag_run = dag_runs.run(dag)
        states = dag_runs.states(dag_run)
        assert states[("review", -1)] == "success", states
        assert states[("download", -1)] == "success", states
        assert states[("regenerate", -1)] == "skipped", states
        urls = dag_runs.xcom(dag_run, "generate")
        diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
        assert dag_runs.xcom(dag_run, "review") == [urls[1]]
        assert dag_runs.xcom(dag_run, "review", "chosen_indexes") == [1]
        assert dag_runs.xcom(dag_run, "download") == [
            f"file://{tmp_path}/{dag_run.run_id}/{diffusion_id}_1.png"
        ]
        assert getimage_airflow_conn.stats()["image_downloads"] == 1
        assert getimage_airflow_conn.stats()["submissions"] == 1

    def test_reject_all_skips_download_and_regenerates(
        self, getimage_airflow_conn: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reviewer: Any
    ) -> None:
        monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
        dag = dag_runs.parse(EXAMPLE)["example_getimage_review"]
        reviewer(dag.dag_id, ["Reject all"])
        dag_run = dag_runs.run(dag)
        states = dag_runs.states(dag_run)
        assert states[("review", -1)] == "skipped", states
        assert states[("download", -1)] == "skipped", states
        assert states[("regenerate", -1)] == "success", states
        assert dag_runs.xcom(dag_run, "review", "chosen_indexes") == []
        assert getimage_airflow_conn.stats()["submissions"] == 2
        assert getimage_airflow_conn.stats()["image_downloads"] == 0


@requires_airflow("3.1", "human-in-the-loop operators")
class TestBatchManifest:
    """A batch's result names its manifest (SPEC 9); the review reads each row's images and prompt."""

    def write(self, path: Path, rows: Sequence[object]) -> dict[str, Any]:
        path.write_text("".join(json.dumps(row) + "\n" for row in rows) + "\n")
        return {"manifest": f"file://{path}", "total": len(rows), "finished": 2, "images": 3}

    def test_rows_give_images_and_prompts(self, tmp_path: Path) -> None:
        from airflow_provider_getimage.operators.review import read_batch_images
        from airflow_provider_getimage.review_form import ReviewImage

        result = self.write(
            tmp_path / "manifest.jsonl",
            [
                {"index": 0, "prompt": "a cat", "status": "finished", "image_urls": URLS[:2]},
                {"index": 1, "prompt": "a dog", "status": "failed", "image_urls": [], "error": "boom"},
                {"index": 2, "prompt": "a cow", "status": "finished", "image_urls": URLS[2:3]},
            ],
        )
        assert read_batch_images(result) == [
            ReviewImage(URLS[0], "a cat"),
            ReviewImage(URLS[1], "a cat"),
            ReviewImage(URLS[2], "a cow"),
        ]

    def test_a_large_batch_stops_early_and_fails_the_count(self, tmp_path: Path) -> None:
        from airflow_provider_getimage.operators.review import read_batch_images
        from airflow_provider_getimage.review_form import check_images

        rows = [{"index": i, "prompt": "p", "image_urls": URLS} for i in range(1000)]
        images = read_batch_images(self.write(tmp_path / "manifest.jsonl", rows))
        assert len(images) == 52  # read up to the first row past the form's 50 images
        with pytest.raises(ValueError, match="52 images are too many for one review form"):
            check_images(images)
