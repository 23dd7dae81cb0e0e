"""
The batch check's numbers, targets and tables, from what one run observed: no I/O.

Each path (``batch``, ``mapped``) is observed as a :class:`PathObservation`; :func:`summarise`
turns one into the numbers of the report, :func:`targets` compares the two against issue 12, and
:func:`render` prints it all as markdown.
"""

from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from benchmarks.report import fmt_cell, markdown_table, verdict

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

PATHS = ("batch", "mapped")
#: Issue 12's targets.
CPU_RATIO_MIN = 20.0
WALL_SLACK_S = 60.0
DB_BYTES_PER_GENERATION_MAX = 200.0
SHARE_429_MAX = 0.01
#: Tables a run writes whatever it runs, so they count even when the run left no row in them:
#: ``trigger`` rows are deleted once they fired (their space stays until a vacuum).
ALWAYS_COUNTED = ("trigger",)


@dataclass
class Sample:
    """One tick of a phase's watch loop: seconds since the trigger and what was seen then."""

    t: float
    run_state: str | None
    states: dict[str, int]
    submissions: int
    polls: int
    rate_limited: int
    cpu_s: float  # every component, since the trigger
    triggers: int  # rows in ``trigger`` (all of them: one path runs at a time)
    trigger_bytes: int

    def as_row(self) -> list[Any]:
        return [
            round(self.t, 2),
            self.run_state,
            self.states,
            self.submissions,
            self.polls,
            self.rate_limited,
            round(self.cpu_s, 3),
            self.triggers,
            self.trigger_bytes,
        ]


SAMPLE_COLUMNS = [
    "t_s",
    "run_state",
    "states",
    "submissions",
    "polls",
    "rate_limited",
    "cpu_s",
    "triggers",
    "trigger_bytes",
]


@dataclass
class PathObservation:
    """
    Everything measured for one path, before it is summarised.

    :param outcome: what the DAG run produced, read after it ended. Batch: ``finished`` (manifest
        rows with status ``finished``), ``statuses``, ``manifest_rows``, ``ids_distinct``,
        ``ids_unknown`` (diffusion ids the emulator never issued), ``in_order``, ``summary`` (the
        return value), ``error``. Mapped: ``finished`` (tasks in ``success``), ``failed``,
        ``retried``, ``ids_distinct``, ``ids_unknown`` (of the ``diffusion_id`` XComs).
    """

    path: str
    n: int
    run_id: str
    wall_s: float | None  # None: the run did not succeed within the timeout
    run_state: str | None
    timed_out: bool
    rate_limit: float | None
    samples: list[Sample]
    cpu_by_component: dict[str, float]
    idle_cpu_pct: dict[str, float]  # per component, percent of one core, before the phase
    emulator_stats: dict[str, Any]
    prompts: list[str]  # of every diffusion the emulator created in the phase
    sizes_before: dict[str, int]  # table -> bytes (pg_total_relation_size)
    sizes_after: dict[str, int]
    run_rows: dict[str, dict[str, int]]  # table -> {"rows", "bytes"} of the run's live rows
    outcome: dict[str, Any]
    processes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


def _per(value: float | None, count: float) -> float:
    return value / count if value is not None and count else math.nan


