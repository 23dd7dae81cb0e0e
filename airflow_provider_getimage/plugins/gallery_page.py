"""
The image gallery page: where it lives and what it shows, as pure functions (no I/O, no Airflow).

The API server plugin (:mod:`~airflow_provider_getimage.plugins.gallery_app`) reads a task
instance's XComs and hands them here; the extra link (:mod:`~airflow_provider_getimage.links.getimage`)
builds the same URL. Everything shown is escaped: a prompt is user text and a record comes from a
remote service, so either may hold markup. The only script a page runs is the module's own
(:data:`_SCRIPT`: local times, pixel sizes, the UI's theme), allowed by its hash in the
Content-Security-Policy, so an escaping mistake cannot become a script.

Four pages: one task instance (:func:`render_gallery`), a download task's files
(:func:`render_files`), a whole DAG run grouped by task and paged (:func:`render_run`), and a DAG's
recent runs (:func:`render_history`). Each is bounded by ``PAGE_LIMIT`` whatever it is given.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from airflow_provider_getimage import _rules

if TYPE_CHECKING:
    from collections.abc import Iterable
    from re import Match

__all__ = [
    "GALLERY_ROUTE",
    "GALLERY_URL_PREFIX",
    "HISTORY_ROUTE",
    "RUN_ROUTE",
    "SECURITY_HEADERS",
    "FilesView",
    "GalleryView",
    "HistoryView",
    "Item",
    "RunView",
    "TaskGroup",
    "TaskInfo",
    "gallery_path",
    "gallery_url",
    "history_path",
    "manifest_items",
    "parse_map_index",
    "parse_page",
    "render_files",
    "render_gallery",
    "render_history",
    "render_message",
    "render_run",
    "run_path",
    "safe_image_url",
]

GALLERY_URL_PREFIX = "/getimage"
"""Where the plugin mounts its FastAPI app in the API server (outside Airflow's reserved prefixes)."""
GALLERY_ROUTE = "/gallery/{dag_id}/{run_id}/{task_id}"
"""The page of one task instance, inside the plugin app; ``?map_index=N`` for a mapped one."""
RUN_ROUTE = "/run/{dag_id}/{run_id}"
"""The page of a whole DAG run, inside the plugin app; ``?page=N`` pages it."""
HISTORY_ROUTE = "/dag/{dag_id}"
"""The page of a DAG's recent runs, inside the plugin app."""
ITEMS_PER_PAGE = 24
"""Diffusions (task instances, batch items, downloads) on one page of a run's gallery."""
HISTORY_RUNS = 10
"""Most recent runs a DAG's history shows."""
HISTORY_ITEMS_PER_RUN = 6
"""Diffusions shown for each run of a DAG's history (the run's own page shows them all)."""
CARD_TEXT_LIMIT = 300
"""Longest prompt or failure reason on a card of a run or history page."""
CARD_FIELD_LIMIT = 120
"""Longest short field on a card (id, model, status, a parameter's value)."""
CARD_IMAGES = 16
"""Most thumbnails one card shows; the task instance's own page shows up to ``MAX_THUMBNAILS``."""
CARD_FILES = 5
"""Most stored files one card lists (the download task's own page lists up to ``MAX_THUMBNAILS``)."""
PARAMETERS_SHOWN = 12
"""Most request parameters a page lists; the rest are counted."""
CARDS_BUDGET = 200 * 1024
"""Most bytes the cards of a run or history page take; the cards past it are counted, not shown."""
MAP_INDEX_PLACEHOLDER = "{MAP_INDEX}"
"""What the UI leaves in an external view's ``href`` on the page of an unmapped task instance."""
REFRESH_SECONDS = 10
"""How often a page of an unfinished diffusion reloads itself (a meta refresh: the page has no script)."""
TEXT_LIMIT = 10_000
"""Longest prompt shown; a longer one is cut, with a note, so a page stays readable and small."""
MESSAGE_LIMIT = 2_000
"""Longest failure reason shown: the service's free text, cut like a prompt."""
FIELD_LIMIT = 250
"""Longest short field shown (id, model, status, times, task state): Airflow's own id length."""
ALT_ID_LIMIT = 64
"""How much of the diffusion id each thumbnail's ``alt`` repeats: shown in full once, not per image."""
MAX_THUMBNAILS = 100
"""Most images one page shows; the rest are counted ("and 412 more images")."""
URL_LIMIT = 4_096
"""Longest image URL a page loads; a longer one is listed as text, cut (signed URLs stay well under)."""
THUMBNAILS_BUDGET = 96 * 1024
"""Most bytes the thumbnails take: each URL is written three times, so long URLs count against it."""
PAGE_LIMIT = 256 * 1024
"""
The most a gallery page weighs, in UTF-8 bytes, whatever the record holds.

By construction: a shown character takes 6 bytes at the most once escaped, so the prompt
(``TEXT_LIMIT``) and the reason (``MESSAGE_LIMIT``) take 72 kB, a dozen short fields
(``FIELD_LIMIT``) 18 kB, the thumbnails ``THUMBNAILS_BUDGET`` and the rest (style, notes) 4 kB:
about 190 kB. ``tests/plugins/test_gallery_bounds.py`` renders hostile records against it.
"""

_STYLE = """
:root { color-scheme: light; --fg: oklch(0.18 0.03 251); --muted: oklch(0.45 0.055 251);
  --line: oklch(0.915 0.01 253); --card: oklch(0.985 0.004 253); --bg: #fff;
  --link: oklch(0.469 0.084 257.657); --ok: #15803d; --bad: #b91c1c; --run: #a16207; }
:root[data-theme="dark"] { color-scheme: dark; --fg: oklch(0.955 0.006 253); --muted: oklch(0.75 0.025 252);
  --line: oklch(0.35 0.045 251); --card: oklch(0.18 0.03 251); --bg: oklch(0.11 0.025 251);
  --link: oklch(0.705 0.066 256.378); --ok: #4ade80; --bad: #f87171; --run: #facc15; }
@media (prefers-color-scheme: dark) { :root:not([data-theme]) { color-scheme: dark;
  --fg: oklch(0.955 0.006 253); --muted: oklch(0.75 0.025 252); --line: oklch(0.35 0.045 251);
  --card: oklch(0.18 0.03 251); --bg: oklch(0.11 0.025 251); --link: oklch(0.705 0.066 256.378);
  --ok: #4ade80; --bad: #f87171; --run: #facc15; } }
body { font: 14px/1.5 Inter, -apple-system, BlinkMacSystemFont, "Segoe UI", Helvetica, Arial, sans-serif;
  color: var(--fg); background: var(--bg); margin: 0; padding: 16px 20px; }
a { color: var(--link); }
h1 { font-size: 18px; font-weight: 600; margin: 0 0 4px; }
h2 { font-size: 15px; font-weight: 600; margin: 20px 0 8px; }
h3 { font-size: 14px; font-weight: 600; margin: 0 0 6px; word-break: break-all; }
nav { display: flex; flex-wrap: wrap; gap: 4px 16px; margin: 0 0 12px; font-size: 13px; }
.where { color: var(--muted); margin: 0 0 16px; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 16px; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
.prompt { white-space: pre-wrap; background: var(--card); border: 1px solid var(--line);
  border-radius: 6px; padding: 8px 10px; margin: 0 0 16px; }
.status { font-weight: 600; }
.status.success { color: var(--ok); } .status.failed { color: var(--bad); }
.status.running { color: var(--run); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
.grid.small { grid-template-columns: repeat(auto-fill, minmax(120px, 1fr)); gap: 8px; }
figure { margin: 0; background: var(--card); border: 1px solid var(--line); border-radius: 6px;
  padding: 6px; }
figure img { display: block; width: 100%; height: auto; border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; word-break: break-all; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; margin: 0 0 12px; }
.card .prompt { margin: 0 0 8px; padding: 6px 8px; }
.card dl { font-size: 13px; margin: 0 0 8px; }
.files { margin: 0 0 8px; padding-left: 20px; word-break: break-all; }
.pager { display: flex; gap: 16px; align-items: center; margin: 16px 0; }
.px { white-space: nowrap; }
.note { color: var(--muted); }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

_SCRIPT = """
(function () {
  var root = document.documentElement, dark = null;
  try {
    if (window.parent !== window) {
      dark = window.parent.document.documentElement.classList.contains("dark");
    }
  } catch (e) { dark = null; }
  if (dark === null) {
    var theme = null;
    try { theme = window.localStorage.getItem("theme"); } catch (e) { theme = null; }
    if (theme === "dark" || theme === "light") { dark = theme === "dark"; }
  }
  if (dark !== null) { root.setAttribute("data-theme", dark ? "dark" : "light"); }
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when.getTime())) { el.title = el.textContent; el.textContent = when.toLocaleString(); }
  });
  document.querySelectorAll("img[data-px]").forEach(function (img) {
    var out = document.getElementById(img.getAttribute("data-px"));
    function show() {
      if (out && img.naturalWidth) {
        out.textContent = img.naturalWidth + " \u00d7 " + img.naturalHeight + " px";
      }
    }
    if (img.complete) { show(); } else { img.addEventListener("load", show); }
  });
})();
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    "img-src http: https:; "  # the images live on the service's (or the emulator's) host
    f"style-src 'sha256-{_STYLE_HASH}'; "  # only our own stylesheet: no inline style from a record
    # Only our own script (local times, pixel sizes, the UI's light or dark theme): nothing a record
    # holds can run, even through an escaping mistake.
    f"script-src 'sha256-{_SCRIPT_HASH}'; "
    "base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'self'"  # the Airflow UI shows the page in a task instance tab (same origin)
)
SECURITY_HEADERS: Mapping[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "SAMEORIGIN",
    # Image hosts need not learn the Airflow URL (it names the DAG, run and task).
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff\ud800-\udfff]"
)
"""Characters a page shows as escapes: controls, bidi overrides and zero-width marks can disguise
text, and a lone surrogate (valid JSON, ``"\\ud800"``) cannot be encoded as UTF-8 at all."""


