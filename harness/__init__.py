"""
The real-deployment harness: a throw-away Airflow run as subprocesses, and what observes it.

Used by the end-to-end tests (``tests/e2e``), the browser tests (``tests/ui``) and the deployment
check (``benchmarks/deployment_check.py``); never shipped (the wheel holds
``airflow_provider_getimage`` only). It imports from the repository root, which pytest (the
``tests`` package's rootdir), ``python -m benchmarks...`` run there and the editable install's
``.pth`` all put on ``sys.path``. One module per concern:

- :mod:`harness.config`: the environment and command line of each component;
- :mod:`harness.processes`: starting, finding and stopping processes by PID, the watchdog;
- :mod:`harness.database`: reading the metadata database, throw-away PostgreSQL databases;
- :mod:`harness.sampler`: the states task instances and triggers went through;
- :mod:`harness.process_trees`: CPU time and memory of each component's process tree;
- :mod:`harness.deployment`: :class:`AirflowDeployment`, which puts them together;
- :mod:`harness.emulator`: the emulator with a key of its own.
"""

from __future__ import annotations

from harness.config import COMPONENTS, free_port
from harness.database import DB_ERRORS, MetadataDatabase, postgres_database
from harness.deployment import TERMINAL_RUN_STATES, AirflowDeployment
from harness.emulator import keyed_emulator
from harness.errors import DatabaseUnavailable, DeploymentError
from harness.process_trees import DeploymentTrees, ProcessTree
from harness.processes import TaskProcesses
from harness.sampler import Observation, TriggerObservation

__all__ = [
    "COMPONENTS",
    "DB_ERRORS",
    "TERMINAL_RUN_STATES",
    "AirflowDeployment",
    "DatabaseUnavailable",
    "DeploymentError",
    "DeploymentTrees",
    "MetadataDatabase",
    "Observation",
    "ProcessTree",
    "TaskProcesses",
    "TriggerObservation",
    "free_port",
    "keyed_emulator",
    "postgres_database",
]
