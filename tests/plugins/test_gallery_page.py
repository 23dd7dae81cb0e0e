"""
The gallery page as pure functions: its URL, what it shows, and that nothing in it is markup.

A prompt is user text and a record comes from a remote service: every value below is hostile,
and the page must show it as text, load only http(s) images, link only http(s) URLs and carry no
script. The HTML is read back with the standard library's parser, as a browser would tokenise it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, unquote

import pytest

from airflow_provider_getimage.plugins import gallery_page
from airflow_provider_getimage.plugins.gallery_page import (
    SECURITY_HEADERS,
    GalleryView,
    TaskInfo,
    format_duration,
    gallery_path,
    gallery_url,
    parse_map_index,
    render_gallery,
    render_message,
    safe_image_url,
)
from tests.plugins.page_parser import Page

RUN_ID = "manual__2026-01-01T00:00:00+00:00"
XSS = '<script>alert("x")</script>"><img src=x onerror=alert(1)>&amp;'
ALLOWED_TAGS = {
    "html", "head", "meta", "title", "style", "body", "h1", "h2", "h3", "p", "dl", "dt", "dd", "code",
    "span", "div", "figure", "a", "img", "figcaption", "nav", "time", "ol", "li", "script",
}  # fmt: skip
"""The tags a page may hold; ``script`` only as the module's own, once (``assert_own_script``)."""


def assert_own_script(page: Page) -> None:
    """The page's one script is the module's own, the one the Content-Security-Policy allows by hash."""
    assert len(page.all("script")) == 1
    digest = base64.b64encode(hashlib.sha256(page.script.encode()).digest()).decode()
    assert f"script-src 'sha256-{digest}'" in SECURITY_HEADERS["Content-Security-Policy"]


URLS = [f"https://cdn.example.com/img/{i}.png?sig=a&b=<c>" for i in range(3)]


def task(**changes: object) -> TaskInfo:
    values: dict[str, object] = {
        "dag_id": "dag",
        "run_id": RUN_ID,
        "task_id": "generate",
        "state": "success",
        "start_date": datetime(2026, 1, 1, tzinfo=UTC),
        "end_date": datetime(2026, 1, 1, 0, 0, 14, tzinfo=UTC),
    }
    values.update(changes)
    return TaskInfo(**values)  # type: ignore[arg-type]


def finished_record(**changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "id": "636f02e3-2df1-11ee-91eb-ba334091ec99",
        "status": "FINISHED",
        "createdAt": "2023-01-01T00:00:00.000Z",
        "finishedAt": "2023-01-01T00:00:12.500Z",
        "images": list(URLS),
    }
    record.update(changes)
    return record


def view(**changes: object) -> GalleryView:
    values: dict[str, object] = {
        "task": task(),
        "diffusion_id": "636f02e3-2df1-11ee-91eb-ba334091ec99",
        "record": finished_record(),
        "prompt": "a lighthouse on a cliff, watercolor",
        "model": "midjourney",
    }
    values.update(changes)
    return GalleryView(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------- URLs
def test_gallery_path_is_one_segment_per_id_and_keeps_them_exact() -> None:
    path = gallery_path("my_dag", RUN_ID, "group.task")
    assert path == "getimage/gallery/my_dag/manual__2026-01-01T00%3A00%3A00%2B00%3A00/group.task"
    assert [unquote(part) for part in path.split("/")[2:]] == ["my_dag", RUN_ID, "group.task"]
    assert gallery_path("d", "r", "t", map_index=3) == "getimage/gallery/d/r/t?map_index=3"
    assert gallery_path("d", "a/b c", "t") == "getimage/gallery/d/a%2Fb%20c/t"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        (None, "/getimage/gallery/d/r/t"),
        ("", "/getimage/gallery/d/r/t"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080/getimage/gallery/d/r/t"),
        ("https://airflow.example.com/", "https://airflow.example.com/getimage/gallery/d/r/t"),
        ("https://example.com/team/airflow/", "https://example.com/team/airflow/getimage/gallery/d/r/t"),
    ],
)
def test_gallery_url_under_the_api_base_url(base_url: str | None, expected: str) -> None:
    assert gallery_url(base_url, "d", "r", "t") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("", -1),
        (None, -1),
        ("{MAP_INDEX}", -1),
        ("-1", -1),
        ("0", 0),
        (" 12 ", 12),
        ("-2", None),
        ("x", None),
    ],
)
def test_parse_map_index(value: str | None, expected: int | None) -> None:
    assert parse_map_index(value) == expected


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://cdn.example.com/a.png", True),
        ("http://127.0.0.1:8000/images/x/0.png", True),
        ("HTTPS://CDN.EXAMPLE.COM/A.PNG", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("JaVaScRiPt:alert(1)", False),
        ("data:image/png;base64,AAAA", False),
        ("//cdn.example.com/a.png", False),
        ("http:///a.png", False),
        ("https://cdn.example.com/a b.png", False),
        ("https://cdn.example.com/a\n.png", False),
        ("", False),
        (None, False),
        (42, False),
    ],
)
def test_safe_image_url(url: object, safe: bool) -> None:
    assert safe_image_url(url) == (url if safe else None)


