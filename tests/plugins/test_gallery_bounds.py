"""
The gallery page stays small and readable whatever the record holds (issue 11, item 7).

A record comes from a remote service, and a hostile or broken one can put anything in any field:
megabytes of text, ten thousand images, the wrong JSON types, control characters, markup. The
page cuts every field, shows the diffusion id in full once, caps the thumbnails and counts the
rest, and says so when a field has the wrong type; it never raises and never outgrows
``PAGE_LIMIT``.
"""

from __future__ import annotations

import json

import pytest

from airflow_provider_getimage.plugins.gallery_page import (
    FIELD_LIMIT,
    MAX_THUMBNAILS,
    MESSAGE_LIMIT,
    PAGE_LIMIT,
    TEXT_LIMIT,
    URL_LIMIT,
    GalleryView,
    TaskInfo,
    render_gallery,
    render_message,
    safe_image_url,
)
from tests.plugins.page_parser import Page
from tests.plugins.test_gallery_page import (
    ALLOWED_TAGS,
    URLS,
    XSS,
    assert_own_script,
    finished_record,
    task,
    view,
)

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
    assert {a["href"] for a in page.record_links} == {URLS[0]}


def test_non_http_urls_are_listed_as_text_cut() -> None:
    images = ["javascript:" + "x" * HUGE, "data:image/png;base64," + "A" * HUGE]
    page = assert_safe(render_gallery(view(record=finished_record(images=images))))
    assert page.all("img") == []
    assert page.visible.count("not an http(s) URL") == 2
    assert page.visible.count(f"… ({HUGE + 11 - FIELD_LIMIT} more characters not shown)") == 1


# --------------------------------------------------------------------------------- the bound
WORST = '"' * HUGE
"""The costliest text: each ``"`` shown takes 6 bytes (``&quot;``)."""
WORST_URL = "https://cdn.example.com/" + '"' * (URL_LIMIT - 24)
"""The costliest URL a page still loads: at the length limit, all ``"``, written three times."""


def nested(depth: int) -> object:
    """Lists and objects ``depth`` deep, each level twice the last: a page that walks it never ends."""
    value: object = "x"
    for _ in range(depth):
        value = [value, {"k": value}]
    return value


NESTED = nested(200)


def hostile_views() -> dict[str, GalleryView]:
    """A view with every field at its worst, for each way a record can be hostile."""
    worst_task = task(dag_id=WORST, run_id=WORST, task_id=WORST, state=WORST)
    texts = {"prompt": WORST, "model": WORST, "diffusion_id": WORST, "record_from": WORST}
    times = {"createdAt": WORST, "finishedAt": WORST}
    reasons = {"error": {"message": WORST}, "message": WORST, "detail": WORST}
    records: dict[str, dict[str, object]] = {
        "huge strings everywhere": {"id": WORST, "status": WORST, **times, **reasons, "images": [WORST]},
        "failed, huge reason": {"status": "FAILED", **times, **reasons, "images": [WORST_URL] * 10_000},
        "10,000 costliest urls": {"status": "FINISHED", **times, "images": [WORST_URL] * 10_000},
        "10,000 url objects": {"status": "FINISHED", "images": [{"url": WORST_URL, "meta": NESTED}] * 10_000},
        "10,000 non-http urls": {"status": "FINISHED", "images": ["javascript:" + WORST[:10_000]] * 10_000},
        "10,000 entries with no url": {"status": "FINISHED", "images": [NESTED, 5, None, {"src": 5}] * 2_500},
        "deeply nested": {"status": NESTED, "parameters": NESTED, "images": NESTED, "error": NESTED},
        "wrong types everywhere": {
            "id": 5, "status": ["FINISHED"], "createdAt": {"t": 0}, "finishedAt": 1.5, "images": 5,
            "message": [WORST], "error": 7, "detail": True,
        },
        "control characters": {
            "status": "FAILED",
            **{key: "\u202e\x00\ud800" * HUGE for key in ("createdAt", "finishedAt", "message")},
            "images": ["https://cdn.example.com/\x00" + "\u202e" * HUGE] * 10_000,
        },
        "markup and script": {
            "status": "FAILED", **{key: XSS * 20_000 for key in ("createdAt", "finishedAt", "message")},
            "images": [f"https://cdn.example.com/x.png?{XSS}", f"javascript:{XSS}"] * 5_000,
        },
    }  # fmt: skip
    views = {name: view(task=worst_task, record=record, **texts) for name, record in records.items()}
    views["not even an object"] = view(task=worst_task, record=[WORST] * 10, **texts)
    return views


