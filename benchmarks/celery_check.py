"""
The Celery deployment at scale (issue 15): N mapped deferrable generations and a batch, together.

``harness.celery``'s deployment (CeleryExecutor, Redis broker, PostgreSQL metadata and result
backend, two Celery workers, two triggerers, api-server, scheduler, dag-processor) runs the DAGs
of ``benchmarks/batch_check`` at once: ``bench_deferred_mapped`` at ``--mapped-n`` and
``bench_batch`` at ``--batch-n``. With ``--kill-at`` one Celery worker and one triggerer are
SIGKILLed that many seconds after the runs start (tasks get ``[core] default_task_retries`` = 1).
It reports wall time, Airflow CPU per generation (every process tree, workers included) and the
emulator's submissions against the generations asked for; ``--check`` exits 1 on a wrong count,
a prompt submitted twice, or a task that did not succeed. No baseline: the batch's wall-time
bound (N / ``max_submissions_per_second`` + generation + 60 s, issue 12) is the yardstick.

    python -m benchmarks.celery_check --mapped-n 500 --batch-n 2000 --kill-at 60 --check
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import benchmarks.deployment_check as mapped_dag
from airflow_provider_getimage.triggers.batch import MAX_WINDOW
from benchmarks.batch_check.results import wall_bound
from benchmarks.batch_check.run import (
    BATCH_DAG_ID,
    DAGS,
    KWARGS_ENV,
    batch_kwargs,
    batch_outcome,
    component_trees,
    mapped_outcome,
    path_run,
)
from benchmarks.report import fmt_cell, json_safe, machine_info, markdown_table, verdict
from harness import (
    COMPONENTS,
    DB_ERRORS,
    TERMINAL_RUN_STATES,
    AirflowDeployment,
    DatabaseUnavailable,
    DeploymentError,
    postgres_database,
)
from harness.celery import celery_env, redis_problem
from harness.database import POSTGRES_SERVER

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger("benchmarks.celery_check")

WORKERS = ("celery-worker", "celery-worker-2")
#: Batch items a kill may leave ``uncertain``: the batch submits one at a time.
UNCERTAIN_ALLOWED = 1

#: What ``--kill-at`` SIGKILLs: one worker (its running tasks are lost: the scheduler's task
#: heartbeat timeout fails them, their retry re-attaches) and one triggerer (the other takes its triggers).
VICTIMS = ("celery-worker", "triggerer-2")
TASK_HEARTBEAT_TIMEOUT_S = 30
TASK_QUEUED_TIMEOUT_S = 120
SETTLE_S = 1.5


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.celery_check",
        description="N mapped deferrable generations and one batch together on a CeleryExecutor "
        "deployment (2 workers, 2 triggerers; Redis, PostgreSQL): wall time, Airflow CPU per "
        "generation, submissions against generations asked for.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--mapped-n", type=int, default=500, help="mapped deferrable tasks")
    parser.add_argument("--batch-n", type=int, default=2000, help="prompts of the batch task")
    parser.add_argument("--latency", type=float, default=120.0, help="emulator seconds per generation")
    parser.add_argument("--poll-interval", type=float, default=5.0, help="poll_interval of both operators, s")
    parser.add_argument(
        "--max-submissions-per-second", type=float, default=10.0, help="the batch's submission budget"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help=f"the batch's window (default: --batch-n, <= {MAX_WINDOW})",
    )
    parser.add_argument("--max-polls-per-second", type=float, default=20.0, help="the batch's poll budget")
    parser.add_argument("--concurrency", type=int, default=8, help="task slots per Celery worker")
    parser.add_argument("--parallelism", type=int, default=16, help="[core] parallelism")
    parser.add_argument(
        "--kill-at",
        type=float,
        default=0.0,
        help="seconds after the runs start to SIGKILL celery-worker and triggerer-2; 0: no kill",
    )
    parser.add_argument(
        "--postgres-url", default=POSTGRES_SERVER, help="PostgreSQL server (its admin database)"
    )
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to give up on the runs")
    parser.add_argument("--sample-interval", type=float, default=2.0, help="seconds between samples")
    parser.add_argument("--check", action="store_true", help="exit 1 when a count or a task is wrong")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number here")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_in_flight is None:
        args.max_in_flight = min(args.batch_n, MAX_WINDOW)
    if min(args.mapped_n, args.batch_n, args.concurrency, args.parallelism, args.max_in_flight) < 1:
        parser.error("--mapped-n, --batch-n, --concurrency, --parallelism, --max-in-flight must be >= 1")
    if min(args.latency, args.poll_interval, args.max_submissions_per_second, args.timeout) <= 0:
        parser.error("--latency, --poll-interval, --max-submissions-per-second and --timeout must be > 0")
    if args.kill_at < 0:
        parser.error("--kill-at must be >= 0 (0: no kill)")
    return args


def deployment_env(args: argparse.Namespace, database_url: str) -> dict[str, str]:
    """The Celery settings, the batch's budgets, and one retry for what a kill loses."""
    return {
        **celery_env(database_url, concurrency=args.concurrency),
        "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
        "AIRFLOW__CORE__DEFAULT_TASK_RETRIES": "1",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "5",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(TASK_HEARTBEAT_TIMEOUT_S),
        # A SIGKILLed worker also loses the messages it had reserved and not started: Airflow
        # requeues those once they have been queued for task_queued_timeout (600 s by default,
        # which was then most of the wall time). Here no task waits that long for a slot.
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": str(TASK_QUEUED_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
        # Airflow's defaults where the e2e deployment shortens a loop (as deployment_check).
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
        # A worker killed while the batch submits leaves the one submission in flight `uncertain`
        # (taken or not, it is never sent again, issue 12): the batch may report that one, no more.
        KWARGS_ENV: json.dumps(
            {**batch_kwargs(args), "max_failures": UNCERTAIN_ALLOWED if args.kill_at else 0}
        ),
    }


