"""
The start phase: what a trigger costs to start, and what each poll costs after that.

A client in the ``start`` profile is a fresh trigger runner (the trigger module loaded, the hook
module not; log records rendered as the triggerer's runner renders them), and its window holds
every trigger's construction and start. Run at two generation lengths, its CPU per trigger is a
line in the polls per generation: ``CPU = fixed + per_poll * polls``. The same two points for the
floor (one shared session, same schedule) give the floor's line; the provider's fixed cost above
the floor's is its start cost, and the ratio of the slopes is its steady poll against the floor.
"""

from __future__ import annotations

import collections
import statistics
from typing import Any

from benchmarks.report import fmt_cell, markdown_table, median, verdict
from benchmarks.trigger_polling.results import run_notes

START_MODES = ("provider", "floor")
#: The issue's targets: ms of CPU per trigger start above the floor's, and per-poll ratio to the floor.
START_LIMIT_MS = 0.5
STEADY_LIMIT = 1.05


def latency_for(polls: int, interval: float) -> float:
    """
    The generation time that takes ``polls`` GETs on average, counted from its poller's start.

    The first poll comes at a uniformly random part of an interval, then one each interval, and
    the first after the generation's end sees FINISHED: a generation of ``k`` intervals takes the
    first poll, ``k - 1`` more before its end and that last one, ``k + 1``. The pollers start a
    moment after the last submission, so the report's polls / gen (what the emulator counted,
    and what the fit uses) comes out a little lower.
    """
    return (polls - 1) * interval


def fit(points: list[tuple[float, float]]) -> dict[str, float] | None:
    """The least-squares line ``y = fixed + per_poll * x`` (exact through 2 points), or None."""
    if len({x for x, _y in points}) < 2:
        return None
    mean_x = statistics.fmean(x for x, _y in points)
    mean_y = statistics.fmean(y for _x, y in points)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _y in points)
    return {"per_poll_ms": slope, "fixed_ms": mean_y - slope * mean_x}


def compare(fits: dict[str, dict[str, float] | None]) -> tuple[float | None, float | None]:
    """The provider's start cost above the floor's (ms per trigger), and its per-poll ratio to it."""
    provider, floor = fits.get("provider"), fits.get("floor")
    if provider is None or floor is None:
        return None, None
    ratio = provider["per_poll_ms"] / floor["per_poll_ms"] if floor["per_poll_ms"] > 0 else None
    return provider["fixed_ms"] - floor["fixed_ms"], ratio


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians per (generation length, mode), the fits through them, the fits of each repeat alone."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs:
        groups[(run["target_polls"], run["mode"])].append(run)
    rows = []
    for (polls, mode), group in sorted(
        groups.items(), key=lambda item: (item[0][0], START_MODES.index(item[0][1]))
    ):
        rows.append(
            {
                "target_polls": polls,
                "mode": mode,
                "repeats": len(group),
                "polls_per_generation": median(run["polls_per_generation"] for run in group),
                "cpu_ms_per_trigger": median(run["cpu_ms_per_poller"] for run in group),
                "cpu_ms_per_poll": median(1e3 * run["cpu_s"] / run["polls"] for run in group if run["polls"]),
                "log_lines_per_trigger": median(
                    run["log_lines"] / run["n"] for run in group if run.get("log_lines") is not None
                ),
                "full_gc_ms_per_trigger": median(
                    1e3 * run["gc_full_s"] / run["n"] for run in group if run.get("gc_full_s") is not None
                ),
                "errors_total": sum(run["errors"] for run in group),
                "undetected_total": sum(run["undetected"] for run in group),
                "hook_preloaded": any(
                    run.get("hook_preloaded") for run in group if run["mode"] == "provider"
                ),
                "aiohttp_preloaded": any(run.get("aiohttp_preloaded") for run in group),
            }
        )
    fits = {
        mode: fit(
            [(row["polls_per_generation"], row["cpu_ms_per_trigger"]) for row in rows if row["mode"] == mode]
        )
        for mode in START_MODES
    }
    start_cost, steady = compare(fits)
    per_repeat = []
    for repeat in sorted({run["repeat"] for run in runs}):
        mine = [run for run in runs if run["repeat"] == repeat]
        repeat_fits = {
            mode: fit(
                [
                    (run["polls_per_generation"], run["cpu_ms_per_poller"])
                    for run in mine
                    if run["mode"] == mode
                ]
            )
            for mode in START_MODES
        }
        cost, ratio = compare(repeat_fits)
        per_repeat.append(
            {"repeat": repeat, "fits": repeat_fits, "start_cost_ms": cost, "steady_ratio": ratio}
        )
    by_key = {(row["target_polls"], row["mode"]): row for row in rows}
    per_length = [
        {
            "target_polls": polls,
            "provider_over_floor": by_key[(polls, "provider")]["cpu_ms_per_trigger"]
            / by_key[(polls, "floor")]["cpu_ms_per_trigger"],
        }
        for polls in sorted({row["target_polls"] for row in rows})
        if (polls, "provider") in by_key and (polls, "floor") in by_key
    ]
    return {
        "rows": rows,
        "fits": fits,
        "start_cost_ms": start_cost,
        "steady_ratio": steady,
        "per_repeat": per_repeat,
        "per_length": per_length,
    }


