"""
The gallery page stays small and readable whatever the record holds (issue 11, item 7).

A record comes from a remote service, and a hostile or broken one can put anything in any field:
megabytes of text, ten thousand images, the wrong JSON types, control characters, markup. The
page cuts every field, shows the diffusion id in full once, caps the thumbnails and counts the
rest, and says so when a field has the wrong type; it never raises and never outgrows
``PAGE_LIMIT``.
"""

from __future__ import annotations

import pytest

from airflow_provider_getimage.plugins.gallery_page import (
    FIELD_LIMIT,
    MAX_THUMBNAILS,
    MESSAGE_LIMIT,
    TEXT_LIMIT,
    URL_LIMIT,
    render_gallery,
    render_message,
)
from tests.plugins.page_parser import Page
from tests.plugins.test_gallery_page import ALLOWED_TAGS, URLS, finished_record, task, view

HUGE = 1_000_000
"""Characters in a huge field: far over every limit, cheap to build."""
LONG_ID = "i" * 10_000


def assert_safe(html: str) -> Page:
    """The page encodes as UTF-8 (what the API server sends), holds only our tags and no handler."""
    html.encode("utf-8")  # strict: a lone surrogate would be a 500 in the API server
    page = Page(html)
    assert {tag for tag, _ in page.tags} <= ALLOWED_TAGS
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    return page


# ------------------------------------------------------------------------------------- fields
@pytest.mark.parametrize(
    ("field", "limit"),
    [
        ("model", FIELD_LIMIT),
        ("diffusion_id", FIELD_LIMIT),
        ("record_from", FIELD_LIMIT),
    ],
)
def test_a_huge_view_field_is_cut_to_its_limit(field: str, limit: int) -> None:
    html = render_gallery(view(**{field: "y" * HUGE}))
    assert "y" * limit in Page(html).visible
    assert "y" * (limit + 1) not in html
    assert f"… ({HUGE - limit} more characters not shown)" in Page(html).visible


@pytest.mark.parametrize("key", ["status", "createdAt", "finishedAt"])
def test_a_huge_record_field_is_cut_to_its_limit(key: str) -> None:
    html = render_gallery(view(record=finished_record(**{key: "z" * HUGE})))
    assert "z" * FIELD_LIMIT in Page(html).visible
    assert "z" * (FIELD_LIMIT + 1) not in html


def test_a_huge_failure_reason_is_cut() -> None:
    record = {"id": "abc", "status": "FAILED", "error": {"message": "r" * HUGE}}
    page = Page(render_gallery(view(record=record)))
    assert "r" * MESSAGE_LIMIT in page.visible
    assert f"… ({HUGE - MESSAGE_LIMIT} more characters not shown)" in page.visible


def test_huge_task_ids_are_cut_in_the_heading_the_title_and_a_message_page() -> None:
    huge = task(dag_id="d" * HUGE, run_id="r" * HUGE, task_id="t" * HUGE, state="s" * HUGE)
    for html in (render_gallery(view(task=huge)), render_message("Title", "m" * HUGE, huge)):
        assert len(html) < 50_000
        for char in "drtsm":
            assert char * (TEXT_LIMIT + 1) not in html


def test_the_diffusion_id_is_shown_in_full_once_however_many_images() -> None:
    urls = [f"https://cdn.example.com/{i}.png" for i in range(50)]
    page = Page(render_gallery(view(diffusion_id=LONG_ID[:FIELD_LIMIT], record=finished_record(images=urls))))
    assert page.visible.count(LONG_ID[:FIELD_LIMIT]) == 1
    alts = [str(img["alt"]) for img in page.all("img")]
    assert len(alts) == 50
    assert all(
        alt.startswith(f"Image {i + 1} of diffusion ") and len(alt) < 100 for i, alt in enumerate(alts)
    )


