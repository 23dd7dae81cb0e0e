"""
What a DAG author reads: parse-time errors that name the task, the argument and the DAG file's
line; no ERROR-level lines for a task that never submitted; a task log that ends with the gallery.
"""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from tests import dag_runs
from tests.airflow_compat import dag_bag

if TYPE_CHECKING:
    from pathlib import Path

    from airflow.sdk import DAG

    from airflow_provider_getimage.emulator import Emulator

GALLERY_LINE = "GetImage.io gallery of this task: "


# ----------------------------------------------------------------------------------- at parse time
@pytest.mark.parametrize(
    ("task", "argument"),
    [
        ('GetImageDiffusionOperator(task_id="the_task", prompt="")', "prompt"),
        ('GetImageDiffusionOperator(task_id="the_task", prompt="x", model="")', "model"),
        ('GetImageDiffusionOperator(task_id="the_task", prompt="x", parameters=[1])', "parameters"),
        ('GetImageDiffusionOperator(task_id="the_task", prompt="x", timeout=-1)', "timeout"),
        ('GetImageDiffusionOperator(task_id="the_task", prompt="x", poll_interval=0)', "poll_interval"),
        ('GetImageDiffusionSensor(task_id="the_task", diffusion_id="..")', "diffusion_id"),
        ('GetImageDownloadOperator(task_id="the_task", image_urls=[])', "image_urls"),
        ('GetImageDownloadOperator(task_id="the_task", image_urls=["ftp://x/a.png"])', "ftp://x/a.png"),
        (
            'GetImageDownloadOperator(task_id="the_task", image_urls=["https://x/a"], download_attempts=0)',
            "download_attempts",
        ),
        (
            'GetImageDownloadOperator(task_id="the_task", image_urls=["https://x/a"], destination="rel")',
            "destination",
        ),
    ],
)
def test_a_parse_error_names_the_task_the_argument_and_the_line(
    task: str, argument: str, tmp_path: Path
) -> None:
    """Airflow's import error shows the last frames only (inside the provider): the message names the rest."""
    dag_file = tmp_path / "authors_dag.py"
    dag_file.write_text(
        textwrap.dedent(
            """
            from datetime import datetime
            from airflow.sdk import DAG
            from airflow_provider_getimage.operators.getimage import (
                GetImageDiffusionOperator,
                GetImageDownloadOperator,
            )
            from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

            with DAG("authors_dag", schedule=None, start_date=datetime(2026, 1, 1)):
                GetImageDiffusionOperator(task_id="fine", prompt="a fine prompt")
            """
        )
        + f"    {task}\n"
    )
    line = len(dag_file.read_text().splitlines())
    bag = dag_bag(dag_file)
    assert "authors_dag" not in bag.dags
    (error,) = bag.import_errors.values()
    message = error.strip().splitlines()[-1]
    assert "Task 'the_task': " in message, message
    assert argument in message, message
    assert message.endswith(f"({dag_file}, line {line})"), message


def test_a_run_time_error_names_no_line() -> None:
    """At run time the stack is Airflow's: no line of it is the author's, so none is named."""
    from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

    operator = GetImageDiffusionOperator(task_id="later", prompt="{{ params.prompt }}")
    operator.prompt = ""  # as rendered
    with pytest.raises(ValueError, match=r"^Task 'later': prompt must not be empty or blank, got ''\.$"):
        operator._check_inputs()


# ----------------------------------------------------------------------------------- at run time
@pytest.fixture(scope="module")
def dags() -> dict[str, DAG]:
    return dag_runs.parse(dag_runs.TEST_DAGS / "getimage_messages_dags.py")


@pytest.mark.usefixtures("airflow_db")
def test_a_task_that_never_submitted_leaves_no_error_lines_but_its_own(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """
    Before, the extra link read the missing XComs when the failed try ended, and Airflow's XCom
    client logged two ERROR "XCom not found" lines per task.
    """
    dag_run = dag_runs.run(dags["getimage_messages_never_submitted"])
    output = capfd.readouterr().out
    assert dag_runs.states(dag_run) == {("generate", -1): "failed", ("wait", -1): "failed"}
    assert getimage_airflow_conn.stats()["requests"] == 0, "nothing was sent"
    assert "XCom not found" not in output
    assert "prompt must not be empty" in output
    assert GALLERY_LINE not in output, "no diffusion, no gallery"
    assert dag_runs.xcom(dag_run, "generate", "_link_GetImageImagesLink") == ""
    assert dag_runs.xcom(dag_run, "wait", "_link_GetImageImagesLink") == ""


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.getimage_emulator(latency=0.3, failing_prompts=("nsfw",))
def test_the_task_log_ends_with_the_gallery_url(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """Once per try that has a diffusion, after the task's other lines; not when it defers."""
    dag_run = dag_runs.run(dags["getimage_messages_gallery_line"])
    output = capfd.readouterr().out
    assert dag_runs.states(dag_run) == {
        ("blocking", -1): "success",
        ("deferred", -1): "success",
        ("failing", -1): "failed",
    }
    run_id = quote(dag_run.run_id, safe="")
    for task_id in ("blocking", "deferred", "failing"):
        url = f"/getimage/gallery/getimage_messages_gallery_line/{run_id}/{task_id}"
        lines = [line for line in output.splitlines() if GALLERY_LINE + url in line]
        assert len(lines) == 1, (task_id, lines)
        assert url == dag_runs.xcom(dag_run, task_id, "_link_GetImageImagesLink"), "the link's URL"
    blocking = output.index(
        GALLERY_LINE + f"/getimage/gallery/getimage_messages_gallery_line/{run_id}/blocking"
    )
    finished = [match.start() for match in re.finditer(r"finished with 4 image\(s\)", output)]
    assert any(position < blocking for position in finished), "after the task's own lines"


@pytest.mark.usefixtures("airflow_db")
def test_a_download_of_a_mapped_generation_reads_no_xcom_past_the_end(
    dags: dict[str, DAG], getimage_airflow_conn: Emulator, capfd: pytest.CaptureFixture[str]
) -> None:
    """Iterating Airflow's lazy sequence reads one item too many, logged as an ERROR; indexing does not."""
    dag_run = dag_runs.run(dags["getimage_messages_mapped_download"])
    output = capfd.readouterr().out
    assert dag_runs.states(dag_run)[("download", -1)] == "success"
    assert len(dag_runs.xcom(dag_run, "download")) == 8
    assert "XCom not found" not in output
