"""
What a throw-away deployment is told: its environment and each component's command line.

All configuration goes to the subprocesses through ``AIRFLOW__SECTION__KEY`` variables; the
harness's own process environment is never changed, and any ``AIRFLOW*`` variable in it (the unit
tests' conftest sets some) is kept away from the deployment.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_DAGS = REPO / "example_dags"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")

#: The long-running components, in start order. More triggerers (HA) are named ``triggerer-2`` etc.
COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")
EXTRA_TRIGGERER = re.compile(r"triggerer-[2-9]")
#: CeleryExecutor workers (``airflow celery worker``): ``celery-worker``, ``celery-worker-2`` etc.
CELERY_WORKER = re.compile(r"celery-worker(-[2-9])?")


def free_port() -> int:
    """A TCP port free on loopback right now (the fixed defaults 8793/8794 clash between deployments)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fernet_key() -> str:
    """A fresh key: without one, Airflow warns each time it reads a connection."""
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def deployment_env(
    *,
    home: Path,
    database_url: str,
    dags_folder: Path,
    api_url: str,
    api_port: int,
    triggerer_threshold: float,
    extra_env: Mapping[str, str],
) -> dict[str, str]:
    """
    The subprocess environment: this process's, minus anything Airflow or pytest reads.

    ``PYTEST_CURRENT_TEST`` is dropped because Airflow's logging set-up changes behaviour when
    it sees it, and a real deployment never has it. ``extra_env`` comes last, so it can override
    any default here.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "_AIRFLOW")) and key != "PYTEST_CURRENT_TEST"
    }
    settings = {
        "AIRFLOW_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        # Database and executor: sqlite is enough for one machine; WAL mode lets us read alongside.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database_url,
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__FERNET_KEY": fernet_key(),
        # Workers report to the execution API of our own api-server; tokens are signed by the
        # scheduler and checked by the api-server, so both need the same secret.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api_url}/execution/",
        "AIRFLOW__API__BASE_URL": api_url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
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
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
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


def component_command(
    name: str, env: dict[str, str], *, api_apps: str, api_port: int
) -> tuple[list[str], dict[str, str]]:
    """
    A component's argv and environment.

    An extra triggerer is one more ``airflow triggerer`` (a second host, in production): it
    needs a trigger log server port of its own, or it dies on "address already in use".
    """
    if EXTRA_TRIGGERER.fullmatch(name):
        command = "triggerer"
        env = {**env, "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port())}
    elif CELERY_WORKER.fullmatch(name):
        # Each worker serves its task logs on a port of its own, and listens to this deployment's
        # queue only (a Redis shared with other deployments would hand it their tasks).
        env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
        queue = env.get("AIRFLOW__OPERATORS__DEFAULT_QUEUE", "default")
        # Several workers share the home: each needs a name and a PID file of its own.
        pid_file = str(Path(env["AIRFLOW_HOME"]) / f"{name}.pid")
        argv = [str(AIRFLOW_BIN), "celery", "worker", "--queues", queue, "--pid", pid_file]
        argv += ["--celery-hostname", f"{name}@%h"]
        argv += ["--concurrency", env.get("AIRFLOW__CELERY__WORKER_CONCURRENCY", "4"), "--without-mingle"]
        return [*argv, "--without-gossip"], env
    elif name in COMPONENTS:
        command = name
    else:
        raise ValueError(
            f"unknown component {name!r}; expected one of {COMPONENTS}, triggerer-<2-9> or "
            "celery-worker[-<2-9>]"
        )
    argv = [str(AIRFLOW_BIN), command]
    if command == "api-server":
        # "all" = the REST API v2 (to trigger runs) plus the execution API (for the workers).
        argv += ["--apps", api_apps, "--host", "127.0.0.1", "--port", str(api_port)]
    return argv, env
