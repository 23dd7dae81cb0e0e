"""
The gallery's FastAPI app, mounted in the Airflow API server by the ``getimage_gallery`` plugin.

Imported by the API server only, on the first request (see :mod:`.gallery`): it uses the API
server's database session and security dependencies. A page reads the task instance's XComs
(``diffusion``, ``diffusion_id``) and, when the record lacks them, the prompt and model from the
rendered template fields. It never calls GetImage.io and never reads the connection, so no API key
can reach a page.

A diffusion is shared by the tasks of a run that know its id (an operator with
``wait_for_completion=False`` and the sensor that waits for it): each of their pages shows the most
complete record any of them holds, so the operator's page shows the images the sensor received,
and the sensor's page shows the prompt the operator rendered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow import __version__ as airflow_version
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 (FastAPI reads it at runtime)
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.models.renderedtifields import RenderedTaskInstanceFields
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse
from packaging.version import Version
from sqlalchemy import select
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_getimage import _rules
from airflow_provider_getimage.plugins.gallery_page import (
    GALLERY_ROUTE,
    SECURITY_HEADERS,
    GalleryView,
    TaskInfo,
    parse_map_index,
    render_gallery,
    render_message,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["create_app", "load_view"]

XCOM_KEYS = ("diffusion", "diffusion_id")
TIKey = tuple[str, int]  # task id, map index (within one run)
_RANK = {"success": 3, "failed": 2, "running": 1}
"""Which record a page prefers: a final one over one taken while the diffusion still ran."""


class NoDiffusion(Exception):
    """The task instance exists but holds no diffusion (yet): the page says so."""

    def __init__(self, task: TaskInfo) -> None:
        super().__init__(task.label)
        self.task = task


def _task_info(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskInfo | None:
    row = session.execute(
        select(TaskInstance.state, TaskInstance.start_date, TaskInstance.end_date).where(
            TaskInstance.dag_id == dag_id,
            TaskInstance.run_id == run_id,
            TaskInstance.task_id == task_id,
            TaskInstance.map_index == map_index,
        )
    ).first()
    if row is None:
        return None
    state = str(row.state.value if hasattr(row.state, "value") else row.state) if row.state else None
    return TaskInfo(dag_id, run_id, task_id, map_index, state, row.start_date, row.end_date)


def _run_xcoms(session: Session, dag_id: str, run_id: str) -> dict[TIKey, dict[str, Any]]:
    """The ``diffusion`` and ``diffusion_id`` XComs of every task instance of the run."""
    rows = session.execute(
        select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key.in_(XCOM_KEYS)
        )
    ).all()
    found: dict[TIKey, dict[str, Any]] = {}
    for row in rows:
        found.setdefault((row.task_id, row.map_index), {})[row.key] = XComModel.deserialize_value(row)
    return found


def _record(xcoms: Mapping[str, Any]) -> Mapping[str, Any]:
    record = xcoms.get("diffusion")
    return record if isinstance(record, Mapping) else {}


def _diffusion_id(xcoms: Mapping[str, Any]) -> str:
    for value in (xcoms.get("diffusion_id"), _record(xcoms).get("id")):
        if isinstance(value, str | int) and str(value).strip():
            return str(value).strip()
    return ""


def _rank(record: Mapping[str, Any]) -> int:
    return _RANK[_rules.classify(record["status"])] if "status" in record else 0


def _first_text(values: Iterable[object]) -> str | None:
    """The first non-blank string among ``values``."""
    for value in values:
        if isinstance(value, str) and value.strip():
            return value
    return None


def _label(key: TIKey) -> str:
    task_id, map_index = key
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


def _rendered(
    session: Session, dag_id: str, run_id: str, keys: list[TIKey]
) -> dict[TIKey, Mapping[str, Any]]:
    """The rendered template fields of these task instances (absent once Airflow pruned them)."""
    if not keys:
        return {}
    rows = session.execute(
        select(
            RenderedTaskInstanceFields.task_id,
            RenderedTaskInstanceFields.map_index,
            RenderedTaskInstanceFields.rendered_fields,
        ).where(
            RenderedTaskInstanceFields.dag_id == dag_id,
            RenderedTaskInstanceFields.run_id == run_id,
            RenderedTaskInstanceFields.task_id.in_({task_id for task_id, _ in keys}),
        )
    ).all()
    wanted = set(keys)
    return {
        (row.task_id, row.map_index): row.rendered_fields
        for row in rows
        if (row.task_id, row.map_index) in wanted and isinstance(row.rendered_fields, Mapping)
    }


def load_view(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> GalleryView | None:
    """
    What the gallery page of one task instance shows; None if there is no such task instance.

    :raises NoDiffusion: the task instance holds no diffusion id or record.
    """
    task = _task_info(session, dag_id, run_id, task_id, map_index)
    if task is None:
        return None
    xcoms = _run_xcoms(session, dag_id, run_id)
    own_key: TIKey = (task_id, map_index)
    own = xcoms.get(own_key, {})
    diffusion_id = _diffusion_id(own)
    if not diffusion_id:
        raise NoDiffusion(task)
    # This task instance first, then the others of the run that know the same diffusion.
    others = sorted(
        key for key, found in xcoms.items() if key != own_key and _diffusion_id(found) == diffusion_id
    )
    related = [own_key, *others]
    records = [(key, _record(xcoms.get(key, {}))) for key in related]
    best_key, best = max(records, key=lambda item: _rank(item[1]))  # a tie keeps the first: our own
    found = {
        name: _first_text(record.get(name) for _, record in [(best_key, best), *records])
        for name in ("prompt", "model")
    }
    if not all(found.values()):
        # The API documents no prompt or model in a record: take the ones the tasks rendered.
        rendered = _rendered(session, dag_id, run_id, related)
        for name, value in found.items():
            found[name] = value or _first_text(rendered.get(key, {}).get(name) for key in related)
    return GalleryView(
        task=task,
        diffusion_id=diffusion_id,
        record=best,
        record_from=_label(best_key) if best_key != own_key else None,
        prompt=found["prompt"],
        model=found["model"],
    )


def _html(content: str, status_code: int = 200) -> HTMLResponse:
    return HTMLResponse(content, status_code=status_code, headers=dict(SECURITY_HEADERS))


#: Airflow 3.1.1 is the first whose API server reads the UI's login cookie on every request, so a
#: link or a tab of the UI carries the login to this page; before it, the UI sends its token only
#: as a header of its own API calls, which a plain link cannot carry.
UI_LOGIN_REACHES_PLUGINS = Version(airflow_version).release >= (3, 1, 1)

_NOT_LOGGED_IN = (
    "Log in to Airflow, then reload this page."
    if UI_LOGIN_REACHES_PLUGINS
    else f"Airflow {airflow_version}'s UI does not pass its login on to plugin pages (Airflow 3.1.1 "
    "and later do), so this page needs an API token: send it as 'Authorization: Bearer <token>' "
    "(POST /auth/token gives one), or upgrade Airflow."
)
_ERRORS = {
    401: ("Not logged in", _NOT_LOGGED_IN),
    403: ("Not allowed", "Your Airflow role may not read this DAG's task instances and XComs."),
    404: ("Not found", "There is no such page."),
}


async def _http_error(request: Request, exc: Exception) -> HTMLResponse:
    """Errors as HTML pages (a browser or a UI tab shows them), never a stack trace."""
    status_code = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    title, message = _ERRORS.get(status_code, ("Error", "The gallery could not answer this request."))
    return _html(render_message(title, message), status_code)


def create_app() -> FastAPI:
    """
    The gallery app: ``GET /gallery/{dag_id}/{run_id}/{task_id}?map_index=N`` returns the HTML page.

    Reading it needs what reading the task instance and its XComs needs in Airflow: the API
    server's auth manager decides (a logged-in browser sends its session cookie; API clients a
    bearer token). Unknown task instance: 404; a task instance with no diffusion yet: a page that
    says so (and reloads while the task still runs).
    """
    app = FastAPI(title="GetImage.io gallery", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.get(
        GALLERY_ROUTE,
        response_class=HTMLResponse,
        dependencies=[
            Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)),
            Depends(requires_access_dag("GET", DagAccessEntity.XCOM)),
        ],
    )
    def gallery(
        dag_id: str, run_id: str, task_id: str, session: SessionDep, map_index: str = "-1"
    ) -> HTMLResponse:
        index = parse_map_index(map_index)
        if index is None:
            return _html(render_message("Bad map index", "map_index must be an integer, -1 or more."), 400)
        try:
            view = load_view(session, dag_id, run_id, task_id, index)
        except NoDiffusion as missing:
            if missing.task.finished:
                message = "This task instance ended without a GetImage.io diffusion (it submitted none)."
                return _html(render_message("No diffusion", message, missing.task), 404)
            message = "This task instance has not submitted a diffusion yet."
            return _html(render_message("Not submitted yet", message, missing.task, refresh=True))
        if view is None:
            label = TaskInfo(dag_id, run_id, task_id, index).label
            return _html(
                render_message("No such task instance", f"Airflow has no task instance {label}."), 404
            )
        return _html(render_gallery(view))

    return app
