"""
The review form's pure rules: which images, which options, what Markdown, which answer.

No I/O and no Airflow, so they are tested as tables and work on every Airflow the provider
supports (the operator itself, ``operators.review``, needs Airflow 3.1+). Image URLs and prompts
come from the API and are untrusted: only http(s) URLs reach the Markdown, percent-encoded so
that none can close the image syntax or open a link, and every text is escaped and clipped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

from airflow_provider_getimage import _rules

__all__ = [
    "MAX_REVIEW_IMAGES",
    "ON_REJECT",
    "PROMPT_LIMIT",
    "REJECT_ALL",
    "ReviewImage",
    "Verdict",
    "check_defaults",
    "check_images",
    "check_on_reject",
    "escape_text",
    "flatten_urls",
    "manifest_images",
    "option_label",
    "review_body",
    "review_options",
    "safe_image_url",
    "verdict",
]

REJECT_ALL = "Reject all"
ON_REJECT = ("fail", "skip")
#: More thumbnails than this make a form nobody reads (and a body too large for the UI).
MAX_REVIEW_IMAGES = 50
PROMPT_LIMIT = 300
URL_LIMIT = 2048
_LABEL = re.compile(r"Image ([1-9][0-9]*)")
#: Characters that stay as they are inside a Markdown link destination; everything else (spaces,
#: brackets, parentheses, quotes, angle brackets, backslashes, backticks) is percent-encoded.
_URL_SAFE = ":/?#@!$&*+,;=%-._~"
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~&\"':@])")
#: The UI links bare URLs and e-mail addresses (GFM autolinks) even when escaped: an invisible
#: word joiner after ``://``'s colon, after ``www`` and after ``@`` breaks what it looks for.
_AUTOLINK_START = re.compile(r"(:)(?=//)|(www)(?=\.)|(@)", re.IGNORECASE)
WORD_JOINER = "\u2060"


@dataclass(frozen=True)
class ReviewImage:
    """One image of the form: its URL (as the API gave it) and the prompt that made it, if known."""

    url: str
    prompt: str | None = None


@dataclass(frozen=True)
class Verdict:
    """The reviewer's answer, mapped: the chosen URLs and their 0-based indexes, or a rejection."""

    urls: list[str]
    indexes: list[int]
    rejected: bool


# ------------------------------------------------------------------------------------- inputs
def flatten_urls(value: object) -> list[str]:
    """
    The image URLs to review, in order: a URL, a list of URLs, or a list of lists (a mapped
    generation's output).

    :raises TypeError: for anything else, naming what was found.
    """
    if isinstance(value, str):
        return [value]
    if not isinstance(value, Sequence):
        raise TypeError(f"image_urls must be a URL, a list of URLs or a batch result, got {_shown(value)}.")
    urls: list[str] = []
    for item in value:
        if isinstance(item, str):
            urls.append(item)
        elif isinstance(item, Sequence) and all(isinstance(url, str) for url in item):
            urls.extend(item)
        else:
            raise TypeError(f"image_urls must hold URL strings, found {_shown(item)}.")
    return urls


def check_images(images: Sequence[ReviewImage]) -> list[ReviewImage]:
    """
    The images, checked before the form is written: at least one, at most ``MAX_REVIEW_IMAGES``,
    each an http(s) URL (an API answer is untrusted; a ``javascript:`` URL is no image).

    :raises ValueError: naming the bad URL or the count.
    """
    if not images:
        raise ValueError("image_urls is empty: there is no image to review.")
    if len(images) > MAX_REVIEW_IMAGES:
        raise ValueError(
            f"{len(images)} images are too many for one review form (at most {MAX_REVIEW_IMAGES}); "
            "review a smaller batch, or a sample of it."
        )
    for image in images:
        safe_image_url(image.url)
    return list(images)


def check_on_reject(value: object) -> str:
    if value not in ON_REJECT:
        raise ValueError(f"on_reject must be one of {list(ON_REJECT)}, got {value!r}.")
    return str(value)


def check_defaults(defaults: object, multiple: bool, count: int | None = None) -> list[str] | None:
    """
    The options taken when the response timeout passes: ``"Image k"`` labels or ``"Reject all"``.

    :param count: the number of images, once known (run time); None at parse time checks the form.
    :raises ValueError: for an unknown label, an image beyond ``count`` or too many defaults.
    """
    if defaults is None:
        return None
    labels = [defaults] if isinstance(defaults, str) else defaults
    if not isinstance(labels, list | tuple) or not labels or not all(isinstance(x, str) for x in labels):
        raise ValueError(
            f'defaults must be an option label such as "Image 1" or a list of them, got {defaults!r}.'
        )
    for label in labels:
        match = _LABEL.fullmatch(label)
        if label != REJECT_ALL and match is None:
            raise ValueError(
                f'defaults holds {label!r}: the options are "Image 1".."Image n" and {REJECT_ALL!r}.'
            )
        if match is not None and count is not None and int(match.group(1)) > count:
            raise ValueError(f"defaults holds {label!r}, but there are only {count} images to review.")
    if not multiple and len(labels) > 1:
        raise ValueError(f"defaults holds {len(labels)} options but multiple=False allows one: {labels!r}.")
    if REJECT_ALL in labels and len(labels) > 1:
        raise ValueError(f"defaults cannot hold {REJECT_ALL!r} together with images: {labels!r}.")
    return list(labels)


