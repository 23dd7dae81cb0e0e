"""
Benchmark: N concurrent ``GetImageDiffusionTrigger.run()`` generators on one event loop.

The triggerer runs every trigger as a task on one event loop, so what a poll costs there (CPU,
memory, connections) decides how many diffusions one triggerer can wait for. This script measures
it against the emulator, over TLS, in a separate process, next to two references run the same way:

- ``provider``: N ``GetImageDiffusionTrigger(...).run()`` generators, each consumed for its one
  event, exactly as the triggerer does.
- ``baseline``: the anchor pattern (``HttpSensorTrigger``): one ``HttpAsyncHook`` per task and
  ``await hook.run(endpoint=...)`` with no session per poll, i.e. a new ``aiohttp.ClientSession``
  and so a new TCP + TLS handshake for every poll.
- ``floor``: a bare loop, one shared ``aiohttp.ClientSession`` (default settings) and N tasks
  GET-ing and parsing the same JSON: what polling costs with no provider code at all.

Each measured run is a fresh client subprocess (so CPU time and peak RSS belong to one mode) and
the modes alternate within each repeat, so drift on a noisy machine hits them alike. Usage::

    python benchmarks/trigger_polling.py --n 100 1000 5000 --repeats 3 --interval 2 --latency 6

See ``benchmarks/README.md`` for what each number means.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import functools
import importlib.metadata
import json
import logging
import math
import os
import platform
import queue
import random
import resource
import shutil
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, MutableMapping

    Poll = Callable[[str], Coroutine[Any, Any, "PollerResult"]]
    PollerFactory = Callable[[float], contextlib.AbstractAsyncContextManager[Poll]]

log = logging.getLogger("benchmarks.trigger_polling")

MODES = ("provider", "baseline", "floor")
API_KEY = "emulator-key"
PROVIDER_CONN_ID = "getimage_default"
BASELINE_CONN_ID = "bench_http"
READY = "@@BENCH-READY"
RESULT = "@@BENCH-RESULT "
RSS_LIMIT_MB = 250.0
CPU_FLOOR_FACTOR = 1.5
CPU_BASELINE_FACTOR = 4.0
TARGET_N_CPU = 1000
TARGET_N_SCALE = 5000

#: One line of the results table: (key in a summary row, header, format).
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("cpu_ms_per_1000_polls", "CPU ms / 1k polls", "{:.0f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("rss_growth_mb", "RSS growth MB", "{:.1f}"),
    ("connections", "TCP conns", "{:.0f}"),
    ("lateness_p50_s", "p50 late s", "{:.2f}"),
    ("lateness_p99_s", "p99 late s", "{:.2f}"),
    ("first_poll_p99_s", "1st poll p99 s", "{:.2f}"),
    ("polls_per_generation", "polls / gen", "{:.2f}"),
    ("polls", "polls", "{:.0f}"),
    ("errors", "errors", "{:.0f}"),
    ("undetected", "undetected", "{:.0f}"),
    ("listen_overflows", "listen drops", "{:.0f}"),
    ("client_cpu_pct", "client CPU %", "{:.0f}"),
    ("emulator_cpu_pct", "emulator CPU %", "{:.0f}"),
    ("wall_s", "wall s", "{:.1f}"),
)


# ------------------------------------------------------------------------------------------ helpers
def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one: 5000 live sockets need more than 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation): an actual observed value, NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


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


def median(values: list[float]) -> float:
    finite = [value for value in values if not math.isnan(value)]
    return statistics.median(finite) if finite else math.nan


# ------------------------------------------------------------------------------------- the client
@dataclass
class PollerResult:
    """What one poller ended with: when it saw FINISHED (epoch s) and the errors on the way."""

    seen_at: float | None
    errors: int = 0
    sample: str | None = None


class LogCounter:
    """
    Count warnings (and the provider hook's retry lines) instead of printing them.

    The provider swallows transient errors (it retries, then polls again): they reach no event, so
    the log is the only place a benchmark can see them. Everything is dropped after counting, so
    rendering log lines costs no CPU in any mode.
    """

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []

    def note(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {text[:300]}")

    def structlog_processor(
        self, _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        import structlog

        event = str(event_dict.get("event", ""))
        if method_name in ("warning", "warn", "error", "exception", "critical", "fatal"):
            args = event_dict.get("positional_args") or ()
            with contextlib.suppress(TypeError, ValueError):
                event = event % tuple(args) if args else event
            self.note("warnings", event)
        elif "retry" in event:
            self.note("retries", event)
        raise structlog.DropEvent


class _StdlibCounter(logging.Handler):
    def __init__(self, counter: LogCounter) -> None:
        super().__init__(level=logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        self.counter.note("warnings", f"{record.name}: {record.getMessage()}")


def quiet_logging() -> LogCounter:
    """Route stdlib logging and Airflow's structlog into a counter (INFO and up)."""
    counter = LogCounter()
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_StdlibCounter(counter))
    root.setLevel(logging.WARNING)
    with contextlib.suppress(ImportError):
        import structlog

        structlog.configure(
            processors=[counter.structlog_processor],
            wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
            cache_logger_on_first_use=True,
        )
    return counter


