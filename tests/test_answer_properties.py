"""
Property tests: every function that reads an API answer, fed any JSON value, returns a result or
raises ``GetImageError``, never a raw ``TypeError``/``KeyError``/``AttributeError``.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.polling import DiffusionWatch, checked_record

SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
FIELDS = st.sampled_from(["id", "status", "images", "error", "message", "detail", "finishedAt", "url"])
"""Records built from the field names the provider reads, so the checks meet them often."""
RECORDS = st.dictionaries(FIELDS, JSON, max_size=6) | JSON
ANY_RECORD = RECORDS | st.dictionaries(FIELDS, st.lists(JSON | st.dictionaries(FIELDS, JSON), max_size=4))
KEY = "sk-live-0123456789"
PROPERTY = settings(max_examples=150, deadline=None)


@PROPERTY
@given(ANY_RECORD, st.integers(100, 599))
def test_read_response_always_gives_an_attempt(value: Any, status: int) -> None:
    body = json.dumps(value)
    attempt = _rules.read_response(status, body, secrets=_rules.secret_forms(KEY))
    assert attempt.ok == (200 <= status < 300 and isinstance(value, dict))
    assert isinstance(_rules.read_response(status, body.encode()[: len(body) // 2]), _rules.Attempt)


@PROPERTY
@given(ANY_RECORD)
def test_image_urls_always_gives_web_urls(value: Any) -> None:
    assert all(isinstance(url, str) for url in _rules.image_urls(value))
    urls = _rules.web_image_urls(value)
    assert len(urls) <= _rules.MAX_IMAGES
    assert all(url.lower().startswith(("http://", "https://")) for url in urls)


@PROPERTY
@given(ANY_RECORD)
def test_failure_message_always_gives_bounded_text(value: Any) -> None:
    assert isinstance(_rules.failure_message(value), str)
    message = _rules.failure_reason(value)
    assert len(message) <= _rules.TEXT_LIMIT + 50


@PROPERTY
@given(ANY_RECORD, st.none() | st.integers(100, 599))
def test_error_message_always_gives_text(value: Any, status: int | None) -> None:
    assert isinstance(_rules.error_message(status, json.dumps(value)), str)


@PROPERTY
@given(ANY_RECORD)
def test_classify_always_gives_a_class(value: Any) -> None:
    assert _rules.classify(value) in ("success", "failed", "running")


@PROPERTY
@given(ANY_RECORD)
def test_record_checks_give_a_problem_or_a_usable_record(value: Any) -> None:
    problem = _rules.record_problem(value)
    if problem is not None:
        with pytest.raises(GetImageError, match=r"Diffusion d1: GetImage\.io sent an unusable record"):
            checked_record(value, "d1")
        return
    record = checked_record(value, "d1")
    bounded = _rules.bounded_record(record)
    assert len(json.dumps(bounded).encode()) <= _rules.RECORD_LIMIT
    _rules.image_urls(record)
    _rules.failure_message(record)


@PROPERTY
@given(ANY_RECORD)
def test_id_checks_give_a_problem_or_an_id(value: Any) -> None:
    if _rules.id_problem(value) is None:
        assert _rules.check_diffusion_id(value)


@PROPERTY
@given(st.lists(ANY_RECORD, min_size=1, max_size=4))
def test_diffusion_watch_judges_anything(values: list[Any]) -> None:
    watch = DiffusionWatch("d1", logging.getLogger("test"))
    for value in values:
        poll = watch.judge(value)
        assert poll.outcome in ("success", "failed", "running", "error")
        assert (poll.error is not None) == (poll.outcome in ("failed", "error"))
        if poll.error is not None:
            assert isinstance(poll.error, GetImageError)
            assert len(str(poll.error)) < _rules.TEXT_LIMIT + 500


NO_STAR = st.characters(blacklist_characters="*")
TEXT = st.text(NO_STAR, max_size=30)


@PROPERTY
@given(
    st.text(NO_STAR, min_size=6, max_size=30), st.text(NO_STAR, max_size=30), st.text(NO_STAR, max_size=30)
)
def test_scrub_leaves_no_form_of_the_key(key: str, before: str, after: str) -> None:
    secrets = _rules.secret_forms(key)
    for form in secrets:
        assert form not in _rules.scrub(before + form + after, secrets)