def _escape_char(match: Match[str]) -> str:
    return match.group().encode("unicode_escape").decode("ascii")


# ----------------------------------------------------------------------------------------- URLs
def gallery_path(dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """
    The gallery page of one task instance, relative to the API server's root (no leading slash).

    Each id is one percent-encoded path segment, so a run id's ``:`` and ``+`` survive.

    :param dag_id: the DAG of the task instance.
    :param run_id: its DAG run.
    :param task_id: its task.
    :param map_index: its map index; ``-1`` (unmapped) adds no query string.
    """
    segments = "/".join(quote(str(part), safe="", errors="replace") for part in (dag_id, run_id, task_id))
    path = f"{GALLERY_URL_PREFIX.strip('/')}/gallery/{segments}"
    return path if map_index < 0 else f"{path}?map_index={int(map_index)}"


def gallery_url(base_url: str | None, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> str:
    """
    The gallery page's URL under the API server's ``[api] base_url``.

    With a base URL (``https://airflow.example.com/sub/``) the URL is absolute, so it works from
    the UI and for REST API clients alike; without one it is an absolute path (``/getimage/...``),
    which the browser resolves against the UI's own origin.

    :param base_url: ``[api] base_url``, or None/empty when it is not set.
    """
    base = (base_url or "").strip().rstrip("/")
    return f"{base}/{gallery_path(dag_id, run_id, task_id, map_index)}"


def run_path(dag_id: str, run_id: str, page: int = 1) -> str:
    """The gallery of a whole DAG run, relative to the API server's root (no leading slash)."""
    segments = "/".join(quote(str(part), safe="", errors="replace") for part in (dag_id, run_id))
    path = f"{GALLERY_URL_PREFIX.strip('/')}/run/{segments}"
    return path if page <= 1 else f"{path}?page={int(page)}"


def history_path(dag_id: str) -> str:
    """The history of a DAG's recent runs, relative to the API server's root (no leading slash)."""
    return f"{GALLERY_URL_PREFIX.strip('/')}/dag/{quote(str(dag_id), safe='', errors='replace')}"


def ui_path(dag_id: str, run_id: str | None = None, task_id: str | None = None, map_index: int = -1) -> str:
    """
    A page of Airflow's own UI (a DAG, a run, a task instance), relative to its root.

    The gallery links back to it, so a user who followed the extra link into this page finds the
    way back to the task instance.
    """
    path = f"dags/{quote(str(dag_id), safe='', errors='replace')}"
    if run_id is not None:
        path += f"/runs/{quote(str(run_id), safe='', errors='replace')}"
        if task_id is not None:
            path += f"/tasks/{quote(str(task_id), safe='', errors='replace')}"
            if map_index >= 0:
                path += f"/mapped/{int(map_index)}"
    return path


def parse_page(value: str | None) -> int | None:
    """The ``page`` query parameter as an int of 1 or more (empty means 1); None when it is not one."""
    text = (value or "").strip()
    if not text:
        return 1
    if not text.isdigit() or len(text) > 9:
        return None
    number = int(text)
    return number if number >= 1 else None


def parse_map_index(value: str | None) -> int | None:
    """
    The ``map_index`` query parameter as an int; None when it is not one.

    Empty and the UI's unreplaced ``{MAP_INDEX}`` placeholder (the tab of an unmapped task
    instance) mean -1.
    """
    text = (value or "").strip()
    if text in ("", MAP_INDEX_PLACEHOLDER):
        return -1
    try:
        number = int(text)
    except ValueError:
        return None
    return number if number >= -1 else None


def safe_image_url(url: object) -> str | None:
    """
    ``url`` if a page may load and link it: ``http``/``https`` with a host; else None.

    A record may hold anything under ``images``: a ``javascript:`` or ``data:`` URL must never
    become a link.
    """
    if not isinstance(url, str) or not url or any(ord(char) < 33 or ord(char) == 127 for char in url):
        return None
    if _INVISIBLE.search(url):  # a lone surrogate cannot even be encoded into the page
        return None
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.hostname else None


# ------------------------------------------------------------------------------------ the data
@dataclass(frozen=True)
class TaskInfo:
    """The task instance a page is about, as read from the metadata database."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    state: str | None = None
    start_date: datetime | None = None
    end_date: datetime | None = None

    @property
    def label(self) -> str:
        """``dag / run / task`` (``task[3]`` when mapped), for headings."""
        task = self.task_id if self.map_index < 0 else f"{self.task_id}[{self.map_index}]"
        return f"{self.dag_id} / {self.run_id} / {task}"

    @property
    def finished(self) -> bool:
        """Whether the task instance ended (it will push no more XCom in this try)."""
        return self.state in ("success", "failed", "skipped", "upstream_failed", "removed")


@dataclass(frozen=True)
class GalleryView:
    """
    Everything one gallery page shows.

    :param task: the task instance the page is about.
    :param diffusion_id: its diffusion.
    :param record: the most complete record known for that diffusion (the final one when any task
        of the run has it); may be empty.
    :param record_from: the task (``task`` or ``task[3]``) whose XCom holds ``record``, when it is
        another task instance of the run (the sensor that waited for this operator's diffusion).
    :param prompt: the prompt, from the record or the task's rendered fields; None when unknown.
    :param model: the model, likewise.
    :param parameters: the request's extra generation parameters, from the rendered fields.
    :param error: why the task failed, as it recorded it (XCom ``error``), when it failed.
    """

    task: TaskInfo
    diffusion_id: str
    record: Mapping[str, Any] = field(default_factory=dict)
    record_from: str | None = None
    prompt: str | None = None
    model: str | None = None
    parameters: object = None
    error: object = None


# ----------------------------------------------------------------------------------- rendering
def _e(value: object) -> str:
    """Escape for text and quoted attribute values alike."""
    return html.escape(str(value), quote=True)


def _text(text: str, limit: int) -> str:
    """
    ``text`` cut to ``limit`` characters, with a note of the rest, its invisible characters escaped.

    Cut before anything else, so a huge field costs no more than its shown part; each shown
    character then takes 6 bytes at the most once escaped (``&quot;``, ``\\u202e``).
    """
    shown = _INVISIBLE.sub(_escape_char, text[:limit])
    return shown if len(text) <= limit else f"{shown}… ({len(text) - limit} more characters not shown)"


def _kind(value: object) -> str:
    """What a JSON value is, in words, for a note about a field of the wrong type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _field(value: object, limit: int = FIELD_LIMIT) -> str:
    """A field as escaped, cut text; a note naming the type when it is not text (records are untrusted)."""
    if isinstance(value, str):
        return _e(_text(value, limit))
    return f'<span class="note">{_e(_kind(value))}, not text (not shown)</span>'


def _parse_time(value: object) -> datetime | None:
    """An ISO 8601 timestamp as the API writes it (``2023-01-01T00:00:00.000Z``); None if not one."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None  # a naive time cannot be compared


def format_duration(seconds: float) -> str:
    """``0.8 s``, ``42.0 s``, ``3 min 05 s``, ``2 h 01 min``."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def diffusion_duration(record: Mapping[str, Any]) -> float | None:
    """Seconds from ``createdAt`` to ``finishedAt``; None unless both are timestamps in order."""
    created, finished = _parse_time(record.get("createdAt")), _parse_time(record.get("finishedAt"))
    if created is None or finished is None or finished < created:
        return None
    return (finished - created).total_seconds()


def _page(title: str, body: str, *, refresh: bool = False) -> str:
    meta_refresh = f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">' if refresh else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<meta name="referrer" content="no-referrer">'
        f"{meta_refresh}<title>{_e(title)}</title><style>{_STYLE}</style></head>\n"
        f"<body>\n{body}\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def _time(value: object, limit: int = FIELD_LIMIT) -> str:
    """
    A timestamp as ``<time>``: UTC in the page, the viewer's local time once the script ran.

    Not a timestamp: the field as it is (cut, escaped), or a note of its type.
    """
    if isinstance(value, datetime):
        parsed: datetime | None = value if value.tzinfo is not None else None
    else:
        parsed = _parse_time(value)
    if parsed is None:
        return _field(value, limit) if not isinstance(value, datetime) else _e(value.isoformat())
    utc = parsed.astimezone(UTC)
    shown = utc.strftime("%Y-%m-%d %H:%M:%S UTC")
    return f'<time datetime="{_e(utc.isoformat())}">{_e(shown)}</time>'


HREF_LIMIT = 4 * 3 * FIELD_LIMIT
"""Longest link of the page's own (ids of Airflow's length, percent-encoded); a longer one is left out."""


def _nav(links: list[tuple[str, str]]) -> str:
    """Links to Airflow's UI and the other gallery pages; ``target=_top`` leaves the UI's tab frame."""
    items = "".join(
        f'<a href="{_e(href)}" target="_top">{_e(text)}</a>'
        for href, text in links
        if len(href) <= HREF_LIMIT
    )
    return f"<nav>{items}</nav>"


def _task_nav(task: TaskInfo) -> str:
    """From a task instance's page: back to it in the UI, the run's gallery, the DAG's history."""
    up = "../" * 5  # getimage/gallery/<dag>/<run>/<task>: five segments below the root
    return _nav(
        [
            (
                up + ui_path(task.dag_id, task.run_id, task.task_id, task.map_index),
                "← Task instance in Airflow",
            ),
            (up + run_path(task.dag_id, task.run_id), "All images of this run"),
            (up + history_path(task.dag_id), "Recent runs of this DAG"),
        ]
    )


def _parameter_rows(parameters: object, limit: int = FIELD_LIMIT) -> list[tuple[str, str]]:
    """The request's extra parameters, one row each (at most ``PARAMETERS_SHOWN``), cut and escaped."""
    if parameters is None or parameters == {}:
        return []
    if not isinstance(parameters, Mapping):
        return [
            ("Parameters", _field(parameters if isinstance(parameters, str) else _kind(parameters), limit))
        ]
    rows: list[tuple[str, str]] = []
    for number, (name, value) in enumerate(parameters.items()):
        if number == PARAMETERS_SHOWN:
            rows.append(("…", _e(f"{len(parameters) - number} more parameters not shown")))
            break
        shown = value if isinstance(value, str) else _json(value, limit)
        rows.append((_text(str(name), 64), _field(shown, limit)))
    return rows


def _json(value: object, limit: int) -> str:
    """A JSON value as compact text, built no longer than needed (a value may be huge)."""
    try:
        text = json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError, RecursionError):
        return _kind(value)
    return text[: limit + 1] if len(text) > limit else text


def _rows(items: list[tuple[str, str]]) -> str:
    """A definition list; values are already escaped markup."""
    return "<dl>" + "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in items) + "</dl>"


FAILED_STATES = ("failed", "upstream_failed")
"""Task states whose page says why the task did not give images."""


def _task_rows(task: TaskInfo) -> list[tuple[str, str]]:
    rows = [("Task state", _field(task.state or "none"))]
    if task.start_date is not None:
        rows.append(("Task started", _time(task.start_date)))
    if task.start_date is not None and task.end_date is not None:
        seconds = (task.end_date - task.start_date).total_seconds()
        rows.append(("Task ran", _e(format_duration(seconds))))
    return rows


def _error_text(error: object) -> str | None:
    """The reason a task recorded (XCom ``error``: text or ``{"message": ...}``); None if none."""
    if isinstance(error, Mapping):
        error = error.get("message")
    return error if isinstance(error, str) and error.strip() else None


def _task_failure(task: TaskInfo, error: object, limit: int = MESSAGE_LIMIT) -> str:
    """Why a failed task gave no images: its recorded reason, else where to look."""
    reason = _error_text(error)
    if task.state == "upstream_failed":
        return '<p class="status failed">The task did not run: a task upstream of it failed.</p>'
    if reason is None:
        return (
            '<p class="status failed">The task failed without recording a reason here: '
            "its log in Airflow says why.</p>"
        )
    return f'<p class="status failed">The task failed: {_field(reason, limit)}</p>'


def render_gallery(view: GalleryView) -> str:
    """
    The HTML page of one task instance's diffusion: thumbnails, prompt, model, id, status, timings.

    A diffusion that is not finished yet shows its status and reloads itself every
    ``REFRESH_SECONDS``; a failed one shows the service's reason. Every field is cut to its limit
    and a field of the wrong type is a note: the record comes from a remote service.
    """
    record = view.record if isinstance(view.record, Mapping) else {}
    status_markup, outcome = _status(record.get("status"))
    images = read_images(record)

    rows: list[tuple[str, str]] = [
        ("Diffusion id", f"<code>{_field(view.diffusion_id)}</code>"),
        ("Status", status_markup),
        ("Model", _field(view.model) if view.model else '<span class="note">not recorded</span>'),
    ]
    rows.extend(_parameter_rows(view.parameters))
    for label, key in (("Created", "createdAt"), ("Finished", "finishedAt")):
        if record.get(key) is not None:
            rows.append((label, _time(record[key])))
    duration = diffusion_duration(record)
    if duration is not None:
        rows.append(("Generation took", _e(format_duration(duration))))
    rows.extend(_task_rows(view.task))
    if view.record_from:
        rows.append(("Record from", f"task <code>{_field(view.record_from)}</code> of this run"))

    parts = [
        _task_nav(view.task),
        "<h1>GetImage.io images</h1>",
        _where(view.task),
        _rows(rows),
    ]
    if record is not view.record:
        parts.append(
            f'<p class="note">The record is {_e(_kind(view.record))}, not an object: it is not shown.</p>'
        )
    parts.append("<h2>Prompt</h2>")
    parts.append(
        f'<p class="prompt">{_field(view.prompt, TEXT_LIMIT)}</p>'
        if view.prompt
        else '<p class="note">The prompt was not recorded.</p>'
    )
    if outcome == "failed":
        parts.append(f'<p class="status failed">{_field(_rules.failure_message(record), MESSAGE_LIMIT)}</p>')
    elif view.task.state in FAILED_STATES:
        parts.append(_task_failure(view.task, view.error))
    elif outcome == "running":
        parts.append(
            f'<p class="note">Not finished yet: this page reloads itself every {REFRESH_SECONDS} seconds.</p>'
        )
    parts.extend(_images_section(images, _alt_id(view.diffusion_id), finished=outcome == "success"))
    title = f"GetImage.io images · {_text(str(view.task.task_id), FIELD_LIMIT)}"
    return _page(title, "\n".join(parts), refresh=outcome == "running")


Outcome = Literal["success", "failed", "running", "unknown"]


def _status(status: object) -> tuple[str, Outcome]:
    """The status as markup, and what it means; a status that is not text means nothing (no reload)."""
    if status is None:
        return '<span class="status running">unknown</span>', "running"
    if not isinstance(status, str):
        return _field(status), "unknown"
    outcome = _rules.classify(status)
    return f'<span class="status {outcome}">{_field(status)}</span>', outcome


def _where(task: TaskInfo) -> str:
    """The task instance's label under the heading; its three ids cut like any other field."""
    return f'<p class="where">{_e(_text(task.label, 3 * FIELD_LIMIT + 16))}</p>'


def _alt_id(diffusion_id: object) -> str:
    """The diffusion id as each thumbnail's ``alt`` repeats it: short, so images do not multiply it."""
    if not isinstance(diffusion_id, str):
        return ""
    short = _text(diffusion_id[:ALT_ID_LIMIT], ALT_ID_LIMIT)
    return f" of diffusion {short}{'…' if len(diffusion_id) > ALT_ID_LIMIT else ''}"


@dataclass(frozen=True)
class ImageList:
    """
    The ``images`` of a record as a page reads them, whatever they hold.

    :param urls: the first ``MAX_THUMBNAILS`` URLs, in order (any scheme: the page checks each).
    :param total: how many entries hold a URL.
    :param without_url: how many entries hold none (a number, an object with no URL key...).
    :param wrong_type: what ``images`` is when it is neither a list nor one entry (``"a number"``).
    """

    urls: tuple[str, ...] = ()
    total: int = 0
    without_url: int = 0
    wrong_type: str | None = None


def read_images(record: Mapping[str, Any]) -> ImageList:
    """
    Read ``images`` as SPEC 1 normalises it (``_rules.image_urls``, one entry at a time), never raising.

    ``images: 5`` raised a ``TypeError`` in the shared rule; here it is a note. One entry at a time
    also keeps only the URLs a page may show, however long the list.
    """
    images = record.get("images")
    if images is None:
        return ImageList()
    if isinstance(images, str | Mapping):
        images = [images]
    elif not isinstance(images, list | tuple):
        return ImageList(wrong_type=_kind(images))
    urls: list[str] = []
    without_url = 0
    for entry in images:
        found = _rules.image_urls({"images": [entry]})
        if not found:
            without_url += 1
        elif len(urls) < MAX_THUMBNAILS:
            urls.extend(found)
    return ImageList(tuple(urls), len(images) - without_url, without_url)


def _images_section(images: ImageList, alt_id: str, *, finished: bool) -> list[str]:
    """The thumbnails, then counts of what is not shown and notes on what is wrong."""
    parts: list[str] = []
    figures = _thumbnails(images.urls, alt_id)
    if images.total:
        parts.append(f"<h2>Images ({images.total})</h2>")
        parts.append('<div class="grid">' + "".join(figures) + "</div>")
    if images.total > len(figures):
        rest = images.total - len(figures)
        parts.append(
            f'<p class="note">… and {_count(rest, "more image")}, not shown here '
            f"(this page shows the first {len(figures)}).</p>"
        )
    if images.without_url:
        holds = "holds" if images.without_url == 1 else "hold"
        parts.append(
            f'<p class="note">{_count(images.without_url, "entry", "entries")} of the record\'s '
            f"<code>images</code> {holds} no URL (not shown).</p>"
        )
    if images.wrong_type:
        parts.append(
            f'<p class="note">The record\'s <code>images</code> is {_e(images.wrong_type)}, not a list: '
            "no image can be shown.</p>"
        )
    elif finished and not images.total:
        parts.append('<p class="note">The finished record lists no image.</p>')
    return parts


def _thumbnails(
    urls: Iterable[str], alt_id: str, budget: int = THUMBNAILS_BUDGET, prefix: str = "px"
) -> list[str]:
    """One figure per URL while they fit in ``budget`` bytes (a URL is written three times)."""
    figures: list[str] = []
    size = 0
    for index, url in enumerate(urls):
        figure = _figure(alt_id, index, url, f"{prefix}-{index}")
        size += len(figure.encode())
        if size > budget:
            break
        figures.append(figure)
    return figures


def _count(number: int, singular: str, plural: str | None = None) -> str:
    """``1 more image``, ``412 more images``."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _figure(alt_id: str, index: int, url: str, px_id: str = "px") -> str:
    caption = f"Image {index + 1}"
    safe = safe_image_url(url)
    if safe is None:  # shown as text, never loaded or linked
        text = f"{_e(caption)}: not an http(s) URL: <code>{_field(url)}</code>"
        return f"<figure><figcaption>{text}</figcaption></figure>"
    if len(safe) > URL_LIMIT:
        text = (
            f"{_e(caption)}: a URL of {len(safe)} characters, too long to load: <code>{_field(safe)}</code>"
        )
        return f"<figure><figcaption>{text}</figcaption></figure>"
    # The pixel size is the image's own (the API documents none): the page's script reads it.
    return (
        f'<figure><a href="{_e(safe)}" target="_blank" rel="noopener noreferrer">'
        f'<img src="{_e(safe)}" alt="{_e(caption + alt_id)}" decoding="async" data-px="{_e(px_id)}"></a>'
        f'<figcaption><a href="{_e(safe)}" target="_blank" rel="noopener noreferrer">{_e(caption)}</a>'
        f' <span class="px" id="{_e(px_id)}"></span></figcaption></figure>'
    )


def render_message(title: str, message: str, task: TaskInfo | None = None, *, refresh: bool = False) -> str:
    """
    A page with no gallery: an unknown task instance, no diffusion yet, no access.

    :param title: the heading.
    :param message: one sentence saying what is missing and what to do.
    :param task: the task instance, when it exists (its state is shown).
    :param refresh: reload every ``REFRESH_SECONDS`` (the task may still submit its diffusion).
    """
    parts = ["<h1>" + _e(title) + "</h1>"]
    if task is not None:
        parts.append(_where(task))
        parts.append(_rows(_task_rows(task)))
    parts.append(f"<p>{_field(message, MESSAGE_LIMIT)}</p>")
    if refresh:
        parts.append(f'<p class="note">This page reloads itself every {REFRESH_SECONDS} seconds.</p>')
    return _page(title, "\n".join(parts), refresh=refresh)


# ------------------------------------------------------------------ a download task's files
@dataclass(frozen=True)
class FilesView:
    """
    The page of a task that stored images (``GetImageDownloadOperator``): the files it saved.

    :param task: the task instance.
    :param files: its return value, the URIs of the stored files (untrusted: anything may be there).
    :param error: why it failed (XCom ``error``), when it did.
    """

    task: TaskInfo
    files: object = None
    error: object = None


def _file_list(files: object, limit: int, field_limit: int = FIELD_LIMIT) -> list[str]:
    """The stored files as a list (at most ``limit``, the rest counted): text, never a link."""
    if files is None:
        return []
    if isinstance(files, str):
        files = [files]
    if not isinstance(files, list | tuple):
        return [f'<p class="note">The task\'s return value is {_e(_kind(files))}, not a list of files.</p>']
    shown = [f"<li><code>{_field(name, field_limit)}</code></li>" for name in files[:limit]]
    parts = [f'<ol class="files">{"".join(shown)}</ol>'] if shown else []
    if len(files) > limit:
        where = "not listed" if limit >= MAX_THUMBNAILS else "on the task's page"
        parts.append(f'<p class="note">… and {_count(len(files) - limit, "more file")}, {where}.</p>')
    return parts


def render_files(view: FilesView) -> str:
    """The page of a download task: where each image was stored, or why the task failed."""
    files = view.files
    count = len(files) if isinstance(files, list | tuple) else (1 if isinstance(files, str) else 0)
    parts = [
        _task_nav(view.task),
        "<h1>GetImage.io downloads</h1>",
        _where(view.task),
        _rows(_task_rows(view.task)),
    ]
    if view.task.state in FAILED_STATES:
        parts.append(_task_failure(view.task, view.error))
    if files is not None:
        parts.append(f"<h2>Stored files ({count})</h2>")
        parts.extend(_file_list(files, MAX_THUMBNAILS))
    elif not view.task.finished:
        parts.append(
            '<p class="note">No file stored yet: this page reloads itself every '
            f"{REFRESH_SECONDS} seconds.</p>"
        )
    elif view.task.state not in FAILED_STATES:
        parts.append('<p class="note">The task stored no file.</p>')
    title = f"GetImage.io downloads · {_text(str(view.task.task_id), FIELD_LIMIT)}"
    return _page(title, "\n".join(parts), refresh=not view.task.finished)


# ---------------------------------------------------------------- a run's diffusions, as cards
@dataclass(frozen=True)
class Item:
    """
    One diffusion of a run (a task instance, or one item of a batch), or one download task.

    Every field but ``task`` and ``kind`` is untrusted data from XCom, a manifest or the service.

    :param task: the task instance it belongs to.
    :param kind: ``diffusion`` (an operator or sensor), ``batch`` (a row of a batch's manifest),
        ``download`` (stored files), ``task`` (a GetImage task with nothing recorded yet).
    :param label: what the card is called (``generate[2]``, ``batch #5``).
    :param status: the diffusion's status (``FINISHED``...), or the batch row's.
    :param image_urls: the first images (at most ``CARD_IMAGES``; the page checks each URL).
    :param image_total: how many images it has in all.
    :param files: a download's stored files.
    :param error: a failure reason (the service's, the manifest's or the task's).
    """

    task: TaskInfo
    kind: Literal["diffusion", "batch", "download", "task"]
    label: str
    diffusion_id: object = None
    status: object = None
    prompt: object = None
    model: object = None
    parameters: object = None
    image_urls: tuple[object, ...] = ()
    image_total: int = 0
    files: object = None
    error: object = None
    finished_at: object = None


@dataclass(frozen=True)
class TaskGroup:
    """
    The items of one task shown on a page, and how many the task has in all.

    :param task_id: the task.
    :param items: its items on this page, in map index (or batch index) order.
    :param total: its items in the whole run.
    """

    task_id: str
    items: tuple[Item, ...]
    total: int


@dataclass(frozen=True)
class RunView:
    """
    One page of a DAG run's gallery.

    :param run: the run (``task_id`` empty), with its state and dates.
    :param groups: the tasks with items on this page.
    :param page: this page (from 1).
    :param pages: how many pages the run's items fill.
    :param total: the run's items in all.
    :param task_id: when set, the page shows this task only (a mapped task's parent).
    :param notes: what could not be read (a manifest too large, not found...), as sentences.
    :param diffusions: how many of the run's items are diffusions (not downloads).
    """

    run: TaskInfo
    groups: tuple[TaskGroup, ...]
    page: int = 1
    pages: int = 1
    total: int = 0
    task_id: str | None = None
    notes: tuple[str, ...] = ()
    diffusions: int = 0


@dataclass(frozen=True)
class HistoryView:
    """
    A DAG's recent runs, each with its first items.

    :param dag_id: the DAG.
    :param runs: each run (as a ``TaskInfo`` with no task) with its first items and its total.
    """

    dag_id: str
    runs: tuple[tuple[TaskInfo, tuple[Item, ...], int], ...]


def manifest_items(task: TaskInfo, data: bytes, complete: bool) -> tuple[list[Item], str | None]:
    """
    A batch's manifest (JSON Lines, one row per item) read as items, never raising.

    :param task: the batch's task instance.
    :param data: the manifest's first bytes (the caller bounds the read).
    :param complete: whether ``data`` is the whole manifest (else its last, cut line is dropped).
    :returns: the items, and a note when rows were unreadable or the manifest was cut.
    """
    lines = data.split(b"\n")
    if not complete:
        lines = lines[:-1]
    items: list[Item] = []
    bad = 0
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):
            bad += 1
            continue
        if not isinstance(row, Mapping):
            bad += 1
            continue
        index = row.get("index")
        key = row.get("key")
        label = f"item #{index if isinstance(index, int) and not isinstance(index, bool) else number}"
        if isinstance(key, str) and key.strip():
            label += f" ({key[:CARD_FIELD_LIMIT]})"
        urls = row.get("image_urls")
        items.append(
            Item(
                task=task,
                kind="batch",
                label=label,
                diffusion_id=row.get("diffusion_id"),
                status=row.get("status"),
                prompt=row.get("prompt"),
                model=row.get("model"),
                parameters=row.get("parameters"),
                image_urls=tuple(urls[:CARD_IMAGES]) if isinstance(urls, list) else (),
                image_total=len(urls) if isinstance(urls, list) else 0,
                error=row.get("error"),
                finished_at=row.get("finished_at"),
            )
        )
    notes = []
    if bad:
        notes.append(f"{_count(bad, 'row')} of the manifest could not be read")
    if not complete:
        notes.append("the manifest is too large to read whole: its first rows are shown")
    return items, "; ".join(notes) or None


def _item_status(item: Item) -> str:
    if item.kind == "download":
        return _field(item.task.state or "none", CARD_FIELD_LIMIT)
    if item.kind == "task" or item.status is None:
        return f'<span class="status">task {_field(item.task.state or "none", CARD_FIELD_LIMIT)}</span>'
    status = item.status
    if not isinstance(status, str):
        return _field(status, CARD_FIELD_LIMIT)
    lowered = status.strip().lower()
    outcome = "failed" if lowered in ("uncertain", "timeout") else _rules.classify(status)
    return f'<span class="status {outcome}">{_field(status, CARD_FIELD_LIMIT)}</span>'


def _card(item: Item, root: str, prefix: str, *, compact: bool = False) -> str:
    """One item as a card: its title (a link to its task's page), prompt, status, images or files."""
    task = item.task
    href = root + gallery_path(task.dag_id, task.run_id, task.task_id, task.map_index)
    rows: list[tuple[str, str]] = [("Status", _item_status(item))]
    if not compact:
        if item.diffusion_id not in (None, ""):
            rows.append(("Diffusion id", f"<code>{_field(item.diffusion_id, CARD_FIELD_LIMIT)}</code>"))
        if item.model not in (None, ""):
            rows.append(("Model", _field(item.model, CARD_FIELD_LIMIT)))
        rows.extend(_parameter_rows(item.parameters, CARD_FIELD_LIMIT))
        if item.finished_at not in (None, ""):
            rows.append(("Finished", _time(item.finished_at, CARD_FIELD_LIMIT)))
    title = _field(item.label, 2 * CARD_FIELD_LIMIT)
    parts = [
        f'<div class="card"><h3><a href="{_e(href)}">{title}</a></h3>'
        if len(href) <= HREF_LIMIT
        else f'<div class="card"><h3>{title}</h3>'
    ]
    if item.prompt not in (None, ""):
        parts.append(f'<p class="prompt">{_field(item.prompt, CARD_TEXT_LIMIT)}</p>')
    parts.append(_rows(rows))
    error = _error_text(item.error)
    if error is not None:
        parts.append(f'<p class="status failed">{_field(error, CARD_TEXT_LIMIT)}</p>')
    elif item.kind in ("diffusion", "task") and task.state in FAILED_STATES:
        parts.append(_task_failure(task, None, CARD_TEXT_LIMIT))
    if item.kind == "download":
        parts.extend(_file_list(item.files, CARD_FILES))
    urls = [url for url in item.image_urls if isinstance(url, str)]
    limit = 4 if compact else CARD_IMAGES
    if urls:
        figures = _thumbnails(
            urls[:limit],
            f" of {_text(item.label[:ALT_ID_LIMIT], ALT_ID_LIMIT)}",
            THUMBNAILS_BUDGET // 4,
            prefix,
        )
        parts.append('<div class="grid small">' + "".join(figures) + "</div>")
        total = max(item.image_total, len(urls))
        if total > len(figures):
            parts.append(
                f'<p class="note">… and {_count(total - len(figures), "more image")} on the task\'s page.</p>'
            )
    parts.append("</div>")
    return "".join(parts)


def _cards(
    items: Iterable[Item], root: str, prefix: str, budget: list[int], *, compact: bool = False
) -> tuple[str, int]:
    """Cards while they fit in ``budget[0]`` bytes (shared by the whole page); and how many did not fit."""
    shown: list[str] = []
    left_out = 0
    for number, item in enumerate(items):
        if left_out:
            left_out += 1
            continue
        card = _card(item, root, f"{prefix}-{number}", compact=compact)
        size = len(card.encode())
        if size > budget[0]:
            left_out = 1
            continue
        budget[0] -= size
        shown.append(card)
    return "".join(shown), left_out


def _run_rows(run: TaskInfo) -> list[tuple[str, str]]:
    rows = [("Run state", _field(run.state or "none"))]
    if run.start_date is not None:
        rows.append(("Started", _time(run.start_date)))
    if run.start_date is not None and run.end_date is not None:
        rows.append(("Ran", _e(format_duration((run.end_date - run.start_date).total_seconds()))))
    return rows


def render_run(view: RunView) -> str:
    """
    One page of a DAG run's gallery: every GetImage task's items, grouped by task, with a pager.

    Bounded like a task's page: each card is cut to its limits and the cards share ``CARDS_BUDGET``.
    """
    run = view.run
    up = "../" * 4  # getimage/run/<dag>/<run>: four segments below the root
    heading = "GetImage.io images of this run" if view.task_id is None else "GetImage.io images of this task"
    where = f"{run.dag_id} / {run.run_id}" + (f" / {view.task_id}" if view.task_id is not None else "")
    parts = [
        _nav(
            [
                (up + ui_path(run.dag_id, run.run_id), "← DAG run in Airflow"),
                (up + history_path(run.dag_id), "Recent runs of this DAG"),
            ]
        ),
        f"<h1>{_e(heading)}</h1>",
        f'<p class="where">{_e(_text(where, 3 * FIELD_LIMIT + 16))}</p>',
        _rows([*_run_rows(run), ("Diffusions", _e(str(view.diffusions)))]),
    ]
    for note in view.notes[:10]:
        parts.append(f'<p class="note">{_field(note, MESSAGE_LIMIT // 4)}</p>')
    budget = [CARDS_BUDGET]
    left_out = 0
    for number, group in enumerate(view.groups):
        if left_out or budget[0] <= 0:
            left_out += len(group.items)
            continue
        count = f"{group.total} item" + ("" if group.total == 1 else "s")
        parts.append(f'<h2>{_field(group.task_id)} <span class="note">({_e(count)})</span></h2>')
        cards, missed = _cards(group.items, up, f"g{number}", budget)
        parts.append(cards)
        left_out += missed
    if left_out:
        parts.append(
            f'<p class="note">{_count(left_out, "more item")} of this page not shown: too large '
            "for one page (each task's page shows its own).</p>"
        )
    if not view.total:
        parts.append('<p class="note">No GetImage.io task of this run has recorded a diffusion yet.</p>')
    if view.pages > 1:
        pager = []
        route = up + run_path(run.dag_id, run.run_id) + "?"
        if view.task_id is not None:
            route += f"task_id={quote(view.task_id, safe='', errors='replace')}&"
        if view.page > 1:
            pager.append(f'<a href="{_e(route)}page={view.page - 1}">← Previous</a>')
        pager.append(f"<span>Page {view.page} of {view.pages}</span>")
        if view.page < view.pages:
            pager.append(f'<a href="{_e(route)}page={view.page + 1}">Next →</a>')
        parts.append(f'<div class="pager">{"".join(pager)}</div>')
    title = f"GetImage.io images · {_text(str(run.run_id), FIELD_LIMIT)}"
    running = run.state in ("queued", "running")
    if running:
        parts.append(
            '<p class="note">The run is not finished: this page reloads itself every '
            f"{REFRESH_SECONDS} seconds.</p>"
        )
    return _page(title, "\n".join(parts), refresh=running)


def render_history(view: HistoryView) -> str:
    """A DAG's recent runs, newest first, each with its first diffusions' prompts and images."""
    up = "../" * 3  # getimage/dag/<dag>: three segments below the root
    parts = [
        _nav([(up + ui_path(view.dag_id), "← DAG in Airflow")]),
        "<h1>GetImage.io images of recent runs</h1>",
        f'<p class="where">{_field(view.dag_id)}</p>',
    ]
    budget = [CARDS_BUDGET]
    for number, (run, items, total) in enumerate(view.runs):
        href = up + run_path(run.dag_id, run.run_id)
        when = f" · {_time(run.start_date)}" if run.start_date is not None else ""
        parts.append(
            f'<h2><a href="{_e(href)}">{_field(run.run_id)}</a> <span class="note">'
            f"{_field(run.state or 'none')}{when} · {_e(_count(total, 'diffusion'))}</span></h2>"
        )
        if not items:
            parts.append('<p class="note">No diffusion recorded.</p>')
            continue
        cards, missed = _cards(items, up, f"r{number}", budget, compact=True)
        parts.append(cards)
        if total > len(items) - missed:
            parts.append(
                f'<p class="note"><a href="{_e(href)}">'
                f"All {_e(_count(total, 'diffusion'))} of this run →</a></p>"
            )
    if not view.runs:
        parts.append('<p class="note">This DAG has no run yet.</p>')
    return _page(f"GetImage.io history · {_text(str(view.dag_id), FIELD_LIMIT)}", "\n".join(parts))
