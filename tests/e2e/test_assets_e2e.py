"""
Assets in a real Airflow 3 deployment: the producer's asset event triggers the consumer DAG.

``dag.test()`` records asset events but never schedules a consumer; only a real scheduler shows
the whole path: the download task's event carries the stored files in its ``extra``, the
scheduler creates an asset-triggered run of the consumer, and the consumer reads the files from
``triggering_asset_events``. The decorator example runs too: its deferrable task resumes through
the real triggerer, which keeps the resume kwargs, so its event names the function's prompt.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from airflow_provider_getimage.emulator import Emulator
    from harness import AirflowDeployment

pytestmark = pytest.mark.e2e

PRODUCER = "example_getimage_assets_producer"
CONSUMER = "example_getimage_assets_consumer"
DECORATOR = "example_getimage_decorator"
RUN_TIMEOUT = 180.0


def asset_extras(airflow: AirflowDeployment, uri: str) -> list[dict[str, Any]]:
    """The extra of every event of the asset, oldest first."""
    rows = airflow.query(
        "SELECT CAST(e.extra AS TEXT) AS extra FROM asset_event e JOIN asset a ON a.id = e.asset_id "
        "WHERE a.uri = ? ORDER BY e.id",
        (uri,),
    )
    return [json.loads(row["extra"]) if row["extra"] else {} for row in rows]


def consumer_runs(airflow: AirflowDeployment) -> list[dict[str, Any]]:
    return airflow.query(
        "SELECT run_id, state, run_type FROM dag_run WHERE dag_id = ? ORDER BY id", (CONSUMER,)
    )


def test_producer_success_triggers_the_consumer_which_sees_the_files(
    airflow_deployment: AirflowDeployment, e2e_emulator: Emulator
) -> None:
    airflow = airflow_deployment
    for dag_id in (PRODUCER, CONSUMER, DECORATOR):
        airflow.wait_until_parsed(dag_id)
    airflow.unpause(CONSUMER)
    assert consumer_runs(airflow) == []
    producer_run = airflow.trigger(PRODUCER)
    decorator_run = airflow.trigger(DECORATOR)
    assert airflow.wait_for_run(PRODUCER, producer_run, timeout=RUN_TIMEOUT) == "success", (
        airflow.task_states(PRODUCER, producer_run)
    )
    files = airflow.xcom(PRODUCER, producer_run, "store")
    diffusion_id = airflow.xcom(PRODUCER, producer_run, "generate", "diffusion_id")
    (extra,) = asset_extras(airflow, "getimage://example/images")
    assert extra["diffusion_ids"] == [diffusion_id]
    assert extra["files"] == files
    assert extra["file_count"] == 4

    run = airflow.wait_for(
        lambda: next((r for r in consumer_runs(airflow) if r["state"] in ("success", "failed")), None),
        RUN_TIMEOUT,
        "the asset-triggered consumer run",
    )
    assert run["run_type"] == "asset_triggered"
    assert run["state"] == "success", airflow.task_states(CONSUMER, run["run_id"])
    seen = airflow.xcom(CONSUMER, run["run_id"], "use_images")
    assert seen == files
    for uri in seen:
        assert Path(uri.removeprefix("file://")).stat().st_size > 0

    assert airflow.wait_for_run(DECORATOR, decorator_run, timeout=RUN_TIMEOUT) == "success", (
        airflow.task_states(DECORATOR, decorator_run)
    )
    assert "deferred" in airflow.seen_states(DECORATOR, decorator_run, "banner")
    (banner,) = asset_extras(airflow, "getimage://example/banners")
    assert banner["prompt"].startswith("a banner for the ")
    assert banner["model"] == "midjourney"
    assert banner["diffusion_ids"] == [airflow.xcom(DECORATOR, decorator_run, "banner", "diffusion_id")]

    assert airflow.database_containing(e2e_emulator.api_key) == {}
