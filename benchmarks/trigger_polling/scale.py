"""
The scale phase: N deferred generations in one triggerer against a service that takes R requests/s.

Three runs per repeat, each a fresh client process of ``provider`` triggers: ``per-trigger`` (the
connection sets no limit: each trigger meets the service's 429s alone), ``shared limiter`` (the
connection's ``max_requests_per_second`` = R: one ``hooks.limiter.AsyncLimiter`` for every trigger
of the loop), and ``limiter-free at R`` (neither, and no service limit: the same N polling every
N / R seconds, so it asks for the R polls/s the limiter lets through). CPU per poll divides a
run's CPU by the requests it sent, and N live triggers cost CPU every second whatever is sent:
only a baseline sending the same polls/s carries the same fixed cost per poll, so the limiter's
CPU per poll is compared with that run's (the per-trigger run, at 3x the polls/s and many cheap
429 answers, is the 429 comparison). The emulator answers 429 (``Retry-After: 1``) above R
requests in any second, during the polling only (the setup's submissions are not limited).
"""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

from benchmarks.report import markdown_table
from benchmarks.trigger_polling.runner import RunSpec

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterator

#: Run label -> (the service limits to R, the connection sets ``max_requests_per_second`` = R).
#: The service-limit-free mode polls every N / R seconds (:func:`interval_of`).
SCALE_MODES: dict[str, tuple[bool, bool]] = {
    "per-trigger": (True, False),
    "shared limiter": (True, True),
    "limiter-free at R": (False, False),
}
BASELINE = "limiter-free at R"
MAX_429_SHARE = 0.01
CPU_RATIO_LIMIT = 1.10
NUMBERS = (
    "requests_per_s",
    "share_429",
    "lateness_p50_s",
    "lateness_p99_s",
    "polls_per_generation",
    "cpu_ms_per_request",
    "undetected",
    "wall_s",
)


def label(run: dict[str, Any]) -> str:
    if run.get("emulator_rate_limit") is None:
        return BASELINE
    return "shared limiter" if run.get("max_requests_per_second") else "per-trigger"


def interval_of(service_limit: bool, n: int, rate: float, interval: float) -> float:
    """A mode's poll interval: the one asked, or N / R for the baseline (it asks for R polls/s)."""
    return interval if service_limit else n / rate


def specs(args: argparse.Namespace) -> Iterator[RunSpec]:
    """Per repeat, every mode; reversed in even repeats, so drift favours none."""
    for repeat in range(1, args.scale_repeats + 1):
        order = list(SCALE_MODES.items())
        for _label, (service_limit, limited) in order if repeat % 2 else order[::-1]:
            yield RunSpec(
                "provider",
                args.scale_n,
                repeat,
                interval_of(service_limit, args.scale_n, args.scale_rate, args.scale_interval),
                args.scale_latency,
                args.scale_jitter,
                args.scale_max_seconds,
                args.submit_concurrency,
                profile="scale",
                emulator_rate_limit=args.scale_rate if service_limit else None,
                max_requests_per_second=args.scale_rate if limited else None,
            )


def summarise(runs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per mode: the median of each number over the repeats, and the worst undetected count."""
    summary: dict[str, dict[str, Any]] = {}
    for name in SCALE_MODES:
        mine = [run for run in runs if label(run) == name]
        if not mine:
            continue
        row: dict[str, Any] = {"repeats": len(mine)}
        for key in NUMBERS:
            values = [run[key] for run in mine if not math.isnan(float(run[key]))]
            row[key] = statistics.median(values) if values else math.nan
        row["undetected_worst"] = max(run["undetected"] for run in mine)
        row["client_errors"] = sum(run["client_errors"] for run in mine)
        summary[name] = row
    return summary


def targets(summary: dict[str, dict[str, Any]], n: int, rate: float, interval: float) -> list[dict[str, Any]]:
    """
    The issue's targets for the shared limiter, each PASS / FAIL (n/a when a mode did not run).

    CPU per poll is compared with the limiter-free run at the same polls/s only (n/a without it).
    """
    limited = summary.get("shared limiter")
    free = summary.get(BASELINE)
    bound = n / rate + interval + 1.0
    rows: list[dict[str, Any]] = []

    def add(name: str, value: Any, ok: bool | None) -> None:
        rows.append(
            {"target": name, "value": value, "verdict": "n/a" if ok is None else "PASS" if ok else "FAIL"}
        )

    if limited is None:
        add("shared limiter ran", "no", None)
        return rows
    add(
        f"429 share <= {MAX_429_SHARE:.0%}",
        f"{limited['share_429']:.2%}",
        limited["share_429"] <= MAX_429_SHARE,
    )
    add("every generation detected", limited["undetected_worst"], limited["undetected_worst"] == 0)
    add(
        f"p99 lateness <= N/R + interval + 1 s = {bound:g} s",
        f"{limited['lateness_p99_s']:.1f} s",
        limited["lateness_p99_s"] <= bound,
    )
    ratio = limited["cpu_ms_per_request"] / free["cpu_ms_per_request"] if free else math.nan
    add(
        f"CPU per poll <= {CPU_RATIO_LIMIT:.2f}x the limiter-free path at R polls/s",
        f"{ratio:.3f}x" if free else "n/a",
        None if free is None else ratio <= CPU_RATIO_LIMIT,
    )
    return rows


def render(result: dict[str, Any]) -> list[str]:
    """The markdown section: parameters, one row per mode, the targets."""
    params, summary = result["params"], result["summary"]
    lines = [
        "### Scale: one triggerer, a rate-limited service",
        "",
        f"N = {params['n']} deferred generations, service limit R = {params['rate']:g} requests/s "
        f"(emulator `--rate-limit`, `Retry-After: 1`), polls every {params['interval']:g} s "
        f"(demand {params['n'] / params['interval'] / params['rate']:.1f}x R), generations "
        f"{params['latency']:g} +/- {params['jitter']:g} s, {params['repeats']} repeat(s), medians. "
        f"`{BASELINE}`: no limits, polls every N/R = {params['n'] / params['rate']:g} s (R polls/s asked), "
        "the CPU-per-poll baseline.",
        "",
    ]
    header = [
        "mode",
        "requests/s sent",
        "429 share",
        "p50 late s",
        "p99 late s",
        "polls / gen",
        "CPU ms / poll",
        "undetected",
        "wall s",
    ]
    body = [
        [
            name,
            f"{row['requests_per_s']:.0f}",
            f"{row['share_429']:.2%}",
            f"{row['lateness_p50_s']:.1f}",
            f"{row['lateness_p99_s']:.1f}",
            f"{row['polls_per_generation']:.1f}",
            f"{row['cpu_ms_per_request']:.3f}",
            str(row["undetected_worst"]),
            f"{row['wall_s']:.0f}",
        ]
        for name, row in summary.items()
    ]
    lines += markdown_table(header, body, "l" + "r" * (len(header) - 1))
    checks = [[item["target"], str(item["value"]), item["verdict"]] for item in result["targets"]]
    lines += ["", *markdown_table(["target", "value", "verdict"], checks, "lrl")]
    return lines
