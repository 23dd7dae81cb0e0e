"""
One measured run: reset the emulator, start a fresh client, submit N diffusions, let it poll them.

Then the client's report and the emulator's counters become the run's numbers (:func:`measure`).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import queue
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from benchmarks.report import percentile
from benchmarks.trigger_polling.common import API_KEY, BASELINE_CONN_ID, PROVIDER_CONN_ID, READY, RESULT
from benchmarks.trigger_polling.emulator import submit_diffusions

if TYPE_CHECKING:
    from benchmarks.trigger_polling.emulator import EmulatorProcess

#: The repository root: clients run as ``python -m benchmarks.trigger_polling.client`` from there.
REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class RunSpec:
    """What one run measures: which client, how many pollers, on what schedule."""

    mode: str
    n: int
    repeat: int
    interval: float
    latency: float
    jitter: float
    max_seconds: float
    submit_concurrency: int
    profile: str = "steady"
    #: The generation length asked for, in polls (the start phase's two points); None elsewhere.
    target_polls: int | None = None
    #: The emulator's ``rate_limit`` while the pollers run (the scale phase); None: no limit.
    emulator_rate_limit: float | None = None
    #: The provider connection's ``max_requests_per_second`` extra (the shared limiter); None: none.
    max_requests_per_second: float | None = None

    @property
    def name(self) -> str:
        length = f"-{self.target_polls}polls" if self.target_polls is not None else ""
        limited = f"-limited{self.max_requests_per_second:g}" if self.max_requests_per_second else ""
        served = f"-service{self.emulator_rate_limit:g}" if self.emulator_rate_limit else ""
        return f"{self.profile}-{self.mode}{limited}{served}-{self.n}{length}-{self.repeat}"


def listen_overflows() -> int | None:
    """
    The kernel's count of connections dropped because a listen backlog was full (Linux, whole host).

    A handshake per poll can overflow the emulator's backlog (asyncio's default, 100): the client
    then waits for a SYN retransmit (1 s, 3 s, ...), which shows as lateness, not as CPU.
    """
    try:
        lines = Path("/proc/net/netstat").read_text().splitlines()
    except OSError:
        return None
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            fields = dict(zip(header.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return None


class _LineReader:
    """Read a child's stdout on a thread, so the parent can wait for a line with a timeout."""

    def __init__(self, stream: IO[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self.thread.start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, prefix: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {prefix.strip()} line within {timeout:.0f} s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"the client exited before its {prefix.strip()} line")
            if line.startswith(prefix):
                return line[len(prefix) :].strip()


def client_env(
    emulator: EmulatorProcess, workdir: Path, max_requests_per_second: float | None = None
) -> dict[str, str]:
    """
    The client's environment: both Airflow connections and the emulator's CA.

    The provider's connection comes from ``AIRFLOW_CONN_GETIMAGE_DEFAULT``, which the trigger reads
    through Airflow's own asynchronous connection lookup (the environment-variable secrets
    backend), and trusts the CA through its ``verify`` extra. ``HttpAsyncHook`` cannot take a CA
    bundle from its connection (its ``verify`` extra becomes aiohttp's boolean ``verify_ssl``), so
    the baseline trusts it the way a user of a private CA would: ``SSL_CERT_FILE``, which aiohttp's
    default (cached) SSL context reads. ``max_requests_per_second`` goes into the provider
    connection's extra (the shared limiter of ``hooks.limiter``).
    """
    extra: dict[str, Any] = {"verify": emulator.ca_bundle}
    if max_requests_per_second is not None:
        extra["max_requests_per_second"] = max_requests_per_second
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(workdir / "airflow-home"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "SSL_CERT_FILE": emulator.ca_bundle,
            "BENCH_BASE_URL": emulator.url,
            "BENCH_CA_BUNDLE": emulator.ca_bundle,
            f"AIRFLOW_CONN_{PROVIDER_CONN_ID.upper()}": json.dumps(
                {
                    "conn_type": "getimage",
                    "host": emulator.url,
                    "password": API_KEY,
                    "extra": extra,
                }
            ),
            f"AIRFLOW_CONN_{BASELINE_CONN_ID.upper()}": json.dumps(
                {"conn_type": "http", "host": emulator.url}
            ),
        }
    )
    return env