def run_states(airflow: AirflowDeployment, runs: dict[str, tuple[str, str]]) -> dict[str, str | None]:
    """Each path's DAG run state (None when the database did not answer this time)."""
    states: dict[str, str | None] = {}
    for path, (dag_id, run_id) in runs.items():
        try:
            rows = airflow.query(
                "SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id)
            )
        except DB_ERRORS:
            rows = []
        states[path] = rows[0]["state"] if rows else None
    return states


def measure(args: argparse.Namespace, result: dict[str, Any]) -> dict[str, Any]:
    """Start everything, trigger both runs together, kill if asked, watch until both end."""
    from airflow_provider_getimage.emulator import Emulator

    if (problem := redis_problem()) is not None:
        raise DeploymentError(f"{problem}: the Celery deployment needs its broker")
    api_key = f"bench-key-{secrets.token_hex(12)}"
    with contextlib.ExitStack() as stack:
        emulator = stack.enter_context(Emulator(latency=args.latency, api_keys=(api_key,), seed=0))
        database_url = stack.enter_context(
            postgres_database(args.postgres_url, prefix="getimage_celery_bench")
        )
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="getimage-bench-celery-")))
        airflow = stack.enter_context(
            AirflowDeployment(
                DAGS,
                extra_env={**emulator.airflow_env(), **deployment_env(args, database_url)},
                database_url=database_url,
                components=(*COMPONENTS, "triggerer-2", *WORKERS),
                triggerer_health_check_threshold=30.0,
                keep_home=args.keep_home,
            )
        )
        airflow.sampler.stop()  # its reads of every row, 3 times a second, would cost CPU here
        log.info("Airflow home %s; waiting for the DAGs to be parsed", airflow.home)
        for dag_id in (BATCH_DAG_ID, mapped_dag.DAG_ID):
            airflow.wait_until_parsed(dag_id, timeout=180)
            airflow.unpause(dag_id)
        emulator.reset()
        trees = component_trees(airflow)
        result["machine"]["load_before"] = os.getloadavg()[0]
        trees.sample()
        trees.mark()
        started = time.monotonic()
        asked = {"batch": args.batch_n, "mapped": args.mapped_n}
        runs: dict[str, tuple[str, str]] = {}
        batch_input: tuple[list[str], Path | None] = ([], None)
        for path, n in asked.items():
            dag_id, conf, prompts, results = path_run(args, path, n, workdir)
            runs[path] = (dag_id, airflow.trigger(dag_id, conf, unpause=False))
            if path == "batch":
                batch_input = (prompts, results)
        killed: dict[str, float] = {}
        frozen: dict[str, float] = {}
        states: dict[str, str | None] = {}
        last_report = 0.0
        while True:
            now = time.monotonic() - started
            cpu = trees.sample()
            states = run_states(airflow, runs)
            if args.kill_at and not killed and now >= args.kill_at:
                for name in VICTIMS:
                    # A tree whose root is gone counts 0 (no live ancestor keeps its time): keep it.
                    frozen[name] = trees.trees[name].run_cpu_s()
                    airflow.kill(name)
                    killed[name] = round(time.monotonic() - started, 1)
                log.info("SIGKILLed %s", killed)
            if now - last_report >= 30:
                last_report = now
                stats = emulator.stats()
                log.info(
                    "%5.0f s: %s; %s submitted, %s polls; Airflow %.1f CPU s",
                    now,
                    states,
                    stats["submissions"],
                    stats["polls"],
                    cpu,
                )
            if all(state in TERMINAL_RUN_STATES for state in states.values()) or now > args.timeout:
                break
            airflow.check_alive(*(name for name in airflow.components if name not in killed))
            time.sleep(args.sample_interval)
        wall = time.monotonic() - started
        time.sleep(SETTLE_S)
        trees.sample()
        result["machine"]["load_after"] = os.getloadavg()[0]
        stats = emulator.stats()
        diffusions = emulator.diffusions()
        issued = {diffusion["id"] for diffusion in diffusions}
        prompts, results = batch_input
        assert results is not None
        return {
            "wall_s": wall,
            "run_states": states,
            "timed_out": not all(state in TERMINAL_RUN_STATES for state in states.values()),
            "killed": killed,
            "asked": asked,
            "submissions": int(stats["submissions"]),
            "polls": int(stats["polls"]),
            "rate_limited": int(stats["rate_limited"]),
            "prompts_twice": sum(
                1 for count in collections.Counter(d["prompt"] for d in diffusions).values() if count > 1
            ),
            "cpu_s": trees.run_cpu_s() + sum(frozen.values()),
            "cpu_by_component": {
                name: cpu + frozen.get(name, 0.0) for name, cpu in trees.by_component().items()
            },
            "batch": batch_outcome(airflow, runs["batch"][1], results, prompts, issued),
            "mapped": mapped_outcome(airflow, runs["mapped"][1], issued),
        }
    raise AssertionError("unreachable")  # pragma: no cover (mypy: the ExitStack may swallow)