def summarise(obs: PathObservation) -> dict[str, Any]:
    """The numbers one path's report and targets read."""
    stats = obs.emulator_stats
    n = obs.n
    wall = obs.wall_s
    cpu_s = sum(obs.cpu_by_component.values())
    idle_rate = sum(obs.idle_cpu_pct.values()) / 100  # CPU seconds per second
    prompts = collections.Counter(obs.prompts)
    requests = int(stats.get("requests", 0))
    rate_limited = int(stats.get("rate_limited", 0))
    responses: dict[str, int] = stats.get("responses_by_status", {})
    tables = sorted(set(obs.sizes_before) | set(obs.sizes_after))
    growth = {table: obs.sizes_after.get(table, 0) - obs.sizes_before.get(table, 0) for table in tables}
    run_tables = sorted(
        {table for table, rows in obs.run_rows.items() if rows["rows"]} | set(ALWAYS_COUNTED) & set(tables)
    )
    db_growth = sum(growth.get(table, 0) for table in run_tables)
    row_bytes = sum(rows["bytes"] for rows in obs.run_rows.values())
    finished = int(obs.outcome.get("finished", 0))
    return {
        "path": obs.path,
        "n": n,
        "run_state": obs.run_state,
        "timed_out": obs.timed_out,
        "finished": finished,
        "wall_s": wall,
        "rate_limit": obs.rate_limit,
        "cpu_s": cpu_s,
        "cpu_ms_per_generation": 1000 * cpu_s / n if n else math.nan,
        "cpu_by_component": dict(obs.cpu_by_component),
        "idle_cpu_pct": sum(obs.idle_cpu_pct.values()),
        # What the runs added to the deployment's upkeep (its idle rate over the wall time).
        "cpu_above_idle_ms_per_generation": 1000 * _per(cpu_s - idle_rate * wall, n)
        if wall is not None
        else math.nan,
        "submissions": int(stats.get("submissions", 0)),
        "distinct_prompts": len(prompts),
        "duplicate_prompts": sum(count - 1 for count in prompts.values() if count > 1),
        "polls": int(stats.get("polls", 0)),
        "polls_per_generation": _per(int(stats.get("polls", 0)), n),
        "requests": requests,
        "rate_limited": rate_limited,
        "share_429": rate_limited / requests if requests else math.nan,
        "non_2xx": sum(count for status, count in responses.items() if not status.startswith("2")),
        "connections": int(stats.get("connections", 0)),
        "db_tables": run_tables,
        "db_growth_bytes": db_growth,
        "db_growth_per_generation": _per(db_growth, n),
        "db_growth_all_tables_bytes": sum(growth.values()),
        "db_growth_by_table": {table: bytes_ for table, bytes_ in growth.items() if bytes_},
        "row_bytes": row_bytes,
        "row_bytes_per_generation": _per(row_bytes, n),
        "rows_by_table": {table: rows for table, rows in obs.run_rows.items() if rows["rows"]},
        "trigger_rows_peak": max((sample.triggers for sample in obs.samples), default=0),
        "trigger_bytes_peak": max((sample.trigger_bytes for sample in obs.samples), default=0),
        "outcome": obs.outcome,
    }


def wall_bound(n: int, max_submissions_per_second: float, latency: float) -> float:
    """Issue 12's wall-time limit: N / max_submissions_per_second + generation time + 60 s."""
    return n / max_submissions_per_second + latency + WALL_SLACK_S


def cpu_ratio(batch: Mapping[str, Any] | None, mapped: Mapping[str, Any] | None) -> float:
    """How many times less Airflow CPU a generation costs in the batch than mapped (NaN if unknown)."""
    if batch is None or mapped is None:
        return math.nan
    per_batch, per_mapped = batch["cpu_ms_per_generation"], mapped["cpu_ms_per_generation"]
    if math.isnan(per_batch) or math.isnan(per_mapped) or per_batch <= 0:
        return math.nan
    return float(per_mapped / per_batch)


def _complete(summary: Mapping[str, Any] | None) -> bool | None:
    if summary is None:
        return None
    return summary["run_state"] == "success" and summary["finished"] == summary["n"]