def _is_finished(record: Any) -> bool:
    return isinstance(record, dict) and str(record.get("status", "")).upper() == "FINISHED"


def _load_provider(interval: float) -> PollerFactory:
    """N triggers, each consumed for its one event like the triggerer does."""
    # The hook module too: the trigger imports it lazily, and in a triggerer it is loaded once.
    import airflow_provider_getimage.hooks.getimage  # noqa: F401
    from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

    @contextlib.asynccontextmanager
    async def pollers(deadline: float) -> AsyncIterator[Poll]:
        async def poll(diffusion_id: str) -> PollerResult:
            trigger = GetImageDiffusionTrigger(
                diffusion_id=diffusion_id,
                getimage_conn_id=PROVIDER_CONN_ID,
                poll_interval=interval,
                # After the benchmark's own cap, so the trigger's deadline never fires first.
                end_time=deadline + 5.0,
            )
            result = PollerResult(seen_at=None, errors=0, sample="no event")
            events = 0
            async for event in trigger.run():
                events += 1
                if events > 1:
                    result.errors += 1
                    result.sample = "more than one event"
                    continue
                payload = event.payload
                if isinstance(payload, dict) and payload.get("status") == "success":
                    result.seen_at, result.sample = time.time(), None
                else:
                    result.errors += 1
                    status = payload.get("status") if isinstance(payload, dict) else payload
                    message = payload.get("message") if isinstance(payload, dict) else ""
                    result.sample = f"event {status}: {message}"
            return result

        yield poll

    return pollers


def _load_baseline(interval: float, base_url: str) -> PollerFactory:
    """The anchor pattern: ``HttpAsyncHook.run()`` with no session, so one ClientSession per poll."""
    from airflow.providers.http.hooks.http import HttpAsyncHook

    headers = {"Authorization": f"Bearer {API_KEY}"}

    @contextlib.asynccontextmanager
    async def pollers(_deadline: float) -> AsyncIterator[Poll]:
        async def poll(diffusion_id: str) -> PollerResult:
            # One hook per poller, as HttpSensorTrigger.run() makes one; each run() opens a session.
            hook = HttpAsyncHook(method="GET", http_conn_id=BASELINE_CONN_ID)
            result = PollerResult(seen_at=None)
            while True:
                try:
                    response = await hook.run(endpoint=f"/v1/diffusions/{diffusion_id}", headers=headers)
                    record = await response.json()
                except Exception as exc:
                    result.errors += 1
                    result.sample = f"{type(exc).__name__}: {exc}"[:300]
                else:
                    if _is_finished(record):
                        result.seen_at = time.time()
                        return result
                await asyncio.sleep(interval)

        yield poll

    return pollers


