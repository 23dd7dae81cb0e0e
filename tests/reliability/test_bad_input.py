"""Bad input fails with a clear error naming the bad value, before anything is submitted (0 POSTs)."""

from __future__ import annotations

import json
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from tests.airflow_compat import dag_bag
from tests.fakes import RecordingTI, task_context

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator


def execute(operator: GetImageDiffusionOperator) -> Any:
    return operator.execute(task_context(RecordingTI()))


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ('prompt=""', "prompt"),
        ('prompt="   "', "prompt"),
        ("prompt=42", "prompt"),
        ('prompt="x", model=["midjourney"]', "model"),
        ('prompt="x", model=""', "model"),
        ('prompt="x", parameters="seed=1"', "parameters"),
        ('prompt="x", parameters=[1, 2]', "parameters"),
        ('prompt="x", poll_interval=0', "poll_interval"),
        ('prompt="x", poll_interval=-1', "poll_interval"),
        ('prompt="x", timeout=0', "timeout"),
        ('prompt="x", getimage_conn_id=""', "getimage_conn_id"),
    ],
)
def test_bad_arguments_fail_the_dag_parse(arguments: str, named: str, tmp_path: Path) -> None:
    """What is known when the file is parsed fails the parse, as an import error naming it."""
    dag_file = tmp_path / "bad_dag.py"
    dag_file.write_text(
        textwrap.dedent(
            f"""
            from datetime import datetime
            from airflow.sdk import DAG
            from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

            with DAG("bad", schedule=None, start_date=datetime(2026, 1, 1)):
                GetImageDiffusionOperator(task_id="generate", {arguments})
            """
        )
    )
    bag = dag_bag(dag_file)
    assert "bad" not in bag.dags
    (error,) = bag.import_errors.values()
    assert named in error


@pytest.mark.parametrize(
    ("rendered", "match"),
    [
        ({"prompt": "  "}, "prompt must not be empty"),
        ({"prompt": None}, "prompt must be a string"),
        ({"model": 7}, "model must be a string"),
        ({"parameters": '{"seed": 1}'}, "parameters must be a dict"),
    ],
)
def test_bad_rendered_values_fail_before_submitting(
    rendered: dict[str, Any], match: str, getimage_airflow_conn: Emulator
) -> None:
    """Templated values are checked again once rendered, before the submission."""
    operator = GetImageDiffusionOperator(
        task_id="generate", prompt="{{ params.prompt }}", model="{{ params.model }}", parameters=None
    )
    operator.prompt, operator.model = "a fine prompt", "midjourney"
    for name, value in rendered.items():
        setattr(operator, name, value)
    with pytest.raises((TypeError, ValueError), match=match):
        execute(operator)
    assert getimage_airflow_conn.stats()["requests"] == 0


@pytest.mark.parametrize(
    ("connection", "match"),
    [
        (None, "getimage_missing"),
        ({"conn_type": "getimage", "host": "{url}"}, "no API key"),
        ({"conn_type": "getimage", "host": "{url}", "password": "  "}, "no API key"),
        ({"conn_type": "getimage", "host": "not a url at all", "password": "k"}, "not an http"),
        ({"conn_type": "getimage", "host": "ftp://{hostport}", "password": "k"}, "not an http"),
        (
            {"conn_type": "getimage", "host": "{url}", "password": "k", "extra": {"request_timeout": "soon"}},
            "request_timeout",
        ),
        (
            {"conn_type": "getimage", "host": "{url}", "password": "k", "extra": {"verify": "/no/ca.pem"}},
            "CA bundle",
        ),
    ],
    ids=[
        "unknown-conn-id",
        "no-key",
        "blank-key",
        "host-not-url",
        "host-not-http",
        "bad-timeout",
        "no-ca-file",
    ],
)
def test_bad_connections_fail_before_submitting(
    connection: dict[str, Any] | None,
    match: str,
    getimage_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    conn_id = "getimage_missing" if connection is None else "getimage_bad"
    if connection is not None:
        hostport = getimage_emulator.url.split("://", 1)[1]
        text = json.dumps(connection).replace("{url}", getimage_emulator.url).replace("{hostport}", hostport)
        monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_BAD", text)
    operator = GetImageDiffusionOperator(task_id="generate", prompt="a cat", getimage_conn_id=conn_id)
    with pytest.raises(Exception, match=match) as info:
        execute(operator)
    if connection is not None:
        assert isinstance(info.value, GetImageError)
    assert getimage_emulator.stats()["requests"] == 0, "nothing was sent, so nothing was paid"


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"prompt": "p" * 10_001}, r"Task 'generate': prompt is 10001 characters long, over the 10000"),
        (
            {"prompt": "x", "poll_interval": 0.01},
            r"Task 'generate': poll_interval must be at least 0.05 s, got 0.01",
        ),
    ],
)
def test_operator_caps_name_the_value_and_the_task(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GetImageDiffusionOperator(task_id="generate", **kwargs)


@pytest.mark.parametrize("diffusion_id", ["..", ".", "a b", "a\nb", "x" * 201, ""])
def test_sensor_checks_a_final_diffusion_id_at_parse_time(diffusion_id: str) -> None:
    from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

    with pytest.raises(ValueError, match="Task 'wait': diffusion_id"):
        GetImageDiffusionSensor(task_id="wait", diffusion_id=diffusion_id)


def test_sensor_leaves_a_templated_diffusion_id_for_run_time() -> None:
    from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

    template = "{{ ti.xcom_pull(task_ids='submit', key='diffusion_id') }}"
    assert GetImageDiffusionSensor(task_id="wait", diffusion_id=template).diffusion_id == template
