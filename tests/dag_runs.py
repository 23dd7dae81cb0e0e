"""Run DAG files through real Airflow (``dag.test()``) and read back task states and XComs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.airflow_compat import dag_bag

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG

REPO = Path(__file__).resolve().parents[1]
TEST_DAGS = REPO / "tests" / "dags"
EXAMPLE_DAGS = REPO / "example_dags"


def parse(path: Path) -> dict[str, DAG]:
    """Parse a DAG file with Airflow's own DagBag; fail on any import error."""
    bag = dag_bag(path)
    assert not bag.import_errors, bag.import_errors
    return dict(bag.dags)


def run(dag: DAG, **conf: Any) -> DagRun:
    """Run a DAG to the end with ``dag.test()`` (tasks run in this process)."""
    return dag.test(run_conf=conf or None)


def states(dag_run: DagRun) -> dict[tuple[str, int], str | None]:
    """Each task instance's final state, keyed by (task id, map index)."""
    from airflow.utils.session import create_session

    with create_session() as session:
        return {(ti.task_id, ti.map_index): ti.state for ti in dag_run.get_task_instances(session=session)}


def xcom(dag_run: DagRun, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
    """One XCom value of a finished run, deserialized as a downstream task would see it."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.scalars(
            XComModel.get_many(
                run_id=dag_run.run_id,
                key=key,
                dag_ids=dag_run.dag_id,
                task_ids=task_id,
                map_indexes=map_index,
            )
        ).first()
        assert row is not None, f"no XCom {key!r} for {task_id}[{map_index}]"
        return XComModel.deserialize_value(row)
