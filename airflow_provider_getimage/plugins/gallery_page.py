"""
The image gallery page: where it lives and what it shows, as pure functions (no I/O, no Airflow).

The API server plugin (:mod:`~airflow_provider_getimage.plugins.gallery_app`) reads a task
instance's XComs and hands them here; the extra link (:mod:`~airflow_provider_getimage.links.getimage`)
builds the same URL. Everything shown is escaped: a prompt is user text and a record comes from a
remote service, so either may hold markup. The page runs no script at all, and its
Content-Security-Policy says so, which also keeps an escaping mistake from becoming a script.
"""

from __future__ import annotations

import base64
import hashlib
import html
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlsplit

from airflow_provider_getimage import _rules

if TYPE_CHECKING:
    from collections.abc import Iterable
    from re import Match

__all__ = [
    "GALLERY_ROUTE",
    "GALLERY_URL_PREFIX",
    "SECURITY_HEADERS",
    "GalleryView",
    "TaskInfo",
    "gallery_path",
    "gallery_url",
    "parse_map_index",
    "render_gallery",
    "render_message",
    "safe_image_url",
]

GALLERY_URL_PREFIX = "/getimage"
"""Where the plugin mounts its FastAPI app in the API server (outside Airflow's reserved prefixes)."""
GALLERY_ROUTE = "/gallery/{dag_id}/{run_id}/{task_id}"
"""The page of one task instance, inside the plugin app; ``?map_index=N`` for a mapped one."""
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
:root { color-scheme: light dark; --fg: #1d1d1f; --muted: #5f6368; --line: #d9d9de; --card: #f6f5fb;
  --ok: #1e7b34; --bad: #b3261e; --run: #8a5a00; }
@media (prefers-color-scheme: dark) { :root { --fg: #ececf1; --muted: #a8a8b3; --line: #3a3a44;
  --card: #24232b; --ok: #6fcf86; --bad: #f2948c; --run: #f0c36b; } }
body { font: 14px/1.5 system-ui, sans-serif; color: var(--fg); margin: 0; padding: 16px 20px; }
h1 { font-size: 18px; margin: 0 0 4px; }
.where { color: var(--muted); margin: 0 0 16px; word-break: break-all; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: 4px 16px; margin: 0 0 16px; }
dt { color: var(--muted); }
dd { margin: 0; word-break: break-word; }
.prompt { white-space: pre-wrap; background: var(--card); border-radius: 6px; padding: 8px 10px;
  margin: 0 0 16px; }
.status { font-weight: 600; }
.status.success { color: var(--ok); } .status.failed { color: var(--bad); }
.status.running { color: var(--run); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(200px, 1fr)); gap: 12px; }
figure { margin: 0; background: var(--card); border-radius: 6px; padding: 6px; }
figure img { display: block; width: 100%; height: auto; border-radius: 4px; }
figcaption { color: var(--muted); font-size: 12px; margin-top: 4px; word-break: break-all; }
.note { color: var(--muted); }
"""
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; "
    "img-src http: https:; "  # the images live on the service's (or the emulator's) host
    f"style-src 'sha256-{_STYLE_HASH}'; "  # only our own stylesheet: no inline style from a record
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
    segments = "/".join(quote(str(part), safe="") for part in (dag_id, run_id, task_id))
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
    """

    task: TaskInfo
    diffusion_id: str
    record: Mapping[str, Any] = field(default_factory=dict)
    record_from: str | None = None
    prompt: str | None = None
    model: str | None = None


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
        f"<body>\n{body}\n</body></html>\n"
    )


def _rows(items: list[tuple[str, str]]) -> str:
    """A definition list; values are already escaped markup."""
    return "<dl>" + "".join(f"<dt>{_e(name)}</dt><dd>{value}</dd>" for name, value in items) + "</dl>"


def _task_rows(task: TaskInfo) -> list[tuple[str, str]]:
    rows = [("Task state", _field(task.state or "none"))]
    if task.start_date is not None and task.end_date is not None:
        seconds = (task.end_date - task.start_date).total_seconds()
        rows.append(("Task ran", _e(format_duration(seconds))))
    return rows


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
    for label, key in (("Created", "createdAt"), ("Finished", "finishedAt")):
        if record.get(key) is not None:
            rows.append((label, _field(record[key])))
    duration = diffusion_duration(record)
    if duration is not None:
        rows.append(("Generation took", _e(format_duration(duration))))
    rows.extend(_task_rows(view.task))
    if view.record_from:
        rows.append(("Record from", f"task <code>{_field(view.record_from)}</code> of this run"))

    parts = [
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


def _thumbnails(urls: Iterable[str], alt_id: str) -> list[str]:
    """One figure per URL while they fit in ``THUMBNAILS_BUDGET`` bytes (a URL is written three times)."""
    figures: list[str] = []
    size = 0
    for index, url in enumerate(urls):
        figure = _figure(alt_id, index, url)
        size += len(figure.encode())
        if size > THUMBNAILS_BUDGET:
            break
        figures.append(figure)
    return figures


def _count(number: int, singular: str, plural: str | None = None) -> str:
    """``1 more image``, ``412 more images``."""
    return f"{number} {singular if number == 1 else plural or singular + 's'}"


def _figure(alt_id: str, index: int, url: str) -> str:
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
    return (
        f'<figure><a href="{_e(safe)}" target="_blank" rel="noopener noreferrer">'
        f'<img src="{_e(safe)}" alt="{_e(caption + alt_id)}" decoding="async"></a>'
        f'<figcaption><a href="{_e(safe)}" target="_blank" rel="noopener noreferrer">{_e(caption)}</a>'
        "</figcaption></figure>"
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
