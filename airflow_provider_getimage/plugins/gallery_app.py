"""
The gallery's FastAPI app, mounted in the Airflow API server by the ``getimage_gallery`` plugin.

Imported by the API server only, on the first request (see :mod:`.gallery`): it uses the API
server's database session and security dependencies. A page reads the task instance's XComs
(``diffusion``, ``diffusion_id``) and, when the record lacks them, the prompt and model from the
rendered template fields. It never calls GetImage.io and never reads the connection, so no API key
can reach a page.

Two more pages read a whole DAG run (every GetImage.io task, every map index, every item of a
batch's manifest, every download's stored files, grouped by task and paged) and a DAG's recent
runs. A batch's manifest is read from object storage, bounded (``MANIFEST_BYTES``); its rows are
untrusted like a record.

A diffusion is shared by the tasks of a run that know its id (an operator with
``wait_for_completion=False`` and the sensor that waits for it): each of their pages shows the most
complete record any of them holds, so the operator's page shows the images the sensor received,
and the sensor's page shows the prompt the operator rendered.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow import __version__ as airflow_version
from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep  # noqa: TC002 (FastAPI reads it at runtime)
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.models.dagrun import DagRun
from airflow.models.renderedtifields import RenderedTaskInstanceFields
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from packaging.version import Version
from sqlalchemy import and_, or_, select
from starlette.exceptions import HTTPException as StarletteHTTPException

from airflow_provider_getimage import _rules
from airflow_provider_getimage.plugins.gallery_page import (
    CARD_IMAGES,
    FAILED_STATES,
    GALLERY_ROUTE,
    GALLERY_URL_PREFIX,
    HISTORY_ITEMS_PER_RUN,
    HISTORY_ROUTE,
    HISTORY_RUNS,
    ITEMS_PER_PAGE,
    RUN_ROUTE,
    SECURITY_HEADERS,
    FilesView,
    GalleryView,
    HistoryView,
    Item,
    RunView,
    TaskGroup,
    TaskInfo,
    manifest_items,
    parse_map_index,
    parse_page,
    read_images,
    render_files,
    render_gallery,
    render_history,
    render_message,
    render_run,
    run_path,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

__all__ = ["create_app", "load_history", "load_run", "load_view", "read_manifest", "run_items"]

XCOM_KEYS = ("diffusion", "diffusion_id", "error")
"""The XComs a GetImage.io task pushes for its gallery (``error``: why it failed)."""
DIFFUSION_OPERATORS = frozenset(
    {"GetImageDiffusionOperator", "GetImageDiffusionSensor", "_GetImageDecoratedOperator", "@task.getimage"}
)
"""Tasks that make (or wait for) one diffusion each; other tasks count when they pushed a diffusion."""
DOWNLOAD_OPERATORS = frozenset({"GetImageDownloadOperator"})
"""Tasks whose return value lists stored files."""
BATCH_OPERATORS = frozenset({"GetImageBatchOperator"})
"""Tasks whose return value names a manifest (``{"manifest": <URI>, "total": n, ...}``)."""
MANIFEST_BYTES = 2 * 1024 * 1024
"""Most bytes of a batch's manifest one page reads (about 4,000 rows); the rest is counted."""
MANIFEST_NAME = "manifest.jsonl"
"""The only file name a page reads as a manifest: an XCom cannot make the API server read any file."""
TIKey = tuple[str, int]  # task id, map index (within one run)
_RANK = {"success": 3, "failed": 2, "running": 1}
"""Which record a page prefers: a final one over one taken while the diffusion still ran."""


class NoDiffusion(Exception):
    """The task instance exists but holds no diffusion (yet): the page says so."""

    def __init__(self, task: TaskInfo) -> None:
        super().__init__(task.label)
        self.task = task


def _state(value: object) -> str | None:
    return str(getattr(value, "value", value)) if value else None


def _task_info(session: Session, dag_id: str, run_id: str, task_id: str, map_index: int) -> TaskInfo | None:
    found = _task_instances(session, dag_id, run_id, task_id, map_index)
    return found[0][0] if found else None


