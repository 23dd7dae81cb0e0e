"""
A real Airflow 3 deployment run as subprocesses, for end-to-end tests.

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

All configuration goes to the subprocesses through ``AIRFLOW__SECTION__KEY`` variables; the
test process's own environment is never changed, and any ``AIRFLOW*`` variable in it (the unit
tests' conftest sets some) is kept away from the deployment. Every process is stopped by PID
(each component leads a session; its process group, descendants and session members are killed),
when the test fails too, at interpreter exit, and -- through a watchdog process -- even when the
test process itself is killed.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import psutil
import psycopg2
import psycopg2.extras
import requests

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from airflow_provider_getimage.emulator import Emulator

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

#: The long-running components, in start order. More triggerers (HA) are named ``triggerer-2`` etc.
COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
EXTRA_TRIGGERER = re.compile(r"triggerer-[2-9]")
#: What a read of the metadata database raises while Airflow migrates or holds a lock: try again.
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error, psycopg2.Error)
TERMINAL_RUN_STATES = frozenset({"success", "failed"})
POLL_INTERVAL = 0.5
#: Seconds to wait after each SIGTERM; some scheduler shutdowns ignore the first one (SPEC 8).
STOP_GRACE = 5.0

T = TypeVar("T")


def keyed_emulator(latency: float) -> Emulator:
    """
    A started emulator that accepts a key of its own, so a search of logs and tables has no false hit.

    Use it as a context manager (``with keyed_emulator(5) as emulator``) to have it stopped.
    """
    from airflow_provider_getimage.emulator import Emulator

    return Emulator(latency=latency, seed=0, api_keys=(f"e2e-key-{secrets.token_hex(12)}",)).start()


class DeploymentError(RuntimeError):
    """The deployment did not do what a test waited for; the message carries the evidence."""


class DatabaseUnavailable(DeploymentError):
    """The PostgreSQL server a test needs does not answer (a test skips on this, it does not fail)."""


def free_port() -> int:
    """A TCP port free on loopback right now (the fixed defaults 8793/8794 clash between deployments)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_connect(url: str, connect_timeout: int = 5) -> Any:
    """A psycopg2 connection for a SQLAlchemy URL (``postgresql+psycopg2://`` -> ``postgresql://``)."""
    parts = urlsplit(url)
    dsn = urlunsplit(parts._replace(scheme="postgresql"))
    return psycopg2.connect(dsn, connect_timeout=connect_timeout)


@contextlib.contextmanager
def postgres_database(
    server_url: str = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", prefix: str = "getimage_e2e"
) -> Iterator[str]:
    """
    A fresh, empty PostgreSQL database for one deployment; dropped afterwards. Yields its URL.

    ``server_url`` names a database to connect to for ``CREATE``/``DROP DATABASE`` (the server's
    ``postgres``). The drop uses ``WITH (FORCE)`` (PostgreSQL 13+): a process killed in a test may
    leave a session behind for a moment.

    :raises DatabaseUnavailable: when the server does not answer, so a test can skip and say why.
    """
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        admin = _pg_connect(server_url)
    except psycopg2.OperationalError as exc:
        where = urlsplit(server_url).netloc.rpartition("@")[2]
        reason = " ".join(str(exc).split())
        raise DatabaseUnavailable(f"PostgreSQL not reachable at {where}: {reason}") from exc
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        try:
            yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
        finally:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        admin.close()


#: Run by a watchdog process: when the test process dies without stopping the deployment (SIGKILL,
#: a CI job timeout), it stops every process in the components' sessions itself (SIGTERM, then
#: SIGKILL) and deletes a temporary home. Sessions, not process groups: a task supervisor moves
#: each task process into a process group of its own (``setpgid``), but not out of the session.
_WATCHDOG = """
import os, shutil, signal, sys, time
parent, sid_file, home = int(sys.argv[1]), sys.argv[2], sys.argv[3]
while os.getppid() == parent:
    time.sleep(1)
try:
    sids = {int(line) for line in open(sid_file).read().split()}
except OSError:
    sys.exit(0)
for sig, pause in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):
    for pid in [int(name) for name in os.listdir("/proc") if name.isdigit()]:
        try:
            if os.getsid(pid) in sids:
                os.kill(pid, sig)
        except OSError:
            pass
    time.sleep(pause)
if home:
    shutil.rmtree(home, ignore_errors=True)
"""


