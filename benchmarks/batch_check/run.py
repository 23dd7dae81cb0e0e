"""
One run of the batch check: an emulator, a deployment on PostgreSQL, one phase per path.

Both paths run on the same deployment, one after the other, batch first (it finds the
database as a fresh deployment leaves it, so no free space a mapped run left makes its growth
look smaller). Each phase:

1. resets the emulator's counters and diffusions and sets its knobs (the batch's rate limit;
   none for the mapped baseline, which has no shared budget to keep under one);
2. measures every component's idle CPU rate for ``--idle-seconds``;
3. takes the tables' sizes, marks every process tree, triggers the DAG run;
4. samples every ``--sample-interval``: the run's state, its task states, the trigger table, the
   emulator's counters, every tree's CPU; until the run ends or ``--timeout`` passes;
5. samples the trees once more after ``SETTLE_S`` (a task process that ended a moment before
   the run's last sample has its time in its worker's reaped time by then), takes the tables'
   sizes and the run's rows again, and reads what the run produced (batch: its manifest and
   return value; mapped: each task's state and ``diffusion_id``).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import secrets
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import benchmarks.deployment_check as mapped_dag
from benchmarks.batch_check.results import PathObservation, Sample
from harness import (
    DB_ERRORS,
    TERMINAL_RUN_STATES,
    AirflowDeployment,
    DeploymentError,
    DeploymentTrees,
    postgres_database,
)

if TYPE_CHECKING:
    import argparse

    from airflow_provider_getimage.emulator import Emulator

log = logging.getLogger("benchmarks.batch_check")

DAGS = Path(__file__).resolve().parents[1] / "dags"
BATCH_DAG_ID = "bench_batch"
BATCH_TASK_ID = "generate"
KWARGS_ENV = "GETIMAGE_BENCH_BATCH_KWARGS"
SETTLE_S = 1.5
WARM_UP_N = 3
WARM_UP_LATENCY_S = 3.0
PROMPT = "a product photo of item {index}, studio light, white background"

#: One read a tick: the run's state, its task states, the trigger table (one connection: on
#: PostgreSQL each query opens one, CPU on the same cores as the deployment).
TICK_SQL = """
SELECT
  (SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?) AS run_state,
  (SELECT coalesce(json_object_agg(coalesce(s.state, 'none'), s.n), '{}')
     FROM (SELECT state, count(*) AS n FROM task_instance WHERE dag_id = ? AND run_id = ?
           GROUP BY state) AS s) AS states,
  (SELECT count(*) FROM trigger) AS triggers,
  (SELECT coalesce(sum(pg_column_size(t.*)), 0) FROM trigger AS t) AS trigger_bytes
"""


def batch_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The batch operator's settings, as ``bench_batch.py`` reads them from its environment."""
    return {
        "max_submissions_per_second": args.max_submissions_per_second,
        "max_in_flight": args.max_in_flight,
        "max_polls_per_second": args.max_polls_per_second,
        "poll_interval": args.poll_interval,
        "timeout": args.latency + args.timeout,
    }


def write_prompts(path: Path, n: int, tag: str) -> list[str]:
    """The batch's input: N unique prompts, one JSON object a line, each with a key."""
    prompts = [f"{tag} #{index}: " + PROMPT.format(index=index) for index in range(n)]
    with path.open("w") as out:
        for index, prompt in enumerate(prompts):
            out.write(json.dumps({"prompt": prompt, "key": f"item-{index:05d}"}) + "\n")
    return prompts


def component_trees(airflow: AirflowDeployment) -> DeploymentTrees:
    roots = {name: component.pid for name, component in airflow.components.items() if component.pid}
    return DeploymentTrees(roots)


def idle_rates(trees: DeploymentTrees, seconds: float) -> dict[str, float]:
    """Each component's CPU over ``seconds`` of nothing to do, in percent of one core."""
    trees.sample()
    trees.mark()
    began = time.monotonic()
    time.sleep(seconds)
    trees.sample()
    elapsed = time.monotonic() - began
    return {name: 100 * cpu / elapsed if elapsed > 0 else 0.0 for name, cpu in trees.by_component().items()}


