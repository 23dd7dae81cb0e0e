"""
``@task.getimage``: the return-value rules as a table, and DAGs run through ``dag.test()`` against
the emulator (mapped, deferred, refused before any submission).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage.decorators.getimage import request_from
from tests import dag_runs
from tests.test_assets import DAG_TEST_ASSETS, asset_events

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a fox", {"prompt": "a fox", "model": "midjourney", "parameters": {}}),
        ({"prompt": "a fox"}, {"prompt": "a fox", "model": "midjourney", "parameters": {}}),
        (
            {"prompt": "a fox", "model": "flux", "parameters": {"seed": 1}},
            {"prompt": "a fox", "model": "flux", "parameters": {"seed": 1}},
        ),
        ({"prompt": "a fox", "model": None}, {"prompt": "a fox", "model": None, "parameters": {}}),
    ],
    ids=["string", "mapping", "mapping overrides", "connection's default model"],
)
def test_request_from(value: object, expected: dict[str, Any]) -> None:
    assert request_from(value, "midjourney", None) == expected


@pytest.mark.parametrize(
    ("value", "error", "match"),
    [
        (42, TypeError, r"must return a prompt string or a mapping .* got int 42"),
        (None, TypeError, r"got NoneType None"),
        (["a fox"], TypeError, r"got list \['a fox'\]"),
        ("", ValueError, r"prompt"),
        ({"model": "flux"}, ValueError, r"no 'prompt'"),
        ({"prompt": "a fox", "size": "1x1"}, ValueError, r"unknown key\(s\) \['size'\]"),
        ({"prompt": "a fox", "parameters": "seed=1"}, TypeError, r"parameters"),
    ],
    ids=["int", "None", "list", "empty prompt", "no prompt", "unknown key", "bad parameters"],
)
def test_request_from_refuses(value: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        request_from(value, "midjourney", None)


@pytest.fixture(scope="module")
def dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_decorator_dags.py")


@DAG_TEST_ASSETS
def test_example_dag_mapped_and_deferred(getimage_airflow_conn: Emulator) -> None:
    dag = dag_runs.parse(dag_runs.EXAMPLE_DAGS / "example_getimage_decorator.py")[
        "example_getimage_decorator"
    ]
    dag_run = dag_runs.run(dag)
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    by_id = {d["id"]: d for d in getimage_airflow_conn.diffusions()}
    prompts = []
    for map_index in range(3):
        diffusion_id = dag_runs.xcom(dag_run, "poster", "diffusion_id", map_index)
        urls = dag_runs.xcom(dag_run, "poster", map_index=map_index)
        assert dag_runs.xcom(dag_run, "poster", "diffusion", map_index)["id"] == diffusion_id
        assert len(urls) == 4
        assert all(url.startswith(getimage_airflow_conn.url) for url in urls)
        prompts.append(by_id[diffusion_id]["prompt"])
    assert prompts == [f"a travel poster of {city}, art deco" for city in ("Lisbon", "Kyoto", "Valparaiso")]
    banner = by_id[dag_runs.xcom(dag_run, "banner", "diffusion_id")]
    assert (
        banner["prompt"]
        == f"a banner for the {dag_run.logical_date or dag_run.run_after:%Y-%m-%d} newsletter"
    )
    assert dag_runs.xcom(dag_run, "count") == 16
    assert getimage_airflow_conn.stats()["submissions"] == 4


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (42, "got int 42"),
        ({"prompt": "x", "negative": "y"}, "unknown key"),
        ({"model": "flux"}, "no 'prompt'"),
    ],
)
def test_bad_return_value_fails_before_any_submission(
    dags: dict[str, DAG],
    getimage_airflow_conn: Emulator,
    capfd: pytest.CaptureFixture[str],
    value: object,
    match: str,
) -> None:
    dag_run = dag_runs.run(dags["getimage_decorator_bad_return"], value=value)
    assert dag_runs.states(dag_run) == {("bad", -1): "failed"}
    out = capfd.readouterr().out
    assert "Task 'bad'" in out
    assert match in out
    assert getimage_airflow_conn.stats()["submissions"] == 0


@DAG_TEST_ASSETS
@pytest.mark.getimage_emulator(latency=1.5)
def test_deferred_task_resumes_and_announces_no_placeholder(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    dag_run = dag_runs.run(dags["getimage_decorator_deferred"])
    assert dag_runs.states(dag_run) == {("deferred", -1): "success"}
    assert "Deferring: diffusion" in capfd.readouterr().out
    diffusion_id = dag_runs.xcom(dag_run, "deferred", "diffusion_id")
    (diffusion,) = getimage_airflow_conn.diffusions()
    assert diffusion["id"] == diffusion_id
    assert (diffusion["prompt"], diffusion["model"]) == ("a deferred decorated owl", "flux")
    extra = asset_events("getimage://tests/decorated")[-1]
    # dag.test() resumes with the event only (it drops the resume kwargs that carry the request):
    # the resumed task, a new instance, leaves the prompt and model out instead of a placeholder.
    assert "prompt" not in extra
    assert "model" not in extra
    assert extra["diffusion_ids"] == [diffusion_id]
    assert extra["image_urls"] == dag_runs.xcom(dag_run, "deferred")


def test_prompt_argument_is_refused() -> None:
    from airflow.providers.common.compat.sdk import DAG, task

    with DAG("getimage_decorator_prompt_arg", schedule=None, start_date=datetime(2026, 1, 1)):

        @task.getimage(prompt="no")
        def draw() -> str:
            return "x"

        with pytest.raises(TypeError, match="takes no 'prompt' argument"):
            draw()


def test_registered_in_provider_info() -> None:
    from airflow.providers_manager import ProvidersManager

    from airflow_provider_getimage.decorators.getimage import getimage_task

    assert ProvidersManager().taskflow_decorators["getimage"] is getimage_task
