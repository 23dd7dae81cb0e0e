"""
Which Airflow the tests run on, and the few test-side Airflow imports that moved between versions.

``make test-matrix`` runs the suite on the oldest supported Airflow as well as on the locked one.
A test that needs a feature of a newer Airflow is marked ``requires_airflow(version, feature)``:
it skips on an older install and says which feature it needs; everything else runs everywhere.
The version is read from the installed distribution, so this module does not import Airflow.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

import pytest
from packaging.version import Version

if TYPE_CHECKING:
    from pathlib import Path

AIRFLOW_VERSION = Version(Version(version("apache-airflow")).base_version)


def requires_airflow(minimum: str, feature: str) -> pytest.MarkDecorator:
    """
    Skip a test on an Airflow older than ``minimum``, naming the feature it needs.

    :param minimum: the first Airflow release that has the feature, e.g. ``"3.3"``.
    :param feature: what the test needs, said so that the skip reason explains itself.
    """
    return pytest.mark.skipif(
        airflow_before(minimum),
        reason=f"needs {feature}, which Airflow {minimum} brought (installed: {AIRFLOW_VERSION})",
    )


def airflow_before(release: str) -> bool:
    """Whether the installed Airflow is older than ``release`` (for tests of the older behaviour)."""
    return Version(release) > AIRFLOW_VERSION


OLD_PATHS = pytest.mark.skipif(
    airflow_before("3.3"),
    reason="Airflow before 3.3 uses universal-pathlib 0.2, whose ObjectStoragePath writes memory:// "
    "paths as memory:/// and accepts an unknown scheme until it is used (tested here on 3.3 only)",
)
"""For tests of ``ObjectStoragePath`` behaviour that changed with Airflow 3.3's universal-pathlib."""


def dag_bag(dag_folder: Path | str) -> Any:
    """Airflow's own ``DagBag`` over a file or folder (it moved to ``airflow.dag_processing`` in 3.2)."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow < 3.2
        from airflow.models.dagbag import DagBag  # type: ignore[no-redef]
    return DagBag(dag_folder=str(dag_folder), safe_mode=False)
