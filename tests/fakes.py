"""
Stand-ins for what Airflow hands a running task, for calling operator methods directly.

Used only where a test needs to drive one try of a task by hand (a retry with the same task state
store, a poke between two faults); DAG-level behaviour is tested through ``dag.test()`` and real
Airflow processes instead.
"""

from __future__ import annotations

from typing import Any


class RecordingTI:
    """A task instance that records its XCom pushes."""

    stats_tags: dict[str, str] = {}

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


class DictTaskStateStore:
    """Airflow 3.3's task state store survives a task's retries; so does this dict."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self.values[key] = value


def task_context(ti: RecordingTI, store: DictTaskStateStore | None = None) -> Any:
    """The part of a task's context these operators read (typed Any: it is a partial Context)."""
    context: dict[str, Any] = {"ti": ti}
    if store is not None:
        context["task_state_store"] = store
    return context
