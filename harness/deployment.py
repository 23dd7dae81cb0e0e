"""
A real Airflow 3 deployment run as subprocesses, for end-to-end tests and benchmarks.

``dag.test()`` runs tasks and triggers inline, in one process, and takes a trigger's first event
only (SPEC 7), so it cannot show what a user's deployment does: a task leaving its worker while
deferred, a trigger running in the triggerer, a triggerer dying and another taking over.
:class:`AirflowDeployment` starts the real thing (``api-server``, ``scheduler``,
``dag-processor``, ``triggerer``; LocalExecutor; sqlite, or PostgreSQL with ``database_url``) in a
throw-away ``AIRFLOW_HOME`` and reads the metadata database directly to observe it::

    with AirflowDeployment(extra_env=emulator.airflow_env()) as airflow:
        airflow.wait_until_parsed("example_getimage")
        run_id = airflow.trigger("example_getimage", conf={"prompt": "a cat"})
        assert airflow.wait_for_run("example_getimage", run_id) == "success"

Its environment comes from :mod:`harness.config`; its processes are kept, signalled and stopped
by :mod:`harness.processes` (when the test fails too, at interpreter exit, and through a watchdog
even when the test process itself is killed); :mod:`harness.database` and :mod:`harness.sampler`
read what it did.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import psutil
import requests

from harness.config import (
    AIRFLOW_BIN,
    COMPONENTS,
    EXAMPLE_DAGS,
    component_command,
    deployment_env,
    free_port,
)
from harness.database import MetadataDatabase
from harness.errors import DeploymentError
from harness.processes import Component, TaskProcesses, Watchdog, find_task_processes
from harness.sampler import Observation, StateSampler, TriggerObservation

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

TERMINAL_RUN_STATES = frozenset({"success", "failed"})
POLL_INTERVAL = 0.5

T = TypeVar("T")


class AirflowDeployment:
    """
    A throw-away Airflow deployment (LocalExecutor; sqlite or PostgreSQL) running as subprocesses.

    :param dags_folder: the DAG files to serve; default the repository's ``example_dags/``.
    :param extra_env: more environment for every subprocess, e.g. ``AIRFLOW_CONN_GETIMAGE_DEFAULT``,
        ``GETIMAGE_OUTPUT_DIR`` or an ``AIRFLOW__SECTION__KEY`` overriding a default of
        :func:`harness.config.deployment_env`.
    :param home: the ``AIRFLOW_HOME``; default a new temporary folder, deleted by :meth:`stop`.
    :param components: which long-running components to start; ``triggerer-2`` (up to ``-9``) is one
        more ``airflow triggerer``, for high availability.
    :param database_url: the metadata database as a SQLAlchemy URL; default a sqlite file in the home.
        ``postgresql+psycopg2://...`` is read with psycopg2 (see :func:`harness.postgres_database`).
    :param triggerer_health_check_threshold: seconds after which a silent triggerer's triggers
        move to another triggerer (30 by default in Airflow; short here so a takeover is quick).
    :param api_apps: the api-server's ``--apps``: ``all`` (REST API v2 + execution API) or
        ``execution`` (all that workers need, SPEC 8; but then :meth:`trigger` has no REST API).
        Both take about 7 s to answer on 2 cores.
    :param keep_home: keep the home (logs, database) after :meth:`stop`, to look at by hand.
    """

    def __init__(
        self,
        dags_folder: Path | str | None = None,
        *,
        extra_env: Mapping[str, str] | None = None,
        home: Path | str | None = None,
        components: Iterable[str] = COMPONENTS,
        database_url: str | None = None,
        triggerer_health_check_threshold: float = 6.0,
        api_apps: str = "all",
        keep_home: bool = False,
    ) -> None:
        self.dags_folder = Path(dags_folder or EXAMPLE_DAGS).resolve()
        own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="getimage-e2e-airflow-"))
        self.keep_home = keep_home
        self.database = MetadataDatabase(database_url or f"sqlite:///{self.home / 'airflow.db'}")
        self.database_url = self.database.url
        self.db_kind = self.database.kind
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.api_apps = api_apps
        self.env = deployment_env(
            home=self.home,
            database_url=self.database_url,
            dags_folder=self.dags_folder,
            api_url=self.api_url,
            api_port=self.api_port,
            triggerer_threshold=triggerer_health_check_threshold,
            extra_env=extra_env or {},
        )
        self.components: dict[str, Component] = {}
        for name in components:
            self.components[name] = self._component(name)
        self.started_at = time.monotonic()
        self.timings: dict[str, float] = {}
        #: How each component stopped, e.g. ``{"scheduler": "SIGTERM in 2.1 s"}``.
        self.stop_report: dict[str, str] = {}
        self.sampler = StateSampler(self.query, lambda: time.monotonic() - self.started_at)
        self._session = requests.Session()
        self._started = False
        self._stopped = True
        self._home_to_delete: Path | None = self.home if own_home and not keep_home else None
        self._watchdog = Watchdog(self.home / "component-sessions", self._home_to_delete)

    def _component(self, name: str) -> Component:
        argv, env = component_command(name, self.env, api_apps=self.api_apps, api_port=self.api_port)
        return Component(name, argv, self.home / f"{name}.log", env)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, timeout: float = 90.0) -> AirflowDeployment:
        """Migrate the database, start every component, return once the API server answers."""
        if self._started:
            raise DeploymentError("a deployment starts once; build a new one")
        self._started = True
        self.started_at = time.monotonic()
        self._stopped = False
        atexit.register(self.stop)
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            self._watchdog.start()
            self.run_cli("db", "migrate", timeout=timeout)
            self.timings["migrate"] = time.monotonic() - self.started_at
            for name in self.components:
                self.start_component(name)
            if "api-server" in self.components:
                self.wait_for(self._api_ready, timeout, "the API server to answer its health check")
                self.timings["api_ready"] = time.monotonic() - self.started_at
            self.sampler.start()
        except Exception as exc:
            details = self.describe()  # before stop() deletes the home and its logs
            self.stop()
            raise DeploymentError(f"Airflow did not start: {exc}\n{details}") from exc
        except BaseException:
            self.stop()
            raise
        return self

    def __enter__(self) -> AirflowDeployment:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start_component(self, name: str) -> Component:
        """Start one component (again), its output appended to ``<home>/<name>.log``."""
        component = self.components.get(name) or self._component(name)
        self.components[name] = component
        if component.alive():
            raise DeploymentError(f"{name} is already running (pid {component.pid})")
        component.start(cwd=self.home)
        self._watchdog.guard(list(self.components.values()))
        return component

    def kill(self, name: str, sig: int = signal.SIGKILL, *, wait: float = 10.0) -> None:
        """
        Signal a component as an operator (its process group) or a crash (SIGKILL: everything) would.

        SIGKILL also reaches the task processes in groups of their own, then waits for the leader.

        With SIGKILL nothing runs any cleanup (the triggerer leaves its heartbeat and triggers
        behind), which is the point of killing it in a test.
        """
        component = self.components[name]
        if component.process is None:
            raise DeploymentError(f"{name} was never started")
        component.remember()
        if sig == signal.SIGKILL:
            component.kill_all()  # a crash takes task processes in their own groups too
        else:
            component.signal_group(sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=wait)

    def restart(self, name: str) -> Component:
        """Stop a component (if still running) and start a fresh one."""
        self.stop_component(name)
        return self.start_component(name)

    def stop_component(self, name: str) -> None:
        """Stop one component by PID (see :meth:`harness.processes.Component.stop`)."""
        component = self.components[name]
        if component.process is not None:
            self.stop_report[name] = component.stop()

    def stop(self) -> None:
        """Stop every process this deployment started (also called at interpreter exit)."""
        if self._stopped:
            return
        self._stopped = True
        self.sampler.stop()
        # The api-server last: task supervisors and the triggerer still report through it while they
        # shut down, and without it they retry until killed. The others together, to save seconds.
        others = [name for name in self.components if name != "api-server"]
        for wave in (others, ["api-server"] if "api-server" in self.components else []):
            threads = [
                threading.Thread(target=self.stop_component, args=(name,), name=f"stop-{name}")
                for name in wave
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        self._session.close()
        self._watchdog.stop()
        atexit.unregister(self.stop)
        if self._home_to_delete is not None:
            shutil.rmtree(self._home_to_delete, ignore_errors=True)

    def report(self) -> str:
        """How long start-up took and how each component stopped, for a test's output."""
        return f"timings {self.timings}, stop {self.stop_report}"

    # -- task processes --------------------------------------------------------------------------

    def task_processes(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskProcesses | None:
        """
        The processes running a task instance's current try, or None if it has none right now.

        See :func:`harness.processes.find_task_processes`; sqlite stores ``task_instance.id`` as 32
        hex digits, the process titles hold it dashed.
        """
        rows = self.query(
            "SELECT id, pid FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? "
            "AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        scheduler = self.components.get("scheduler")
        if not rows or scheduler is None or scheduler.pid is None:
            return None
        ti_id = str(uuid.UUID(str(rows[0]["id"])))
        return find_task_processes(scheduler.pid, ti_id, rows[0]["pid"])

    def kill_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        *,
        with_supervisor: bool = False,
        timeout: float = 30.0,
    ) -> TaskProcesses:
        """
        SIGKILL a running task's runner process, as the kernel's OOM killer would; return what was killed.

        The supervisor survives and reports the try as failed (``up_for_retry`` if a retry is left,
        from the exit code -9). ``with_supervisor`` kills the supervisor first, then the runner:
        a whole worker lost, which only the scheduler's task heartbeat timeout detects.
        """
        found = self.wait_for(
            lambda: self.task_processes(dag_id, run_id, task_id, map_index),
            timeout,
            f"the process running {dag_id}.{task_id}[{map_index}] in {run_id}",
            check=("scheduler",),
        )
        victims = [found.supervisor, found.runner] if with_supervisor else [found.runner]
        for proc in victims:
            proc.kill()  # psutil checks the PID still belongs to that process (its create time)
        psutil.wait_procs(victims, timeout=10)
        return found

    def component_holding(self, pid: int) -> str | None:
        """
        The component whose process tree holds ``pid``, e.g. the Celery worker running a task
        (``task_instance.pid`` is its runner's PID); None when no live component holds it.
        """
        for name, component in self.components.items():
            if not component.alive():
                continue
            component.remember()
            proc = component.seen.get(pid)
            with contextlib.suppress(psutil.Error):
                if proc is not None and proc.is_running():
                    return name
        return None

    # -- diagnostics -----------------------------------------------------------------------------

    def log_tail(self, name: str, lines: int = 60) -> str:
        path = self.components[name].log_path
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def describe(self, lines: int = 60) -> str:
        """Each component's state and log tail: what to read when a test failed."""
        parts = [f"AIRFLOW_HOME={self.home} api={self.api_url} timings={self.timings}"]
        for name, component in self.components.items():
            status = (
                "running" if component.alive() else f"exited {component.process and component.process.poll()}"
            )
            parts.append(f"----- {name} (pid {component.pid}, {status}) last {lines} lines -----")
            parts.append(self.log_tail(name, lines))
        return "\n".join(parts)

    def files_containing(self, text: str) -> list[Path]:
        """
        Every file of the home (component and task logs, the database and its WAL) holding ``text``.

        For secrets: the scheduler's output repeats task log lines without the masking that the
        task log file applies (SPEC 8), so a key logged anywhere shows up here.
        """
        needle = text.encode()
        return [
            path
            for path in sorted(self.home.rglob("*"))
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes()
        ]

    def check_alive(self, *names: str) -> None:
        """Fail fast, with the log, when a component that should be running has died."""
        for name in names or tuple(self.components):
            component = self.components[name]
            if component.process is not None and not component.alive():
                raise DeploymentError(
                    f"{name} exited with {component.process.returncode}:\n{self.log_tail(name)}"
                )

    # -- helpers ---------------------------------------------------------------------------------

    def wait_for(
        self,
        probe: Callable[[], T | None],
        timeout: float,
        what: str,
        interval: float = POLL_INTERVAL,
        *,
        check: Iterable[str] = (),
    ) -> T:
        """Call ``probe`` until it returns something not None/False; fail after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        names = tuple(check)
        while True:
            result = probe()
            if result is not None and result is not False:
                return result
            self.check_alive(*names)
            if time.monotonic() > deadline:
                raise DeploymentError(f"timed out after {timeout:.0f} s waiting for {what}")
            time.sleep(interval)

    def run_cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """Run a one-off ``airflow`` command against this deployment; fail with its output."""
        result = subprocess.run(
            [str(AIRFLOW_BIN), *args],
            env=self.env,
            cwd=self.home,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise DeploymentError(
                f"airflow {' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}"
                f"\n{result.stderr[-3000:]}"
            )
        return result

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the REST API (no login: all users are admins here); return the JSON answer."""
        response = self._session.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise DeploymentError(f"{method} {path} -> {response.status_code}: {response.text[:2000]}")
        return response.json() if response.content else None

    def _api_ready(self) -> bool:
        self.check_alive("api-server")
        # One probe. With all_admins, the core app stamps a UI token on every request, and the
        # execution app then logs an InvalidAudienceError traceback for a tokenless /execution/health.
        path = "/execution/health" if self.api_apps == "execution" else "/api/v2/monitor/health"
        try:
            return self._session.get(f"{self.api_url}{path}", timeout=5).status_code == 200
        except requests.RequestException:
            return False

    def query(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        """Read the metadata database directly (see :meth:`harness.database.MetadataDatabase.query`)."""
        return self.database.query(sql, params)

    def database_containing(self, text: str) -> dict[str, int]:
        """Every table of the metadata database with a row holding ``text``: table -> rows."""
        return self.database.containing(text)

    # -- DAGs and runs ---------------------------------------------------------------------------

    def import_errors(self) -> dict[str, str]:
        """Files the dag-processor could not import, with the stack trace."""
        return {row["filename"]: row["stacktrace"] for row in self.query("SELECT * FROM import_error")}

    def wait_until_parsed(self, dag_id: str, timeout: float = 90.0) -> None:
        """Wait until the dag-processor has serialized ``dag_id`` (the scheduler only runs that)."""

        def parsed() -> bool:
            rows = self.query(
                "SELECT d.is_stale FROM dag d JOIN serialized_dag s ON s.dag_id = d.dag_id "
                "WHERE d.dag_id = ?",
                (dag_id,),
            )
            return bool(rows) and not rows[0]["is_stale"]

        try:
            self.wait_for(parsed, timeout, f"DAG {dag_id} to be parsed", check=("dag-processor",))
        except DeploymentError as exc:
            raise DeploymentError(f"{exc}; import errors: {self.import_errors()}") from None
        self.timings.setdefault(f"parsed {dag_id}", time.monotonic() - self.started_at)

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, *, unpause: bool = True) -> str:
        """Start a manual run through the REST API (seconds faster than the CLI); return its run id."""
        if unpause:
            self.unpause(dag_id)
        body = {"logical_date": None, "conf": dict(conf or {})}
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)
        return str(run["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str | None:
        rows = self.query("SELECT state FROM dag_run WHERE dag_id = ? AND run_id = ?", (dag_id, run_id))
        if not rows:
            raise DeploymentError(f"no run {run_id} of {dag_id}")
        return rows[0]["state"]

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0) -> str:
        """Wait for a run to finish; return ``success`` or ``failed``."""

        def finished() -> str | None:
            state = self.run_state(dag_id, run_id)
            return state if state in TERMINAL_RUN_STATES else None

        try:
            return self.wait_for(
                finished, timeout, f"run {run_id} of {dag_id}", check=("scheduler", "api-server")
            )
        except DeploymentError as exc:
            raise DeploymentError(f"{exc}; task states: {self.task_states(dag_id, run_id)}") from None

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        rows = self.query(
            "SELECT * FROM task_instance WHERE dag_id = ? AND run_id = ? ORDER BY task_id, map_index",
            (dag_id, run_id),
        )
        return [dict(row) for row in rows]

    def task_states(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        """Each task instance's current state, keyed by (task id, map index)."""
        return {(ti["task_id"], ti["map_index"]): ti["state"] for ti in self.task_instances(dag_id, run_id)}

    def history(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[Observation]:
        """
        Every distinct (state, trigger id, try) a task instance was seen in, oldest first.

        Samples once more first, so the last entry is the current state, not one 0.3 s old.
        """
        self.sampler.fresh_sample()
        return self.sampler.history(dag_id, run_id, task_id, map_index)

    def trigger_history(self, trigger_id: int) -> list[TriggerObservation]:
        """The trigger's row as sampled, once per ``triggerer_id`` it had (a takeover adds one)."""
        self.sampler.fresh_sample()
        return self.sampler.trigger_history(trigger_id)

    def triggers_seen(self) -> dict[int, list[TriggerObservation]]:
        """Every trigger sampled since start, by id: its rows are deleted once it fires."""
        self.sampler.fresh_sample()
        return {
            trigger_id: self.sampler.trigger_history(trigger_id) for trigger_id in self.sampler.trigger_ids()
        }

    def seen_states(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[str | None]:
        return [seen.state for seen in self.history(dag_id, run_id, task_id, map_index)]

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        """
        One XCom value as stored (Airflow 3 keeps it JSON-serialized), decoded with ``json``.

        :raises KeyError: if the task pushed no such XCom.
        """
        rows = self.query(
            "SELECT CAST(value AS TEXT) AS value FROM xcom WHERE dag_id = ? AND run_id = ? "
            "AND task_id = ? AND key = ? AND map_index = ?",
            (dag_id, run_id, task_id, key, map_index),
        )
        if not rows:
            raise KeyError(f"no XCom {key!r} for {dag_id}.{task_id}[{map_index}] in {run_id}")
        value = rows[0]["value"]
        return json.loads(value) if isinstance(value, str | bytes) else value