def watch(
    airflow: AirflowDeployment,
    emulator: Emulator,
    trees: DeploymentTrees,
    dag_id: str,
    run_id: str,
    *,
    started: float,
    timeout: float,
    interval: float,
) -> tuple[list[Sample], float | None, str | None]:
    """
    Sample until the run ends or ``timeout`` passes; return the samples, the wall time at which it
    succeeded (None if it did not) and its last state seen.
    """
    samples: list[Sample] = []
    last_report = 0.0
    run_state: str | None = None
    while True:
        now = time.monotonic() - started
        try:
            row = airflow.query(TICK_SQL, (dag_id, run_id, dag_id, run_id))[0]
        except DB_ERRORS:  # a busy server: the last sample's counts stand
            row = None
        stats = emulator.stats()
        cpu = trees.sample()
        last = samples[-1] if samples else None
        if row is not None:
            run_state = row["run_state"]
        sample = Sample(
            t=now,
            run_state=run_state,
            states=dict(row["states"]) if row else (last.states if last else {}),
            submissions=int(stats["submissions"]),
            polls=int(stats["polls"]),
            rate_limited=int(stats["rate_limited"]),
            cpu_s=cpu,
            triggers=int(row["triggers"]) if row else (last.triggers if last else 0),
            trigger_bytes=int(row["trigger_bytes"]) if row else (last.trigger_bytes if last else 0),
        )
        samples.append(sample)
        if now - last_report >= 30:
            last_report = now
            log.info(
                "%5.0f s: %s %s; %s submitted, %s polls, %s 429s; Airflow %.1f CPU s; %s triggers",
                now,
                run_state,
                dict(sorted(sample.states.items())),
                sample.submissions,
                sample.polls,
                sample.rate_limited,
                sample.cpu_s,
                sample.triggers,
            )
        if run_state in TERMINAL_RUN_STATES:
            if run_state != "success":
                log.error("The run of %s ended %s: %s", dag_id, run_state, sample.states)
            return samples, (now if run_state == "success" else None), run_state
        if now > timeout:
            log.error("Timed out after %.0f s: %s", now, sample.states)
            return samples, None, run_state
        airflow.check_alive("scheduler", "triggerer", "api-server", "dag-processor")
        time.sleep(interval)


def read_manifest(path: Path, prompts: list[str], issued: set[str]) -> dict[str, Any]:
    """What the batch's ``manifest.jsonl`` says: one row per input, in order, each id issued once."""
    if not path.exists():
        return {"finished": 0, "manifest_rows": 0, "error": f"no manifest at {path}"}
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    ids = [row.get("diffusion_id") for row in rows if row.get("diffusion_id")]
    statuses = collections.Counter(str(row.get("status")) for row in rows)
    return {
        "finished": statuses.get("finished", 0),
        "statuses": dict(statuses),
        "manifest_rows": len(rows),
        "in_order": [row.get("prompt") for row in rows] == prompts
        and [row.get("index") for row in rows] == list(range(len(prompts))),
        "ids_distinct": len(set(ids)),
        "ids_unknown": sum(1 for diffusion_id in ids if diffusion_id not in issued),
        "images": sum(len(row.get("image_urls") or ()) for row in rows),
    }


def batch_outcome(
    airflow: AirflowDeployment, run_id: str, results: Path, prompts: list[str], issued: set[str]
) -> dict[str, Any]:
    outcome = read_manifest(results / "manifest.jsonl", prompts, issued)
    try:
        outcome["summary"] = airflow.xcom(BATCH_DAG_ID, run_id, BATCH_TASK_ID)
    except KeyError as exc:
        outcome["summary"] = None
        outcome.setdefault("error", str(exc))
    rows = airflow.query(
        "SELECT state, try_number FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (BATCH_DAG_ID, run_id, BATCH_TASK_ID),
    )
    outcome["task_state"] = rows[0]["state"] if rows else None
    outcome["retried"] = sum(1 for row in rows if int(row["try_number"]) > 1)
    return outcome


def mapped_outcome(airflow: AirflowDeployment, run_id: str, issued: set[str]) -> dict[str, Any]:
    states, tries, pushed = mapped_dag.final_task_rows(airflow, run_id)
    counts = collections.Counter(state or "none" for state in states.values())
    return {
        "finished": counts.get("success", 0),
        "failed": counts.get("failed", 0) + counts.get("upstream_failed", 0),
        "states": dict(counts),
        "retried": sum(1 for try_number in tries.values() if try_number > 1),
        "ids_distinct": len(set(pushed.values())),
        "ids_unknown": sum(1 for diffusion_id in pushed.values() if diffusion_id not in issued),
    }


def path_run(
    args: argparse.Namespace, path: str, n: int, workdir: Path
) -> tuple[str, dict[str, Any], list[str], Path | None]:
    """
    What one run of a path is given: its DAG, its conf and, for the batch, the prompts it was
    given (in order) and its results folder. Every prompt is unique to the run (a fresh tag).
    """
    tag = f"bench-{secrets.token_hex(4)}"
    if path == "batch":
        prompts_file = workdir / f"prompts-{tag}.jsonl"
        results = workdir / f"results-{tag}"
        prompts = write_prompts(prompts_file, n, tag)
        return BATCH_DAG_ID, {"prompts": prompts_file.as_uri(), "results": results.as_uri()}, prompts, results
    conf = {"n": n, "poll_interval": args.poll_interval, "timeout": args.latency + args.timeout, "tag": tag}
    return mapped_dag.DAG_ID, conf, [], None


