"""
Fixtures for the end-to-end tests: one emulator and one real Airflow deployment per module.

Starting Airflow costs about 15 s on 2 cores, so a module starts it once and triggers its runs
together; a test that needs a deployment of its own (say, with fewer components) builds one with
:class:`~harness.AirflowDeployment` directly. When a test fails, the tail of each
component's log is printed, since the reason is usually there and the home is deleted afterwards.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

from harness import AirflowDeployment, keyed_emulator
from tests.reports import print_log_tails_if_failed

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from airflow_provider_getimage.emulator import Emulator

#: Seconds per generation: long enough for a sampler polling every 0.3 s to see ``deferred``.
E2E_LATENCY = 8.0


@pytest.fixture(scope="module")
def e2e_emulator() -> Iterator[Emulator]:
    """An emulator shared by the module; each run uses its own prompt, so counts stay per run."""
    with keyed_emulator(E2E_LATENCY) as emulator:
        yield emulator


@pytest.fixture(scope="module")
def e2e_output_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``GETIMAGE_OUTPUT_DIR`` of the deployment: where ``example_getimage`` saves its PNGs."""
    return tmp_path_factory.mktemp("getimage-e2e-images")


@pytest.fixture(scope="module")
def airflow_deployment(e2e_emulator: Emulator, e2e_output_dir: Path) -> Iterator[AirflowDeployment]:
    """
    ``example_dags/`` served by a real Airflow, its ``getimage_default`` connection on the emulator.

    Stopped (every process, by PID) when the module ends, whatever happened. Set
    ``GETIMAGE_E2E_KEEP_HOME=1`` to keep its home (database, logs) for a look afterwards.
    """
    deployment = AirflowDeployment(
        extra_env={**e2e_emulator.airflow_env(), "GETIMAGE_OUTPUT_DIR": str(e2e_output_dir)},
        keep_home=bool(os.environ.get("GETIMAGE_E2E_KEEP_HOME")),
    )
    with deployment:
        yield deployment
    print(f"\nairflow deployment: {deployment.report()}")


@pytest.fixture(autouse=True)
def _airflow_logs_on_failure(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print each component's log tail when a test using the deployment fails."""
    yield
    print_log_tails_if_failed(request, "airflow_deployment")
