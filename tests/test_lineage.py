"""
OpenLineage: ``lineage.operator_lineage`` as a table, and real COMPLETE events of a ``dag.test()``
run written by the OpenLineage provider's file transport.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage import lineage
from tests import dag_runs

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

pytest.importorskip(
    "airflow.providers.openlineage", reason="needs apache-airflow-providers-openlineage (dev extra)"
)

REPO = dag_runs.REPO


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        ("file:///data/images/d_0.png", "file", "/data/images/d_0.png"),
        ("s3://bucket/images/d_0.png", "s3://bucket", "images/d_0.png"),
        ("gs://bucket/d_0.png", "gs://bucket", "d_0.png"),
    ],
)
def test_file_dataset(uri: str, namespace: str, name: str) -> None:
    dataset = lineage.file_dataset(uri)
    assert (dataset.namespace, dataset.name) == (namespace, name)


@pytest.mark.parametrize(
    ("url", "namespace", "name"),
    [
        ("https://cdn.getimage.io/i/abc/0.png", "https://cdn.getimage.io", "/i/abc/0.png"),
        ("http://127.0.0.1:8000/images/x/1.png?sig=abc#f", "http://127.0.0.1:8000", "/images/x/1.png"),
        ("https://user:secret@host.example/a.png", "https://host.example", "/a.png"),
    ],
    ids=["plain", "query and fragment dropped", "credentials dropped"],
)
def test_url_dataset(url: str, namespace: str, name: str) -> None:
    dataset = lineage.url_dataset(url)
    assert (dataset.namespace, dataset.name) == (namespace, name)


def test_operator_lineage_prefers_files_and_names_the_diffusion() -> None:
    result = lineage.operator_lineage(
        diffusion_ids="d1", image_urls=["https://h/1.png"], files=["file:///out/d1_0.png"]
    )
    assert [(d.namespace, d.name) for d in result.outputs] == [("file", "/out/d1_0.png")]
    facet = result.run_facets["externalQuery"]
    assert (facet.externalQueryId, facet.source) == ("d1", "getimage")
    assert result.inputs == []


def test_operator_lineage_of_a_batch_is_bounded() -> None:
    ids = [f"id-{n:05d}" for n in range(3000)]
    urls = [f"https://h/{n}.png" for n in range(3000)]
    result = lineage.operator_lineage(
        diffusion_ids=ids,
        image_urls=urls,
        inputs=["s3://b/prompts.jsonl"],
        manifest="s3://b/out/manifest.jsonl",
    )
    assert len(result.outputs) == lineage.MAX_OUTPUTS + 1
    assert (result.outputs[0].namespace, result.outputs[0].name) == ("s3://b", "out/manifest.jsonl")
    assert len(result.run_facets["externalQuery"].externalQueryId) <= 2000
    assert [(d.namespace, d.name) for d in result.inputs] == [("s3://b", "prompts.jsonl")]


def test_operator_lineage_without_an_id_has_no_run_facet() -> None:
    assert lineage.operator_lineage(diffusion_ids=None).run_facets == {}


def events_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.timeout(300)
def test_dag_run_emits_complete_events_with_images_and_files(
    getimage_airflow_conn: Emulator, tmp_path: Path
) -> None:
    events_file = tmp_path / "openlineage.jsonl"
    out = tmp_path / "images"
    env = {
        **os.environ,
        "GETIMAGE_OUTPUT_DIR": str(out),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "getimage-tests",
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.lineage_runner",
            str(dag_runs.EXAMPLE_DAGS / "example_getimage.py"),
            "example_getimage",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run_id = next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("RUN "))
    complete = {
        event["job"]["name"]: event for event in events_of(events_file) if event["eventType"] == "COMPLETE"
    }
    generate = complete["example_getimage.generate"]
    download = complete["example_getimage.download"]

    diffusion_id = generate["run"]["facets"]["externalQuery"]["externalQueryId"]
    assert generate["run"]["facets"]["externalQuery"]["source"] == "getimage"
    assert download["run"]["facets"]["externalQuery"]["externalQueryId"] == diffusion_id
    assert [(o["namespace"], o["name"]) for o in generate["outputs"]] == [
        (getimage_airflow_conn.url.rstrip("/"), f"/images/{diffusion_id}/{index}.png") for index in range(4)
    ]
    assert [(o["namespace"], o["name"]) for o in download["outputs"]] == [
        ("file", f"{out}/{run_id}/{diffusion_id}_{index}.png") for index in range(4)
    ]
    for _, name in [(o["namespace"], o["name"]) for o in download["outputs"]]:
        assert os.path.isfile(name)
    key = getimage_airflow_conn.api_key
    assert key not in events_file.read_text()
    # Airflow 3.0's supervisor logs its own MaskSecret requests (the key itself) at DEBUG: not ours.
    output = [line for line in (done.stdout + done.stderr).splitlines() if "MaskSecret" not in line]
    assert not [line for line in output if key in line]