def _task_instances(
    session: Session, dag_id: str, run_id: str, task_id: str | None = None, map_index: int | None = None
) -> list[tuple[TaskInfo, str]]:
    """The run's task instances (or one task's, or one), each with its operator's name."""
    query = select(
        TaskInstance.task_id,
        TaskInstance.map_index,
        TaskInstance.state,
        TaskInstance.start_date,
        TaskInstance.end_date,
        TaskInstance.operator,
        TaskInstance.custom_operator_name,
    ).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
    if task_id is not None:
        query = query.where(TaskInstance.task_id == task_id)
    if map_index is not None:
        query = query.where(TaskInstance.map_index == map_index)
    return [
        (
            TaskInfo(
                dag_id, run_id, row.task_id, row.map_index, _state(row.state), row.start_date, row.end_date
            ),
            str(row.custom_operator_name or row.operator or ""),
        )
        for row in session.execute(query.order_by(TaskInstance.task_id, TaskInstance.map_index)).all()
    ]


def _run_xcoms(
    session: Session, dag_id: str, run_id: str, return_values_of: Iterable[str] = ()
) -> dict[TIKey, dict[str, Any]]:
    """
    The ``diffusion``, ``diffusion_id`` and ``error`` XComs of every task instance of the run.

    :param return_values_of: tasks whose ``return_value`` is read too (downloads and batches only:
        another task's return value may be large and is none of the gallery's business).
    """
    tasks = set(return_values_of)
    wanted = or_(
        XComModel.key.in_(XCOM_KEYS), and_(XComModel.key == "return_value", XComModel.task_id.in_(tasks))
    )
    rows = session.execute(
        select(XComModel.task_id, XComModel.map_index, XComModel.key, XComModel.value).where(
            XComModel.dag_id == dag_id, XComModel.run_id == run_id, wanted
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
    # The API documents no prompt or model in a record: take the ones the tasks rendered.
    rendered = _rendered(session, dag_id, run_id, related)
    for name, value in found.items():
        found[name] = value or _first_text(rendered.get(key, {}).get(name) for key in related)
    parameters = next(
        (rendered[key]["parameters"] for key in related if rendered.get(key, {}).get("parameters")), None
    )
    return GalleryView(
        task=task,
        diffusion_id=diffusion_id,
        record=best,
        record_from=_label(best_key) if best_key != own_key else None,
        prompt=found["prompt"],
        model=found["model"],
        parameters=parameters,
        error=own.get("error"),
    )


# ------------------------------------------------------------------------------ a whole run
def _kind(operator: str, xcoms: Mapping[str, Any]) -> str | None:
    """What a task instance is to the gallery: ``diffusion``, ``download``, ``batch``; None: not ours."""
    if operator in DOWNLOAD_OPERATORS:
        return "download"
    if operator in BATCH_OPERATORS or (
        isinstance(xcoms.get("return_value"), Mapping) and "manifest" in xcoms["return_value"]
    ):
        return "batch"
    if operator in DIFFUSION_OPERATORS or _diffusion_id(xcoms) or "error" in xcoms:
        return "diffusion"
    return None


def read_manifest(uri: object, conn_id: object = None) -> tuple[bytes, bool] | str:
    """
    The first ``MANIFEST_BYTES`` of a batch's manifest, and whether that is all of it; or why not.

    Only a file named ``manifest.jsonl`` is read, through Airflow's object storage (the batch's
    ``results_conn_id`` when it rendered one).
    """
    if not isinstance(uri, str) or not uri.rstrip().endswith("/" + MANIFEST_NAME) or len(uri) > 4096:
        return "the batch's manifest is not a manifest.jsonl URI"
    try:
        from airflow.sdk import ObjectStoragePath

        path = ObjectStoragePath(
            uri.strip(), conn_id=conn_id if isinstance(conn_id, str) and conn_id else None
        )
        with path.open("rb") as stream:
            data = stream.read(MANIFEST_BYTES + 1)
    except Exception as exc:  # any storage error: the page says it, the rest of the run still shows
        return f"the batch's manifest could not be read ({type(exc).__name__})"
    return data[:MANIFEST_BYTES], len(data) <= MANIFEST_BYTES


def _images(record: Mapping[str, Any]) -> tuple[tuple[object, ...], int]:
    images = read_images(record)
    return images.urls[:CARD_IMAGES], images.total


def run_items(
    session: Session, dag_id: str, run_id: str, task_id: str | None = None
) -> tuple[list[Item], list[str]]:
    """
    Every item of a run (or of one of its tasks), in task then map index order; and notes on what
    could not be read.
    """
    instances = _task_instances(session, dag_id, run_id, task_id)
    operators = {info.task_id: operator for info, operator in instances}
    xcoms = _run_xcoms(
        session,
        dag_id,
        run_id,
        {task for task, operator in operators.items() if operator in DOWNLOAD_OPERATORS | BATCH_OPERATORS},
    )
    if task_id is not None:  # a sensor of another task may hold this task's final record
        xcoms = {**_run_xcoms(session, dag_id, run_id), **xcoms}
    kinds = {
        (info.task_id, info.map_index): kind
        for info, operator in instances
        if (kind := _kind(operator, xcoms.get((info.task_id, info.map_index), {}))) is not None
    }
    rendered = _rendered(session, dag_id, run_id, list(kinds))
    best: dict[str, Mapping[str, Any]] = {}  # the most complete record of each diffusion in the run
    for found in xcoms.values():
        record, diffusion_id = _record(found), _diffusion_id(found)
        if diffusion_id and _rank(record) >= _rank(best.get(diffusion_id, {})):
            best[diffusion_id] = record
    items: list[Item] = []
    notes: list[str] = []
    for info, _ in instances:
        key: TIKey = (info.task_id, info.map_index)
        kind = kinds.get(key)
        if kind is None:
            continue
        own, fields = xcoms.get(key, {}), rendered.get(key, {})
        label = _label(key)
        if kind == "download":
            items.append(Item(info, "download", label, files=own.get("return_value"), error=own.get("error")))
            continue
        if kind == "batch":
            result = own.get("return_value")
            if not isinstance(result, Mapping):
                items.append(Item(info, "task", label, error=own.get("error")))
                continue
            read = read_manifest(result.get("manifest"), fields.get("results_conn_id"))
            if isinstance(read, str):
                notes.append(f"{label}: {read}")
                items.append(Item(info, "task", label, error=own.get("error")))
                continue
            rows, note = manifest_items(info, *read)
            items.extend(rows)
            if note:
                notes.append(f"{label}: {note}")
            continue
        diffusion_id = _diffusion_id(own)
        record = best.get(diffusion_id, _record(own)) if diffusion_id else _record(own)
        urls, total = _images(record)
        status = record.get("status") if record else None
        items.append(
            Item(
                info,
                "diffusion" if diffusion_id else "task",
                label,
                diffusion_id=diffusion_id or None,
                status=status,
                prompt=_first_text([record.get("prompt"), fields.get("prompt")]),
                model=_first_text([record.get("model"), fields.get("model")]),
                parameters=fields.get("parameters") or None,
                image_urls=urls,
                image_total=total,
                error=own.get("error")
                or (_rules.failure_message(record) if _status_outcome(status) == "failed" else None),
                finished_at=record.get("finishedAt"),
            )
        )
    # Tasks in the order they started (a download after the diffusions it saves), then by id.
    first: dict[str, float] = {}
    for item in items:
        started = item.task.start_date.timestamp() if item.task.start_date is not None else math.inf
        first[item.task.task_id] = min(first.get(item.task.task_id, math.inf), started)
    items.sort(key=lambda item: (first[item.task.task_id], item.task.task_id))  # stable: map index order
    return items, notes


def _status_outcome(status: object) -> str | None:
    return _rules.classify(status) if isinstance(status, str) else None


def _run_info(session: Session, dag_id: str, run_id: str) -> TaskInfo | None:
    row = session.execute(
        select(DagRun.state, DagRun.start_date, DagRun.end_date).where(
            DagRun.dag_id == dag_id, DagRun.run_id == run_id
        )
    ).first()
    if row is None:
        return None
    return TaskInfo(dag_id, run_id, "", -1, _state(row.state), row.start_date, row.end_date)


def load_run(
    session: Session, dag_id: str, run_id: str, page: int = 1, task_id: str | None = None
) -> RunView | None:
    """One page of a run's gallery (of one task's, with ``task_id``); None if there is no such run."""
    run = _run_info(session, dag_id, run_id)
    if run is None:
        return None
    items, notes = run_items(session, dag_id, run_id, task_id)
    pages = max(1, math.ceil(len(items) / ITEMS_PER_PAGE))
    page = min(page, pages)
    shown = items[(page - 1) * ITEMS_PER_PAGE : page * ITEMS_PER_PAGE]
    totals: dict[str, int] = {}
    for item in items:
        totals[item.task.task_id] = totals.get(item.task.task_id, 0) + 1
    grouped: dict[str, list[Item]] = {}
    for item in shown:
        grouped.setdefault(item.task.task_id, []).append(item)
    groups = tuple(TaskGroup(task, tuple(found), totals[task]) for task, found in grouped.items())
    diffusions = sum(1 for item in items if item.kind != "download")
    return RunView(run, groups, page, pages, len(items), task_id, tuple(notes), diffusions)


def load_history(session: Session, dag_id: str) -> HistoryView:
    """The DAG's ``HISTORY_RUNS`` most recent runs, each with its first ``HISTORY_ITEMS_PER_RUN`` items."""
    rows = session.execute(
        select(DagRun.run_id)
        .where(DagRun.dag_id == dag_id)
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        .limit(HISTORY_RUNS)
    ).all()
    runs = []
    for row in rows:
        run = _run_info(session, dag_id, row.run_id)
        if run is None:  # deleted meanwhile
            continue
        items, _ = run_items(session, dag_id, row.run_id)
        images = [item for item in items if item.kind != "download"]  # images and prompts, not files
        runs.append((run, tuple(images[:HISTORY_ITEMS_PER_RUN]), len(images)))
    return HistoryView(dag_id, tuple(runs))


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
    access = [
        Depends(requires_access_dag("GET", DagAccessEntity.TASK_INSTANCE)),
        Depends(requires_access_dag("GET", DagAccessEntity.XCOM)),
    ]

    # response_model=None: a page or, for a mapped task's parent, a redirect (no JSON model).
    @app.get(GALLERY_ROUTE, response_class=HTMLResponse, response_model=None, dependencies=access)
    def gallery(
        dag_id: str, run_id: str, task_id: str, session: SessionDep, map_index: str = "-1"
    ) -> HTMLResponse | RedirectResponse:
        index = parse_map_index(map_index)
        if index is None:
            return _html(render_message("Bad map index", "map_index must be an integer, -1 or more."), 400)
        found = _task_instances(session, dag_id, run_id, task_id)
        own = [(info, operator) for info, operator in found if info.map_index == index]
        if not own and index == -1 and found:
            # A mapped task's parent (its tab shows {MAP_INDEX} unreplaced): all its map indexes.
            return _to_task_in_run(dag_id, run_id, task_id)
        if own and own[0][1] in DOWNLOAD_OPERATORS:
            xcoms = _run_xcoms(session, dag_id, run_id, [task_id]).get((task_id, index), {})
            return _html(render_files(FilesView(own[0][0], xcoms.get("return_value"), xcoms.get("error"))))
        if own and own[0][1] in BATCH_OPERATORS:
            return _to_task_in_run(dag_id, run_id, task_id)
        try:
            view = load_view(session, dag_id, run_id, task_id, index)
        except NoDiffusion as missing:
            task = missing.task
            error = _run_xcoms(session, dag_id, run_id).get((task_id, index), {}).get("error")
            if task.state in FAILED_STATES:
                return _html(render_gallery(GalleryView(task=task, diffusion_id="", error=error)))
            if task.finished:
                message = "This task instance ended without a GetImage.io diffusion (it submitted none)."
                return _html(render_message("No diffusion", message, task), 404)
            message = "This task instance has not submitted a diffusion yet."
            return _html(render_message("Not submitted yet", message, task, refresh=True))
        if view is None:
            label = TaskInfo(dag_id, run_id, task_id, index).label
            return _html(
                render_message("No such task instance", f"Airflow has no task instance {label}."), 404
            )
        return _html(render_gallery(view))

    @app.get(RUN_ROUTE, response_class=HTMLResponse, dependencies=access)
    def run_gallery(
        dag_id: str, run_id: str, session: SessionDep, page: str = "1", task_id: str | None = None
    ) -> HTMLResponse:
        number = parse_page(page)
        if number is None:
            return _html(render_message("Bad page", "page must be an integer, 1 or more."), 400)
        view = load_run(session, dag_id, run_id, number, task_id or None)
        if view is None:
            return _html(render_message("No such DAG run", f"Airflow has no run {run_id} of {dag_id}."), 404)
        return _html(render_run(view))

    @app.get(HISTORY_ROUTE, response_class=HTMLResponse, dependencies=access)
    def history(dag_id: str, session: SessionDep) -> HTMLResponse:
        return _html(render_history(load_history(session, dag_id)))

    return app


def _to_task_in_run(dag_id: str, run_id: str, task_id: str) -> RedirectResponse:
    """From ``gallery/<dag>/<run>/<task>`` to the run's page of that task, as a relative URL."""
    location = "../../../" + run_path(dag_id, run_id).removeprefix(GALLERY_URL_PREFIX.strip("/") + "/")
    return RedirectResponse(
        f"{location}?task_id={quote(task_id, safe='')}", status_code=307, headers=dict(SECURITY_HEADERS)
    )
