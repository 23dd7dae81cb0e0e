"""
Run one DAG file's DAG through ``dag.test()`` in a process of its own, for the OpenLineage tests.

The OpenLineage provider reads its transport once per process and registers its listener when
Airflow's plugins first load, so a test that wants a file transport runs the DAG here, in a fresh
process, with ``AIRFLOW__OPENLINEAGE__TRANSPORT`` set; the metadata database and the connection
come from the test's environment. Usage: ``python -m tests.lineage_runner <dag file> <dag id>``;
prints the run's state.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests import dag_runs


def main(path: str, dag_id: str) -> int:
    dag = dag_runs.parse(Path(path))[dag_id]
    dag_run = dag_runs.run(dag)
    print(f"RUN {dag_run.run_id} {dag_run.state}")
    return 0 if dag_run.state == "success" else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
