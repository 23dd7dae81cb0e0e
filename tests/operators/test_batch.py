"""``GetImageBatchOperator`` end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from tests import dag_runs

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

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
