"""
Where a client's log records go: counted and dropped (``steady``), or rendered as a triggerer does.

The provider swallows transient errors (it retries, then polls again): they reach no event, so
the log is the only place a benchmark can see them. Both set-ups count warnings and the hook's
retry lines, which the report adds to the errors.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import MutableMapping
    from pathlib import Path

WARNING_LEVELS = frozenset({"warning", "warn", "error", "exception", "critical", "fatal"})


class LogCounter:
    """Counts warnings and retry lines, keeping the first few as samples."""

    def __init__(self) -> None:
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples: list[str] = []

    def note(self, kind: str, text: str) -> None:
        self.counts[kind] += 1
        if len(self.samples) < 5:
            self.samples.append(f"{kind}: {text[:300]}")

    def count(self, level: str, event: str) -> None:
        """One record: a warning (or worse), a retry line, or nothing to count."""
        if level in WARNING_LEVELS:
            self.note("warnings", event)
        elif "retry" in event:
            self.note("retries", event)

    def structlog_processor(
        self, _logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        import structlog

        event = str(event_dict.get("event", ""))
        args = event_dict.get("positional_args") or ()
        if method_name in WARNING_LEVELS and args:
            with contextlib.suppress(TypeError, ValueError):
                event = event % tuple(args)
        self.count(method_name, event)
        raise structlog.DropEvent


class _StdlibCounter(logging.Handler):
    def __init__(self, counter: LogCounter) -> None:
        super().__init__(level=logging.WARNING)
        self.counter = counter

    def emit(self, record: logging.LogRecord) -> None:
        self.counter.note("warnings", f"{record.name}: {record.getMessage()}")


def count_and_drop() -> LogCounter:
    """
    Route stdlib logging and Airflow's structlog into a counter (INFO and up): the ``steady`` set-up.

    Everything is dropped after counting, so rendering log lines costs no CPU in any mode.
    """
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


def render_as_trigger_runner(path: Path) -> None:
    """
    Render each log record as a JSON line in ``path``, as a trigger runner does: the ``start`` set-up.

    Airflow 3.3's triggerer runs the triggers in a subprocess forked by ``WatchedSubprocess``
    (``airflow/jobs/triggerer_job_runner.py``); the child's ``_fork_main``
    (``airflow/sdk/execution_time/supervisor.py``) calls ``_configure_logs_over_json_channel``,
    which sets up structlog and stdlib logging (level ``[logging] logging_level``, INFO by default)
    to write each record as one JSON line, unbuffered, to a socket the supervisor reads; the
    supervisor masks secrets and writes the trigger's log file, in its own process. This calls
    that same function with a file in place of the socket.
    """
    from airflow.sdk.execution_time.supervisor import _configure_logs_over_json_channel

    _configure_logs_over_json_channel(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))


def _import_noise(record: dict[str, Any]) -> bool:
    """
    A deprecation warning of some module's import, not of a poll: on Airflow 3.0 the HTTP provider's
    import (inside the window: the trigger's lazy hook import) warns about a moved Airflow class.
    """
    return record.get("logger") == "py.warnings" and "deprecated" in str(record.get("event", ""))


def count_rendered(path: Path) -> tuple[LogCounter, int]:
    """The warnings and retry lines among the JSON lines in ``path``, and how many lines it holds."""
    counter = LogCounter()
    lines = 0
    with path.open("rb") as stream:
        for line in stream:
            lines += 1
            try:
                record = json.loads(line)
            except ValueError:
                counter.note("warnings", f"not JSON: {line[:200]!r}")
                continue
            if _import_noise(record):
                continue
            counter.count(str(record.get("level", "")), str(record.get("event", "")))
    return counter, lines
