"""The review form's pure rules (``review_form``), as tables: they run on every Airflow version."""

from __future__ import annotations

import re

import pytest

from airflow_provider_getimage import _rules, review_form
from airflow_provider_getimage.review_form import REJECT_ALL, ReviewImage, Verdict

URLS = [f"http://127.0.0.1:8000/images/d1/{index}.png" for index in range(4)]
#: The image syntax, with a destination that has no space, parenthesis, bracket or quote in it.
IMAGE_MD = re.compile(r"!\[(Image [0-9]+)\]\(([^\s()<>\[\]\"'`\\]+)\)")


class TestOptions:
    @pytest.mark.parametrize(
        ("count", "expected"),
        [
            (1, ["Image 1", REJECT_ALL]),
            (4, ["Image 1", "Image 2", "Image 3", "Image 4", REJECT_ALL]),
        ],
    )
    def test_options(self, count: int, expected: list[str]) -> None:
        assert review_form.review_options(count) == expected


class TestInputs:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("http://h/a.png", ["http://h/a.png"]),
            (["http://h/a.png", "http://h/b.png"], ["http://h/a.png", "http://h/b.png"]),
            (
                [["http://h/a.png"], ["http://h/b.png", "http://h/c.png"]],
                ["http://h/a.png", "http://h/b.png", "http://h/c.png"],
            ),
        ],
        ids=["one URL", "a diffusion's list", "a mapped generation's list of lists"],
    )
    def test_flatten(self, value: object, expected: list[str]) -> None:
        assert review_form.flatten_urls(value) == expected

    @pytest.mark.parametrize("value", [42, None, [1, 2], [["http://h/a.png", 3]], {"images": []}])
    def test_flatten_rejects(self, value: object) -> None:
        with pytest.raises(TypeError, match="image_urls"):
            review_form.flatten_urls(value)

    @pytest.mark.parametrize(
        ("images", "message"),
        [
            ([], "no image to review"),
            ([ReviewImage("javascript:alert(1)")], "'javascript:alert\\(1\\)' is not an http\\(s\\) URL"),
            ([ReviewImage("file:///etc/passwd")], "not an http\\(s\\) URL"),
            ([ReviewImage("http:///no-host.png")], "not an http\\(s\\) URL"),
            ([ReviewImage("http://h/" + "a" * 3000)], "at most 2048 characters"),
            ([ReviewImage(u) for u in URLS * 13], "52 images are too many"),
        ],
    )
    def test_check_images_rejects(self, images: list[ReviewImage], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            review_form.check_images(images)

    @pytest.mark.parametrize(
        ("defaults", "multiple", "count", "expected"),
        [
            (None, False, None, None),
            ("Image 1", False, None, ["Image 1"]),
            (REJECT_ALL, False, 4, [REJECT_ALL]),
            (["Image 1", "Image 3"], True, 4, ["Image 1", "Image 3"]),
        ],
    )
    def test_defaults(self, defaults: object, multiple: bool, count: int | None, expected: object) -> None:
        assert review_form.check_defaults(defaults, multiple, count) == expected

    @pytest.mark.parametrize(
        ("defaults", "multiple", "count", "message"),
        [
            ("Approve", False, None, "'Approve': the options are"),
            ("Image 0", False, None, "'Image 0'"),
            ("Image 5", False, 4, "only 4 images"),
            (["Image 1", "Image 2"], False, None, "multiple=False allows one"),
            (["Image 1", REJECT_ALL], True, None, "together with images"),
            ([], False, None, "option label"),
            (3, False, None, "option label"),
        ],
    )
    def test_defaults_rejects(
        self, defaults: object, multiple: bool, count: int | None, message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            review_form.check_defaults(defaults, multiple, count)

    @pytest.mark.parametrize("value", ["Fail", "retry", None])
    def test_on_reject_rejects(self, value: object) -> None:
        with pytest.raises(ValueError, match="on_reject must be one of \\['fail', 'skip'\\]"):
            review_form.check_on_reject(value)


class TestMarkdown:
    def test_one_thumbnail_per_image_under_its_label(self) -> None:
        body = review_form.review_body([ReviewImage(u) for u in URLS], prompt="a fox", intro="Pick **one**.")
        assert body.startswith("Pick **one**.\n\n**Prompt:** a fox\n\n**Image 1**\n\n![Image 1](")
        assert IMAGE_MD.findall(body) == [(f"Image {i + 1}", url) for i, url in enumerate(URLS)]

    @pytest.mark.parametrize(
        "url",
        [
            "http://h/a.png) [click](http://evil/",
            'http://h/a.png "title"',
            "http://h/a.png><script>alert(1)</script>",
            "http://h/a b\n\n# heading.png",
            "http://h/a.png\\)![x](http://evil/x.png",
            "http://h/`code`/[x].png",
        ],
    )
    def test_a_url_cannot_escape_its_image(self, url: str) -> None:
        body = review_form.review_body([ReviewImage(url)])
        found = IMAGE_MD.findall(body)
        assert len(found) == 1, body
        assert body.count("](") == 1
        assert "http://evil" not in body.replace(found[0][1], "")
        assert "<script>" not in body
        assert "\n#" not in body

    @pytest.mark.parametrize(
        ("prompt", "shown"),
        [
            ("a *bold* [link](http://evil/)", "a \\*bold\\* \\[link\\]\\(http\\://evil/\\)"),
            ("<img src=x onerror=alert(1)>", "\\<img src=x onerror=alert\\(1\\)\\>"),
            ("see www.evil.com or me@evil.com", "see www\\.evil\\.com or me\\@evil\\.com"),
            (
                "line one\n\n# heading\n![x](http://evil/x.png)",
                "line one \\# heading \\!\\[x\\]\\(http\\://evil/x\\.png\\)",
            ),
        ],
    )
    def test_prompt_is_text(self, prompt: str, shown: str) -> None:
        body = review_form.review_body([ReviewImage(URLS[0])], prompt=prompt)
        assert f"**Prompt:** {shown}\n" in body.replace(review_form.WORD_JOINER, "")

    @pytest.mark.parametrize(
        ("text", "unlinked"),
        [
            ("http://evil.example/", "http\\:\u2060//evil\\.example/"),
            ("HTTPS://evil", "HTTPS\\:\u2060//evil"),
            ("www.evil.com", "www\u2060\\.evil\\.com"),
            ("me@evil.com", "me\\@\u2060evil\\.com"),
            ("ratio 16:9", "ratio 16\\:9"),
        ],
    )
    def test_no_autolink_left_in_text(self, text: str, unlinked: str) -> None:
        assert review_form.escape_text(text) == unlinked

    def test_prompt_is_clipped(self) -> None:
        body = review_form.review_body([ReviewImage(URLS[0])], prompt="x" * 5000)
        prompt_line = body.split("\n")[0]
        assert len(prompt_line) == len("**Prompt:** ") + review_form.PROMPT_LIMIT
        assert prompt_line.endswith("\u2026")

    def test_batch_images_show_their_own_prompt(self) -> None:
        images = review_form.manifest_images(
            [
                {"index": 0, "prompt": "a *cat*", "image_urls": URLS[:2]},
                {"index": 1, "prompt": "a dog", "status": "failed", "image_urls": []},
                "not a row",
                {"index": 2, "prompt": "a dog", "image_urls": [URLS[2], 7]},
            ]
        )
        assert images == [
            ReviewImage(URLS[0], "a *cat*"),
            ReviewImage(URLS[1], "a *cat*"),
            ReviewImage(URLS[2], "a dog"),
        ]
        body = review_form.review_body(images)
        assert "**Image 1**\n\n*a \\*cat\\**\n\n![Image 1](" in body
        assert "**Image 3**\n\n*a dog*\n\n![Image 3](" in body


class TestVerdict:
    @pytest.mark.parametrize(
        ("chosen", "expected"),
        [
            (["Image 2"], Verdict([URLS[1]], [1], rejected=False)),
            (["Image 4", "Image 1"], Verdict([URLS[0], URLS[3]], [0, 3], rejected=False)),
            ([REJECT_ALL], Verdict([], [], rejected=True)),
        ],
    )
    def test_verdict(self, chosen: list[str], expected: Verdict) -> None:
        assert review_form.verdict(chosen, URLS) == expected

    @pytest.mark.parametrize(
        ("chosen", "message"),
        [
            ([], "chose no option"),
            (["Image 5"], "'Image 5', not one of"),
            (["Approve"], "'Approve', not one of"),
            (["Image 1", REJECT_ALL], "together with images"),
        ],
    )
    def test_verdict_rejects(self, chosen: list[str], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            review_form.verdict(chosen, URLS)

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ({"manifest": "file:///r/manifest.jsonl", "total": 2}, True),
            ({"manifest": 3}, False),
            (URLS, False),
        ],
    )
    def test_batch_result(self, value: object, expected: bool) -> None:
        assert _rules.is_batch_result(value) is expected
