"""
Deployment check: N mapped deferrable generations on real Airflow processes, all the way through.

``benchmarks.trigger_polling`` measures the trigger alone, on one event loop. This check runs the whole
path a user's deployment takes: a real ``api-server``, ``scheduler`` (LocalExecutor),
``dag-processor`` and ``triggerer`` (the ``harness`` package), on PostgreSQL when a server
answers on 127.0.0.1:5432 (sqlite otherwise, with a note), run ``benchmarks/dags/bench_mapped.py``:
N ``GetImageDiffusionOperator`` tasks mapped at once, ``deferrable=True``, against the emulator
(in this process, over TLS) with generations long enough for most of them to wait in the
triggerer at the same time. It records:

- wall time from the trigger of the run until all N are ``success``;
- how many were ``deferred`` at once (peak of ``task_instance.state = 'deferred'``, sampled);
- the triggerer's CPU time (user + system over its process tree, psutil) and peak RSS (sampled);
- polls (the emulator's GET count), polls per generation against the bound
  ``ceil(generation time / poll interval) + 2`` (one check on the worker before deferring, the
  polls before the generation ends, the one that sees it finished), TCP connections, submissions
  (exactly N: no duplicate) and failures (none).

It prints a table, writes every number with ``--json`` and exits 1 unless every task succeeded,
no submission was duplicated and no diffusion was polled more than its bound. Usage::

    python -m benchmarks.deployment_check --n 200 --json deployment-check.json

See ``benchmarks/README.md`` for what each number means and the figures measured here.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import os
import secrets
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.report import fmt_cell, json_safe, machine_info
from harness import (
    DB_ERRORS,
    TERMINAL_RUN_STATES,
    AirflowDeployment,
    DatabaseUnavailable,
    DeploymentError,
    postgres_database,
)
from harness.database import POSTGRES_SERVER
from harness.process_trees import MB, ProcessTree

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow_provider_getimage.emulator import Emulator

log = logging.getLogger("benchmarks.deployment_check")

DAGS = Path(__file__).resolve().parent / "dags"
DAG_ID = "bench_deferred_mapped"
TASK_ID = "generate"
DATABASES = ("auto", "postgresql", "sqlite")


# ----------------------------------------------------------------------------------- the run
@dataclass
class Sample:
    """One tick of the watch loop: seconds since the trigger and what was seen then."""

    t: float
    states: dict[str, int]
    submissions: int
    polls: int
    triggerer_cpu_s: float
    triggerer_rss_mb: float

    def as_row(self) -> list[Any]:
        return [
            round(self.t, 2),
            self.states,
            self.submissions,
            self.polls,
            round(self.triggerer_cpu_s, 3),
            round(self.triggerer_rss_mb, 1),
        ]


@dataclass
class Observed:
    """Everything measured in one run, before it is summarised."""

    n: int
    latency: float
    poll_interval: float
    wall_s: float | None  # None: not all N succeeded within the timeout
    timed_out: bool
    samples: list[Sample]
    ti_states: dict[int, str | None]  # map index -> final state
    try_numbers: dict[int, int]
    diffusion_xcoms: dict[int, str]  # map index -> the diffusion id it pushed
    emulator_stats: dict[str, Any]
    diffusions: list[dict[str, Any]]
    triggerer_cpu_s: float  # over the window: trigger of the run to the last success
    runner_cpu_s: float  # the part of it used by the trigger runner process
    triggerer_idle_cpu_pct: float
    triggerer_idle_rss_mb: float
    triggerer_peak_rss_mb: float
    triggerer_processes: list[dict[str, Any]] = field(default_factory=list)


def _percent_of(part: float, whole: float) -> float:
    return 100.0 * part / whole if whole > 0 else math.nan


def poll_bound(generation_s: float, poll_interval: float) -> int:
    """
    The most GETs one generation may take: ``ceil(generation / interval) + 2``.

    One check on the worker before it defers; the trigger's first poll comes up to one interval
    after it starts, then one per interval, so at most ``ceil(generation / interval)`` polls fall
    before the generation ends, and one more sees it finished.
    """
    # Rounded first: a generation of 240.0000001 s (float timestamps) is 48 intervals of 5 s, not 49.
    return math.ceil(round(generation_s / poll_interval, 6)) + 2


def summarise(observed: Observed) -> dict[str, Any]:
    """The numbers the table and the checks read, from what one run observed."""
    states = collections.Counter(state or "none" for state in observed.ti_states.values())
    succeeded = states.get("success", 0)
    failed = states.get("failed", 0) + states.get("upstream_failed", 0)
    stats = observed.emulator_stats
    polls_by_id: dict[str, int] = stats.get("polls_by_id", {})
    by_id = {diffusion["id"]: diffusion for diffusion in observed.diffusions}
    prompts = collections.Counter(diffusion["prompt"] for diffusion in observed.diffusions)
    pushed = list(observed.diffusion_xcoms.values())
    over_bound = []
    per_generation = []
    for diffusion_id, diffusion in by_id.items():
        polls = polls_by_id.get(diffusion_id, 0)
        per_generation.append(polls)
        bound = poll_bound(diffusion["finishes_at"] - diffusion["created_at"], observed.poll_interval)
        if polls > bound:
            over_bound.append({"id": diffusion_id, "polls": polls, "bound": bound})
    deferred = [(sample.states.get("deferred", 0), sample.t) for sample in observed.samples]
    peak_deferred, peak_at = max(deferred, default=(0, math.nan))
    all_submitted = next((s.t for s in observed.samples if s.submissions >= observed.n), None)
    polls = int(stats.get("polls", 0))
    # Each task GETs its diffusion once on the worker before deferring; the rest is the triggerer.
    worker_checks = len(observed.ti_states)
    triggerer_polls = max(polls - worker_checks, 0)
    wall = observed.wall_s
    responses: dict[str, int] = stats.get("responses_by_status", {})
    return {
        "n": observed.n,
        "succeeded": succeeded,
        "failed": failed,
        # Not finished (timed out), never created (the mapping did not expand) or skipped/removed.
        "not_succeeded_otherwise": max(observed.n - succeeded - failed, 0),
        "states": dict(states),
        "retried": sum(1 for try_number in observed.try_numbers.values() if try_number > 1),
        "timed_out": observed.timed_out,
        "wall_s": wall,
        "all_submitted_s": all_submitted,
        "deferred_peak": peak_deferred,
        "deferred_peak_at_s": peak_at,
        "submissions": int(stats.get("submissions", 0)),
        "distinct_prompts": len(prompts),
        "duplicate_prompts": sum(count - 1 for count in prompts.values() if count > 1),
        "distinct_pushed_ids": len(set(pushed)),
        "pushed_ids_unknown": sum(1 for diffusion_id in pushed if diffusion_id not in by_id),
        "polls": polls,
        "triggerer_polls": triggerer_polls,
        "polls_per_generation_mean": polls / len(by_id) if by_id else math.nan,
        "polls_per_generation_max": max(per_generation, default=0),
        "polls_bound": poll_bound(observed.latency, observed.poll_interval),
        "over_bound": over_bound,
        "connections": int(stats.get("connections", 0)),
        "non_2xx": sum(count for status, count in responses.items() if not status.startswith("2")),
        "triggerer_cpu_s": observed.triggerer_cpu_s,
        "triggerer_cpu_ms_per_poll": 1000 * observed.triggerer_cpu_s / triggerer_polls
        if triggerer_polls
        else math.nan,
        "runner_cpu_s": observed.runner_cpu_s,
        "runner_cpu_ms_per_poll": 1000 * observed.runner_cpu_s / triggerer_polls
        if triggerer_polls
        else math.nan,
        "triggerer_cpu_pct_of_core": _percent_of(observed.triggerer_cpu_s, wall or math.nan),
        "triggerer_idle_cpu_pct": observed.triggerer_idle_cpu_pct,
        # Beyond what the triggerer burns idle (heartbeats, table scans): what the N triggers cost.
        "triggerer_cpu_above_idle_s": observed.triggerer_cpu_s - observed.triggerer_idle_cpu_pct / 100 * wall
        if wall
        else math.nan,
        "triggerer_idle_rss_mb": observed.triggerer_idle_rss_mb,
        "triggerer_peak_rss_mb": observed.triggerer_peak_rss_mb,
    }


def checks(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """What must hold for the check to pass; each with its value, its limit and a verdict."""
    n = summary["n"]

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "FAIL"

    no_duplicate = (
        summary["submissions"] == n
        and summary["distinct_prompts"] == n
        and summary["distinct_pushed_ids"] == n
        and summary["pushed_ids_unknown"] == 0
    )
    return [
        {
            "check": "tasks succeeded",
            "value": summary["succeeded"],
            "limit": f"= {n}",
            "verdict": verdict(summary["succeeded"] == n),
        },
        {
            "check": "tasks failed",
            "value": summary["failed"],
            "limit": "= 0",
            "verdict": verdict(summary["failed"] == 0),
        },
        {
            "check": "submissions (no duplicate)",
            "value": summary["submissions"],
            "limit": f"= {n}, one per task",
            "verdict": verdict(no_duplicate),
        },
        {
            "check": "polls / generation, max",
            "value": summary["polls_per_generation_max"],
            "limit": f"<= {summary['polls_bound']}",
            "verdict": verdict(not summary["over_bound"]),
        },
    ]


def exit_code(check_rows: Sequence[dict[str, Any]]) -> int:
    return 0 if all(row["verdict"] == "PASS" for row in check_rows) else 1


def render(result: dict[str, Any]) -> str:
    """The markdown report: machine and parameters, the measurements, the checks."""
    machine, params, summary = result["machine"], result["params"], result["summary"]
    lines = [
        f"## Deployment check: {params['n']} mapped deferred generations",
        "",
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"apache-airflow {machine['airflow']}, provider at {machine['git']}; "
        f"load average {fmt_cell(machine.get('load_before'), '{:.2f}')} before, "
        f"{fmt_cell(machine.get('load_after'), '{:.2f}')} after.",
        f"Deployment: api-server, scheduler (LocalExecutor, parallelism {params['parallelism']}), "
        f"dag-processor, triggerer; {params['database']} metadata database. Emulator: generation "
        f"{params['latency']:g} s, TLS {'on' if params['tls'] else 'off'}; poll interval "
        f"{params['poll_interval']:g} s.",
    ]
    if params.get("database_note"):
        lines.append(f"Note: {params['database_note']}")
    rows: list[tuple[str, str]] = [
        ("wall s (trigger of the run to all success)", fmt_cell(summary["wall_s"], "{:.1f}")),
        ("all submitted at s", fmt_cell(summary["all_submitted_s"], "{:.1f}")),
        (
            "deferred at once (peak, at s)",
            f"{summary['deferred_peak']} of {summary['n']} "
            f"(at {fmt_cell(summary['deferred_peak_at_s'], '{:.1f}')})",
        ),
        ("triggerer CPU s (user + sys, process tree)", fmt_cell(summary["triggerer_cpu_s"], "{:.2f}")),
        (
            "triggerer CPU % of one core over the wall time",
            fmt_cell(summary["triggerer_cpu_pct_of_core"], "{:.1f}"),
        ),
        (
            "triggerer CPU % of one core before the run (idle)",
            fmt_cell(summary["triggerer_idle_cpu_pct"], "{:.1f}"),
        ),
        (
            "triggerer CPU s above its idle rate over the wall time",
            fmt_cell(summary["triggerer_cpu_above_idle_s"], "{:.2f}"),
        ),
        ("triggerer CPU ms / triggerer poll", fmt_cell(summary["triggerer_cpu_ms_per_poll"], "{:.2f}")),
        (
            "trigger runner process: CPU s / ms per poll",
            f"{fmt_cell(summary['runner_cpu_s'], '{:.2f}')} / "
            f"{fmt_cell(summary['runner_cpu_ms_per_poll'], '{:.2f}')}",
        ),
        (
            "triggerer RSS MB: idle / peak (process tree)",
            f"{fmt_cell(summary['triggerer_idle_rss_mb'], '{:.0f}')} / "
            f"{fmt_cell(summary['triggerer_peak_rss_mb'], '{:.0f}')}",
        ),
        (
            "polls (GET): all / by the triggerer",
            f"{summary['polls']} / {summary['triggerer_polls']}",
        ),
        (
            "polls / generation: mean / max (bound)",
            f"{fmt_cell(summary['polls_per_generation_mean'], '{:.2f}')} / "
            f"{summary['polls_per_generation_max']} ({summary['polls_bound']})",
        ),
        ("TCP connections the emulator accepted", str(summary["connections"])),
        ("submissions", str(summary["submissions"])),
        ("non-2xx answers / retried tasks", f"{summary['non_2xx']} / {summary['retried']}"),
    ]
    lines += ["", "| measure | value |", "|---|---:|", *(f"| {name} | {value} |" for name, value in rows)]
    lines += ["", "| triggerer process | pid | CPU s in the run | peak RSS MB |", "|---|---:|---:|---:|"]
    for proc in result.get("triggerer_processes", []):
        lines.append(f"| {proc['role']} | {proc['pid']} | {proc['cpu_s']:.2f} | {proc['peak_rss_mb']:.0f} |")
    lines += ["", "| check | value | limit | verdict |", "|---|---:|---|---|"]
    for row in result["checks"]:
        lines.append(f"| {row['check']} | {row['value']} | {row['limit']} | {row['verdict']} |")
    if summary["succeeded"] < summary["n"]:
        why = "Timed out before all tasks finished" if summary["timed_out"] else "Not all tasks succeeded"
        lines += ["", f"{why}; task states: {summary['states']}."]
    if summary["deferred_peak"] < 0.9 * summary["n"]:
        lines += [
            "",
            "Fewer than 90% of the tasks were deferred at once. Tasks resumed after their trigger "
            "fired take the worker slots before mapped tasks that never started (the scheduler "
            "orders by map index), so generations shorter than the time to start all N keep the "
            "rest waiting: raise --latency above 'all submitted at'.",
        ]
    if summary["over_bound"]:
        lines += ["", f"Polled more than the bound: {summary['over_bound'][:5]}"]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- measurement
@contextlib.contextmanager
def metadata_database(choice: str, server_url: str) -> Iterator[tuple[str | None, str, str | None]]:
    """
    Yield (URL, kind, note): a throw-away PostgreSQL database, dropped afterwards, if asked for or
    if the server answers; else sqlite (URL None: the deployment's own file) with a note saying why.

    :raises DatabaseUnavailable: when ``postgresql`` was asked for and the server does not answer.
    """
    if choice == "sqlite":
        yield None, "sqlite", None
        return
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(postgres_database(server_url, prefix="getimage_bench"))
        except DatabaseUnavailable as exc:
            if choice == "postgresql":
                raise
            note = f"{exc}; falling back to sqlite, which serialises every write and may lag at this N."
        else:
            yield url, "postgresql", None
            return
    print(f"NOTE: {note}", flush=True)
    yield None, "sqlite", note


def state_counts(airflow: AirflowDeployment, run_id: str) -> dict[str, int]:
    rows = airflow.query(
        "SELECT state, count(*) AS n FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? "
        "GROUP BY state",
        (DAG_ID, run_id, TASK_ID),
    )
    return {str(row["state"] or "none"): int(row["n"]) for row in rows}


def watch(
    airflow: AirflowDeployment,
    emulator: Emulator,
    tree: ProcessTree,
    run_id: str,
    n: int,
    *,
    started: float,
    timeout: float,
    interval: float,
) -> tuple[list[Sample], float | None]:
    """
    Sample states, emulator counters and the triggerer until all N mapped tasks have succeeded,
    the run has ended without that (a task or the upstream task failed) or ``timeout`` has passed.

    Returns the samples and the wall time at which all N were ``success`` (None if they were
    not). The last sample of ``tree`` is taken at that moment.
    """
    samples: list[Sample] = []
    last_report = 0.0
    while True:
        now = time.monotonic() - started
        try:
            counts = state_counts(airflow, run_id)
            run_state = airflow.run_state(DAG_ID, run_id)
        except DB_ERRORS:  # a lock or a busy server: try again next tick
            counts, run_state = (samples[-1].states if samples else {}), None
        stats = emulator.stats()
        tree_sample = tree.sample()
        sample = Sample(
            now,
            counts,
            int(stats["submissions"]),
            int(stats["polls"]),
            tree.run_cpu_s(),
            tree_sample.rss / MB,
        )
        samples.append(sample)
        if now - last_report >= 15:
            last_report = now
            log.info(
                "%5.0f s: %s; %s submitted, %s polls; triggerer %.1f CPU s, %.0f MB",
                now,
                dict(sorted(counts.items())),
                sample.submissions,
                sample.polls,
                sample.triggerer_cpu_s,
                sample.triggerer_rss_mb,
            )
        if counts.get("success", 0) == n and sum(counts.values()) == n:
            return samples, now
        if run_state in TERMINAL_RUN_STATES:  # over without N successes: a task failed, or upstream
            log.error("The run ended %s: %s", run_state, counts)
            return samples, None
        if now > timeout:
            log.error("Timed out after %.0f s: %s", now, counts)
            return samples, None
        airflow.check_alive("scheduler", "triggerer", "api-server")
        time.sleep(interval)


def final_task_rows(
    airflow: AirflowDeployment, run_id: str
) -> tuple[dict[int, str | None], dict[int, int], dict[int, str]]:
    """Each mapped task's state, try number and ``diffusion_id`` XCom."""
    rows = airflow.query(
        "SELECT map_index, state, try_number FROM task_instance "
        "WHERE dag_id = ? AND run_id = ? AND task_id = ?",
        (DAG_ID, run_id, TASK_ID),
    )
    xcoms = airflow.query(
        "SELECT map_index, CAST(value AS TEXT) AS value FROM xcom WHERE dag_id = ? AND run_id = ? "
        "AND task_id = ? AND key = 'diffusion_id'",
        (DAG_ID, run_id, TASK_ID),
    )
    states = {int(row["map_index"]): row["state"] for row in rows}
    tries = {int(row["map_index"]): int(row["try_number"]) for row in rows}
    pushed = {int(row["map_index"]): str(json.loads(row["value"])) for row in xcoms}
    return states, tries, pushed


def measure(args: argparse.Namespace, result: dict[str, Any]) -> Observed:
    """Start the emulator and a deployment, run the DAG once, and observe it."""
    from airflow_provider_getimage.emulator import Emulator

    api_key = f"bench-key-{secrets.token_hex(12)}"
    with (
        Emulator(latency=args.latency, api_keys=(api_key,), tls=args.tls, seed=0) as emulator,
        metadata_database(args.database, args.postgres_url) as (database_url, kind, note),
    ):
        result["params"]["database"] = kind
        result["params"]["database_note"] = note
        extra_env = {
            **emulator.airflow_env(),
            "AIRFLOW__CORE__PARALLELISM": str(args.parallelism),
            # Airflow's defaults where the e2e deployment shortens a loop for quick tests: parsing
            # every 10 s and a 1 s triggerer heartbeat would be CPU this check does not stand for.
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "30",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "5",
        }
        deployment = AirflowDeployment(
            DAGS,
            extra_env=extra_env,
            database_url=database_url,
            triggerer_health_check_threshold=30.0,  # Airflow's default, with that heartbeat
            keep_home=args.keep_home,
        )
        with deployment as airflow:
            # The deployment's state sampler reads every task instance and trigger 3 times a second
            # (a new connection each on PostgreSQL): CPU on the same 2 cores. This check samples
            # its own, lighter, counts.
            airflow.sampler.stop()
            log.info("Airflow home %s, %s database; waiting for %s to be parsed", airflow.home, kind, DAG_ID)
            airflow.wait_until_parsed(DAG_ID, timeout=180)
            airflow.unpause(DAG_ID)
            tree = ProcessTree(airflow.components["triggerer"].pid or 0)
            idle_start = tree.sample()
            idle_t0 = time.monotonic()
            time.sleep(args.idle_seconds)
            idle_end = tree.sample()
            idle_cpu_pct = _percent_of(idle_end.cpu_s - idle_start.cpu_s, time.monotonic() - idle_t0)
            tree.mark()  # CPU and peak RSS of the run, not of start-up
            result["machine"]["load_before"] = os.getloadavg()[0]
            conf = {
                "n": args.n,
                "poll_interval": args.poll_interval,
                "timeout": args.latency + args.timeout,
                "tag": f"bench-{secrets.token_hex(4)}",
            }
            started = time.monotonic()
            run_id = airflow.trigger(DAG_ID, conf, unpause=False)
            log.info("Triggered %s (N=%s): %s", DAG_ID, args.n, run_id)
            samples, wall = watch(
                airflow,
                emulator,
                tree,
                run_id,
                args.n,
                started=started,
                timeout=args.timeout,
                interval=args.sample_interval,
            )
            result["machine"]["load_after"] = os.getloadavg()[0]
            states, tries, pushed = final_task_rows(airflow, run_id)
            if wall is None:
                print(airflow.describe(lines=40), file=sys.stderr)
            return Observed(
                n=args.n,
                latency=args.latency,
                poll_interval=args.poll_interval,
                wall_s=wall,
                timed_out=wall is None and airflow.run_state(DAG_ID, run_id) not in TERMINAL_RUN_STATES,
                samples=samples,
                ti_states=states,
                try_numbers=tries,
                diffusion_xcoms=pushed,
                emulator_stats=emulator.stats(),
                diffusions=emulator.diffusions(),
                triggerer_cpu_s=tree.run_cpu_s(),  # as of the last sample: when all N were done
                runner_cpu_s=tree.run_cpu_s("trigger runner"),
                triggerer_idle_cpu_pct=idle_cpu_pct,
                triggerer_idle_rss_mb=idle_end.rss / MB,
                triggerer_peak_rss_mb=tree.peak_rss / MB,
                triggerer_processes=tree.breakdown(),
            )


# ------------------------------------------------------------------------------------------ main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="N mapped deferrable GetImage generations on a real Airflow deployment "
        "(scheduler, triggerer, LocalExecutor): wall time, triggerer CPU and RSS, polls, duplicates.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=200, help="mapped generations in the run")
    parser.add_argument(
        "--latency",
        type=float,
        default=480.0,
        help="emulator seconds per generation: longer than the deployment takes to start all N "
        "tasks (see 'all submitted at'), or fewer are deferred at once",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="the operator's poll_interval, s")
    parser.add_argument(
        "--parallelism",
        type=int,
        default=4,
        help="[core] parallelism: LocalExecutor worker processes (each task start costs ~1 CPU s)",
    )
    parser.add_argument("--database", choices=DATABASES, default="auto", help="metadata database")
    parser.add_argument(
        "--postgres-url", default=POSTGRES_SERVER, help="PostgreSQL server (its admin database)"
    )
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="plain HTTP to the emulator")
    parser.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds after the trigger to give up on the run"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=10.0,
        help="seconds to measure the idle triggerer before the run",
    )
    parser.add_argument("--sample-interval", type=float, default=0.5, help="seconds between samples")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number here")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs, sqlite DB)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.n < 1 or args.parallelism < 1:
        parser.error("--n and --parallelism must be >= 1")
    if min(args.latency, args.poll_interval, args.timeout, args.sample_interval) <= 0:
        parser.error("--latency, --poll-interval, --timeout and --sample-interval must be > 0")
    if args.idle_seconds < 0:
        parser.error("--idle-seconds must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # A TERM (a timeout, a kill by pid) must still stop the deployment and drop the database.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    result: dict[str, Any] = {
        "machine": machine_info(),
        "params": {
            "n": args.n,
            "latency": args.latency,
            "poll_interval": args.poll_interval,
            "parallelism": args.parallelism,
            "database": args.database,
            "tls": args.tls,
            "timeout": args.timeout,
        },
    }
    try:
        observed = measure(args, result)
    except (DeploymentError, DatabaseUnavailable) as exc:
        print(f"Deployment check could not run: {exc}", file=sys.stderr)
        return 2
    summary = summarise(observed)
    result["summary"] = summary
    result["checks"] = checks(summary)
    result["triggerer_processes"] = observed.triggerer_processes
    result["timeline"] = {
        "columns": ["t_s", "states", "submissions", "polls", "triggerer_cpu_s", "triggerer_rss_mb"],
        "rows": [sample.as_row() for sample in observed.samples],
    }
    print(render(result), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    return exit_code(result["checks"])


if __name__ == "__main__":
    sys.exit(main())
