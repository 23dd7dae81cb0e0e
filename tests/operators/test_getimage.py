"""The operator through real Airflow (``dag.test()``) against the emulator over loopback HTTP."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from airflow_provider_getimage.exceptions import GetImageDiffusionFailed, GetImageTimeoutError
from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from tests import dag_runs
from tests.airflow_compat import airflow_before, requires_airflow
from tests.fakes import DictTaskStateStore, RecordingTI, task_context

if TYPE_CHECKING:
    from airflow.sdk import DAG

    from airflow_provider_getimage.emulator import Emulator

pytestmark = pytest.mark.usefixtures("airflow_db")


@pytest.fixture(scope="module")
def dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_operator_dags.py")


def test_waits_and_returns_urls(dags: dict[str, DAG], getimage_airflow_conn: Emulator) -> None:
    dag_run = dag_runs.run(dags["getimage_operator_wait"], prompt="a snowy owl")
    assert dag_runs.states(dag_run) == {("generate", -1): "success"}
    urls = dag_runs.xcom(dag_run, "generate")
    diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
    record = dag_runs.xcom(dag_run, "generate", "diffusion")
    assert record["id"] == diffusion_id
    assert record["status"] == "FINISHED"
    assert urls == record["images"]
    assert len(urls) == 4
    (diffusion,) = getimage_airflow_conn.diffusions()
    assert diffusion["id"] == diffusion_id
    assert diffusion["body"] == {
        "prompt": "a snowy owl",
        "model": "midjourney",
        "seed": 7,
        "negative_prompt": "blurry",
    }, "templated prompt and parameters were rendered and sent untouched"
    assert getimage_airflow_conn.stats()["submissions"] == 1
    assert dag_runs.xcom(dag_run, "generate", "_link_GetImageImagesLink") == (
        f"/getimage/gallery/getimage_operator_wait/{quote(dag_run.run_id, safe='')}/generate"
    ), "extra link to this task instance's gallery page (no [api] base_url here: a path)"


def test_submit_only_returns_the_id(dags: dict[str, DAG], getimage_airflow_conn: Emulator) -> None:
    dag_run = dag_runs.run(dags["getimage_operator_submit_only"])
    diffusion_id = dag_runs.xcom(dag_run, "submit")
    assert diffusion_id == dag_runs.xcom(dag_run, "submit", "diffusion_id")
    assert diffusion_id == getimage_airflow_conn.diffusions()[0]["id"]
    stats = getimage_airflow_conn.stats()
    assert (stats["submissions"], stats["polls"]) == (1, 0)


def test_failed_diffusion_fails_the_task_with_its_id(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    dag_run = dag_runs.run(dags["getimage_operator_wait"], prompt="something forbidden")
    assert dag_runs.states(dag_run) == {("generate", -1): "failed"}
    diffusion_id = dag_runs.xcom(dag_run, "generate", "diffusion_id")
    assert diffusion_id == getimage_airflow_conn.diffusions()[0]["id"], "the id was pushed before the wait"
    assert getimage_airflow_conn.stats()["submissions"] == 1


def test_timeout_fails_the_task(dags: dict[str, DAG], getimage_airflow_conn: Emulator) -> None:
    getimage_airflow_conn.configure(latency=600)
    dag_run = dag_runs.run(dags["getimage_operator_timeout"])
    assert dag_runs.states(dag_run) == {("generate", -1): "failed"}
    assert dag_runs.xcom(dag_run, "generate", "diffusion_id")


def test_dynamic_mapping_one_submission_per_prompt(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    dag_run = dag_runs.run(dags["getimage_operator_mapped"])
    states = dag_runs.states(dag_run)
    assert states == {
        ("generate", 0): "success",
        ("generate", 1): "success",
        ("generate", 2): "success",
        ("gather", -1): "success",
    }
    urls = dag_runs.xcom(dag_run, "gather")
    assert len(urls) == 12
    prompts = sorted(d["prompt"] for d in getimage_airflow_conn.diffusions())
    assert prompts == ["a blue whale", "a green owl", "a red fox"]
    assert getimage_airflow_conn.stats()["submissions"] == 3


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"prompt": ""}, ValueError, "prompt must not be empty"),
        ({"prompt": "   "}, ValueError, "prompt must not be empty"),
        ({"prompt": 12}, TypeError, "prompt must be a string, got int: 12"),
        ({"prompt": "x", "model": ""}, ValueError, "model must not be empty"),
        ({"prompt": "x", "model": 5}, TypeError, "model must be a string"),
        ({"prompt": "x", "parameters": "seed=1"}, TypeError, "parameters must be a dict"),
        ({"prompt": "x", "parameters": {"prompt": "y"}}, ValueError, "parameters must not contain"),
        ({"prompt": "x", "poll_interval": 0}, ValueError, "poll_interval must be a positive"),
        ({"prompt": "x", "timeout": -5}, ValueError, "timeout must be a positive"),
        ({"prompt": "x", "getimage_conn_id": ""}, ValueError, "getimage_conn_id must be a non-empty"),
        ({"prompt": "x", "max_poll_interval": 1}, ValueError, r"max_poll_interval \(1\) must not be shorter"),
    ],
)
def test_bad_arguments_fail_at_parse_time(kwargs: dict, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        GetImageDiffusionOperator(task_id="bad", **kwargs)


def test_templated_arguments_are_checked_after_rendering() -> None:
    operator = GetImageDiffusionOperator(
        task_id="later",
        prompt="{{ params.prompt }}",
        parameters="{{ params.p }}",  # type: ignore[arg-type]
    )
    operator.prompt = "  "  # what a blank param renders to
    with pytest.raises(ValueError, match="prompt must not be empty"):
        operator._check_inputs()


def test_template_fields() -> None:
    assert tuple(GetImageDiffusionOperator.template_fields) == (
        "prompt",
        "model",
        "parameters",
        "getimage_conn_id",
    )


@pytest.fixture(scope="module")
def deferrable_dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_deferrable_dags.py")


def test_deferrable_returns_urls(deferrable_dags: dict[str, DAG], getimage_airflow_conn: Emulator) -> None:
    dag_run = dag_runs.run(deferrable_dags["getimage_operator_deferrable"], prompt="a deferred fox")
    assert dag_runs.states(dag_run) == {("generate", -1): "success"}
    urls = dag_runs.xcom(dag_run, "generate")
    assert len(urls) == 4
    assert dag_runs.xcom(dag_run, "generate", "diffusion")["status"] == "FINISHED"
    assert getimage_airflow_conn.stats()["submissions"] == 1


def test_deferrable_failure_and_timeout_fail_the_task(
    deferrable_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(failing_prompts=("forbidden",))
    dag_run = dag_runs.run(deferrable_dags["getimage_operator_deferrable"], prompt="a forbidden fox")
    assert dag_runs.states(dag_run) == {("generate", -1): "failed"}
    getimage_airflow_conn.configure(latency=600)
    started = time.monotonic()
    dag_run = dag_runs.run(deferrable_dags["getimage_operator_deferrable_timeout"])
    assert dag_runs.states(dag_run) == {("generate", -1): "failed"}
    assert time.monotonic() - started < 20, "the trigger kept the 1 s deadline itself"
    assert getimage_airflow_conn.stats()["submissions"] == 2


def test_deferrable_finished_at_first_check_does_not_defer(
    deferrable_dags: dict[str, DAG], getimage_airflow_conn: Emulator
) -> None:
    getimage_airflow_conn.configure(latency=0)
    dag_run = dag_runs.run(deferrable_dags["getimage_operator_deferrable"])
    assert dag_runs.states(dag_run) == {("generate", -1): "success"}
    assert getimage_airflow_conn.stats()["polls"] == 1, "one check after submitting, no trigger"


def test_deferrable_default_follows_config(monkeypatch: pytest.MonkeyPatch) -> None:
    assert GetImageDiffusionOperator(task_id="a", prompt="x").deferrable is False
    assert GetImageDiffusionOperator(task_id="b", prompt="x", deferrable=True).deferrable is True


def try_once(operator: GetImageDiffusionOperator, store: DictTaskStateStore) -> tuple[object, RecordingTI]:
    """One try of the task: a fresh task instance (XComs are cleared on retry), the same store."""
    ti = RecordingTI()
    result = operator.execute(task_context(ti, store))
    return result, ti


@requires_airflow("3.3", "the task state store (ResumableJobMixin), where a retry finds the id")
def test_retry_reconnects_to_a_running_diffusion(getimage_airflow_conn: Emulator) -> None:
    store = DictTaskStateStore()
    first = GetImageDiffusionOperator(task_id="gen", prompt="durable", poll_interval=0.05, timeout=0.3)
    getimage_airflow_conn.configure(latency=1.5)
    with pytest.raises(GetImageTimeoutError):
        try_once(first, store)  # the worker gives up (or dies) while the diffusion runs
    diffusion_id = store.values["getimage_diffusion_id"]
    retry = GetImageDiffusionOperator(task_id="gen", prompt="durable", poll_interval=0.05, timeout=10)
    urls, ti = try_once(retry, store)
    assert ti.pushed["diffusion_id"] == diffusion_id, "the retry pushed the same id again"
    assert urls == ti.pushed["diffusion"]["images"]
    assert getimage_airflow_conn.stats()["submissions"] == 1, "reconnected, not resubmitted"


@requires_airflow("3.3", "the task state store (ResumableJobMixin), where a retry finds the id")
def test_retry_after_success_returns_the_result_without_submitting(getimage_airflow_conn: Emulator) -> None:
    store = DictTaskStateStore()
    operator = GetImageDiffusionOperator(task_id="gen", prompt="done already", poll_interval=0.05, timeout=10)
    urls, _ = try_once(operator, store)
    again, ti = try_once(GetImageDiffusionOperator(task_id="gen", prompt="done already"), store)
    assert again == urls
    assert ti.pushed["diffusion_id"] == store.values["getimage_diffusion_id"]
    assert getimage_airflow_conn.stats()["submissions"] == 1


@requires_airflow("3.3", "the task state store (ResumableJobMixin), where a retry finds the id")
def test_retry_after_failed_diffusion_submits_afresh(getimage_airflow_conn: Emulator) -> None:
    store = DictTaskStateStore()
    getimage_airflow_conn.configure(failing_prompts=("flaky",))
    operator = GetImageDiffusionOperator(task_id="gen", prompt="a flaky one", poll_interval=0.05, timeout=10)
    with pytest.raises(GetImageDiffusionFailed):
        try_once(operator, store)
    failed_id = store.values["getimage_diffusion_id"]
    getimage_airflow_conn.configure(failing_prompts=())
    try_once(GetImageDiffusionOperator(task_id="gen", prompt="a flaky one", poll_interval=0.05), store)
    assert store.values["getimage_diffusion_id"] != failed_id
    assert getimage_airflow_conn.stats()["submissions"] == 2


@pytest.mark.skipif(
    not airflow_before("3.3"), reason="Airflow 3.3+ has a task state store: the retry tests above apply"
)
def test_every_try_submits_where_there_is_no_task_state_store(getimage_airflow_conn: Emulator) -> None:
    """Below Airflow 3.3 (common-compat's stand-in mixin) a retry submits again, as the README says."""
    store = DictTaskStateStore()
    _, first = try_once(GetImageDiffusionOperator(task_id="gen", prompt="again", poll_interval=0.05), store)
    urls, retry = try_once(GetImageDiffusionOperator(task_id="gen", prompt="again", poll_interval=0.1), store)
    assert retry.pushed["diffusion_id"] != first.pushed["diffusion_id"]
    assert urls == retry.pushed["diffusion"]["images"]
    assert store.values == {}, "nothing kept between tries"
    assert getimage_airflow_conn.stats()["submissions"] == 2


def test_not_durable_submits_on_every_try(getimage_airflow_conn: Emulator) -> None:
    store = DictTaskStateStore()
    for _ in range(2):
        try_once(
            GetImageDiffusionOperator(task_id="gen", prompt="x", durable=False, poll_interval=0.05), store
        )
    assert getimage_airflow_conn.stats()["submissions"] == 2