def test_a_record_that_is_not_an_object_is_a_note() -> None:
    page = assert_safe(render_gallery(view(record=[URLS[0]])))
    assert "The record is a list, not an object: it is not shown." in page.visible
    assert page.all("img") == []


@pytest.mark.parametrize(("name", "hostile"), list(hostile_views().items()))
def test_a_hostile_record_makes_a_page_under_the_bound(name: str, hostile: GalleryView) -> None:
    html = render_gallery(hostile)
    size = len(html.encode("utf-8"))
    assert size <= PAGE_LIMIT, f"{name}: {size} bytes"
    page = assert_safe(html)
    assert_own_script(page)
    assert all(safe_image_url(img["src"]) == img["src"] for img in page.all("img"))
    assert len(page.all("img")) <= MAX_THUMBNAILS
    assert "GetImage.io images" in page.visible


def test_a_small_record_no_longer_makes_a_huge_page() -> None:
    """179 kB of record made a 167 MB page: each of 5,500 thumbnails repeated the 30,000-character id."""
    record = finished_record(id=LONG_ID * 3, images=["https://a.example/x.png"] * 5_500)
    assert len(json.dumps(record)) < 180_000
    html = render_gallery(view(diffusion_id=LONG_ID * 3, record=record))
    assert len(html.encode()) < 64 * 1024
    assert html.count("i" * FIELD_LIMIT) == 1


# ------------------------------------------------------------------------------ any record at all
NASTY = ['"', "<", "&", "\x00", "\u202e", "\ud800", "é", "😀", "javascript:", "https://h/", XSS]
"""Pieces hostile text is made of: each costs the most bytes or means something to a parser."""


def test_any_view_renders_a_bounded_safe_page() -> None:
    """For any JSON in the record and any text in the view: a page, never an exception, under the bound."""
    hypothesis = pytest.importorskip("hypothesis")
    from hypothesis import strategies as st

    text = st.one_of(
        st.text(st.characters(exclude_categories=())),  # every code point, lone surrogates too
        st.builds(lambda piece, count: piece * count, st.sampled_from(NASTY), st.integers(0, 300_000)),
        st.sampled_from([*URLS, "FINISHED", "failed", "PROCESSING", "2023-01-01T00:00:00Z"]),
    )
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
    json_values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(text, inner, max_size=5),
        max_leaves=20,
    )
    many = st.builds(lambda entry, count: [entry] * count, json_values | text, st.integers(0, 12_000))
    record = st.fixed_dictionaries(
        {},
        optional={
            key: json_values
            for key in ("id", "status", "createdAt", "finishedAt", "message", "error", "detail", "parameters")
        }
        | {"images": st.one_of(json_values, many, st.lists(json_values | text, max_size=20))},
    )
    views = st.builds(
        GalleryView,
        task=st.builds(TaskInfo, dag_id=text, run_id=text, task_id=text, map_index=st.integers(-1, 10**6),
                       state=st.none() | text),
        diffusion_id=text | json_values,
        record=record | json_values,
        record_from=st.none() | text,
        prompt=st.none() | text | json_values,
        model=st.none() | text | json_values,
    )  # fmt: skip

    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(views)
    def check(any_view: GalleryView) -> None:
        html = render_gallery(any_view)
        assert len(html.encode("utf-8")) <= PAGE_LIMIT
        page = assert_safe(html)
        assert len(page.all("img")) <= MAX_THUMBNAILS
        for attrs in (*page.all("img"), *page.record_links):
            url = attrs.get("src") or attrs.get("href")
            assert safe_image_url(url) == url

    check()