def _load_floor(interval: float, base_url: str, ca_bundle: str) -> PollerFactory:
    """The floor: one shared ``aiohttp.ClientSession`` with default settings, nothing else."""
    import aiohttp

    context = ssl.create_default_context(cafile=ca_bundle)

    @contextlib.asynccontextmanager
    async def pollers(_deadline: float) -> AsyncIterator[Poll]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {API_KEY}"}) as session:

            async def poll(diffusion_id: str) -> PollerResult:
                url = f"{base_url}/v1/diffusions/{diffusion_id}"
                result = PollerResult(seen_at=None)
                # The provider's schedule: first poll after a random part of the interval.
                await asyncio.sleep(random.uniform(0, interval))
                while True:
                    try:
                        async with session.get(url, ssl=context) as response:
                            record = await response.json()
                            if response.status != 200:
                                raise RuntimeError(f"HTTP {response.status}")
                    except Exception as exc:
                        result.errors += 1
                        result.sample = f"{type(exc).__name__}: {exc}"[:300]
                    else:
                        if _is_finished(record):
                            result.seen_at = time.time()
                            return result
                    await asyncio.sleep(interval)

            yield poll

    return pollers


async def _drive(ids: list[str], factory: PollerFactory, deadline: float) -> dict[str, Any]:
    """Start one task per id at once, wait until ``deadline`` (epoch s), cancel the stragglers."""
    seen: dict[str, float] = {}
    errors, crashed = 0, 0
    samples: list[str] = []
    async with factory(deadline) as poll:
        tasks = {asyncio.create_task(poll(diffusion_id)): diffusion_id for diffusion_id in ids}
        _done, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.time()))
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task, diffusion_id in tasks.items():
        if task in pending:
            continue
        exc = task.exception()
        if exc is not None:
            crashed += 1
            errors += 1
            if len(samples) < 5:
                samples.append(f"crashed: {type(exc).__name__}: {exc}"[:300])
            continue
        result = task.result()
        errors += result.errors
        if result.sample and len(samples) < 5:
            samples.append(result.sample)
        if result.seen_at is not None:
            seen[diffusion_id] = result.seen_at
    return {
        "seen_at": seen,
        "errors": errors,
        "crashed": crashed,
        "cut_off": len(pending),
        "error_samples": samples,
    }


def track_first_requests() -> dict[str, float]:
    """
    Record when each diffusion's first request starts (epoch s), in every mode alike.

    Wraps aiohttp's ``ClientSession._request``, which every mode's requests go through (the
    provider's hook, ``HttpAsyncHook`` and the bare loop): a dict lookup per request, and no
    provider code touched. It shows how long a poller takes to start, which lateness hides while
    the diffusions are still running.
    """
    import aiohttp

    first: dict[str, float] = {}
    original = aiohttp.ClientSession._request

    @functools.wraps(original)
    def _request(self: aiohttp.ClientSession, method: str, str_or_url: Any, *args: Any, **kwargs: Any) -> Any:
        first.setdefault(str(str_or_url).rsplit("/", 1)[-1], time.time())
        return original(self, method, str_or_url, *args, **kwargs)

    aiohttp.ClientSession._request = _request  # type: ignore[method-assign]
    return first


