"""
The measured process: one mode, one profile, N pollers, one JSON report on stdout.

Started by the benchmark (``python -m benchmarks.trigger_polling.client``) with the emulator's URL
and CA in its environment. It imports what its mode needs and prints READY; the parent then
submits the diffusions and sends their ids and a deadline on stdin; the client polls them all and
prints its report. The measured window (CPU time, wall clock) runs from just before the event loop
is created to just after it is closed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.trigger_polling.common import MODES, PROFILES, READY, RESULT, raise_nofile_limit
from benchmarks.trigger_polling.logs import count_and_drop, count_rendered, render_as_trigger_runner
from benchmarks.trigger_polling.pollers import HOOK_MODULE, drive, load_baseline, load_floor, load_provider

if TYPE_CHECKING:
    from benchmarks.trigger_polling.logs import LogCounter
    from benchmarks.trigger_polling.pollers import PollerFactory


def track_first_requests() -> dict[str, float]:
    """
    Record when each diffusion's first request starts (epoch s), in every mode alike.

    Wraps aiohttp's ``ClientSession._request``, which every mode's requests go through (the
    provider's hook, ``HttpAsyncHook`` and the bare loop): a dict lookup per request, and no
    provider code touched. It shows how long a poller takes to start, which lateness hides while
    the diffusions are still running. Not in the ``start`` profile: it would import aiohttp
    before the window, which a fresh triggerer has not.
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


class FullCollections:
    """
    Count the interpreter's full (generation 2) garbage collections in the window, and their time.

    After Airflow's imports the heap holds about 200,000 objects, and a full collection walks them
    all (about 0.15 s on these machines). One runs when the objects that outlived two younger
    collections reach a quarter of the old ones, so a mode whose objects live across more
    collections (longer call chains in flight, closures per request) pays whole-heap walks that a
    profile of its own functions never shows.
    """

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.on = False
        self._began: float | None = None
        #: Collections of each generation in the window (young ones show how fast objects age).
        self.by_generation = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if not self.on:
            return
        if phase == "stop":
            self.by_generation[info.get("generation", 0)] += 1
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._began = time.perf_counter()
        elif self._began is not None:
            self.count += 1
            self.seconds += time.perf_counter() - self._began
            self._began = None


def load_triggerer() -> bool:
    """
    Load what a trigger runner has loaded before it starts any trigger; True if aiohttp is in it.

    The triggerer's own modules: Airflow's task SDK, its supervisor and logging, not the hook. On
    Airflow 3.0 they bring aiohttp too (through ``svcs``), so a fresh triggerer there has it and
    neither mode pays its import; from 3.1 on, each mode imports it inside its window.
    """
    import airflow.jobs.triggerer_job_runner  # noqa: F401

    return "aiohttp" in sys.modules


def load(mode: str, profile: str, interval: float) -> PollerFactory:
    """Import what the mode needs (outside the window) and return its pollers."""
    base_url = os.environ["BENCH_BASE_URL"]
    ca_bundle = os.environ["BENCH_CA_BUNDLE"]
    if mode == "provider":
        return load_provider(interval, hook_loaded=profile == "steady")
    if mode == "baseline":
        return load_baseline(interval)
    return load_floor(interval, base_url, ca_bundle)


def client_main(mode: str, profile: str, interval: float, log_file: Path | None) -> None:
    """
    Import, say READY, read the ids, poll them all, report one JSON line.

    Imports happen before READY so neither CPU time nor the clock include them; peak RSS does
    (it is the process's peak, as a triggerer's would be).
    """
    import psutil

    raise_nofile_limit()
    first_requests = track_first_requests() if profile == "steady" else {}
    aiohttp_in_triggerer = load_triggerer() if profile == "start" else False
    factory = load(mode, profile, interval)
    # After the imports: Airflow configures logging when imported, and import-time noise
    # (deprecation warnings) is not a polling error.
    counter: LogCounter | None = None
    if profile == "start":
        if log_file is None:
            raise SystemExit("the start profile renders its log records to --log-file")
        render_as_trigger_runner(log_file)
    else:
        counter = count_and_drop()
    hook_preloaded = HOOK_MODULE in sys.modules
    # Loaded before the window by the benchmark, not by the triggerer a real run starts in.
    aiohttp_preloaded = "aiohttp" in sys.modules and not aiohttp_in_triggerer
    process = psutil.Process()
    print(READY, flush=True)
    go = json.loads(sys.stdin.readline())
    ids: list[str] = go["ids"]

    # Every mode's window starts with the collector in the same state: no debt of old-generation
    # objects carried in from the imports before it. Without this the floor's aiohttp import,
    # outside its window, ends in a full collection and leaves it a fresh count, while the
    # provider's imports (the triggerer's, the trigger module) leave it ten younger collections
    # past its last full one, with what they promoted still counted: a full collection inside the
    # window that the imports before it owed.
    gc.collect()
    collections = FullCollections()
    gc.callbacks.append(collections)
    rss_start = process.memory_info().rss
    usage_start = resource.getrusage(resource.RUSAGE_SELF)
    started_at, started = time.time(), time.monotonic()
    collections.on = True
    outcome = asyncio.run(drive(ids, factory, go["deadline"], trigger_context=profile == "start"))
    collections.on = False
    wall = time.monotonic() - started
    usage_end = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (usage_end.ru_utime - usage_start.ru_utime) + (usage_end.ru_stime - usage_start.ru_stime)
    log_lines = None
    if counter is None:
        assert log_file is not None
        counter, log_lines = count_rendered(log_file)
    report = {
        **outcome,
        "mode": mode,
        "profile": profile,
        "started_at": started_at,
        "first_request_at": {i: first_requests[i] for i in ids if i in first_requests},
        "cpu_s": cpu,
        "wall_s": wall,
        "rss_start_mb": rss_start / 2**20,
        "peak_rss_mb": usage_end.ru_maxrss / (2**20 if sys.platform == "darwin" else 1024),  # B / KiB
        "log_warnings": counter.counts["warnings"],
        "log_retries": counter.counts["retries"],
        "log_samples": counter.samples,
        "log_lines": log_lines,
        "hook_preloaded": hook_preloaded,
        "aiohttp_preloaded": aiohttp_preloaded,
        "aiohttp_in_triggerer": aiohttp_in_triggerer,
        "gc_full_collections": collections.count,
        "gc_full_s": collections.seconds,
        "gc_collections": collections.by_generation,
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
    }
    print(RESULT + json.dumps(report), flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One measured client of the trigger polling benchmark.")
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--profile", choices=PROFILES, default="steady")
    parser.add_argument("--interval", type=float, required=True, help="poll interval, seconds")
    parser.add_argument("--log-file", type=Path, default=None, help="where the start profile renders logs")
    args = parser.parse_args(argv)
    client_main(args.mode, args.profile, args.interval, args.log_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