# ------------------------------------------------------------------------------------ the page
def test_finished_page_shows_thumbnails_prompt_model_id_status_and_timings() -> None:
    page = Page(render_gallery(view()))
    images = page.all("img")
    assert [img["src"] for img in images] == URLS  # attribute values come back unescaped: exact URLs
    assert all("636f02e3-2df1-11ee-91eb-ba334091ec99" in str(img["alt"]) for img in images)
    assert {a["href"] for a in page.record_links} == set(URLS)
    assert all(a["rel"] == "noopener noreferrer" for a in page.record_links)
    # The way back: the task instance in Airflow's UI, the run's gallery, the DAG's history.
    up = "../../../../../"
    assert [a["href"] for a in page.all("a") if a.get("target") == "_top"] == [
        f"{up}dags/dag/runs/{quote(RUN_ID, safe='')}/tasks/generate",
        f"{up}getimage/run/dag/{quote(RUN_ID, safe='')}",
        f"{up}getimage/dag/dag",
    ]
    assert_own_script(page)
    # Times in UTC until the script shows them in the viewer's local time; the pixel size likewise.
    times = [attrs["datetime"] for attrs in page.all("time")]
    assert "2023-01-01T00:00:00+00:00" in times
    assert "2023-01-01T00:00:12.500000+00:00" in times
    assert all(img["data-px"] for img in images)
    text = page.visible
    for expected in (
        "a lighthouse on a cliff, watercolor",
        "midjourney",
        "636f02e3-2df1-11ee-91eb-ba334091ec99",
        "FINISHED",
        "2023-01-01 00:00:00 UTC",
        "2023-01-01 00:00:12 UTC",
        "Generation took12.5 s",
        "Task statesuccess",
        "Task ran14.0 s",
        f"dag / {RUN_ID} / generate",
        "Images (3)",
    ):
        assert expected in text
    assert not page.all("meta") or all(m.get("http-equiv") != "refresh" for m in page.all("meta"))


def test_images_as_objects_are_shown_like_strings() -> None:
    record = finished_record(images=[{"url": URLS[0], "width": 1024}, {"imageUrl": URLS[1]}, {"nothing": 1}])
    page = Page(render_gallery(view(record=record)))
    assert [img["src"] for img in page.all("img")] == URLS[:2]


def test_hostile_values_are_text_never_markup() -> None:
    hostile_urls = [
        "javascript:alert(1)",
        'https://cdn.example.com/x.png" onerror="alert(1)',
        "data:text/html,<script>alert(1)</script>",
    ]
    record = finished_record(status="FINISHED", images=hostile_urls, createdAt=XSS, finishedAt=XSS)
    html = render_gallery(
        view(
            task=task(dag_id="d<b>", run_id=XSS, task_id="t</p>", state=XSS),
            diffusion_id=XSS,
            record=record,
            record_from=XSS,
            prompt=XSS,
            model=XSS,
        )
    )
    page = Page(html)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert_own_script(page)
    # None of them is loaded: javascript: and data: are not http(s); the other holds a space.
    assert page.all("img") == []
    assert all(str(a["href"]).startswith(("http://", "https://")) for a in page.record_links)
    assert all(str(a["href"]).startswith("../") for a in page.all("a") if a not in page.record_links)
    assert page.visible.count(XSS) >= 5  # prompt, model, id, state, times and source, shown verbatim
    for url in hostile_urls:
        assert url in page.visible  # shown as text, so the user sees what the service sent


