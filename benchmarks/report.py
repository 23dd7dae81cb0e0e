"""
What every benchmark report needs: statistics, table cells and tables, JSON, the machine.

Shared by ``benchmarks.trigger_polling`` and ``benchmarks.deployment_check``, so their reports
read alike and neither imports the other.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import math
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): an actual observed value, NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Iterable[float]) -> float:
    """The median of the numbers that are not NaN (a repeat that measured nothing); NaN if none."""
    finite = [value for value in values if not math.isnan(value)]
    return statistics.median(finite) if finite else math.nan


def fmt_cell(value: Any, fmt: str = "{}") -> str:
    """A table cell: ``-`` for a missing number (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    """
    A markdown table's lines.

    :param align: one letter per column, ``l`` (text) or ``r`` (numbers, right-aligned).
    """
    if len(align) != len(headers):
        raise ValueError(f"{len(headers)} columns but alignment {align!r}")
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "".join("---:|" if side == "r" else "---|" for side in align),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def verdict(ok: bool | None) -> str:
    """PASS, FAIL, or n/a when the run did not measure what a target needs (``None``)."""
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def json_safe(value: Any) -> Any:
    """NaN (an empty percentile) as null: ``json.dumps`` would write ``NaN``, which is not JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return value


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken: CPUs, platform, versions, and the commit measured."""

    def version(dist: str) -> str:
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    git = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "aiohttp": version("aiohttp"),
        "airflow": version("apache-airflow"),
        "providers_http": version("apache-airflow-providers-http"),
        "git": git,
    }