def targets(observed: dict[str, Any], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Issue 15's: every generation succeeds, one submission each (with the kills too)."""
    asked = sum(observed["asked"].values())
    batch, mapped = observed["batch"], observed["mapped"]
    bound = wall_bound(args.batch_n, args.max_submissions_per_second, args.latency)
    uncertain = int((batch.get("statuses") or {}).get("uncertain", 0))
    allowed = UNCERTAIN_ALLOWED if args.kill_at else 0
    rows = [
        (
            "both runs succeeded",
            str(observed["run_states"]),
            set(observed["run_states"].values()) == {"success"},
        ),
        (
            "submissions == generations asked",
            f"{observed['submissions']} / {asked}, {uncertain} uncertain",
            asked - uncertain <= observed["submissions"] <= asked,
        ),
        ("no prompt submitted twice", str(observed["prompts_twice"]), observed["prompts_twice"] == 0),
        (
            "every mapped task succeeded",
            f"{mapped['finished']} / {args.mapped_n}",
            mapped["finished"] == args.mapped_n == mapped["ids_distinct"] and mapped["ids_unknown"] == 0,
        ),
        (
            "batch manifest complete",
            f"{batch['finished']} / {args.batch_n}, {uncertain} uncertain (<= {allowed})",
            uncertain <= allowed
            and batch["finished"] + uncertain == batch["manifest_rows"] == args.batch_n
            and batch.get("ids_distinct") == batch["finished"]
            and bool(batch.get("in_order"))
            and batch.get("ids_unknown") == 0,
        ),
        (f"wall <= batch bound {bound:.0f} s (informative)", f"{observed['wall_s']:.0f} s", None),
    ]
    return [{"target": name, "value": value, "verdict": verdict(ok)} for name, value, ok in rows]


def render(result: dict[str, Any]) -> str:
    params, observed = result["params"], result["observed"]
    generations = sum(observed["asked"].values())
    machine = result["machine"]
    lines = [
        "### Celery deployment: mapped deferrable generations and a batch, together",
        "",
        f"{params['mapped_n']} mapped + a batch of {params['batch_n']} on CeleryExecutor (2 workers x "
        f"{params['concurrency']} slots, 2 triggerers, Redis, PostgreSQL); generations "
        f"{params['latency']:g} s, polls every {params['poll_interval']:g} s; batch "
        f"{params['max_submissions_per_second']:g} submissions/s, window {params['max_in_flight']}; "
        f"kills: {observed['killed'] or 'none'}. Load average {machine.get('load_before', 0):.1f} before, "
        f"{machine.get('load_after', 0):.1f} after, on {machine['cpu_count']} CPUs.",
        "",
    ]
    header = [
        "wall s",
        "Airflow CPU s",
        "CPU ms / generation",
        "submissions",
        "asked",
        "polls",
        "429s",
        "retried",
    ]
    row = [
        f"{observed['wall_s']:.0f}",
        f"{observed['cpu_s']:.1f}",
        fmt_cell(1e3 * observed["cpu_s"] / generations if generations else None, "{:.1f}"),
        str(observed["submissions"]),
        str(generations),
        str(observed["polls"]),
        str(observed["rate_limited"]),
        f"{observed['mapped'].get('retried', 0)} mapped, {observed['batch'].get('retried', 0)} batch",
    ]
    lines += markdown_table(header, [row], "r" * len(header))
    by_component = sorted(observed["cpu_by_component"].items(), key=lambda item: -item[1])
    lines += ["", "CPU s by component: " + ", ".join(f"{name} {cpu:.1f}" for name, cpu in by_component), ""]
    checks = [[item["target"], str(item["value"]), item["verdict"]] for item in result["targets"]]
    lines += markdown_table(["target", "value", "verdict"], checks, "lrl")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # A TERM (a timeout, a kill by pid) must still stop the deployment and drop the database.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    result: dict[str, Any] = {
        "machine": machine_info(),
        "params": {key: value for key, value in vars(args).items() if key not in ("json_path", "check")},
    }
    try:
        result["observed"] = measure(args, result)
    except (DeploymentError, DatabaseUnavailable) as exc:
        print(f"Celery check could not run: {exc}", file=sys.stderr)
        return 2
    result["targets"] = targets(result["observed"], args)
    print(render(result), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(result), indent=2, default=str) + "\n")
    failed = [row for row in result["targets"] if row["verdict"] == "FAIL"]
    return 1 if args.check and failed else 0


if __name__ == "__main__":
    sys.exit(main())