def client_main(mode: str, interval: float) -> None:
    """
    The measured process: import, say READY, read the ids, poll them all, report one JSON line.

    Imports happen before READY so neither CPU time nor the clock include them; peak RSS does
    (it is the process's peak, as a triggerer's would be).
    """
    import psutil

    raise_nofile_limit()
    first_requests = track_first_requests()
    base_url = os.environ["BENCH_BASE_URL"]
    ca_bundle = os.environ["BENCH_CA_BUNDLE"]
    loaders: dict[str, Callable[[], PollerFactory]] = {
        "provider": lambda: _load_provider(interval),
        "baseline": lambda: _load_baseline(interval, base_url),
        "floor": lambda: _load_floor(interval, base_url, ca_bundle),
    }
    factory = loaders[mode]()
    # After the imports: Airflow configures logging when imported, and import-time noise
    # (deprecation warnings) is not a polling error.
    counter = quiet_logging()
    process = psutil.Process()
    print(READY, flush=True)
    go = json.loads(sys.stdin.readline())
    ids: list[str] = go["ids"]

    rss_start = process.memory_info().rss
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    started_at, started = time.time(), time.monotonic()
    outcome = asyncio.run(_drive(ids, factory, go["deadline"]))
    wall = time.monotonic() - started
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_end.ru_utime - usage_start.ru_utime) + (usage_end.ru_stime - usage_start.ru_stime)
    report = {
        **outcome,
        "mode": mode,
        "started_at": started_at,
        "first_request_at": {i: first_requests[i] for i in ids if i in first_requests},
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_start_mb": rss_start / 2**20,
        "peak_rss_mb": usage_end.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024),  # B / KiB
        "log_warnings": counter.counts["warnings"],
        "log_retries": counter.counts["retries"],
        "log_samples": counter.samples,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    print(RESULT + json.dumps(report), flush=True)


# ----------------------------------------------------------------------------------- the emulator
class EmulatorProcess:
    """The emulator in its own process (TLS on), driven over its control endpoints."""

    def __init__(self, workdir: Path, latency: float, jitter: float) -> None:
        import psutil

        self.cert_dir = workdir / "certs"
        ready_file = workdir / "emulator.url"
        self._log = (workdir / "emulator.log").open("wb")
        command = [
            sys.executable,
            "-m",
            "airflow_provider_getimage.emulator",
            "--port",
            "0",
            "--tls",
            "--cert-dir",
            str(self.cert_dir),
            "--latency",
            str(latency),
            "--latency-jitter",
            str(jitter),
            "--ready-file",
            str(ready_file),
            "--log-level",
            "WARNING",
        ]
        self.proc = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not ready_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the emulator did not start; see {workdir / 'emulator.log'}")
            time.sleep(0.05)
        self.url = ready_file.read_text().strip()
        self.ca_bundle = str(self.cert_dir / "ca.pem")
        self.ssl = ssl.create_default_context(cafile=self.ca_bundle)
        self.ps = psutil.Process(self.proc.pid)

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One control request on its own connection (urllib closes it), so it counts as one."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, context=self.ssl, timeout=60) as response:
            return json.load(response)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def submit_diffusions(emulator: EmulatorProcess, n: int, concurrency: int, latency: float) -> list[str]:
    """
    Create the N diffusions up front, outside the measurement, so they all finish ``latency`` after
    the last submission.

    Submitting 5000 takes seconds: with one fixed latency the first diffusions would be half done
    (or finished) before any poller starts, and polls per generation and lateness would depend on
    N. So submission goes in chunks, each created with the latency plus the estimated time the
    remaining chunks will take (the emulator's latency applies to diffusions created after a change).
    """
    import aiohttp

    chunk = concurrency  # a small first chunk measures the rate; then twentieths
    connector = aiohttp.TCPConnector(limit=concurrency, ssl=emulator.ssl)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    ids: list[str] = []
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one(index: int) -> str:
            body = {"prompt": f"benchmark diffusion {index}", "model": "midjourney"}
            async with session.post(f"{emulator.url}/v1/diffusions", json=body) as response:
                response.raise_for_status()
                record = await response.json()
                return str(record["id"])

        seconds_per_diffusion = 1 / 1500  # a first guess, until a chunk on warm connections is timed
        try:
            while len(ids) < n:
                ahead = (n - len(ids)) * seconds_per_diffusion
                # Blocking on purpose: nothing else runs on this loop between chunks.
                emulator.control("POST", "/_emulator/config", {"latency": latency + ahead})
                batch = range(len(ids), min(n, len(ids) + chunk))
                started = time.monotonic()
                ids += await asyncio.gather(*(one(index) for index in batch))
                if batch.start > 0:  # the first chunk also paid for the TLS handshakes
                    seconds_per_diffusion = (time.monotonic() - started) / len(batch)
                chunk = max(concurrency, math.ceil(n / 20))
        finally:
            emulator.control("POST", "/_emulator/config", {"latency": latency})
    return ids


