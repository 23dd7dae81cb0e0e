"""``GetImageBatchOperator`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests import dag_runs

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator
    from airflow_provider_getimage.operators.getimage import GetImageBatchOperator

pytestmark = [
    pytest.mark.usefixtures("airflow_db"),
    pytest.mark.getimage_emulator(latency=0.3, failing_prompts=("nsfw",)),
]

BATCH_DAGS = dag_runs.TEST_DAGS / "getimage_batch_dags.py"


def manifest_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("mode", ["worker", "deferred"])
def test_batch_of_50_end_to_end(getimage_airflow_conn: Emulator, tmp_path: Path, mode: str) -> None:
    dag = dag_runs.parse(BATCH_DAGS)[f"getimage_batch_{mode}"]
    results, images = tmp_path / "results", tmp_path / "images"
    dag_run = dag_runs.run(dag, results=str(results), images=str(images))
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    summary = dag_runs.xcom(dag_run, "generate")
    assert summary == {
        "manifest": f"file://{results}/manifest.jsonl",
        "total": 50,
        "finished": 49,
        "failed": 1,
        "uncertain": 0,
        "timeout": 0,
        "images": 49 * 4,
    }
    stats = getimage_airflow_conn.stats()
    assert stats["submissions"] == 50, "each prompt submitted exactly once"
    rows = manifest_rows(results / "manifest.jsonl")
    assert [row["index"] for row in rows] == list(range(50))
    assert rows[48]["key"] == "lamp"
    assert rows[48]["status"] == "failed"
    assert rows[48]["error"]
    assert rows[49]["model"] == "stable-diffusion"
    assert rows[49]["parameters"] == {"size": "512x512", "seed": 7}
    assert rows[0]["parameters"] == {"size": "512x512"}
    assert rows[0]["model"] == "midjourney"
    assert all(row["status"] == "finished" and len(row["image_urls"]) == 4 for row in rows[:48] + rows[49:])
    assert all(row["submitted_at"] and row["finished_at"] and row["diffusion_id"] for row in rows)
    saved = sorted(p.name for p in images.iterdir())
    assert len(saved) == 49 * 4
    assert "chair_0.png" in saved
    assert "0_3.png" in saved
    assert not any(n.startswith("lamp") for n in saved)
    assert dag_runs.xcom(dag_run, "download")["files"] == 49 * 4
    # polls: nothing finished is polled again (at most a few polls per generation)
    assert stats["polls"] <= 50 * 6


# ------------------------------------------------------------------ the operator on its own (worker mode)
def batch_operator(results: Path, prompts: object, **kwargs: Any) -> GetImageBatchOperator:
    from airflow_provider_getimage.operators.getimage import GetImageBatchOperator

    options: dict[str, Any] = {
        "task_id": "generate",
        "prompts": prompts,
        "results": str(results),
        "max_submissions_per_second": 100,
        "max_polls_per_second": 100,
        "poll_interval": 0.1,
        "timeout": 60,
        "deferrable": False,
    }
    return GetImageBatchOperator(**{**options, **kwargs})


@pytest.mark.usefixtures("fast_retries")
def test_a_retry_reattaches_and_never_pays_twice(getimage_airflow_conn: Emulator, tmp_path: Path) -> None:
    from airflow_provider_getimage.batch import BatchState, batch_items
    from airflow_provider_getimage.storage import destination_path
    from tests.triggers.test_getimage import submit

    prompts = [f"item {n}" for n in range(10)]
    # An earlier try: item 0 submitted, item 1 finished, item 2 in flight when the worker died.
    state = BatchState.open(destination_path(str(tmp_path)), batch_items(prompts, "midjourney", None))
    running = submit(getimage_airflow_conn, "item 0")
    state.record([{"i": 0, "e": "intent"}, {"i": 0, "e": "submitted", "id": running}])
    state.record(
        [{"i": 1, "e": "submitted", "id": "done-1"}, {"i": 1, "e": "finished", "urls": ["https://x/1.png"]}]
    )
    state.record([{"i": 2, "e": "intent"}])
    summary = batch_operator(tmp_path, prompts, max_failures=1).execute({})
    assert summary["finished"] == 9
    assert summary["uncertain"] == 1
    stats = getimage_airflow_conn.stats()
    assert stats["submissions"] == 1 + 7, "items 0, 1, 2 not submitted again"
    assert "done-1" not in stats["polls_by_id"], "a finished item is not polled again"
    rows = manifest_rows(tmp_path / "manifest.jsonl")
    assert rows[0]["diffusion_id"] == running
    assert rows[0]["status"] == "finished"
    assert rows[2]["status"] == "uncertain"
    assert "in flight" in rows[2]["error"]

    # Asked to, a later try submits the uncertain one, once.
    summary = batch_operator(tmp_path, prompts, resubmit_uncertain=True).execute({})
    assert summary["finished"] == 10
    assert getimage_airflow_conn.stats()["submissions"] == 1 + 7 + 1


def test_changed_prompts_fail_before_any_submission(getimage_airflow_conn: Emulator, tmp_path: Path) -> None:
    batch_operator(tmp_path, ["a", "b"]).execute({})
    with pytest.raises(ValueError, match="prompts changed"):
        batch_operator(tmp_path, ["a", "c"]).execute({})
    assert getimage_airflow_conn.stats()["submissions"] == 2


def test_bad_inputs_fail_before_anything_is_submitted(
    getimage_airflow_conn: Emulator, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match=r"Task 'generate': 1 of 3 prompts are not valid.*item 1 \(''\)"):
        batch_operator(tmp_path, ["a", "", "c"])  # at parse time
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('"a"\n{"prompt": "b", "key": 3}\n')
    with pytest.raises(ValueError, match=r"Task 'generate'.*item 1.*key must be a non-blank string"):
        batch_operator(tmp_path / "out", f"file://{prompts}").execute({})
    assert getimage_airflow_conn.stats()["submissions"] == 0


def test_more_failures_than_allowed_fail_the_task_after_the_manifest(
    getimage_airflow_conn: Emulator, tmp_path: Path
) -> None:
    from airflow.providers.common.compat.sdk import AirflowFailException

    prompts = ["a", {"prompt": "nsfw one", "key": "bad"}, "c"]
    with pytest.raises(AirflowFailException, match=r"1 of 3 items have no images \(failed 1,") as info:
        batch_operator(tmp_path, prompts).execute({})
    assert "item 1 (bad): failed" in str(info.value)
    assert [r["status"] for r in manifest_rows(tmp_path / "manifest.jsonl")] == [
        "finished",
        "failed",
        "finished",
    ]


@pytest.mark.getimage_emulator(latency=0.2, rate_limit=8, retry_after=0.3)
@pytest.mark.usefixtures("fast_retries")
def test_a_rate_limit_slows_the_batch_and_nothing_is_paid_twice(
    getimage_airflow_conn: Emulator, tmp_path: Path
) -> None:
    prompts = [f"item {n}" for n in range(20)]
    summary = batch_operator(
        tmp_path, prompts, max_submissions_per_second=50, max_polls_per_second=50
    ).execute({})
    stats = getimage_airflow_conn.stats()
    assert stats["rate_limited"] > 0, "the emulator pushed back"
    assert summary["finished"] == 20
    assert stats["submissions"] == 20


@pytest.mark.getimage_emulator(latency=0.2, rate_limit=20)
def test_budgets_below_the_rate_limit_meet_no_429(getimage_airflow_conn: Emulator, tmp_path: Path) -> None:
    prompts = [f"item {n}" for n in range(20)]
    summary = batch_operator(tmp_path, prompts, max_submissions_per_second=8, max_polls_per_second=8).execute(
        {}
    )
    assert summary["finished"] == 20
    assert getimage_airflow_conn.stats()["rate_limited"] == 0
