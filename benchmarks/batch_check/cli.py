"""
The batch check's command line: arguments, the run, the report, the JSON, the exit code.

Exit codes: 0 done (with ``--check``: every target met), 1 a target failed (``--check`` only),
2 the deployment could not run (no PostgreSQL server, Airflow did not start).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.batch_check.results import PATHS, SAMPLE_COLUMNS, exit_code, render, summarise, targets
from benchmarks.report import json_safe, machine_info
from harness import DatabaseUnavailable, DeploymentError
from harness.database import POSTGRES_SERVER

#: The most diffusions one batch trigger waits for (``triggers.batch.MAX_WINDOW``, kept in step by a test).
MAX_WINDOW = 10_000

if TYPE_CHECKING:
    from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.batch_check",
        description="N prompts as one GetImageBatchOperator task against N mapped deferrable "
        "GetImageDiffusionOperator tasks, on one real Airflow deployment (PostgreSQL): Airflow CPU, "
        "wall time, submissions, polls, metadata-DB growth and 429s per generation.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--batch-n", type=int, default=2000, help="prompts in the batch task")
    parser.add_argument("--mapped-n", type=int, default=200, help="mapped tasks of the baseline")
    parser.add_argument(
        "--paths", nargs="+", choices=PATHS, default=list(PATHS), help="which paths to run, in this order"
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=120.0,
        help="emulator seconds per generation, both paths (the batch needs about "
        "latency x max-submissions-per-second in flight to keep submitting)",
    )
    parser.add_argument("--poll-interval", type=float, default=5.0, help="poll_interval of both operators, s")
    parser.add_argument(
        "--max-submissions-per-second", type=float, default=10.0, help="the batch's submission budget"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        default=None,
        help="the batch's window of unfinished diffusions (default: --batch-n, at most the "
        "trigger's MAX_WINDOW of 10,000)",
    )
    parser.add_argument("--max-polls-per-second", type=float, default=20.0, help="the batch's poll budget")
    parser.add_argument(
        "--rate-limit",
        type=float,
        default=40.0,
        help="emulator requests per second before it answers 429, in the batch's phase (its "
        "budgets must add up to less); 0: none",
    )
    parser.add_argument(
        "--parallelism", type=int, default=4, help="[core] parallelism: LocalExecutor worker processes"
    )
    parser.add_argument(
        "--postgres-url", default=POSTGRES_SERVER, help="PostgreSQL server (its admin database)"
    )
    parser.add_argument("--no-tls", dest="tls", action="store_false", help="plain HTTP to the emulator")
    parser.add_argument(
        "--timeout", type=float, default=3600.0, help="seconds after a trigger to give up on its run"
    )
    parser.add_argument(
        "--idle-seconds",
        type=float,
        default=15.0,
        help="seconds of idle deployment measured before each path",
    )
    parser.add_argument(
        "--no-warm-up",
        dest="warm_up",
        action="store_false",
        help="skip the unmeasured run of each path at N = 3 first (it allocates the tables' first "
        "pages, which a deployment in use has, and warms the caches)",
    )
    parser.add_argument("--sample-interval", type=float, default=1.0, help="seconds between samples")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target of issue 12 fails")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number here")
    parser.add_argument("--keep-home", action="store_true", help="keep the Airflow home (logs)")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max_in_flight is None:
        args.max_in_flight = min(args.batch_n, MAX_WINDOW)
    if args.rate_limit == 0:
        args.rate_limit = None
    if min(args.batch_n, args.mapped_n, args.parallelism, args.max_in_flight) < 1:
        parser.error("--batch-n, --mapped-n, --parallelism and --max-in-flight must be >= 1")
    positive = (
        args.latency,
        args.poll_interval,
        args.max_submissions_per_second,
        args.max_polls_per_second,
        args.timeout,
        args.sample_interval,
    )
    if min(positive) <= 0:
        parser.error(
            "--latency, --poll-interval, --max-submissions-per-second, --max-polls-per-second, "
            "--timeout and --sample-interval must be > 0"
        )
    if args.rate_limit is not None and args.rate_limit < 0:
        parser.error("--rate-limit must be >= 0 (0: none)")
    if args.idle_seconds < 0:
        parser.error("--idle-seconds must be >= 0")
    if len(set(args.paths)) != len(args.paths):
        parser.error("--paths: each path once")
    budget = args.max_submissions_per_second + args.max_polls_per_second
    if args.rate_limit is not None and budget >= args.rate_limit:
        parser.error(
            f"the batch's budgets ({args.max_submissions_per_second:g} submissions + "
            f"{args.max_polls_per_second:g} polls a second) must add up to less than --rate-limit "
            f"{args.rate_limit:g}"
        )
    return args


def params_of(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "batch_n": args.batch_n,
        "mapped_n": args.mapped_n,
        "paths": list(args.paths),
        "latency": args.latency,
        "poll_interval": args.poll_interval,
        "max_submissions_per_second": args.max_submissions_per_second,
        "max_in_flight": args.max_in_flight,
        "max_polls_per_second": args.max_polls_per_second,
        "rate_limit": args.rate_limit,
        "parallelism": args.parallelism,
        "tls": args.tls,
        "timeout": args.timeout,
        "idle_seconds": args.idle_seconds,
        "warm_up": args.warm_up,
        "sample_interval": args.sample_interval,
    }


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.batch_check.run import measure  # imports the emulator and the harness's Airflow bits

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # A TERM (a timeout, a kill by pid) must still stop the deployment and drop the database.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    result: dict[str, Any] = {"machine": machine_info(), "params": params_of(args)}
    try:
        observations = measure(args, result)
    except (DeploymentError, DatabaseUnavailable) as exc:
        print(f"Batch check could not run: {exc}", file=sys.stderr)
        return 2
    summaries = {obs.path: summarise(obs) for obs in observations}
    result["summaries"] = summaries
    result["targets"] = targets(summaries.get("batch"), summaries.get("mapped"), result["params"])
    result["processes"] = {obs.path: obs.processes for obs in observations}
    result["timelines"] = {
        obs.path: {"columns": SAMPLE_COLUMNS, "rows": [sample.as_row() for sample in obs.samples]}
        for obs in observations
    }
    print(render(result), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(result), indent=2, default=str) + "\n")
    return exit_code(result["targets"], args.check)
