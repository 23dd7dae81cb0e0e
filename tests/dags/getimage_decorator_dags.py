"""DAGs the ``@task.getimage`` tests run through ``dag.test()`` (the test DAG bundle, see conftest)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.providers.common.compat.sdk import DAG, Asset, task

START = datetime(2026, 1, 1)
DECORATED_IMAGES = Asset(name="getimage_decorated_images", uri="getimage://tests/decorated")

with DAG("getimage_decorator_bad_return", schedule=None, start_date=START, params={"value": 42}):

    @task.getimage(poll_interval=0.1, timeout=30)
    def bad(params: dict[str, Any] | None = None) -> Any:
        """Returns whatever the run's conf says: the test passes values the decorator must refuse."""
        return (params or {})["value"]

    bad()

with DAG("getimage_decorator_deferred", schedule=None, start_date=START):

    @task.getimage(deferrable=True, poll_interval=0.1, timeout=30, outlets=[DECORATED_IMAGES])
    def deferred() -> dict[str, Any]:
        return {"prompt": "a deferred decorated owl", "model": "flux", "parameters": {"seed": 3}}

    deferred()
