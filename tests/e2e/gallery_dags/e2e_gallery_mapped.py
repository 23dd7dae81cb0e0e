"""
The mapped example DAG (``example_getimage_mapped``: 3 prompts x 4 images, then one download) for
the gallery's browser tests on a real Airflow, loaded from ``example_dags/`` rather than copied, so
the run gallery is tested on the very DAG the docs show.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

_EXAMPLE = Path(__file__).resolve().parents[3] / "example_dags" / "example_getimage_mapped.py"
_spec = importlib.util.spec_from_file_location("e2e_example_getimage_mapped", _EXAMPLE)
assert _spec is not None
assert _spec.loader is not None
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)

dag = _module.dag  # module-level, so Airflow's DAG bag finds it
