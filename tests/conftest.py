"""
Test set-up: a throw-away Airflow home (sqlite) for the whole session.

Airflow reads its configuration when first imported, so the environment is set here, at import
time, before any test module imports Airflow. DAGs run by ``dag.test()`` must come from a DAG
bundle (Airflow 3 serializes them to the database first), so the repository's ``example_dags/``
``tests/dags/`` and ``benchmarks/dags/`` are declared as local bundles. The emulator fixtures
(``getimage_emulator``, ``getimage_airflow_conn``, ``getimage_emulator_factory``) come from the
provider's own pytest plugin, as they do for users.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from airflow_provider_getimage._rules import RetryPolicy

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

REPO = Path(__file__).resolve().parents[1]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep each phase's report on the item (``report_call``...), for :mod:`tests.reports`."""
    report = yield
    setattr(item, f"report_{call.when}", report)
    return report


#: One per process: under pytest-xdist (``make unit``) each worker imports this file, so each has a
#: home and a sqlite database of its own.
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="getimage-test-airflow-"))
BUNDLES = [
    {
        "name": "getimage_examples",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(REPO / "example_dags"), "refresh_interval": 0},
    },
    {
        "name": "getimage_test_dags",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(REPO / "tests" / "dags"), "refresh_interval": 0},
    },
    {  # the benchmarks' DAGs, run at tiny N by tests/benchmarks
        "name": "getimage_bench_dags",
        "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
        "kwargs": {"path": str(REPO / "benchmarks" / "dags"), "refresh_interval": 0},
    },
]

os.environ.update(
    {
        "AIRFLOW_HOME": str(AIRFLOW_HOME),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "example_dags"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps(BUNDLES),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{AIRFLOW_HOME}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
    }
)
# A developer's own connection must not leak into the tests.
os.environ.pop("AIRFLOW_CONN_GETIMAGE_DEFAULT", None)


#: The slowest test files that are not e2e, slowest first (seconds in one serial run, loaded machine):
#: an xdist worker starts them first so that no long file is left for last on one worker while the
#: other idles (``make unit``, ``--no-loadscope-reorder``). A stale list only costs time.
SLOW_FILES_FIRST = (
    "tests/reliability/test_hostile_api.py",  # 81 s
    "tests/test_answer_properties.py",  # 68 s
    "tests/test_lineage.py",  # 57 s
    "tests/benchmarks/test_scale_smoke.py",  # 36 s, twice that beside another worker
    "tests/plugins/test_gallery_bounds.py",  # 40 s
    "tests/benchmarks/test_start_cost_smoke.py",  # 20 s, 53 s beside another worker
    "tests/benchmarks/test_trigger_polling_smoke.py",  # 14 s, 39 s beside another worker
    "tests/reliability/test_bounded_answers.py",  # 29 s
    "tests/test_packaging.py",  # 24 s
    "tests/operators/test_batch.py",  # 24 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the files of ``SLOW_FILES_FIRST`` first, in that order; the rest as collected."""
    if not hasattr(config, "workerinput"):  # not an xdist worker: keep pytest's order
        return
    rank = {name: index for index, name in enumerate(SLOW_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))


def pytest_unconfigure(config: pytest.Config) -> None:
    """Delete this process's Airflow home, also where no test used ``airflow_db`` (xdist's controller)."""
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


FAST_RETRIES = RetryPolicy(max_attempts=3, backoff_base=0.02, backoff_max=0.05, retry_after_cap=0.1)
"""Retries in milliseconds, so bursts of faults cost no test time."""


@pytest.fixture
def default_retry_policy(monkeypatch: pytest.MonkeyPatch) -> Callable[[RetryPolicy], RetryPolicy]:
    """Set the policy of every hook made without one of its own (a trigger's, an operator's)."""
    from airflow_provider_getimage.hooks.getimage import GetImageAsyncHook, GetImageHook

    def apply(policy: RetryPolicy) -> RetryPolicy:
        monkeypatch.setattr(GetImageHook, "default_retry_policy", policy)
        monkeypatch.setattr(GetImageAsyncHook, "default_retry_policy", policy)
        return policy

    return apply


@pytest.fixture
def fast_retries(default_retry_policy: Callable[[RetryPolicy], RetryPolicy]) -> RetryPolicy:
    """Hooks retry in milliseconds (``FAST_RETRIES``)."""
    return default_retry_policy(FAST_RETRIES)


@pytest.fixture(scope="session")
def airflow_db() -> Iterator[Path]:
    """A migrated sqlite metadata database, once per test session."""
    from airflow.utils import db

    db.resetdb(skip_init=False)
    yield AIRFLOW_HOME
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)
