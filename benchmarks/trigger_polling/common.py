"""What the benchmark's parent process and its client processes agree on."""

from __future__ import annotations

import contextlib
import resource

#: The pollers a client can run (``benchmarks.trigger_polling.pollers``).
MODES = ("provider", "baseline", "floor")
#: How a client process is set up before its window (``benchmarks.trigger_polling.client``):
#: ``steady`` has the hook module loaded and log lines counted, not rendered; ``start`` is a fresh
#: triggerer's trigger runner (trigger module only, log lines rendered to JSON as the runner does).
PROFILES = ("steady", "start")
API_KEY = "emulator-key"
PROVIDER_CONN_ID = "getimage_default"
BASELINE_CONN_ID = "bench_http"
#: The client's stdout lines: imports done (now send the ids), and the report (one JSON object).
READY = "@@BENCH-READY"
RESULT = "@@BENCH-RESULT "


def raise_nofile_limit() -> int:
    """Lift the soft open-files limit to the hard one: 5000 live sockets need more than 1024 fds."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]