@pytest.mark.parametrize(
    ("char", "shown"),
    [
        ("\x00", "\\x00"),
        ("\x1b", "\\x1b"),
        ("\x7f", "\\x7f"),
        ("\x9b", "\\x9b"),
        ("\u202e", "\\u202e"),  # right-to-left override: would disguise what follows
        ("\u200b", "\\u200b"),
        ("\ud800", "\\ud800"),  # a lone surrogate: valid JSON, not encodable as UTF-8
    ],
)
def test_control_characters_and_lone_surrogates_are_shown_as_escapes(char: str, shown: str) -> None:
    text = f"before{char}after\tand\nso on"  # tabs and line breaks are text: kept
    record = finished_record(status=text, createdAt=text, images=[f"https://cdn.example.com/{char}.png"])
    html = render_gallery(view(prompt=text, model=text, diffusion_id=text, record=record))
    page = assert_safe(html)
    assert char not in html
    assert page.visible.count(f"before{shown}after\tand\nso on") >= 5  # prompt, model, id, status, created
    assert page.all("img") == []  # such a URL is listed as text, not loaded
    assert f"https://cdn.example.com/{shown}.png" in page.visible


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        (["FINISHED"], "a list"),
        ({"name": "FINISHED"}, "an object"),
        (5, "a number"),
        (1.5, "a number"),
        (True, "a boolean"),
    ],
)
def test_a_field_of_the_wrong_type_is_a_note(value: object, kind: str) -> None:
    record = finished_record(status=value, createdAt=value, finishedAt=value)
    page = assert_safe(render_gallery(view(record=record, model=value, prompt=value)))
    assert page.visible.count(f"{kind}, not text (not shown)") == 5  # status, times, model, prompt
    assert "FINISHED" not in page.visible
    assert "Not finished yet" not in page.visible  # a status that is not text is no running diffusion
    assert all(meta.get("http-equiv") != "refresh" for meta in page.all("meta"))


# ------------------------------------------------------------------------------------- images
@pytest.mark.parametrize(("images", "kind"), [(5, "a number"), (True, "a boolean"), (2.5, "a number")])
def test_images_of_the_wrong_type_are_a_note_not_a_type_error(images: object, kind: str) -> None:
    page = assert_safe(render_gallery(view(record=finished_record(images=images))))
    assert f"The record's images is {kind}, not a list: no image can be shown." in page.visible
    assert page.all("img") == []
    assert "FINISHED" in page.visible


def test_ten_thousand_images_show_the_first_hundred_and_count_the_rest() -> None:
    urls = [f"https://cdn.example.com/img/{i}.png" for i in range(10_000)]
    page = assert_safe(render_gallery(view(record=finished_record(images=urls))))
    assert [img["src"] for img in page.all("img")] == urls[:MAX_THUMBNAILS]
    assert "Images (10000)" in page.visible
    assert "… and 9900 more images, not shown here (this page shows the first 100)." in page.visible


def test_one_image_over_the_cap_is_counted_in_the_singular() -> None:
    urls = [f"https://cdn.example.com/img/{i}.png" for i in range(MAX_THUMBNAILS + 1)]
    page = Page(render_gallery(view(record=finished_record(images=urls))))
    assert "… and 1 more image, not shown here" in page.visible


def test_entries_that_hold_no_url_are_counted() -> None:
    url = URLS[0]
    images = [url, 5, None, "", " ", {"nothing": url}, {"url": 7}, [url], {"src": URLS[1]}, True]
    page = assert_safe(render_gallery(view(record=finished_record(images=images))))
    assert [img["src"] for img in page.all("img")] == [url, URLS[1]]
    assert "Images (2)" in page.visible
    assert "8 entries of the record's images hold no URL (not shown)." in page.visible
    one = Page(render_gallery(view(record=finished_record(images=[url, 5]))))
    assert "1 entry of the record's images holds no URL (not shown)." in one.visible


def test_long_urls_cannot_multiply_past_the_thumbnail_budget() -> None:
    """Each URL stands three times in its figure, each ``"`` as 6 bytes: the budget stops them."""
    long_url = "https://cdn.example.com/" + '"' * (URL_LIMIT - 24)
    page = assert_safe(render_gallery(view(record=finished_record(images=[long_url] * 50))))
    assert 0 < len(page.all("img")) < 50
    rest = 50 - len(page.all("img"))
    assert f"… and {rest} more images, not shown here" in page.visible


def test_a_url_over_the_limit_is_listed_as_text_not_loaded() -> None:
    too_long = "https://cdn.example.com/" + "a" * URL_LIMIT
    page = assert_safe(render_gallery(view(record=finished_record(images=[too_long, URLS[0]]))))
    assert [img["src"] for img in page.all("img")] == [URLS[0]]
    assert f"Image 1: a URL of {len(too_long)} characters, too long to load: " in page.visible
    assert {a["href"] for a in page.all("a")} == {URLS[0]}


def test_non_http_urls_are_listed_as_text_cut() -> None:
    images = ["javascript:" + "x" * HUGE, "data:image/png;base64," + "A" * HUGE]
    page = assert_safe(render_gallery(view(record=finished_record(images=images))))
    assert page.all("img") == []
    assert page.visible.count("not an http(s) URL") == 2
    assert page.visible.count(f"… ({HUGE + 11 - FIELD_LIMIT} more characters not shown)") == 1