# -------------------------------------------------------------------------------------- one run
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


def client_env(emulator: EmulatorProcess, workdir: Path) -> dict[str, str]:
    """
    The client's environment: both Airflow connections and the emulator's CA.

    The provider trusts the CA through its ``verify`` extra. ``HttpAsyncHook`` cannot take a CA
    bundle from its connection (its ``verify`` extra becomes aiohttp's boolean ``verify_ssl``), so
    the baseline trusts it the way a user of a private CA would: ``SSL_CERT_FILE``, which aiohttp's
    default (cached) SSL context reads.
    """
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
                    "extra": {"verify": emulator.ca_bundle},
                }
            ),
            f"AIRFLOW_CONN_{BASELINE_CONN_ID.upper()}": json.dumps(
                {"conn_type": "http", "host": emulator.url}
            ),
        }
    )
    return env


def run_once(
    emulator: EmulatorProcess, mode: str, n: int, repeat: int, args: argparse.Namespace, workdir: Path
) -> dict[str, Any]:
    """One measured run of one mode: fresh client process, reset emulator, N fresh diffusions."""
    emulator.control("POST", "/_emulator/reset")
    stderr_path = workdir / f"client-{mode}-{n}-{repeat}.log"
    with stderr_path.open("w") as stderr:
        child = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--client",
                mode,
                "--interval",
                str(args.interval),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=client_env(emulator, workdir),
            text=True,
        )
        assert child.stdin is not None
        assert child.stdout is not None
        reader = _LineReader(child.stdout)
        try:
            reader.wait_for(READY, timeout=120)
            ids = asyncio.run(submit_diffusions(emulator, n, args.submit_concurrency, args.latency))
            last_finish = max(
                item["finishes_at"] for item in emulator.control("GET", "/_emulator/diffusions")
            )
            before = emulator.control("GET", "/_emulator/stats")
            overflows_start = listen_overflows()
            emulator_cpu_start, started = emulator.cpu_seconds(), time.monotonic()
            deadline = last_finish + args.max_seconds
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
    after = emulator.control("GET", "/_emulator/stats")
    diffusions = {item["id"]: item for item in emulator.control("GET", "/_emulator/diffusions")}
    if stderr_path.stat().st_size == 0:
        stderr_path.unlink()
    run = measure(mode, n, repeat, args, ids, report, before, after, diffusions, emulator_cpu, emulator_wall)
    run["listen_overflows"] = math.nan
    if overflows_start is not None and overflows_end is not None:
        run["listen_overflows"] = overflows_end - overflows_start
    return run


def measure(
    mode: str,
    n: int,
    repeat: int,
    args: argparse.Namespace,
    ids: list[str],
    report: dict[str, Any],
    before: dict[str, Any],
    after: dict[str, Any],
    diffusions: dict[str, dict[str, Any]],
    emulator_cpu: float,
    emulator_wall: float,
) -> dict[str, Any]:
    """Turn a client report and the emulator's counters into the run's numbers."""
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
        > (diffusions[i]["finishes_at"] - max(diffusions[i]["created_at"], started_at)) / args.interval + 2
    )
    finished_early = sum(1 for i in ids if diffusions[i]["finishes_at"] < started_at)
    polls = after["polls"] - before["polls"]
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
        "mode": mode,
        "n": n,
        "repeat": repeat,
        "interval_s": args.interval,
        "latency_s": args.latency,
        "detected": len(lateness),
        "undetected": undetected,
        "cut_off": report["cut_off"],
        "errors": errors,
        "client_errors": report["errors"],
        "log_warnings": report["log_warnings"],
        "log_retries": report["log_retries"],
        "non_2xx_responses": non_ok,
        "error_samples": report["error_samples"] + report["log_samples"],
        "polls": polls,
        "cpu_s": report["cpu_s"],
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
        "kept_up": undetected == 0 and p99 <= args.interval + 1.0,
        "submitted": after["submissions"],
    }