def test_a_quote_in_an_image_url_cannot_leave_its_attribute() -> None:
    url = 'https://cdn.example.com/x.png?"onerror=alert(1)//'
    page = Page(render_gallery(view(record=finished_record(images=[url]))))
    (img,) = page.all("img")
    assert img["src"] == url
    assert set(img) == {"src", "alt", "decoding", "data-px"}


def test_running_diffusion_page_reloads_itself_and_has_no_images() -> None:
    record = {"id": "abc", "status": "PROCESSING", "createdAt": "2023-01-01T00:00:00Z"}
    page = Page(render_gallery(view(record=record, task=task(state="deferred", end_date=None))))
    assert page.all("img") == []
    assert {"http-equiv": "refresh", "content": str(gallery_page.REFRESH_SECONDS)} in page.all("meta")
    assert "Not finished yet" in page.visible
    assert "PROCESSING" in page.visible
    assert "Task ran" not in page.visible


def test_failed_diffusion_page_shows_the_reason_escaped() -> None:
    record = {"id": "abc", "status": "FAILED", "message": "<b>nsfw</b> content"}
    page = Page(render_gallery(view(record=record)))
    assert "<b>nsfw</b> content" in page.visible
    assert "b" not in {tag for tag, _ in page.tags}
    assert page.all("img") == []


def test_unknown_prompt_and_model_are_said_so() -> None:
    page = Page(render_gallery(view(prompt=None, model=None, record={"id": "abc"})))
    assert "The prompt was not recorded." in page.visible
    assert "not recorded" in page.visible
    assert "unknown" in page.visible  # no status in the record


def test_a_very_long_prompt_is_cut_with_a_note() -> None:
    prompt = "x" * (gallery_page.TEXT_LIMIT + 5)
    assert "… (5 more characters not shown)" in Page(render_gallery(view(prompt=prompt))).visible


def test_record_from_another_task_is_named() -> None:
    assert "Record fromtask wait[2] of this run" in Page(render_gallery(view(record_from="wait[2]"))).visible


def test_message_page_escapes_everything() -> None:
    page = Page(render_message(XSS, XSS, task(task_id=XSS), refresh=True))
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert page.visible.count(XSS) == 4  # <title>, heading, task label and message
    assert {"http-equiv": "refresh", "content": str(gallery_page.REFRESH_SECONDS)} in page.all("meta")


def test_the_stylesheet_is_the_one_the_content_security_policy_allows() -> None:
    """A browser drops a <style> whose hash the CSP does not list: the page would be unstyled."""
    page = Page(render_gallery(view()))
    digest = base64.b64encode(hashlib.sha256(page.style.encode()).digest()).decode()
    policy = SECURITY_HEADERS["Content-Security-Policy"]
    assert f"style-src 'sha256-{digest}'" in policy
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"].startswith("'sha256-")  # only the page's own script runs
    assert directives["frame-ancestors"] == "'self'"
    assert re.fullmatch(r"http: https:", directives["img-src"])


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.04, "0.0 s"),
        (12.5, "12.5 s"),
        (59.94, "59.9 s"),
        (185, "3 min 05 s"),
        (7260, "2 h 01 min"),
        (-1, "?"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("created", "finished", "expected"),
    [
        ("2023-01-01T00:00:00.000Z", "2023-01-01T00:01:00.000Z", 60.0),
        ("2023-01-01T00:00:00+02:00", "2023-01-01T00:00:01+02:00", 1.0),
        ("2023-01-01T00:01:00Z", "2023-01-01T00:00:00Z", None),  # out of order
        ("2023-01-01T00:00:00", "2023-01-01T00:00:01", None),  # naive: no time zone to trust
        ("yesterday", "2023-01-01T00:00:00Z", None),
        (None, "2023-01-01T00:00:00Z", None),
    ],
)
def test_diffusion_duration(created: object, finished: object, expected: float | None) -> None:
    record = {"createdAt": created, "finishedAt": finished}
    assert gallery_page.diffusion_duration(record) == expected


def test_task_duration_uses_the_task_dates() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    page = Page(render_gallery(view(task=task(start_date=start, end_date=start + timedelta(minutes=2)))))
    assert "Task ran2 min 00 s" in page.visible