def warm_up(
    args: argparse.Namespace, airflow: AirflowDeployment, emulator: Emulator, path: str, workdir: Path
) -> str:
    """
    Run a path once at N = ``WARM_UP_N`` with short generations, unmeasured; return its end state.

    A fresh database's tables have no pages yet: the first run of a path allocates the first
    page of each table and of each of its indexes (about 350 KiB, measured: what a run of 5 mapped
    tasks appeared to add), which a deployment in use has long done. The first task of a DAG also
    warms the caches of the files it reads. Neither belongs to the measured runs.
    """
    emulator.reset()
    emulator.configure(rate_limit=None, latency=WARM_UP_LATENCY_S)
    dag_id, conf, _prompts, _results = path_run(args, path, WARM_UP_N, workdir)
    run_id = airflow.trigger(dag_id, conf, unpause=False)
    try:
        state = airflow.wait_for_run(dag_id, run_id, timeout=args.timeout)
    except DeploymentError as exc:
        state = f"not finished: {exc}"
    log.info("%s: warm-up run (N=%s) %s", path, WARM_UP_N, state)
    return state


def run_phase(
    args: argparse.Namespace,
    airflow: AirflowDeployment,
    emulator: Emulator,
    trees: DeploymentTrees,
    path: str,
    workdir: Path,
) -> PathObservation:
    """Run one path once on the deployment and observe it (see the module's docstring)."""
    rate_limit = args.rate_limit if path == "batch" else None
    n = args.batch_n if path == "batch" else args.mapped_n
    emulator.reset()
    emulator.configure(rate_limit=rate_limit, latency=args.latency)
    dag_id, conf, prompts, results = path_run(args, path, n, workdir)
    log.info("%s: measuring the idle deployment for %.0f s", path, args.idle_seconds)
    idle = idle_rates(trees, args.idle_seconds)
    sizes_before = airflow.database.relation_sizes()
    trees.sample()
    trees.mark()
    started = time.monotonic()
    run_id = airflow.trigger(dag_id, conf, unpause=False)
    log.info("%s: triggered %s (N=%s): %s", path, dag_id, n, run_id)
    samples, wall, run_state = watch(
        airflow,
        emulator,
        trees,
        dag_id,
        run_id,
        started=started,
        timeout=args.timeout,
        interval=args.sample_interval,
    )
    time.sleep(SETTLE_S)
    trees.sample()
    sizes_after = airflow.database.relation_sizes()
    run_rows = airflow.database.run_row_bytes(dag_id, run_id)
    stats = emulator.stats()
    diffusions = emulator.diffusions()
    issued = {diffusion["id"] for diffusion in diffusions}
    if results is not None:
        outcome = batch_outcome(airflow, run_id, results, prompts, issued)
    else:
        outcome = mapped_outcome(airflow, run_id, issued)
    if wall is None:
        log.error("%s did not succeed:\n%s", path, airflow.describe(lines=40))
    return PathObservation(
        path=path,
        n=n,
        run_id=run_id,
        wall_s=wall,
        run_state=run_state,
        timed_out=wall is None and run_state not in TERMINAL_RUN_STATES,
        rate_limit=rate_limit,
        samples=samples,
        cpu_by_component=trees.by_component(),
        idle_cpu_pct=idle,
        emulator_stats={key: value for key, value in stats.items() if key != "polls_by_id"},
        prompts=[diffusion["prompt"] for diffusion in diffusions],
        sizes_before=sizes_before,
        sizes_after=sizes_after,
        run_rows=run_rows,
        outcome=outcome,
        processes={name: tree.breakdown() for name, tree in trees.trees.items()},
    )


def measure(args: argparse.Namespace, result: dict[str, Any]) -> list[PathObservation]:
    """Start the emulator and a deployment on PostgreSQL, run each path of ``--paths``, observe them."""
    from airflow_provider_getimage.emulator import Emulator

    api_key = f"bench-key-{secrets.token_hex(12)}"
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(
            Emulator(latency=args.latency, api_keys=(api_key,), tls=args.tls, seed=0)
        )
        database_url = stack.enter_context(postgres_database(args.postgres_url, prefix="getimage_bench"))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="getimage-bench-batch-")))
        extra_env = {
            **emulator.airflow_env(),
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            # Airflow's defaults where the e2e deployment shortens a loop (as deployment_check).
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
            KWARGS_ENV: json.dumps(batch_kwargs(args)),
        }
        airflow = stack.enter_context(
            AirflowDeployment(
                DAGS,
                extra_env=extra_env,
                database_url=database_url,
                triggerer_health_check_threshold=30.0,
                keep_home=args.keep_home,
            )
        )
        airflow.sampler.stop()  # its reads of every row, 3 times a second, would cost CPU here
        log.info("Airflow home %s; waiting for the DAGs to be parsed", airflow.home)
        dag_ids = {"batch": BATCH_DAG_ID, "mapped": mapped_dag.DAG_ID}
        for path in args.paths:
            airflow.wait_until_parsed(dag_ids[path], timeout=180)
            airflow.unpause(dag_ids[path])
        if args.warm_up:
            result["warm_up"] = {path: warm_up(args, airflow, emulator, path, workdir) for path in args.paths}
        trees = component_trees(airflow)
        result["machine"]["load_before"] = os.getloadavg()[0]
        observations = [run_phase(args, airflow, emulator, trees, path, workdir) for path in args.paths]
        result["machine"]["load_after"] = os.getloadavg()[0]
        return observations
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the ExitStack may swallow)
