"""
Smoke tests of ``benchmarks.batch_check`` at tiny N, with no Airflow deployment.

A run of the check itself starts a deployment (25-40 s on 2 cores) and runs both paths, so it is
left to ``make bench-batch``. What runs here is every part it is made of, each for real where it
can be: the arguments; the numbers, targets and report from observations; the metadata-database
reads (relation sizes, a run's rows, the watch loop's one query) on a throw-away PostgreSQL
database (skipped, with the reason, when no server answers); the prompts file and the manifest
reader; and both benchmark DAGs run through ``dag.test()`` against the emulator at N = 2 and 5.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from benchmarks.batch_check import cli, results, run
from benchmarks.report import json_safe
from harness import DatabaseUnavailable, DeploymentTrees, MetadataDatabase, postgres_database
from harness.database import pg_connect
from tests import dag_runs

if TYPE_CHECKING:
    from collections.abc import Iterator

    from airflow_provider_getimage.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
BENCH_DAGS = REPO / "benchmarks" / "dags"
N_BATCH = 20
N_MAPPED = 4
LATENCY = 30.0
PARAMS = cli.params_of(
    cli.parse_args(["--batch-n", str(N_BATCH), "--mapped-n", str(N_MAPPED), "--latency", "30"])
)


# ------------------------------------------------------------------------------------ arguments
def test_defaults_are_the_make_bench_batch_run():
    args = cli.parse_args([])
    assert (args.batch_n, args.mapped_n, args.paths) == (2000, 200, ["batch", "mapped"])
    assert (args.latency, args.poll_interval, args.parallelism) == (120.0, 5.0, 4)
    assert (args.max_submissions_per_second, args.max_polls_per_second, args.rate_limit) == (10.0, 20.0, 40.0)
    assert args.max_in_flight == 2000  # all of them: the trigger takes up to 10,000
    assert (args.tls, args.warm_up, args.check, args.json_path) == (True, True, False, None)


def test_the_default_window_is_the_triggers_largest():
    from airflow_provider_getimage.triggers.batch import MAX_WINDOW

    assert cli.MAX_WINDOW == MAX_WINDOW
    assert cli.parse_args(["--batch-n", "30"]).max_in_flight == 30


def test_arguments_parsed():
    args = cli.parse_args(
        ["--batch-n", "50", "--paths", "mapped", "--rate-limit", "0", "--max-in-flight", "7", "--check"]
    )
    assert (args.batch_n, args.paths, args.rate_limit, args.max_in_flight, args.check) == (
        50,
        ["mapped"],
        None,
        7,
        True,
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--batch-n", "0"],
        ["--mapped-n", "0"],
        ["--latency", "0"],
        ["--max-submissions-per-second", "0"],
        ["--idle-seconds", "-1"],
        ["--rate-limit", "-3"],
        ["--paths", "batch", "batch"],
        ["--paths", "nope"],
        # The budgets must stay under the rate limit, or the 429 target measures a misconfiguration.
        ["--rate-limit", "30", "--max-submissions-per-second", "10", "--max-polls-per-second", "20"],
    ],
)
def test_bad_arguments_rejected(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.parse_args(argv)
    assert exc.value.code == 2
    assert "error:" in capsys.readouterr().err


# ----------------------------------------------------------------------- numbers and targets
def observation(path: str, **changes: Any) -> results.PathObservation:
    """A clean run of one path at tiny N: batch far cheaper per generation, nothing duplicated."""
    n = N_BATCH if path == "batch" else N_MAPPED
    batch = path == "batch"
    requests = 3 * n if batch else 12 * n
    values: dict[str, Any] = {
        "path": path,
        "n": n,
        "run_id": f"manual__{path}",
        "wall_s": 80.0 if batch else 60.0,
        "run_state": "success",
        "timed_out": False,
        "rate_limit": 40.0 if batch else None,
        "samples": [
            results.Sample(1.0, "running", {"running": 1}, 1, 0, 0, 0.5, 0, 0),
            results.Sample(40.0, "running", {"deferred": 1}, n, n, 0, 1.0, 1, 900),
            results.Sample(80.0, "success", {"success": 1}, n, 2 * n, 0, 2.0, 0, 0),
        ],
        # per generation: batch 0.1 s, mapped 2.5 s (25x)
        "cpu_by_component": {
            "scheduler": 0.6 * n * 0.1,
            "api-server": 0.2 * n * 0.1,
            "triggerer": 0.2 * n * 0.1,
        }
        if batch
        else {"scheduler": 0.6 * n * 2.5, "api-server": 0.2 * n * 2.5, "triggerer": 0.2 * n * 2.5},
        "idle_cpu_pct": {"scheduler": 1.0, "api-server": 0.5, "triggerer": 0.5},
        "emulator_stats": {
            "submissions": n,
            "polls": 2 * n,
            "requests": requests,
            "rate_limited": 0,
            "responses_by_status": {"200": 2 * n, "201": n},
            "connections": 3,
        },
        "prompts": [f"bench #{index}" for index in range(n)],
        "sizes_before": {"task_instance": 8192, "xcom": 8192, "trigger": 8192, "job": 8192},
        "sizes_after": {
            "task_instance": 8192 + 100 * n,
            "xcom": 8192,
            "trigger": 8192 + 50 * n,
            "job": 16384,
        },
        "run_rows": {
            "task_instance": {"rows": 1, "bytes": 900},
            "xcom": {"rows": 1, "bytes": 300},
            "log": {"rows": 0, "bytes": 0},
        },
        "outcome": {"finished": n},
    }
    values.update(changes)
    return results.PathObservation(**values)


def summaries(**observations: results.PathObservation) -> dict[str, dict[str, Any]]:
    paths = {"batch": observation("batch"), "mapped": observation("mapped"), **observations}
    return {path: results.summarise(obs) for path, obs in paths.items()}


def verdicts(found: dict[str, dict[str, Any]], params: dict[str, Any] = PARAMS) -> dict[str, str]:
    rows = results.targets(found.get("batch"), found.get("mapped"), params)
    return {row["target"].split(",")[0]: row["verdict"] for row in rows}


def test_summary_per_generation():
    batch = summaries()["batch"]
    assert batch["cpu_ms_per_generation"] == pytest.approx(100.0)
    # idle 2% of a core over 80 s = 1.6 CPU s, spread over 20 generations
    assert batch["cpu_above_idle_ms_per_generation"] == pytest.approx(100.0 - 1600 / N_BATCH)
    assert batch["polls_per_generation"] == 2
    assert batch["share_429"] == 0
    # run tables: those holding a row of the run, and trigger (its rows are gone once fired); not job
    assert batch["db_tables"] == ["task_instance", "trigger", "xcom"]
    assert batch["db_growth_bytes"] == 150 * N_BATCH
    assert batch["db_growth_all_tables_bytes"] == 150 * N_BATCH + 8192
    assert batch["row_bytes_per_generation"] == pytest.approx(1200 / N_BATCH)
    assert (batch["trigger_rows_peak"], batch["trigger_bytes_peak"]) == (1, 900)
    assert results.cpu_ratio(batch, summaries()["mapped"]) == pytest.approx(25.0)


def test_clean_run_meets_every_target():
    found = summaries()
    assert set(verdicts(found).values()) == {"PASS"}
    rows = results.targets(found["batch"], found["mapped"], PARAMS)
    assert results.exit_code(rows, check=True) == 0


def test_cpu_ratio_under_20_fails_only_with_check():
    cheap_mapped = observation("mapped", cpu_by_component={"scheduler": N_MAPPED * 1.5})  # 15x
    found = summaries(mapped=cheap_mapped)
    assert verdicts(found)["Airflow CPU per generation"] == "FAIL"
    rows = results.targets(found["batch"], found["mapped"], PARAMS)
    assert results.exit_code(rows, check=True) == 1
    assert results.exit_code(rows, check=False) == 0


def test_wall_time_over_the_bound_fails():
    bound = results.wall_bound(N_BATCH, PARAMS["max_submissions_per_second"], LATENCY)
    assert bound == N_BATCH / 10 + LATENCY + 60
    assert verdicts(summaries(batch=observation("batch", wall_s=bound + 1)))["batch wall time s"] == "FAIL"
    assert verdicts(summaries(batch=observation("batch", wall_s=bound)))["batch wall time s"] == "PASS"


def test_a_duplicate_submission_fails():
    doubled = observation("batch", prompts=["bench #0"] + [f"bench #{i}" for i in range(N_BATCH)])
    doubled.emulator_stats["submissions"] = N_BATCH + 1
    found = summaries(batch=doubled)
    assert found["batch"]["duplicate_prompts"] == 1
    assert verdicts(found)["batch submissions"] == "FAIL"


def test_db_growth_over_200_bytes_per_generation_fails():
    grown = observation(
        "batch", sizes_after={"task_instance": 8192 + 201 * N_BATCH, "xcom": 8192, "trigger": 8192}
    )
    assert verdicts(summaries(batch=grown))["batch metadata-DB growth"] == "FAIL"


def test_more_than_1_percent_429s_fails():
    limited = observation("batch")
    limited.emulator_stats.update(requests=1000, rate_limited=11)
    found = summaries(batch=limited)
    assert found["batch"]["share_429"] == pytest.approx(0.011)
    assert verdicts(found)["batch 429 answers"] == "FAIL"
    limited.emulator_stats.update(rate_limited=10)
    assert verdicts(summaries(batch=limited))["batch 429 answers"] == "PASS"


def test_a_failed_batch_fails_and_leaves_the_ratio_unjudged():
    failed = observation("batch", run_state="failed", wall_s=None, outcome={"finished": N_BATCH - 2})
    found = verdicts(summaries(batch=failed))
    assert found["batch: every item finished"] == "FAIL"
    assert found["Airflow CPU per generation"] == "n/a"
    assert found["batch wall time s"] == "n/a"


def test_without_the_mapped_path_the_ratio_is_not_judged():
    found = summaries()
    del found["mapped"]
    assert verdicts(found)["Airflow CPU per generation"] == "n/a"
    assert verdicts(found)["mapped baseline: every task succeeded"] == "n/a"
    rows = results.targets(found["batch"], None, PARAMS)
    assert results.exit_code(rows, check=True) == 0  # n/a is not a failure


def test_render_and_json():
    found = summaries()
    result = {
        "machine": {"cpu_count": 2, "platform": "Linux", "python": "3.11", "airflow": "3.3.2", "git": "abc"},
        "params": PARAMS,
        "summaries": found,
        "targets": results.targets(found["batch"], found["mapped"], PARAMS),
    }
    text = results.render(result)
    assert f"{N_BATCH} prompts in one batch task vs {N_MAPPED} mapped tasks" in text
    assert "| measure | batch | mapped |" in text
    assert "| Airflow CPU ms / generation | 100.0 | 2500.0 |" in text
    assert "| scheduler | 1.2 | 6.0 |" in text
    assert "| task_instance (run table) | 2000 | 400 |" in text
    assert "| Airflow CPU per generation, mapped / batch | 25.0x | >= 20x | PASS |" in text
    assert "FAIL" not in text
    json.dumps(json_safe(result), default=str)  # the --json file


def test_render_without_any_measurement():
    params = {**PARAMS, "paths": ["batch"]}
    text = results.render(
        {
            "machine": {"cpu_count": 2, "platform": "L", "python": "3", "airflow": "3", "git": "x"},
            "params": params,
            "summaries": {},
            "targets": results.targets(None, None, params),
        }
    )
    assert "| batch: every item finished, run succeeded | - |" in text
    assert math.isnan(results.cpu_ratio(None, None))


# ------------------------------------------------------------------ prompts and the manifest
def test_prompts_file_and_manifest_reader(tmp_path):
    prompts = run.write_prompts(tmp_path / "prompts.jsonl", 3, "bench-x")
    lines = [json.loads(line) for line in (tmp_path / "prompts.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == prompts
    assert [line["key"] for line in lines] == ["item-00000", "item-00001", "item-00002"]
    assert len(set(prompts)) == 3
    manifest = tmp_path / "manifest.jsonl"
    rows = [
        {"index": i, "prompt": p, "diffusion_id": f"d{i}", "status": "finished", "image_urls": ["u1", "u2"]}
        for i, p in enumerate(prompts)
    ]
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows))
    read = run.read_manifest(manifest, prompts, {"d0", "d1", "d2"})
    assert read == {
        "finished": 3,
        "statuses": {"finished": 3},
        "manifest_rows": 3,
        "in_order": True,
        "ids_distinct": 3,
        "ids_unknown": 0,
        "images": 6,
    }
    rows[2].update(diffusion_id="d0", status="failed")
    manifest.write_text("".join(json.dumps(row) + "\n" for row in reversed(rows)))
    read = run.read_manifest(manifest, prompts, {"d0", "d1"})
    assert (read["finished"], read["in_order"], read["ids_distinct"], read["ids_unknown"]) == (2, False, 2, 0)
    assert run.read_manifest(tmp_path / "missing.jsonl", prompts, set())["error"].startswith("no manifest")


# -------------------------------------------------------------- the metadata database, for real
@pytest.fixture
def database() -> Iterator[MetadataDatabase]:
    """A throw-away PostgreSQL database with the three tables the watch loop reads, minimal."""
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database(prefix="getimage_bench_test"))
        except DatabaseUnavailable as exc:
            pytest.skip(str(exc))
        with contextlib.closing(pg_connect(url)) as connection:
            connection.autocommit = True
            with connection.cursor() as cursor:
                cursor.execute(
                    "CREATE TABLE dag_run (id serial PRIMARY KEY, dag_id text, run_id text, state text);"
                    "CREATE TABLE task_instance "
                    "(id serial PRIMARY KEY, dag_id text, run_id text, state text);"
                    "CREATE TABLE trigger (id serial PRIMARY KEY, kwargs text);"
                    "CREATE TABLE job (id serial PRIMARY KEY, state text);"
                )
        yield MetadataDatabase(url)


def execute(db: MetadataDatabase, sql: str, params: tuple[Any, ...] = ()) -> None:
    with contextlib.closing(pg_connect(db.url)) as connection:
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(sql, params)


def test_relation_sizes_and_a_runs_rows(database):
    before = database.relation_sizes()
    assert set(before) == {"dag_run", "task_instance", "trigger", "job"}
    execute(
        database,
        "INSERT INTO dag_run (dag_id, run_id, state) VALUES ('d', 'r1', 'running'), ('d', 'r2', 'x')",
    )
    execute(
        database,
        "INSERT INTO task_instance (dag_id, run_id, state) "
        "SELECT 'd', 'r1', 'queued' FROM generate_series(1, 500)",
    )
    after = database.relation_sizes()
    assert after["task_instance"] - before["task_instance"] >= 500 * 30  # rows, pages and the index
    assert after["job"] == before["job"]
    rows = database.run_row_bytes("d", "r1")
    assert set(rows) == {"dag_run", "task_instance"}  # the tables with dag_id and run_id
    assert rows["dag_run"]["rows"] == 1
    assert rows["task_instance"]["rows"] == 500
    assert 500 * 30 <= rows["task_instance"]["bytes"] <= 500 * 80


def test_relation_sizes_need_postgresql(tmp_path):
    sqlite = MetadataDatabase(f"sqlite:///{tmp_path / 'a.db'}")
    with pytest.raises(ValueError, match="PostgreSQL"):
        sqlite.relation_sizes()
    with pytest.raises(ValueError, match="PostgreSQL"):
        sqlite.run_row_bytes("d", "r")


class DatabaseOnly:
    """The deployment as the watch loop sees it: its database (real) and a liveness check."""

    def __init__(self, database: MetadataDatabase) -> None:
        self.query = database.query

    def check_alive(self, *names: str) -> None:
        pass


def test_watch_reads_run_tasks_and_triggers_until_the_run_ends(database, getimage_emulator: Emulator):
    execute(database, "INSERT INTO dag_run (dag_id, run_id, state) VALUES ('d', 'r', 'running')")
    execute(
        database,
        "INSERT INTO task_instance (dag_id, run_id, state) VALUES ('d', 'r', 'deferred'), ('d', 'r', NULL)",
    )
    execute(database, "INSERT INTO trigger (kwargs) VALUES (%s)", ('{"ids": [1, 2, 3]}',))

    def finish() -> None:
        time.sleep(0.5)
        execute(database, "DELETE FROM trigger")
        execute(database, "UPDATE task_instance SET state = 'success'")
        execute(database, "UPDATE dag_run SET state = 'success'")

    trees = DeploymentTrees({"this": os.getpid()})
    trees.sample()
    trees.mark()
    thread = threading.Thread(target=finish)
    thread.start()
    airflow: Any = DatabaseOnly(database)
    samples, wall, state = run.watch(
        airflow, getimage_emulator, trees, "d", "r", started=time.monotonic(), timeout=30, interval=0.05
    )
    thread.join()
    assert state == "success"
    assert wall == samples[-1].t
    assert samples[0].states == {"deferred": 1, "none": 1}
    assert (samples[0].triggers, samples[-1].triggers) == (1, 0)
    assert samples[0].trigger_bytes > len('{"ids": [1, 2, 3]}')
    assert samples[-1].states == {"success": 2}
    assert samples[-1].cpu_s >= 0


def test_watch_gives_up_at_the_timeout(database, getimage_emulator: Emulator):
    execute(database, "INSERT INTO dag_run (dag_id, run_id, state) VALUES ('d', 'r', 'running')")
    trees = DeploymentTrees({"this": os.getpid()})
    airflow: Any = DatabaseOnly(database)
    samples, wall, state = run.watch(
        airflow, getimage_emulator, trees, "d", "r", started=time.monotonic(), timeout=0.2, interval=0.05
    )
    assert (wall, state) == (None, "running")
    assert samples[-1].t > 0.2


# ------------------------------------------------------------- both DAGs, through real Airflow
@pytest.mark.usefixtures("airflow_db")
def test_mapped_dag_runs_at_tiny_n(getimage_airflow_conn: Emulator):
    dag = dag_runs.parse(BENCH_DAGS / "bench_mapped.py")["bench_deferred_mapped"]
    dag_run = dag_runs.run(dag, n=2, poll_interval=0.2, timeout=60.0, tag="bench-smoke")
    assert set(dag_runs.states(dag_run).values()) == {"success"}
    assert getimage_airflow_conn.stats()["submissions"] == 2


def batch_operator_missing() -> bool:
    from airflow_provider_getimage.operators import getimage

    return not hasattr(getimage, "GetImageBatchOperator")


@pytest.mark.usefixtures("airflow_db")
@pytest.mark.skipif(batch_operator_missing(), reason="GetImageBatchOperator is not on this branch yet")
def test_batch_dag_runs_at_tiny_n_with_the_benchmarks_settings(
    getimage_airflow_conn: Emulator, tmp_path, monkeypatch
):
    args = cli.parse_args(["--batch-n", "5", "--latency", "1", "--poll-interval", "0.2", "--timeout", "60"])
    monkeypatch.setenv(run.KWARGS_ENV, json.dumps(run.batch_kwargs(args)))
    dag = dag_runs.parse(BENCH_DAGS / "bench_batch.py")["bench_batch"]
    task: Any = dag.get_task("generate")
    assert (task.max_submissions_per_second, task.max_in_flight, task.max_polls_per_second) == (10.0, 5, 20.0)
    dag_id, conf, prompts, results_dir = run.path_run(args, "batch", 5, tmp_path)
    assert dag_id == "bench_batch"
    assert results_dir is not None
    dag_run = dag_runs.run(dag, **conf)
    assert dag_runs.states(dag_run) == {("generate", -1): "success"}
    issued = {diffusion["id"] for diffusion in getimage_airflow_conn.diffusions()}
    outcome = run.read_manifest(results_dir / "manifest.jsonl", prompts, issued)
    assert (outcome["finished"], outcome["in_order"], outcome["ids_distinct"], outcome["ids_unknown"]) == (
        5,
        True,
        5,
        0,
    )
    assert getimage_airflow_conn.stats()["submissions"] == 5
    summary = dag_runs.xcom(dag_run, "generate")
    assert (summary["total"], summary["finished"]) == (5, 5)
