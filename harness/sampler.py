"""
What a deployment's task instances and triggers went through, sampled from the database.

A waiting test only sees the end state; the sampler proves a transient one happened (``deferred``
with a ``trigger_id``, a trigger moving to another triggerer), and keeps trigger rows the
triggerer deletes once a trigger has fired.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from harness.database import DB_ERRORS

if TYPE_CHECKING:
    from collections.abc import Callable

    Query = Callable[[str], list[dict[str, Any]]]

TIKey = tuple[str, str, str, int]  # dag_id, run_id, task_id, map_index


@dataclass(frozen=True)
class Observation:
    """One distinct state of a task instance, as sampled from the database."""

    at: float  # seconds since the deployment started
    state: str | None
    trigger_id: int | None
    try_number: int


@dataclass(frozen=True)
class TriggerObservation:
    """A ``trigger`` row as sampled: the row is deleted when the trigger ends, so sample it live."""

    at: float
    id: int
    classpath: str
    kwargs: str  # as stored: plain JSON text (SPEC 8)
    triggerer_id: int | None


class StateSampler:
    """
    Records every state each task instance is seen in, on a background thread.

    It samples every ``interval`` seconds, so a state shorter than that may be missed: give the
    emulator a latency of a few seconds.

    :param query: reads the metadata database (``MetadataDatabase.query``).
    :param clock: seconds since the deployment started, stamped on each observation.
    """

    def __init__(self, query: Query, clock: Callable[[], float], interval: float = 0.3) -> None:
        self._query = query
        self._clock = clock
        self._interval = interval
        self._history: dict[TIKey, list[Observation]] = {}
        self._triggers: dict[int, list[TriggerObservation]] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="airflow-state-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def sample(self) -> None:
        """Read every task instance and trigger once; record what changed."""
        rows = self._query(
            "SELECT dag_id, run_id, task_id, map_index, state, trigger_id, try_number FROM task_instance"
        )
        triggers = self._query(
            "SELECT id, classpath, CAST(kwargs AS TEXT) AS kwargs, triggerer_id FROM trigger"
        )
        now = self._clock()
        with self._lock:
            for row in triggers:
                trigger = TriggerObservation(
                    now, row["id"], row["classpath"], row["kwargs"], row["triggerer_id"]
                )
                seen_trigger = self._triggers.setdefault(trigger.id, [])
                if not seen_trigger or seen_trigger[-1].triggerer_id != trigger.triggerer_id:
                    seen_trigger.append(trigger)
            for row in rows:
                key = (row["dag_id"], row["run_id"], row["task_id"], row["map_index"])
                seen = Observation(now, row["state"], row["trigger_id"], row["try_number"])
                history = self._history.setdefault(key, [])
                last = history[-1] if history else None
                if last is None or (last.state, last.trigger_id, last.try_number) != (
                    seen.state,
                    seen.trigger_id,
                    seen.try_number,
                ):
                    history.append(seen)

    def fresh_sample(self) -> None:
        """Sample once now, unless the database is busy (then the last sample stands)."""
        with contextlib.suppress(*DB_ERRORS):
            self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.fresh_sample()  # a locked or half-migrated DB: try again next time

    def history(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[Observation]:
        with self._lock:
            return list(self._history.get((dag_id, run_id, task_id, map_index), ()))

    def trigger_history(self, trigger_id: int) -> list[TriggerObservation]:
        """The trigger row each time its ``triggerer_id`` changed (a takeover shows as a new entry)."""
        with self._lock:
            return list(self._triggers.get(trigger_id, ()))

    def trigger_ids(self) -> list[int]:
        """Every trigger ever sampled, including ended ones (whose rows are gone)."""
        with self._lock:
            return sorted(self._triggers)