def _spread(values: list[float | None], fmt: str) -> str:
    """The repeats' own results: their median, and from the least to the most."""
    known = [value for value in values if value is not None]
    if not known:
        return "-"
    return f"median {fmt.format(median(known))} ({fmt.format(min(known))} to {fmt.format(max(known))})"


def _at_most(
    name: str, value: float | None, limit: float, fmt: str, per_repeat: list[float | None]
) -> dict[str, Any]:
    """A target met when ``value <= limit``, with each repeat's own value beside it."""
    return {
        "target": name,
        "value": value,
        "limit": f"<= {limit:g}",
        "verdict": verdict(None if value is None else value <= limit),
        "format": fmt,
        "per_repeat": _spread(per_repeat, fmt),
    }


def targets(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's two targets, and whether the runs measured what they should; each PASS, FAIL or n/a."""
    repeats = summary["per_repeat"]
    rows = summary["rows"]
    failures = sum(row["errors_total"] + row["undetected_total"] for row in rows) if rows else None
    # A fresh triggerer has loaded neither: each mode imports its HTTP client inside its window.
    preloaded = any(row["hook_preloaded"] or row.get("aiohttp_preloaded") for row in rows)
    return [
        _at_most(
            "start: provider's fixed CPU per trigger above the floor's, ms",
            summary["start_cost_ms"],
            START_LIMIT_MS,
            "{:.2f}",
            [item["start_cost_ms"] for item in repeats],
        ),
        _at_most(
            "steady: provider's CPU per poll / the floor's",
            summary["steady_ratio"],
            STEADY_LIMIT,
            "{:.3f}",
            [item["steady_ratio"] for item in repeats],
        ),
        {
            "target": "valid: hook module and aiohttp not loaded before the window; errors + undetected = 0",
            "value": failures if not preloaded else None,
            "format": "{}",
            "limit": "== 0",
            "verdict": verdict(None if failures is None else failures == 0 and not preloaded),
            "per_repeat": "hook or aiohttp preloaded" if preloaded else "",
        },
    ]


def render(start: dict[str, Any]) -> list[str]:
    """The start phase's markdown: the points, the per-length ratios, the fits, the targets."""
    params, summary = start["params"], start["summary"]
    lines = [
        "### Start cost and steady poll: a fresh triggerer",
        "",
        f"N={params['n']} triggers on one loop, interval {params['interval']:g} s, generations of "
        f"{' and '.join(str(p) for p in params['polls'])} polls (latency +/- {params['jitter']:g} s), "
        f"{params['repeats']} repeat(s), modes and lengths alternating within each repeat; medians "
        "over repeats. Window: every trigger's construction and start (the hook module's import, "
        "the connection lookup from AIRFLOW_CONN_GETIMAGE_DEFAULT, the session), all its polls, "
        "its log lines rendered to JSON as the triggerer's trigger runner renders them; the "
        "floor's aiohttp import and session. Each window starts after a full garbage collection.",
        "",
    ]
    lines += markdown_table(
        [
            "polls asked",
            "mode",
            "polls / gen",
            "CPU ms / trigger",
            "CPU ms / poll",
            "log lines / trigger",
            "of which full GCs, ms / trigger",
            "errors",
            "undetected",
            "repeats",
        ],
        (
            [
                str(row["target_polls"]),
                row["mode"],
                fmt_cell(row["polls_per_generation"], "{:.2f}"),
                fmt_cell(row["cpu_ms_per_trigger"], "{:.3f}"),
                fmt_cell(row["cpu_ms_per_poll"], "{:.3f}"),
                fmt_cell(row["log_lines_per_trigger"], "{:.2f}"),
                fmt_cell(row["full_gc_ms_per_trigger"], "{:.3f}"),
                str(row["errors_total"]),
                str(row["undetected_total"]),
                str(row["repeats"]),
            ]
            for row in summary["rows"]
        ),
        "rlrrrrrrrr",
    )
    lines.append("")
    lines += markdown_table(
        ["polls asked", "provider / floor CPU per trigger"],
        (
            [str(item["target_polls"]), fmt_cell(item["provider_over_floor"], "{:.2f}x")]
            for item in summary["per_length"]
        ),
        "rr",
    )
    lines.append("")
    lines += markdown_table(
        ["fit: CPU per trigger = fixed + per poll x polls", "fixed ms", "ms / poll"],
        (
            [
                mode,
                fmt_cell(None if line is None else line["fixed_ms"], "{:.3f}"),
                fmt_cell(None if line is None else line["per_poll_ms"], "{:.4f}"),
            ]
            for mode, line in summary["fits"].items()
        ),
        "lrr",
    )
    lines.append("")
    lines += markdown_table(
        ["target", "value", "limit", "verdict", "each repeat's own fit"],
        (
            [
                item["target"],
                fmt_cell(item["value"], item["format"]),
                item["limit"],
                item["verdict"],
                item["per_repeat"],
            ]
            for item in start["targets"]
        ),
        "lrlll",
    )
    lines += run_notes(start["runs"])
    return lines