# ------------------------------------------------------------------------------------- the form
def option_label(index: int) -> str:
    """The option of the image at 0-based ``index``: ``"Image 1"`` for the first."""
    return f"Image {index + 1}"


def review_options(count: int) -> list[str]:
    """The form's options for ``count`` images: ``"Image 1".."Image n"``, then ``"Reject all"``."""
    return [option_label(index) for index in range(count)] + [REJECT_ALL]


def safe_image_url(url: str) -> str:
    """
    ``url`` made safe for a Markdown link destination: http(s) with a host, at most ``URL_LIMIT``
    characters, every character that could end the destination or start markup percent-encoded.

    :raises ValueError: for any other URL, showing it clipped.
    """
    if not isinstance(url, str) or len(url) > URL_LIMIT:
        raise ValueError(f"image URL {_shown(url)} is not a URL of at most {URL_LIMIT} characters.")
    if not _rules.is_web_url(url.strip()):
        raise ValueError(f"image URL {_shown(url)} is not an http(s) URL: it is not shown for review.")
    return quote(url.strip(), safe=_URL_SAFE)


def escape_text(text: str, limit: int = PROMPT_LIMIT) -> str:
    """
    Text shown as text: one line, clipped to ``limit`` characters, every Markdown mark escaped and
    no URL or address left for the UI to turn into a link.
    """
    one_line = " ".join(text.split())
    if len(one_line) > limit:
        one_line = one_line[: limit - 1] + "\u2026"
    unlinked = _AUTOLINK_START.sub(lambda match: match.group(0) + WORD_JOINER, one_line)
    return _MARKDOWN_SPECIAL.sub(r"\\\1", unlinked)


def review_body(images: Sequence[ReviewImage], prompt: str | None = None, intro: str | None = None) -> str:
    """
    The form's Markdown: the author's ``intro`` (trusted, as written), the prompt, then each image
    as a thumbnail under its option label (the UI draws Markdown images about 300 px wide).

    :param prompt: the prompt of every image; an image's own prompt, when it differs, is shown
        under its label (a batch's images each have theirs).
    """
    parts: list[str] = []
    if intro:
        parts.append(intro.strip())
    if prompt:
        parts.append(f"**Prompt:** {escape_text(prompt)}")
    for index, image in enumerate(images):
        label = option_label(index)
        lines = [f"**{label}**"]
        if image.prompt and image.prompt != prompt:
            lines.append(f"*{escape_text(image.prompt)}*")
        lines.append(f"![{label}]({safe_image_url(image.url)})")
        parts.append("\n\n".join(lines))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------- the answer
def verdict(chosen_options: Sequence[str], urls: Sequence[str]) -> Verdict:
    """
    Map the chosen options to the reviewed URLs.

    :raises ValueError: for an option that is not this form's, or images chosen with "Reject all".
    """
    if not chosen_options:
        raise ValueError("the response chose no option.")
    if REJECT_ALL in chosen_options:
        if len(chosen_options) > 1:
            raise ValueError(
                f"the response chose {REJECT_ALL!r} together with images: {list(chosen_options)!r}."
            )
        return Verdict(urls=[], indexes=[], rejected=True)
    indexes: list[int] = []
    for option in chosen_options:
        match = _LABEL.fullmatch(option)
        if match is None or int(match.group(1)) > len(urls):
            raise ValueError(f"the response chose {option!r}, not one of {review_options(len(urls))!r}.")
        indexes.append(int(match.group(1)) - 1)
    indexes = sorted(set(indexes))
    return Verdict(urls=[urls[index] for index in indexes], indexes=indexes, rejected=False)


# ------------------------------------------------------------------------------------- batches
def manifest_images(rows: Sequence[object]) -> list[ReviewImage]:
    """The images of a batch manifest's rows (``image_urls`` and ``prompt`` of each), in row order."""
    images: list[ReviewImage] = []
    for row in rows:
        if not isinstance(row, Mapping):
            continue
        prompt = row.get("prompt") if isinstance(row.get("prompt"), str) else None
        urls = row.get("image_urls")
        if isinstance(urls, list):
            images.extend(ReviewImage(url, prompt) for url in urls if isinstance(url, str))
    return images


def _shown(value: object, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