def run_once(emulator: EmulatorProcess, spec: RunSpec, workdir: Path) -> dict[str, Any]:
    """One measured run of one mode: fresh client process, reset emulator, N fresh diffusions."""
    emulator.control("POST", "/_emulator/reset")
    stderr_path = workdir / f"client-{spec.name}.log"
    command = [
        sys.executable,
        "-m",
        "benchmarks.trigger_polling.client",
        spec.mode,
        "--profile",
        "steady" if spec.profile == "scale" else spec.profile,  # the scale phase's client is steady
        "--interval",
        str(spec.interval),
    ]
    log_file = workdir / f"client-{spec.name}.jsonl"
    if spec.profile == "start":
        command += ["--log-file", str(log_file)]
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=client_env(emulator, workdir, spec.max_requests_per_second),
            cwd=REPO,
            text=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        reader = _LineReader(child.stdout)
        try:
            reader.wait_for(READY, timeout=120)
            ids = asyncio.run(
                submit_diffusions(emulator, spec.n, spec.submit_concurrency, spec.latency, spec.jitter)
            )
            last_finish = max(
                item["finishes_at"] for item in emulator.control("GET", "/_emulator/diffusions")
            )
            if spec.emulator_rate_limit is not None:  # the pollers meet the limit, the setup did not
                emulator.control("POST", "/_emulator/config", {"rate_limit": spec.emulator_rate_limit})
            before = emulator.control("GET", "/_emulator/stats")
            overflows_start = listen_overflows()
            emulator_cpu_start, started = emulator.cpu_seconds(), time.monotonic()
            deadline = last_finish + spec.max_seconds
            child.stdin.write(json.dumps({"ids": ids, "deadline": deadline}) + "\n")
            child.stdin.flush()
            report = json.loads(reader.wait_for(RESULT, timeout=deadline - time.time() + 120))
            emulator_cpu = emulator.cpu_seconds() - emulator_cpu_start
            emulator_wall = time.monotonic() - started
            overflows_end = listen_overflows()
            child.wait(timeout=60)
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            if spec.emulator_rate_limit is not None:
                emulator.control("POST", "/_emulator/config", {"rate_limit": None})
    after = emulator.control("GET", "/_emulator/stats")
    diffusions = {item["id"]: item for item in emulator.control("GET", "/_emulator/diffusions")}
    if stderr_path.stat().st_size == 0:
        stderr_path.unlink()
    run = measure(spec, ids, report, before, after, diffusions, emulator_cpu, emulator_wall)
    run["listen_overflows"] = math.nan
    if overflows_start is not None and overflows_end is not None:
        run["listen_overflows"] = overflows_end - overflows_start
    return run


