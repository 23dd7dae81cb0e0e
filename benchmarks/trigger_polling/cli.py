"""
The benchmark's command line: run the phases, print the report, write the JSON.

``python -m benchmarks.trigger_polling`` from the repository root; see ``benchmarks/README.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.report import json_safe, machine_info
from benchmarks.trigger_polling import results, scale, start_cost
from benchmarks.trigger_polling.common import MODES, raise_nofile_limit
from benchmarks.trigger_polling.emulator import EmulatorProcess
from benchmarks.trigger_polling.runner import RunSpec, run_once

if TYPE_CHECKING:
    from collections.abc import Iterator

log = logging.getLogger("benchmarks.trigger_polling")

PHASES = ("polling", "start", "scale")
#: What runs without ``--phases``: the scale phase is ``make bench-scale`` alone.
DEFAULT_PHASES = ("polling", "start")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.trigger_polling",
        description="N concurrent GetImageDiffusionTrigger pollers vs session-per-poll and a bare "
        "shared-session loop, against the emulator over TLS; and a fresh triggerer's start cost.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--phases", nargs="+", choices=PHASES, default=list(DEFAULT_PHASES), help="what to run"
    )
    polling = parser.add_argument_group("polling phase")
    polling.add_argument("--n", type=int, nargs="+", default=[100, 1000, 5000], help="pollers per run")
    polling.add_argument("--repeats", type=int, default=3, help="runs per (N, mode), modes alternating")
    polling.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")
    polling.add_argument("--latency", type=float, default=6.0, help="emulator seconds per generation")
    polling.add_argument(
        "--latency-jitter",
        type=float,
        default=None,
        help="spread of generation times, +/- seconds (default: the interval), so finish times fall "
        "at every phase of the poll cycle",
    )
    polling.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run")
    start = parser.add_argument_group("start phase (provider and floor, a fresh triggerer)")
    start.add_argument("--start-n", type=int, default=1000, help="triggers per run")
    start.add_argument(
        "--start-polls",
        type=int,
        nargs="+",
        default=[3, 11, 31],
        help="generation lengths, in polls: the points of the fit (two at least)",
    )
    start.add_argument("--start-interval", type=float, default=1.0, help="poll interval, seconds")
    start.add_argument(
        "--start-jitter",
        type=float,
        default=None,
        help="spread of generation times, +/- s (default: interval / 2)",
    )
    start.add_argument("--start-repeats", type=int, default=5, help="runs per (length, mode), alternating")
    grow = parser.add_argument_group("scale phase (one triggerer, a rate-limited service)")
    grow.add_argument("--scale-n", type=int, default=3000, help="deferred generations per run")
    grow.add_argument("--scale-rate", type=float, default=200.0, help="the service's limit R, requests/s")
    grow.add_argument("--scale-interval", type=float, default=5.0, help="poll interval, seconds")
    grow.add_argument("--scale-latency", type=float, default=60.0, help="seconds per generation")
    grow.add_argument("--scale-jitter", type=float, default=5.0, help="spread of generation times, +/- s")
    grow.add_argument("--scale-repeats", type=int, default=1, help="runs per mode, alternating")
    grow.add_argument(
        "--scale-max-seconds",
        type=float,
        default=90.0,
        help="cap after the last generation finishes (a per-trigger run may lag far behind)",
    )
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=30.0,
        help="cap: seconds after the last generation finishes that pollers may still run; those "
        "still waiting then are cancelled and reported as undetected",
    )
    parser.add_argument("--submit-concurrency", type=int, default=32, help="parallel submissions (setup)")
    parser.add_argument("--json", dest="json_path", default=None, help="also write every number here")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target FAILs")
    parser.add_argument("--keep-workdir", action="store_true", help="keep logs and certificates")
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.latency_jitter is None:
        args.latency_jitter = min(args.interval, args.latency)
    if args.start_jitter is None:
        args.start_jitter = args.start_interval / 2
    if args.interval <= 0 or args.repeats < 1 or min(args.n) < 1:
        parser.error("interval must be > 0, repeats >= 1, N >= 1")
    if not 0 <= args.latency_jitter <= args.latency:
        parser.error("need 0 <= latency jitter <= latency")
    if args.start_interval <= 0 or args.start_repeats < 1 or args.start_n < 1:
        parser.error("start interval must be > 0, start repeats >= 1, start N >= 1")
    if len(set(args.start_polls)) < 2 or min(args.start_polls) < 2:
        parser.error("--start-polls needs two different lengths at least, each of 2 polls or more")
    if not 0 <= args.start_jitter <= start_cost.latency_for(min(args.start_polls), args.start_interval):
        parser.error("need 0 <= start jitter <= the shortest generation")
    return args


def polling_specs(args: argparse.Namespace) -> Iterator[RunSpec]:
    """For each N, each repeat, each mode: modes alternate within a repeat."""
    for n in args.n:
        for repeat in range(1, args.repeats + 1):
            for mode in args.modes:
                yield RunSpec(
                    mode,
                    n,
                    repeat,
                    args.interval,
                    args.latency,
                    args.latency_jitter,
                    args.max_seconds,
                    args.submit_concurrency,
                )


def start_specs(args: argparse.Namespace) -> Iterator[RunSpec]:
    """
    For each repeat, each generation length, both modes: provider first in odd repeats, the floor
    first in even ones, so a machine that slowly speeds up or slows down favours neither.
    """
    for repeat in range(1, args.start_repeats + 1):
        order = start_cost.START_MODES if repeat % 2 else start_cost.START_MODES[::-1]
        for polls in args.start_polls:
            for mode in order:
                yield RunSpec(
                    mode,
                    args.start_n,
                    repeat,
                    args.start_interval,
                    start_cost.latency_for(polls, args.start_interval),
                    args.start_jitter,
                    args.max_seconds,
                    args.submit_concurrency,
                    profile="start",
                    target_polls=polls,
                )


def log_run(run: dict[str, Any]) -> None:
    if run["profile"] == "scale":
        log.info(
            "scale %s N=%s #%s: %.0f requests/s, %.2f%% 429, p50/p99 late %.1f/%.1f s, %.1f polls/gen, "
            "%.3f CPU ms/poll, %s undetected, %.0f s",
            scale.label(run),
            run["n"],
            run["repeat"],
            run["requests_per_s"],
            100 * run["share_429"],
            run["lateness_p50_s"],
            run["lateness_p99_s"],
            run["polls_per_generation"],
            run["cpu_ms_per_request"],
            run["undetected"],
            run["wall_s"],
        )
        return
    log.info(
        "%s: %.0f CPU ms/1k polls, %.3f CPU ms/poller, %.2f polls/gen, %s conns, p99 late %.2f s, "
        "%s errors, %s undetected, emulator CPU %.0f%%, %.1f s, %s full GCs (%.0f ms)",
        results.label(run) if run["profile"] == "steady" else f"{run['profile']} {results.label(run)}",
        run["cpu_ms_per_1000_polls"],
        run["cpu_ms_per_poller"],
        run["polls_per_generation"],
        run["connections"],
        run["lateness_p99_s"],
        run["errors"],
        run["undetected"],
        run["emulator_cpu_pct"],
        run["wall_s"],
        run.get("gc_full_collections"),
        1e3 * (run.get("gc_full_s") or 0.0),
    )


def render(result: dict[str, Any]) -> str:
    """The markdown report: machine, then each phase that ran."""
    machine = result["machine"]
    lines = [
        "## Trigger polling benchmark",
        "",
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"aiohttp {machine['aiohttp']}, apache-airflow {machine['airflow']}, "
        f"apache-airflow-providers-http {machine['providers_http']}, provider at {machine['git']}",
    ]
    if result["runs"]:
        lines += results.render(result)
    if "start" in result:
        lines += ["", *start_cost.render(result["start"])]
    if "scale" in result:
        lines += ["", *scale.render(result["scale"])]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # A TERM (a CI timeout, a kill by pid) must still stop the emulator and the client: exit
    # through the ``finally`` blocks instead of dying in place.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    specs = [
        *(polling_specs(args) if "polling" in args.phases else ()),
        *(start_specs(args) if "start" in args.phases else ()),
        *(scale.specs(args) if "scale" in args.phases else ()),
    ]
    nofile = raise_nofile_limit()
    if nofile < max(spec.n for spec in specs) + 200:
        log.warning("Open-files limit %s is below N + 200; large runs may fail with EMFILE", nofile)
    workdir = Path(tempfile.mkdtemp(prefix="getimage-bench-"))
    runs: list[dict[str, Any]] = []
    emulator = EmulatorProcess(workdir, args.latency, args.latency_jitter)
    try:
        log.info("Emulator at %s (pid %s); work dir %s", emulator.url, emulator.proc.pid, workdir)
        for spec in specs:
            run = run_once(emulator, spec, workdir)
            runs.append(run)
            log_run(run)
    finally:
        emulator.stop()
        if args.keep_workdir:
            log.info("Logs and certificates kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    polling_runs = [run for run in runs if run["profile"] == "steady"]
    summary = results.summarise(polling_runs)
    ratio_rows = results.ratios(summary)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "params": {
            "phases": args.phases,
            "n": args.n,
            "repeats": args.repeats,
            "interval": args.interval,
            "latency": args.latency,
            "latency_jitter": args.latency_jitter,
            "modes": args.modes,
            "max_seconds": args.max_seconds,
        },
        "runs": polling_runs,
        "summary": summary,
        "ratios": ratio_rows,
        "targets": results.targets(summary, ratio_rows, args.interval),
    }
    if "start" in args.phases:
        start_runs = [run for run in runs if run["profile"] == "start"]
        start_summary = start_cost.summarise(start_runs)
        result["start"] = {
            "params": {
                "n": args.start_n,
                "polls": args.start_polls,
                "interval": args.start_interval,
                "jitter": args.start_jitter,
                "repeats": args.start_repeats,
                "start_limit_ms": start_cost.START_LIMIT_MS,
                "steady_limit": start_cost.STEADY_LIMIT,
            },
            "runs": start_runs,
            "summary": start_summary,
            "targets": start_cost.targets(start_summary),
        }
    if "scale" in args.phases:
        scale_runs = [run for run in runs if run["profile"] == "scale"]
        scale_summary = scale.summarise(scale_runs)
        result["scale"] = {
            "params": {
                "n": args.scale_n,
                "rate": args.scale_rate,
                "interval": args.scale_interval,
                "latency": args.scale_latency,
                "jitter": args.scale_jitter,
                "repeats": args.scale_repeats,
            },
            "runs": scale_runs,
            "summary": scale_summary,
            "targets": scale.targets(scale_summary, args.scale_n, args.scale_rate, args.scale_interval),
        }
    print(render(result), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    verdicts = [
        item["verdict"]
        for item in result["targets"]
        + result.get("start", {}).get("targets", [])
        + result.get("scale", {}).get("targets", [])
    ]
    if args.check and "FAIL" in verdicts:
        return 1
    return 0
