"""
The run, history and download pages as pure functions: grouped, paged, escaped and bounded whatever
the items hold (a batch's manifest rows and XComs are untrusted like a record).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from airflow_provider_getimage.plugins.gallery_page import (
    CARD_IMAGES,
    PAGE_LIMIT,
    FilesView,
    HistoryView,
    Item,
    RunView,
    TaskGroup,
    TaskInfo,
    manifest_items,
    render_files,
    render_history,
    render_run,
)
from tests.plugins.page_parser import Page
from tests.plugins.test_gallery_page import ALLOWED_TAGS, URLS, XSS, assert_own_script

HUGE = 1_000_000
RUN = TaskInfo(
    "dag", "run", "", -1, "success", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
)


def item(map_index: int = 0, **changes: object) -> Item:
    values: dict[str, object] = {
        "task": TaskInfo("dag", "run", "generate", map_index, "success"),
        "kind": "diffusion",
        "label": f"generate[{map_index}]",
        "diffusion_id": f"id-{map_index}",
        "status": "FINISHED",
        "prompt": f"prompt {map_index}",
        "model": "midjourney",
        "parameters": {"seed": 7},
        "image_urls": tuple(URLS),
        "image_total": len(URLS),
    }
    values.update(changes)
    return Item(**values)  # type: ignore[arg-type]


def assert_safe(html: str) -> Page:
    html.encode("utf-8")
    assert len(html.encode()) <= PAGE_LIMIT
    page = Page(html)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert_own_script(page)
    return page


def test_run_page_groups_items_by_task_with_prompts_images_and_parameters() -> None:
    groups = (TaskGroup("generate", (item(0), item(1)), 2),)
    page = assert_safe(render_run(RunView(RUN, groups, total=2, diffusions=2)))
    assert [img["src"] for img in page.all("img")] == URLS * 2
    for text in ("generate (2 items)", "prompt 0", "prompt 1", "seed7", "Diffusions2", "Run statesuccess"):
        assert text in page.visible
    assert "Page 1 of" not in page.visible


def test_run_page_pager_keeps_the_task_filter() -> None:
    view = RunView(
        RUN, (TaskGroup("generate", (item(0),), 60),), page=2, pages=3, total=60, task_id="generate"
    )
    page = assert_safe(render_run(view))
    assert "Page 2 of 3" in page.visible
    hrefs = [str(a["href"]) for a in page.all("a")]
    assert any(href.endswith("?task_id=generate&page=1") for href in hrefs)
    assert any(href.endswith("?task_id=generate&page=3") for href in hrefs)


@pytest.mark.parametrize(
    "hostile",
    [
        {"prompt": XSS * (HUGE // 100), "error": "e" * HUGE, "label": "l" * HUGE},
        {"parameters": {f"k{n}": "v" * HUGE for n in range(50)}, "model": ["not", "text"]},
        {"image_urls": tuple(f"https://cdn.example.com/{'x' * 4000}/{n}.png" for n in range(CARD_IMAGES)),
         "image_total": 10_000},
        {"status": {"deep": ["x"]}, "finished_at": "\ud800" * 1000, "diffusion_id": 5},
        {"kind": "download", "files": ["f" * HUGE] * 1000},
    ],
)  # fmt: skip
def test_hostile_items_make_a_bounded_safe_run_page(hostile: dict[str, object]) -> None:
    items = tuple(item(number, **hostile) for number in range(24))
    page = assert_safe(render_run(RunView(RUN, (TaskGroup("generate", items, 24),), total=24)))
    assert XSS not in "".join(str(attrs) for _, attrs in page.tags)


def test_history_page_shows_each_run_with_its_prompts_bounded() -> None:
    runs = tuple(
        (
            TaskInfo("dag", f"run{number}", "", -1, "success", RUN.start_date),
            (item(0, prompt=XSS * 1000),),
            40,
        )
        for number in range(10)
    )
    page = assert_safe(render_history(HistoryView("dag", runs)))
    assert "run9" in page.visible
    assert XSS in page.visible
    assert "All 40 diffusions of this run →" in page.visible


def test_download_page_lists_files_as_text_and_says_why_it_failed() -> None:
    task = TaskInfo("dag", "run", "download", -1, "failed")
    page = assert_safe(render_files(FilesView(task, [XSS, "file:///tmp/a.png"], {"message": "disk full"})))
    assert "Stored files (2)" in page.visible
    assert XSS in page.visible
    assert "The task failed: disk full" in page.visible
    assert not [a for a in page.all("a") if str(a["href"]).startswith("file:")]


def test_manifest_rows_of_any_shape_never_raise() -> None:
    task = TaskInfo("dag", "run", "batch")
    data = b'{"index": 0, "prompt": "ok", "image_urls": ["https://x/a.png"], "status": "finished"}\n'
    data += b"[1, 2]\nnot json\n" + b'{"index": true, "key": 5, "image_urls": "no"}\n' + b'{"index": 9, "pro'
    items, note = manifest_items(task, data, complete=False)
    assert [found.label for found in items] == ["item #0", "item #3"]
    assert items[0].image_urls == ("https://x/a.png",)
    assert (
        note == "2 rows of the manifest could not be read; "
        "the manifest is too large to read whole: its first rows are shown"
    )