def measure(
    spec: RunSpec,
    ids: list[str],
    report: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    diffusions: dict[str, dict[str, Any]],
    emulator_cpu: float,
    emulator_wall: float,
) -> dict[str, Any]:
    """Turn a client report and the emulator's counters into the run's numbers."""
    n = spec.n
    seen_at: dict[str, float] = report["seen_at"]
    started_at: float = report["started_at"]
    lateness = [seen_at[i] - diffusions[i]["finishes_at"] for i in ids if i in seen_at]
    first_request: dict[str, float] = report["first_request_at"]
    first_poll = [first_request[i] - started_at for i in ids if i in first_request]
    polls_by_id: dict[str, int] = after["polls_by_id"]
    per_generation = [polls_by_id.get(i, 0) for i in ids]
    # The bound, per diffusion: polls <= generation time / interval + 2, counting the
    # generation time from when its poller started (the stricter reading).
    over_bound = sum(
        1
        for i in ids
        if polls_by_id.get(i, 0)
        > (diffusions[i]["finishes_at"] - max(diffusions[i]["created_at"], started_at)) / spec.interval + 2
    )
    finished_early = sum(1 for i in ids if diffusions[i]["finishes_at"] < started_at)
    polls = after["polls"] - before["polls"]
    requests = after["requests"] - before["requests"]
    refused = after["responses_by_status"].get("429", 0) - before["responses_by_status"].get("429", 0)
    non_ok = {
        code: count - before["responses_by_status"].get(code, 0)
        for code, count in after["responses_by_status"].items()
        if not code.startswith("2")
    }
    non_ok = {code: count for code, count in non_ok.items() if count}
    errors = report["errors"] + report["log_warnings"] + report["log_retries"] + sum(non_ok.values())
    wall = report["wall_s"]
    undetected = n - len(lateness)
    p99 = percentile(lateness, 99)
    return {
        "mode": spec.mode,
        "profile": spec.profile,
        "n": n,
        "repeat": spec.repeat,
        "target_polls": spec.target_polls,
        "interval_s": spec.interval,
        "latency_s": spec.latency,
        "detected": len(lateness),
        "undetected": undetected,
        "cut_off": report["cut_off"],
        "errors": errors,
        "client_errors": report["errors"],
        "log_warnings": report["log_warnings"],
        "log_retries": report["log_retries"],
        "log_lines": report.get("log_lines"),
        "hook_preloaded": report.get("hook_preloaded"),
        "aiohttp_preloaded": report.get("aiohttp_preloaded"),
        "aiohttp_in_triggerer": report.get("aiohttp_in_triggerer"),
        "non_2xx_responses": non_ok,
        "error_samples": report["error_samples"] + report["log_samples"],
        "polls": polls,
        "requests": requests,
        "requests_per_s": requests / report["wall_s"] if report["wall_s"] else math.nan,
        "share_429": refused / requests if requests else math.nan,
        "cpu_ms_per_request": 1e3 * report["cpu_s"] / requests if requests else math.nan,
        "max_requests_per_second": spec.max_requests_per_second,
        "emulator_rate_limit": spec.emulator_rate_limit,
        "cpu_s": report["cpu_s"],
        "gc_full_collections": report.get("gc_full_collections"),
        "gc_full_s": report.get("gc_full_s"),
        "gc_collections": report.get("gc_collections"),
        "cpu_ms_per_1000_polls": 1e6 * report["cpu_s"] / polls if polls else math.nan,
        "cpu_ms_per_poller": 1e3 * report["cpu_s"] / n,
        "client_cpu_pct": 100 * report["cpu_s"] / wall if wall else math.nan,
        "wall_s": wall,
        "peak_rss_mb": report["peak_rss_mb"],
        "rss_start_mb": report["rss_start_mb"],
        "rss_growth_mb": max(0.0, report["peak_rss_mb"] - report["rss_start_mb"]),
        # The stats request that took `before` was counted before it; the one for `after` too.
        "connections": after["connections"] - before["connections"] - 1,
        "lateness_p50_s": percentile(lateness, 50),
        "lateness_p99_s": p99,
        "lateness_max_s": max(lateness) if lateness else math.nan,
        "first_poll_p50_s": percentile(first_poll, 50),
        "first_poll_p99_s": percentile(first_poll, 99),
        "finished_before_start": finished_early,
        "generation_s_min": min(d["finishes_at"] - started_at for d in diffusions.values()),
        "generation_s_max": max(d["finishes_at"] - started_at for d in diffusions.values()),
        "polls_per_generation": statistics.fmean(per_generation) if per_generation else math.nan,
        "polls_per_generation_max": max(per_generation) if per_generation else 0,
        "polls_over_bound": over_bound,
        "emulator_cpu_pct": 100 * emulator_cpu / emulator_wall if emulator_wall else math.nan,
        "kept_up": undetected == 0 and p99 <= spec.interval + 1.0,
        "submitted": after["submissions"],
    }
