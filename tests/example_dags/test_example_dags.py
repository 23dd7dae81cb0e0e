"""Every example DAG parses, and runs end to end through ``dag.test()`` against the emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from PIL import Image

from tests import dag_runs

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.usefixtures("airflow_db")

EXAMPLE_FILES = sorted(dag_runs.EXAMPLE_DAGS.glob("*.py"))


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_dag_file_parses(path: Path) -> None:
    dags = dag_runs.parse(path)
    assert dags, f"{path.name} defines no DAG"
    for dag in dags.values():
        assert "example" in dag.tags


def test_example_getimage_saves_real_pngs(
    getimage_airflow_conn: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
    dag = dag_runs.parse(dag_runs.EXAMPLE_DAGS / "example_getimage.py")["example_getimage"]
    dag_run = dag_runs.run(dag, prompt="a koi pond in autumn")
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    uris = dag_runs.xcom(dag_run, "download")
    diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
    assert uris == [f"file://{tmp_path}/{dag_run.run_id}/{diffusion_id}_{index}.png" for index in range(4)]
    for uri in uris:
        with Image.open(uri.removeprefix("file://")) as image:
            assert image.format == "PNG"
            image.verify()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix != ".png"]
    assert leftovers == [], "atomic writes leave no partial file behind"
    assert getimage_airflow_conn.stats()["submissions"] == 1
    assert getimage_airflow_conn.stats()["image_downloads"] == 4
    assert getimage_airflow_conn.stats()["image_downloads_with_authorization"] == 0


def test_example_getimage_mapped_saves_every_prompts_pngs(
    getimage_airflow_conn: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
    dag = dag_runs.parse(dag_runs.EXAMPLE_DAGS / "example_getimage_mapped.py")["example_getimage_mapped"]
    dag_run = dag_runs.run(dag)
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    ids = [dag_runs.xcom(dag_run, "generate", "diffusion_id", map_index) for map_index in range(3)]
    assert dag_runs.xcom(dag_run, "download") == [
        f"file://{tmp_path}/{dag_run.run_id}/{diffusion_id}_{index}.png"
        for diffusion_id in ids
        for index in range(4)
    ]
    assert getimage_airflow_conn.stats()["image_downloads"] == 12


def test_example_getimage_batch_saves_every_skus_pngs(
    getimage_airflow_conn: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
    dag = dag_runs.parse(dag_runs.EXAMPLE_DAGS / "example_getimage_batch.py")["example_getimage_batch"]
    dag_run = dag_runs.run(dag)
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    summary = dag_runs.xcom(dag_run, "generate")
    assert summary["manifest"] == f"file://{tmp_path}/{dag_run.run_id}/batch/manifest.jsonl"
    assert (summary["total"], summary["finished"], summary["images"]) == (6, 6, 24)
    saved = sorted(p.name for p in (tmp_path / dag_run.run_id).glob("*.png"))
    assert saved == [f"sku-100{n}_{i}.png" for n in range(1, 7) for i in range(4)]
    assert getimage_airflow_conn.stats()["submissions"] == 6