def targets(
    batch: Mapping[str, Any] | None, mapped: Mapping[str, Any] | None, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """
    Issue 12's targets for the batch, each with its value, its limit and PASS / FAIL / n/a (n/a:
    the run did not measure what it needs, e.g. a path that was not run or did not finish).
    """
    ratio = cpu_ratio(batch, mapped)
    rows: list[dict[str, Any]] = []

    def add(name: str, value: str, limit: str, ok: bool | None) -> None:
        rows.append({"target": name, "value": value, "limit": limit, "verdict": verdict(ok)})

    n_batch = batch["n"] if batch else params.get("batch_n")
    add(
        "batch: every item finished, run succeeded",
        fmt_cell(batch and f"{batch['finished']} of {batch['n']}, {batch['run_state']}"),
        f"{n_batch} of {n_batch}, success",
        _complete(batch),
    )
    add(
        "mapped baseline: every task succeeded",
        fmt_cell(mapped and f"{mapped['finished']} of {mapped['n']}, {mapped['run_state']}"),
        "all, success (else no baseline)",
        _complete(mapped),
    )
    both = bool(_complete(batch)) and bool(_complete(mapped))
    add(
        "Airflow CPU per generation, mapped / batch",
        fmt_cell(ratio, "{:.1f}x"),
        f">= {CPU_RATIO_MIN:g}x",
        (ratio >= CPU_RATIO_MIN) if both and not math.isnan(ratio) else None,
    )
    if batch is not None:
        bound = wall_bound(batch["n"], params["max_submissions_per_second"], params["latency"])
        wall = batch["wall_s"]
        add(
            "batch wall time s",
            fmt_cell(wall, "{:.0f}"),
            f"<= {bound:.0f} (N / {params['max_submissions_per_second']:g} + {params['latency']:g} + 60)",
            None if wall is None else wall <= bound,
        )
        add(
            "batch submissions",
            f"{batch['submissions']} ({batch['duplicate_prompts']} duplicate prompts)",
            f"= {batch['n']}, each prompt once",
            batch["submissions"] == batch["n"]
            and batch["distinct_prompts"] == batch["n"]
            and batch["duplicate_prompts"] == 0,
        )
        add(
            "batch metadata-DB growth, bytes / generation",
            fmt_cell(batch["db_growth_per_generation"], "{:.1f}"),
            f"<= {DB_BYTES_PER_GENERATION_MAX:g}",
            batch["db_growth_per_generation"] <= DB_BYTES_PER_GENERATION_MAX,
        )
        share = batch["share_429"]
        add(
            "batch 429 answers, share of requests",
            f"{batch['rate_limited']} of {batch['requests']} ({fmt_cell(100 * share, '{:.2f}')}%)",
            f"<= {100 * SHARE_429_MAX:g}% at --rate-limit {fmt_cell(batch['rate_limit'])}/s",
            None if math.isnan(share) or batch["rate_limit"] is None else share <= SHARE_429_MAX,
        )
    return rows


def exit_code(rows: Sequence[Mapping[str, Any]], check: bool) -> int:
    """1 with ``--check`` when a target failed; 0 otherwise."""
    return 1 if check and any(row["verdict"] == "FAIL" for row in rows) else 0


# ------------------------------------------------------------------------------------- report
def _path_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    """The measures table: one row per measure, one column per path run."""

    def cells(key: str, fmt: str = "{}") -> list[str]:
        return [fmt_cell(summaries[path].get(key), fmt) for path in summaries]

    def each(render: Any) -> list[str]:
        return [render(summaries[path]) for path in summaries]

    return [
        ("generations (N)", cells("n")),
        ("run state / finished", each(lambda s: f"{s['run_state']} / {s['finished']}")),
        ("wall s (trigger to run success)", cells("wall_s", "{:.0f}")),
        ("Airflow CPU s, every component", cells("cpu_s", "{:.1f}")),
        ("Airflow CPU ms / generation", cells("cpu_ms_per_generation", "{:.1f}")),
        ("the same above the idle rate", cells("cpu_above_idle_ms_per_generation", "{:.1f}")),
        ("idle CPU before the phase, % of a core", cells("idle_cpu_pct", "{:.1f}")),
        ("submissions (duplicate prompts)", each(lambda s: f"{s['submissions']} ({s['duplicate_prompts']})")),
        ("polls / generation", cells("polls_per_generation", "{:.2f}")),
        ("requests / 429 answers", each(lambda s: f"{s['requests']} / {s['rate_limited']}")),
        (
            "emulator rate limit, requests / s",
            each(lambda s: fmt_cell(s["rate_limit"], "{:g}") if s["rate_limit"] else "off"),
        ),
        ("non-2xx answers", cells("non_2xx")),
        ("metadata DB growth, run tables: bytes / generation", cells("db_growth_per_generation", "{:.1f}")),
        (
            "metadata DB growth, run tables / all tables, KiB",
            each(
                lambda s: f"{s['db_growth_bytes'] / 1024:.0f} / {s['db_growth_all_tables_bytes'] / 1024:.0f}"
            ),
        ),
        ("live rows of the run: bytes / generation", cells("row_bytes_per_generation", "{:.1f}")),
        (
            "trigger rows at once, peak (their bytes)",
            each(lambda s: f"{s['trigger_rows_peak']} ({s['trigger_bytes_peak']})"),
        ),
    ]


def render(result: Mapping[str, Any]) -> str:
    """The markdown report: machine and parameters, both paths side by side, targets."""
    machine, params = result["machine"], result["params"]
    summaries: dict[str, Any] = result["summaries"]
    title = {
        "batch": f"{params['batch_n']} prompts in one batch task",
        "mapped": f"{params['mapped_n']} mapped tasks",
    }
    lines = [
        "## Batch check: " + " vs ".join(title[path] for path in params["paths"]),
        "",
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"apache-airflow {machine['airflow']}, provider at {machine['git']}; load average "
        f"{fmt_cell(machine.get('load_before'), '{:.2f}')} before, "
        f"{fmt_cell(machine.get('load_after'), '{:.2f}')} after.",
        f"Deployment: api-server, scheduler (LocalExecutor, parallelism {params['parallelism']}), "
        f"dag-processor, triggerer; PostgreSQL. Emulator: generation {params['latency']:g} s, TLS "
        f"{'on' if params['tls'] else 'off'}; poll interval {params['poll_interval']:g} s. Batch: "
        f"max_submissions_per_second {params['max_submissions_per_second']:g}, max_in_flight "
        f"{params['max_in_flight']}, max_polls_per_second {params['max_polls_per_second']:g}, "
        f"emulator rate limit {fmt_cell(params['rate_limit'], '{:g}')} requests/s in its phase.",
    ]
    if summaries:
        paths = list(summaries)
        rows = _path_rows(summaries)
        lines += [
            "",
            *markdown_table(
                ["measure", *paths], [[name, *values] for name, values in rows], "l" + "r" * len(paths)
            ),
        ]
        components = sorted({name for s in summaries.values() for name in s["cpu_by_component"]})
        lines += [
            "",
            *markdown_table(
                ["Airflow CPU s by component", *paths],
                [
                    [name, *(fmt_cell(summaries[p]["cpu_by_component"].get(name), "{:.1f}") for p in paths)]
                    for name in components
                ],
                "l" + "r" * len(paths),
            ),
        ]
        tables = sorted({table for s in summaries.values() for table in s["db_growth_by_table"]})
        lines += [
            "",
            *markdown_table(
                ["metadata DB growth, bytes", *paths],
                [
                    [
                        table
                        + (
                            " (run table)" if any(table in s["db_tables"] for s in summaries.values()) else ""
                        ),
                        *(fmt_cell(summaries[p]["db_growth_by_table"].get(table, 0)) for p in paths),
                    ]
                    for table in tables
                ],
                "l" + "r" * len(paths),
            ),
        ]
    lines += [
        "",
        *markdown_table(
            ["target", "value", "limit", "verdict"],
            [[row["target"], row["value"], row["limit"], row["verdict"]] for row in result["targets"]],
            "lrll",
        ),
    ]
    for path, summary in summaries.items():
        error = summary["outcome"].get("error")
        if error:
            lines += ["", f"{path}: {error}"]
    return "\n".join(lines)
