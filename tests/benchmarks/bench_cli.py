"""Run ``python -m benchmarks.trigger_polling`` as ``make bench`` does, for the smoke tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]


def run_trigger_polling(out_dir: Path, *args: str, timeout: float = 120) -> tuple[dict[str, Any], str]:
    """
    One run of the benchmark from the repository root; its JSON result and its printed report.

    The test process's ``AIRFLOW_CONN_*`` variables are kept away (the benchmark sets its own).
    The timeout only catches a hang (no timing assertion: CI is noisy).
    """
    out = out_dir / "result.json"
    env = {key: value for key, value in os.environ.items() if not key.startswith("AIRFLOW_CONN_")}
    # A deployment has a Fernet key; without one Airflow 3.0 and 3.1 warn when they read a connection,
    # and the benchmark counts every warning as an error.
    env.setdefault("AIRFLOW__CORE__FERNET_KEY", Fernet.generate_key().decode())
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.trigger_polling", *args, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    return json.loads(out.read_text()), completed.stdout