def _title(proc: psutil.Process) -> str:
    """A process's title as ``ps`` shows it: ``setproctitle`` pads ``cmdline()`` with empty entries."""
    return " ".join(part for part in proc.cmdline() if part)


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


@dataclass
class Component:
    """One long-running ``airflow <command>`` subprocess and the file its output goes to."""

    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    #: Every process seen under this component (its group leader and descendants), to kill by PID.
    seen: dict[int, psutil.Process] = field(default_factory=dict)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


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


@dataclass(frozen=True)
class TaskProcesses:
    """The two processes of one running try (see :meth:`AirflowDeployment.task_processes`)."""

    ti_id: str  # task_instance.id: a new UUID for every try
    supervisor: psutil.Process  # a LocalExecutor worker, titled "airflow worker -- LocalExecutor: <id>"
    runner: psutil.Process  # its forked child that runs execute(), titled "airflow worker -- <id>"


TIKey = tuple[str, str, str, int]  # dag_id, run_id, task_id, map_index


class StateSampler:
    """
    Records every state each task instance is seen in, on a background thread.

    A waiting test only sees the end state; this proves a transient one (``deferred`` with a
    ``trigger_id``) happened. It samples every ``interval`` seconds, so a state shorter than that
    may be missed: give the emulator a latency of a few seconds.
    """

    def __init__(self, deployment: AirflowDeployment, interval: float = 0.3) -> None:
        self._deployment = deployment
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
        rows = self._deployment.query(
            "SELECT dag_id, run_id, task_id, map_index, state, trigger_id, try_number FROM task_instance"
        )
        triggers = self._deployment.query(
            "SELECT id, classpath, CAST(kwargs AS TEXT) AS kwargs, triggerer_id FROM trigger"
        )
        now = time.monotonic() - self._deployment.started_at
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

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            with contextlib.suppress(*DB_ERRORS):  # a locked or half-migrated DB: try again
                self.sample()

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


