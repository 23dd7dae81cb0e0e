"""
CeleryExecutor for a throw-away deployment: the Redis broker, the result backend, a queue of its own.

The deployment's components are the same as with LocalExecutor plus ``celery-worker`` processes
(:data:`harness.config.CELERY_WORKER`); this module holds what they are told and the check that
the broker answers, so a test can skip and say why where it does not.
"""

from __future__ import annotations

import secrets
import socket
from urllib.parse import urlsplit, urlunsplit

__all__ = ["REDIS_URL", "celery_env", "redis_problem", "result_backend_url"]

REDIS_URL = "redis://127.0.0.1:6379/0"


def redis_problem(url: str = REDIS_URL, timeout: float = 2.0) -> str | None:
    """Why the Redis server at ``url`` cannot be used (None when it answers ``PING``)."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            answer = sock.recv(64)
    except OSError as exc:
        return f"Redis not reachable at {host}:{port}: {exc}"
    if not answer.startswith(b"+PONG"):
        return f"Redis at {host}:{port} answered PING with {answer[:40]!r}"
    return None


def result_backend_url(database_url: str) -> str:
    """
    Celery's database result backend on the metadata database (``db+postgresql+psycopg2://...``).

    The driver is kept: SQLAlchemy's default for a bare ``postgresql`` is not always the installed one.
    """
    parts = urlsplit(database_url)
    return urlunsplit(parts._replace(scheme="db+" + parts.scheme))


def celery_env(database_url: str, broker_url: str = REDIS_URL, concurrency: int = 4) -> dict[str, str]:
    """
    The ``AIRFLOW__*`` settings of a CeleryExecutor deployment, for ``AirflowDeployment(extra_env=...)``.

    The queue is new for every deployment: the broker may be shared (other test runs, other
    agents), and a worker must take this deployment's tasks only.
    """
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend_url(database_url),
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"getimage_e2e_{secrets.token_hex(4)}",
        # The scheduler's check of queued Celery tasks: quick, so a lost message is noticed in tests.
        "AIRFLOW__CELERY__OPERATION_TIMEOUT": "10",
    }