# ------------------------------------------------------------------------------------- reporting
def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Medians per (N, mode) over the repeats; worst case where a target needs it."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = collections.defaultdict(list)
    for run in runs:
        groups[(run["n"], run["mode"])].append(run)
    rows = []
    for (n, mode), group in sorted(groups.items(), key=lambda item: (item[0][0], MODES.index(item[0][1]))):
        row: dict[str, Any] = {"n": n, "mode": mode, "repeats": len(group)}
        for key, _header, _fmt in COLUMNS:
            row[key] = median([float(run[key]) for run in group])
        row["lateness_p99_worst_s"] = max(run["lateness_p99_s"] for run in group)
        row["peak_rss_worst_mb"] = max(run["peak_rss_mb"] for run in group)
        row["errors_total"] = sum(run["errors"] for run in group)
        row["undetected_total"] = sum(run["undetected"] for run in group)
        row["polls_over_bound_total"] = sum(run["polls_over_bound"] for run in group)
        row["kept_up"] = sum(bool(run["kept_up"]) for run in group)
        rows.append(row)
    return rows


def ratios(summary: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """baseline/provider and provider/floor CPU per poll, per N, from the medians."""
    by_key = {(row["n"], row["mode"]): row for row in summary}
    result = []
    for n in sorted({row["n"] for row in summary}):
        cpu = {mode: by_key[(n, mode)]["cpu_ms_per_1000_polls"] for mode in MODES if (n, mode) in by_key}
        entry: dict[str, Any] = {"n": n}
        if "provider" in cpu and "baseline" in cpu:
            entry["baseline_over_provider"] = cpu["baseline"] / cpu["provider"]
        if "provider" in cpu and "floor" in cpu:
            entry["provider_over_floor"] = cpu["provider"] / cpu["floor"]
        result.append(entry)
    return result


def targets(
    summary: list[dict[str, Any]], ratio_rows: list[dict[str, Any]], interval: float
) -> list[dict[str, Any]]:
    """The issue's targets, each PASS, FAIL or n/a (when the run did not include what it needs)."""
    by_key = {(row["n"], row["mode"]): row for row in summary}
    by_n = {row["n"]: row for row in ratio_rows}
    checks: list[dict[str, Any]] = []

    def check(name: str, value: float | None, limit: str, ok: bool | None) -> None:
        verdict = "n/a" if ok is None else ("PASS" if ok else "FAIL")
        checks.append({"target": name, "value": value, "limit": limit, "verdict": verdict})

    over_floor = by_n.get(TARGET_N_CPU, {}).get("provider_over_floor")
    check(
        f"N={TARGET_N_CPU}: provider CPU/poll <= {CPU_FLOOR_FACTOR}x floor",
        over_floor,
        f"<= {CPU_FLOOR_FACTOR}",
        None if over_floor is None else over_floor <= CPU_FLOOR_FACTOR,
    )
    over_provider = by_n.get(TARGET_N_CPU, {}).get("baseline_over_provider")
    check(
        f"N={TARGET_N_CPU}: provider CPU/poll >= {CPU_BASELINE_FACTOR}x cheaper than baseline",
        over_provider,
        f">= {CPU_BASELINE_FACTOR}",
        None if over_provider is None else over_provider >= CPU_BASELINE_FACTOR,
    )
    big = by_key.get((TARGET_N_SCALE, "provider"))
    # The median over repeats, as the table shows: one repeat disturbed by another process on the
    # machine should not decide it (RSS is steady, so its worst repeat is used).
    p99 = big["lateness_p99_s"] if big else None
    check(
        f"N={TARGET_N_SCALE}, interval {interval:g} s: provider p99 lateness <= interval + 1 s "
        "(median of repeats)",
        p99,
        f"<= {interval + 1:g}",
        None if p99 is None else p99 <= interval + 1.0,
    )
    rss = big["peak_rss_worst_mb"] if big else None
    check(
        f"N={TARGET_N_SCALE}: provider peak RSS < {RSS_LIMIT_MB:g} MB (worst repeat)",
        rss,
        f"< {RSS_LIMIT_MB:g}",
        None if rss is None else rss < RSS_LIMIT_MB,
    )
    failures = big["errors_total"] + big["undetected_total"] if big else None
    check(
        f"N={TARGET_N_SCALE}: provider errors + undetected = 0 (all repeats)",
        failures,
        "== 0",
        None if failures is None else failures == 0,
    )
    provider_rows = [row for row in summary if row["mode"] == "provider"]
    over = sum(row["polls_over_bound_total"] for row in provider_rows) if provider_rows else None
    check(
        "every N: provider polls per generation <= generation time / interval + 2 (diffusions over)",
        over,
        "== 0",
        None if over is None else over == 0,
    )
    return checks


def fmt_cell(value: Any, fmt: str = "{}") -> str:
    """A table cell: ``-`` for a missing number (None or NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def render(result: dict[str, Any]) -> str:
    """The markdown report: machine, parameters, medians, ratios, targets."""
    machine, params = result["machine"], result["params"]
    lines = [
        "## Trigger polling benchmark",
        "",
        f"Machine: {machine['cpu_count']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"aiohttp {machine['aiohttp']}, apache-airflow {machine['airflow']}, "
        f"apache-airflow-providers-http {machine['providers_http']}, provider at {machine['git']}",
        f"Parameters: interval {params['interval']:g} s, emulator latency {params['latency']:g} "
        f"+/- {params['latency_jitter']:g} s, "
        f"{params['repeats']} repeat(s), pollers cut off {params['max_seconds']:g} s after the last "
        "generation ends, "
        f"modes alternate within each repeat; TLS on; medians over repeats.",
        "",
        "| N | mode | " + " | ".join(header for _key, header, _fmt in COLUMNS) + " | keeps up |",
        "|---:|---|" + "---:|" * len(COLUMNS) + "---|",
    ]
    for row in result["summary"]:
        cells = [fmt_cell(row[key], fmt) for key, _header, fmt in COLUMNS]
        lines.append(
            f"| {row['n']} | {row['mode']} | " + " | ".join(cells) + f" | {row['kept_up']}/{row['repeats']} |"
        )
    lines += [
        "",
        "| N | baseline / provider CPU per poll | provider / floor CPU per poll |",
        "|---:|---:|---:|",
    ]
    for entry in result["ratios"]:
        lines.append(
            f"| {entry['n']} | {fmt_cell(entry.get('baseline_over_provider'), '{:.2f}x')} "
            f"| {fmt_cell(entry.get('provider_over_floor'), '{:.2f}x')} |"
        )
    lines += ["", "| target | value | limit | verdict |", "|---|---:|---|---|"]
    for item in result["targets"]:
        lines.append(
            f"| {item['target']} | {fmt_cell(item['value'], '{:.2f}')} | {item['limit']} "
            f"| {item['verdict']} |"
        )
    behind = [
        f"N={row['n']} {row['mode']} ({row['repeats'] - row['kept_up']} of {row['repeats']})"
        for row in result["summary"]
        if row["kept_up"] < row["repeats"]
    ]
    if behind:
        lines += [
            "",
            "Could not keep up (a diffusion not seen within the cap, or p99 lateness above "
            f"interval + 1 s) in some repeats: {', '.join(behind)}.",
        ]
    busy = sorted({row["n"] for row in result["summary"] if row["emulator_cpu_pct"] >= 90})
    if busy:
        lines += [
            "",
            f"The emulator used >= 90% of a core at N = {', '.join(map(str, busy))}: it may be the "
            "bottleneck there, so lateness at those N measures it as much as the client.",
        ]
    early = [
        f"N={run['n']} {run['mode']} #{run['repeat']}"
        for run in result["runs"]
        if run["finished_before_start"]
    ]
    if early:
        lines += [
            "",
            f"Some diffusions finished before their pollers started ({', '.join(early)}): submission was "
            "slower than estimated; raise --latency so lateness is measured on running generations.",
        ]
    samples = [
        f"N={run['n']} {run['mode']} #{run['repeat']}: {sample}"
        for run in result["runs"]
        for sample in run["error_samples"][:2]
        if run["errors"] or run["undetected"]
    ]
    if samples:
        lines += ["", "Error samples:", *(f"- {sample}" for sample in samples[:12])]
    return "\n".join(lines)


def json_safe(value: Any) -> Any:
    """NaN (an empty percentile) as null: ``json.dumps`` would write ``NaN``, which is not JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


def machine_info() -> dict[str, Any]:
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


# ------------------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="N concurrent GetImageDiffusionTrigger pollers vs session-per-poll and a bare "
        "shared-session loop, against the emulator over TLS.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, nargs="+", default=[100, 1000, 5000], help="pollers per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per (N, mode), modes alternating")
    parser.add_argument("--interval", type=float, default=2.0, help="poll interval, seconds")
    parser.add_argument("--latency", type=float, default=6.0, help="emulator seconds per generation")
    parser.add_argument(
        "--latency-jitter",
        type=float,
        default=None,
        help="spread of generation times, +/- seconds (default: the interval), so finish times fall "
        "at every phase of the poll cycle",
    )
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES), help="modes to run")
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
    parser.add_argument("--client", choices=MODES, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.client:
        client_main(args.client, args.interval)
        return 0
    if args.latency_jitter is None:
        args.latency_jitter = min(args.interval, args.latency)
    if args.interval <= 0 or args.repeats < 1 or min(args.n) < 1:
        build_parser().error("interval must be > 0, repeats >= 1, N >= 1")
    if not 0 <= args.latency_jitter <= args.latency:
        build_parser().error("need 0 <= latency jitter <= latency")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    # A TERM (a CI timeout, a kill by pid) must still stop the emulator and the client: exit
    # through the ``finally`` blocks instead of dying in place.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(128 + signal.SIGTERM))
    nofile = raise_nofile_limit()
    if nofile < max(args.n) + 200:
        log.warning("Open-files limit %s is below N + 200; large runs may fail with EMFILE", nofile)
    workdir = Path(tempfile.mkdtemp(prefix="getimage-bench-"))
    runs: list[dict[str, Any]] = []
    emulator = EmulatorProcess(workdir, args.latency, args.latency_jitter)
    try:
        log.info("Emulator at %s (pid %s); work dir %s", emulator.url, emulator.proc.pid, workdir)
        for n in args.n:
            for repeat in range(1, args.repeats + 1):
                for mode in args.modes:
                    run = run_once(emulator, mode, n, repeat, args, workdir)
                    runs.append(run)
                    log.info(
                        "N=%s %s #%s: %.0f CPU ms/1k polls, %s conns, p99 late %.2f s, "
                        "%s errors, %s undetected, emulator CPU %.0f%%, %.1f s",
                        n,
                        mode,
                        repeat,
                        run["cpu_ms_per_1000_polls"],
                        run["connections"],
                        run["lateness_p99_s"],
                        run["errors"],
                        run["undetected"],
                        run["emulator_cpu_pct"],
                        run["wall_s"],
                    )
    finally:
        emulator.stop()
        if args.keep_workdir:
            log.info("Logs and certificates kept in %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(runs)
    ratio_rows = ratios(summary)
    result: dict[str, Any] = {
        "machine": machine_info(),
        "params": {
            "n": args.n,
            "repeats": args.repeats,
            "interval": args.interval,
            "latency": args.latency,
            "latency_jitter": args.latency_jitter,
            "modes": args.modes,
            "max_seconds": args.max_seconds,
        },
        "runs": runs,
        "summary": summary,
        "ratios": ratio_rows,
        "targets": targets(summary, ratio_rows, args.interval),
    }
    print(render(result), flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(json_safe(result), indent=2) + "\n")
    if args.check and any(item["verdict"] == "FAIL" for item in result["targets"]):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