class AirflowDeployment:
    """
    A throw-away Airflow deployment (LocalExecutor; sqlite or PostgreSQL) running as subprocesses.

    :param dags_folder: the DAG files to serve; default the repository's ``example_dags/``.
    :param extra_env: more environment for every subprocess, e.g. ``AIRFLOW_CONN_GETIMAGE_DEFAULT``,
        ``GETIMAGE_OUTPUT_DIR`` or an ``AIRFLOW__SECTION__KEY`` overriding a default below.
    :param home: the ``AIRFLOW_HOME``; default a new temporary folder, deleted by :meth:`stop`.
    :param components: which long-running components to start; ``triggerer-2`` (up to ``-9``) is one
        more ``airflow triggerer``, for high availability.
    :param database_url: the metadata database as a SQLAlchemy URL; default a sqlite file in the home.
        ``postgresql+psycopg2://...`` is read with psycopg2 (see :func:`postgres_database`).
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
        self._own_home = home is None
        self.home = Path(home) if home is not None else Path(tempfile.mkdtemp(prefix="getimage-e2e-airflow-"))
        self.keep_home = keep_home
        self.db_path = self.home / "airflow.db"
        self.database_url = database_url or f"sqlite:///{self.db_path}"
        self.db_kind = urlsplit(self.database_url).scheme.split("+")[0]
        if self.db_kind not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported database {self.database_url!r}: sqlite or postgresql")
        self.api_port = free_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.api_apps = api_apps
        self.env = self._build_env(extra_env or {}, triggerer_health_check_threshold)
        self.components: dict[str, Component] = {}
        for name in components:
            self.components[name] = self._component(name)
        self.started_at = time.monotonic()
        self.timings: dict[str, float] = {}
        #: How each component stopped, e.g. ``{"scheduler": "SIGTERM in 2.1 s"}``.
        self.stop_report: dict[str, str] = {}
        self.sampler = StateSampler(self)
        self._session = requests.Session()
        self._started = False
        self._stopped = True
        self._sid_file = self.home / "component-sessions"
        self._home_to_delete: Path | None = self.home if self._own_home and not keep_home else None
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- configuration ---------------------------------------------------------------------------

    def _build_env(self, extra_env: Mapping[str, str], triggerer_threshold: float) -> dict[str, str]:
        """
        The subprocess environment: this process's, minus anything Airflow or pytest reads.

        ``PYTEST_CURRENT_TEST`` is dropped because Airflow's logging set-up changes behaviour when
        it sees it, and a real deployment never has it.
        """
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("AIRFLOW", "_AIRFLOW")) and key != "PYTEST_CURRENT_TEST"
        }
        settings = {
            "AIRFLOW_HOME": str(self.home),
            "PYTHONUNBUFFERED": "1",
            # Database and executor: sqlite is enough for one machine; WAL mode lets us read alongside.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.database_url,
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__CORE__PARALLELISM": "8",
            "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
            # Workers report to the execution API of our own api-server; tokens are signed by the
            # scheduler and checked by the api-server, so both need the same secret.
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__API__BASE_URL": self.api_url,
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            # HS512 wants a 64-byte key at least, or PyJWT warns on every token.
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            # The log servers listen on fixed ports by default: two deployments would clash.
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            # Short loops, so a test waits seconds, not minutes (2 cores: one parsing process).
            "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "bundles"),
            # A task supervisor notices its task's exit only when its select() times out, after up
            # to this many seconds (default 5); a scheduler told to stop waits for it.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            # A task's calls to the execution API time out after 5 s by default; on 2 busy cores the
            # api-server can take longer, and the task then fails before it ran (Airflow's advice
            # under load is a longer timeout).
            "AIRFLOW__WORKERS__EXECUTION_API_TIMEOUT": "30",
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__SCHEDULER__TRIGGER_TIMEOUT_CHECK_INTERVAL": "2",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # ":g": "6", not "6.0" (Airflow 3.0 reads it as an int).
            "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": f"{triggerer_threshold:g}",
        }
        env.update(settings)
        env.update(extra_env)
        return env

    def _component(self, name: str) -> Component:
        """
        A component's command and environment.

        An extra triggerer is one more ``airflow triggerer`` (a second host, in production): it
        needs a trigger log server port of its own, or it dies on "address already in use".
        """
        env = self.env
        if EXTRA_TRIGGERER.fullmatch(name):
            command = "triggerer"
            env = {**self.env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
        elif name in COMPONENTS:
            command = name
        else:
            raise ValueError(f"unknown component {name!r}; expected one of {COMPONENTS} or triggerer-<2-9>")
        argv = [str(AIRFLOW_BIN), command]
        if command == "api-server":
            # "all" = the REST API v2 (to trigger runs) plus the execution API (for the workers).
            argv += ["--apps", self.api_apps, "--host", "127.0.0.1", "--port", str(self.api_port)]
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
            self._start_watchdog()
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
        component.starts += 1
        with component.log_path.open("ab") as log:
            log.write(f"\n===== start #{component.starts}: {' '.join(component.argv)}\n".encode())
            log.flush()
            component.process = subprocess.Popen(
                component.argv,
                env=component.env,
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, so its workers can be killed with it
            )
        self._remember(component)
        self._write_sids()
        return component

    def _write_sids(self) -> None:
        """Tell the watchdog which sessions are ours (each component leads its own)."""
        sids = [str(c.process.pid) for c in self.components.values() if c.process is not None]
        self._sid_file.write_text("\n".join(sids))

    def _start_watchdog(self) -> None:
        self._watchdog = subprocess.Popen(
            [
                sys.executable,
                "-c",
                _WATCHDOG,
                str(os.getpid()),
                str(self._sid_file),
                str(self._home_to_delete or ""),
            ],
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal must not kill it before the others
        )

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
        self._remember(component)
        if sig == signal.SIGKILL:
            self._kill_all(component)  # a crash takes task processes in their own groups too
        else:
            self._signal_group(component, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(timeout=wait)

    def restart(self, name: str) -> Component:
        """Stop a component (if still running) and start a fresh one."""
        self.stop_component(name)
        return self.start_component(name)

    def stop_component(self, name: str) -> None:
        """
        Stop one component by PID: SIGTERM to it, a second SIGTERM to its group, then SIGKILL.

        The first SIGTERM goes to the leader alone, as ``kill <pid>`` would: a scheduler then
        shuts its LocalExecutor workers down itself, whereas a group-wide SIGTERM also reaches each
        task supervisor, which forwards it to its task, and the scheduler waits for that task
        ("Signal again if you don't want to wait") -- sometimes past a second SIGTERM (SPEC 8).
        """
        component = self.components[name]
        process = component.process
        if process is None:
            return
        began = time.monotonic()
        self._remember(component)
        sent = []
        for group, grace in ((False, STOP_GRACE), (True, STOP_GRACE / 2)):
            if process.poll() is not None:
                break
            if group:
                self._signal_group(component, signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            sent.append("SIGTERM(group)" if group else "SIGTERM")
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=grace)
        if process.poll() is None:
            sent.append("SIGKILL")
        # Whatever is left (the leader, workers or task processes it orphaned) dies now.
        self._kill_all(component)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        psutil.wait_procs(list(component.seen.values()), timeout=5)
        component.seen.clear()
        self.stop_report[name] = f"{'+'.join(sent) or 'already exited'} in {time.monotonic() - began:.1f} s"

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
        if self._watchdog is not None:  # everything is stopped: it has nothing left to guard
            self._watchdog.kill()
            self._watchdog.wait()
            self._watchdog = None
        atexit.unregister(self.stop)
        if self._home_to_delete is not None:
            shutil.rmtree(self._home_to_delete, ignore_errors=True)

    def report(self) -> str:
        """How long start-up took and how each component stopped, for a test's output."""
        return f"timings {self.timings}, stop {self.stop_report}"

    def _remember(self, component: Component) -> None:
        """
        Note the component's current processes, so they can be killed by PID even if orphaned.

        That is its descendants and anything else in its session (each component starts one): task
        processes sit in process groups of their own, and may outlive their supervisor.
        """
        if component.process is None:
            return
        leader_pid = component.process.pid
        with contextlib.suppress(psutil.Error):
            leader = psutil.Process(leader_pid)
            component.seen.setdefault(leader.pid, leader)
            for child in leader.children(recursive=True):
                component.seen.setdefault(child.pid, child)
        for pid in psutil.pids():
            with contextlib.suppress(OSError, psutil.Error):
                if pid not in component.seen and os.getsid(pid) == leader_pid:
                    component.seen[pid] = psutil.Process(pid)

    def _kill_all(self, component: Component) -> None:
        """SIGKILL the component's group and every process of it ever seen (by PID, never recycled)."""
        self._remember(component)
        self._signal_group(component, signal.SIGKILL)
        for proc in component.seen.values():
            with contextlib.suppress(psutil.Error):
                if proc.is_running():  # also compares the create time: never a recycled PID
                    proc.kill()

    @staticmethod
    def _signal_group(component: Component, sig: int) -> None:
        """Signal the process group this component leads (its id is the leader's PID)."""
        if component.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(component.process.pid, sig)

    # -- task processes --------------------------------------------------------------------------

    def task_processes(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskProcesses | None:
        """
        The processes running a task instance's current try, or None if it has none right now.

        How LocalExecutor runs a task on Airflow 3.3 (``executors/local_executor.py``,
        ``sdk/execution_time/supervisor.py`` and ``task_runner.py``): the scheduler forks
        ``[core] parallelism`` worker processes; the worker that takes the task runs its supervisor
        in-process and retitles itself ``airflow worker -- LocalExecutor: <ti id>``; the supervisor
        forks the task runner (a process group of its own), which retitles itself
        ``airflow worker -- <ti id>`` on startup and runs ``execute()``. ``<ti id>`` is
        ``task_instance.id`` in its dashed form (sqlite stores it as 32 hex digits), new for every
        try, so an exact title match among the scheduler's descendants is the current try's runner
        and nothing else (the supervisor's title holds the id too, hence exact). The runner's PID is
        also ``task_instance.pid`` once the try runs; it must agree. Titles are set with
        ``setproctitle``: psutil shows them as the first ``cmdline()`` entry, padded with empty ones.
        """
        rows = self.query(
            "SELECT id, pid FROM task_instance WHERE dag_id = ? AND run_id = ? AND task_id = ? "
            "AND map_index = ?",
            (dag_id, run_id, task_id, map_index),
        )
        scheduler = self.components.get("scheduler")
        if not rows or scheduler is None or scheduler.pid is None:
            return None
        ti_id, ti_pid = str(uuid.UUID(str(rows[0]["id"]))), rows[0]["pid"]
        try:
            descendants = psutil.Process(scheduler.pid).children(recursive=True)
        except psutil.Error:
            return None
        for proc in descendants:
            with contextlib.suppress(psutil.Error):
                if _title(proc) == f"airflow worker -- {ti_id}" and ti_pid in (None, proc.pid):
                    supervisor = proc.parent()
                    if supervisor is not None and _title(supervisor).endswith(f": {ti_id}"):
                        return TaskProcesses(ti_id, supervisor, proc)
        return None

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
        """
        Read the metadata database directly: faster than the API and sees every column.

        One SQL text for both databases: ``?`` placeholders (turned into psycopg2's ``%s``), and a
        ``CAST(col AS TEXT)`` where a column is JSON on PostgreSQL but text on sqlite. Read-only,
        one short transaction and connection per call (the sampler reads from its own thread);
        Airflow runs sqlite in WAL mode, so this never blocks a writer.
        """
        if self.db_kind == "postgresql":
            with contextlib.closing(_pg_connect(self.database_url)) as connection:
                connection.set_session(readonly=True, autocommit=True)
                with connection.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cursor:
                    cursor.execute(sql.replace("?", "%s"), tuple(params))
                    return [dict(row) for row in cursor.fetchall()]
        with contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)) as db:
            db.row_factory = sqlite3.Row
            return [dict(row) for row in db.execute(sql, tuple(params)).fetchall()]

    def database_containing(self, text: str) -> dict[str, int]:
        """
        Every table of the metadata database with a row holding ``text``: table -> rows.

        All columns, whatever their type: on PostgreSQL a row cast to text (``t::text``) shows
        text, JSON and numbers as they are and ``bytea`` as hex, so the hex of ``text`` is
        looked for too; on sqlite each value is compared as text or bytes.
        """
        found: dict[str, int] = {}
        if self.db_kind == "postgresql":
            tables = self.query(
                "SELECT quote_ident(table_name) AS name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
            for table in tables:
                name = table["name"]
                rows = self.query(
                    f"SELECT count(*) AS n FROM {name} AS t "  # table names from the catalogue
                    "WHERE strpos(t::text, ?) > 0 OR strpos(t::text, ?) > 0",
                    (text, text.encode().hex()),
                )
                if rows[0]["n"]:
                    found[table["name"]] = int(rows[0]["n"])
            return found
        needle = text.encode()
        for table in self.query("SELECT name FROM sqlite_master WHERE type = 'table'"):
            name = table["name"]
            hits = sum(
                any(
                    needle in (value if isinstance(value, bytes) else str(value).encode())
                    for value in row.values()
                    if value is not None
                )
                for row in self.query(f'SELECT * FROM "{name}"')  # table names from the catalogue
            )
            if hits:
                found[name] = hits
        return found

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
        self._fresh_sample()
        return self.sampler.history(dag_id, run_id, task_id, map_index)

    def _fresh_sample(self) -> None:
        with contextlib.suppress(*DB_ERRORS):
            self.sampler.sample()

    def trigger_history(self, trigger_id: int) -> list[TriggerObservation]:
        """The trigger's row as sampled, once per ``triggerer_id`` it had (a takeover adds one)."""
        self._fresh_sample()
        return self.sampler.trigger_history(trigger_id)

    def triggers_seen(self) -> dict[int, list[TriggerObservation]]:
        """Every trigger sampled since start, by id: its rows are deleted once it fires."""
        self._fresh_sample()
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
