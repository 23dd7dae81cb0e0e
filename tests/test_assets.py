"""
Asset events with meaning: ``assets.asset_extra`` as a table, and the producer example DAG run
through ``dag.test()`` whose asset events carry that extra in the metadata database.

The consumer side (a real scheduler triggering the consumer DAG) is in tests/e2e/test_assets_e2e.py.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage import assets
from tests import dag_runs
from tests.airflow_compat import requires_airflow

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

PRODUCER = "example_getimage_assets_producer"
ASSET_URI = "getimage://example/images"

#: Airflow 3.0's dag.test() leaves a DAG's assets inactive, so a task with an Asset outlet fails
#: there (AirflowInactiveAssetInInletOrOutletException); a real deployment activates them.
DAG_TEST_ASSETS = requires_airflow("3.1", "dag.test() that activates the assets of the DAG it runs")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {
                "diffusion_ids": ["d1"],
                "model": "midjourney",
                "prompt": "a cat",
                "image_urls": ["https://x/1.png"],
            },
            {
                "source": "getimage",
                "diffusion_ids": ["d1"],
                "diffusion_id_count": 1,
                "model": "midjourney",
                "prompt": "a cat",
                "image_urls": ["https://x/1.png"],
                "image_url_count": 1,
            },
            id="generation",
        ),
        pytest.param(
            {"diffusion_ids": "d1", "files": ["file:///tmp/d1_0.png"]},
            {
                "source": "getimage",
                "diffusion_ids": ["d1"],
                "diffusion_id_count": 1,
                "files": ["file:///tmp/d1_0.png"],
                "file_count": 1,
            },
            id="download, one id as a string",
        ),
        pytest.param(
            {
                "diffusion_ids": ["a", "b"],
                "model": "midjourney",
                "counts": {
                    "total": 3,
                    "finished": 2,
                    "failed": 1,
                    "uncertain": 0,
                    "timeout": 0,
                    "images": 8,
                    "manifest": "s3://b/m.jsonl",
                    "bogus": True,
                },
                "manifest": "s3://b/m.jsonl",
            },
            {
                "source": "getimage",
                "diffusion_ids": ["a", "b"],
                "diffusion_id_count": 2,
                "model": "midjourney",
                "counts": {"total": 3, "finished": 2, "failed": 1, "uncertain": 0, "timeout": 0, "images": 8},
                "manifest": "s3://b/m.jsonl",
            },
            id="batch: counts kept, other keys dropped",
        ),
        pytest.param({}, {"source": "getimage"}, id="nothing known"),
    ],
)
def test_asset_extra(kwargs: dict[str, Any], expected: dict[str, Any]) -> None:
    assert assets.asset_extra(**kwargs) == expected


def test_asset_extra_is_bounded() -> None:
    urls = [f"https://images.example/{n}.png" for n in range(5000)]
    extra = assets.asset_extra(diffusion_ids=["d"], prompt="p" * 50_000, image_urls=urls)
    assert len(extra["image_urls"]) == assets.MAX_EXTRA_ITEMS
    assert extra["image_url_count"] == 5000
    assert extra["prompt"].startswith("p" * assets.PROMPT_LIMIT)
    assert len(extra["prompt"]) < assets.PROMPT_LIMIT + 60
    assert len(json.dumps(extra)) < 20_000


def test_asset_extra_names_a_bad_value() -> None:
    with pytest.raises(TypeError, match=r"files: expected strings, got int 3"):
        assets.asset_extra(files=["file:///a.png", 3])  # type: ignore[list-item]


def test_announce_skips_outlets_that_are_not_assets() -> None:
    assert assets.announce({}, [object()], {"source": "getimage"}) == 0


def asset_events(uri: str) -> list[dict[str, Any]]:
    """The extra of every stored event of the asset, oldest first."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        rows = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri)
        ).all()
        return [dict(row.extra or {}) for row in rows]


@DAG_TEST_ASSETS
@pytest.mark.usefixtures("airflow_db")
def test_producer_asset_event_carries_the_stored_files(
    getimage_airflow_conn: Emulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("GETIMAGE_OUTPUT_DIR", str(tmp_path))
    before = len(asset_events(ASSET_URI))
    dag = dag_runs.parse(dag_runs.EXAMPLE_DAGS / "example_getimage_assets.py")[PRODUCER]
    dag_run = dag_runs.run(dag)
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    files = dag_runs.xcom(dag_run, "store")
    diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
    events = asset_events(ASSET_URI)
    assert len(events) == before + 1
    extra = events[-1]
    assert extra == {
        "source": "getimage",
        "diffusion_ids": [diffusion_id],
        "diffusion_id_count": 1,
        "files": files,
        "file_count": 4,
    }
    for uri in files:
        assert (tmp_path / uri.removeprefix(f"file://{tmp_path}/")).is_file()
    key = getimage_airflow_conn.api_key
    assert key not in json.dumps(extra)
    assert key not in capfd.readouterr().out


@DAG_TEST_ASSETS
@pytest.mark.usefixtures("airflow_db")
def test_batch_asset_event_carries_its_counts_and_manifest(
    getimage_airflow_conn: Emulator, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    uri = "file:///tmp/getimage/batch-asset"
    before = len(asset_events(uri))
    dag = dag_runs.parse(dag_runs.TEST_DAGS / "getimage_batch_dags.py")["getimage_batch_asset"]
    dag_run = dag_runs.run(dag, results=str(tmp_path / "results"))
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    summary = dag_runs.xcom(dag_run, "generate")
    events = asset_events(uri)
    assert len(events) == before + 1
    extra = events[-1]
    assert extra["manifest"] == summary["manifest"]
    assert extra["counts"]["finished"] == 5
    assert extra["diffusion_id_count"] == 5
    assert getimage_airflow_conn.api_key not in json.dumps(extra)
    assert getimage_airflow_conn.api_key not in capfd.readouterr().out
