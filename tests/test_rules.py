"""The pure rules, as tables: statuses, images, errors, URLs, input checks and retry decisions."""

from __future__ import annotations

import email.utils
import json
import math
import subprocess
import sys
import time
from typing import Any

import pytest

from airflow_provider_getimage import _rules
from airflow_provider_getimage._rules import Attempt, RetryPolicy
from tests.reliability.hostile_server import widest_record


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("FINISHED", "success"),
        ("finished", "success"),
        (" Finished ", "success"),
        *[(s, "failed") for s in ("FAILED", "ERROR", "CANCELED", "CANCELLED", "REJECTED", "EXPIRED")],
        ("failed", "failed"),
        ("NEW", "running"),
        ("PROCESSING", "running"),
        ("QUEUED", "running"),
        ("", "running"),
        (None, "running"),
    ],
)
def test_classify(status: Any, expected: str) -> None:
    assert _rules.classify(status) == expected


def test_status_watch_reports_changes_and_unknown_once() -> None:
    watch = _rules.StatusWatch()
    assert watch.observe("NEW") == (True, False)
    assert watch.observe("NEW") == (False, False)
    assert watch.observe("QUEUED") == (True, True)
    assert watch.observe("QUEUED") == (False, False)
    assert watch.observe("PROCESSING") == (True, False)
    assert watch.observe("queued") == (True, False)  # known by now: no second warning
    assert watch.last == "QUEUED"


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["https://a/1.png", "https://a/2.png"], ["https://a/1.png", "https://a/2.png"]),
        (
            [{"url": "https://a/1.png"}, {"imageUrl": "https://a/2.png"}],
            ["https://a/1.png", "https://a/2.png"],
        ),
        ([{"uri": "https://a/3.png"}, {"src": "https://a/4.png"}], ["https://a/3.png", "https://a/4.png"]),
        ([{"url": "https://a/1.png", "src": "ignored"}], ["https://a/1.png"]),
        ([{"width": 512}, "", None, 5, " https://a/5.png "], ["https://a/5.png"]),
        ("https://a/single.png", ["https://a/single.png"]),
        ({"url": "https://a/obj.png"}, ["https://a/obj.png"]),
        (None, []),
        ([], []),
    ],
)
def test_image_urls(images: Any, expected: list[str]) -> None:
    assert _rules.image_urls({"status": "FINISHED", "images": images}) == expected


@pytest.mark.parametrize(
    ("status", "text", "expected"),
    [
        (
            401,
            '{"error": {"code": "unauthorized", "message": "Invalid API key"}}',
            "HTTP 401: Invalid API key",
        ),
        (400, '{"error": "prompt is required"}', "HTTP 400: prompt is required"),
        (422, '{"message": "bad size"}', "HTTP 422: bad size"),
        (422, '{"detail": "seed must be an int"}', "HTTP 422: seed must be an int"),
        (502, "<html><body>Bad gateway</body></html>", "HTTP 502: <html><body>Bad gateway</body></html>"),
        (500, "", "HTTP 500"),
        (None, "", "No response"),
    ],
)
def test_error_message(status: int | None, text: str, expected: str) -> None:
    assert _rules.error_message(status, text) == expected


def test_error_message_truncates_long_bodies() -> None:
    message = _rules.error_message(503, "x" * 5000)
    assert message.startswith("HTTP 503: xxx")
    assert len(message) < _rules.MESSAGE_LIMIT + 20


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"status": "FAILED", "message": "Prompt rejected"}, "Prompt rejected"),
        ({"status": "FAILED", "error": {"message": "GPU lost"}}, "GPU lost"),
        ({"status": "EXPIRED"}, "diffusion ended with status EXPIRED"),
    ],
)
def test_failure_message(record: dict[str, Any], expected: str) -> None:
    assert _rules.failure_message(record) == expected


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        (None, None, "https://api.getimage.io"),
        ("", None, "https://api.getimage.io"),
        ("api.getimage.io", None, "https://api.getimage.io"),
        ("https://api.getimage.io/", None, "https://api.getimage.io"),
        ("http://127.0.0.1:8000", None, "http://127.0.0.1:8000"),
        ("http://127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("http://127.0.0.1:8000", 9999, "http://127.0.0.1:8000"),
        ("https://proxy.example.com/getimage/", None, "https://proxy.example.com/getimage"),
    ],
)
def test_base_url(host: str | None, port: int | None, expected: str) -> None:
    assert _rules.base_url(host, port) == expected


@pytest.mark.parametrize(
    "host", ["ftp://files.example.com", "http://", "https://user:pw@host", "http://h:99999"]
)
def test_base_url_rejects_non_http_urls(host: str) -> None:
    with pytest.raises(ValueError, match="Connection host"):
        _rules.base_url(host)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, True),
        (True, True),
        (False, False),
        ("false", False),
        ("True", True),
        ("0", False),
        ("/ca.pem", "/ca.pem"),
    ],
)
def test_parse_verify(value: object, expected: bool | str) -> None:
    assert _rules.parse_verify(value) == expected


@pytest.mark.parametrize(("value", "expected"), [(None, 30.0), ("", 30.0), ("12.5", 12.5), (5, 5.0)])
def test_parse_timeout(value: object, expected: float) -> None:
    assert _rules.parse_timeout(value) == expected


@pytest.mark.parametrize("value", ["abc", 0, -3, "inf"])
def test_parse_timeout_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="request_timeout"):
        _rules.parse_timeout(value)


def test_extra_value_reads_prefixed_form() -> None:
    assert _rules.extra_value({"extra__getimage__default_model": "sdxl"}, "default_model") == "sdxl"
    assert (
        _rules.extra_value({"default_model": "flux", "extra__getimage__default_model": "x"}, "default_model")
        == "flux"
    )
    assert _rules.extra_value({}, "default_model") is None


def test_headers_carry_bearer_and_json() -> None:
    headers = _rules.headers("k3y")
    assert headers["Authorization"] == "Bearer k3y"
    assert headers["Content-Type"] == "application/json"


def test_diffusion_path_quotes_the_id() -> None:
    assert _rules.diffusion_path("abc") == "/v1/diffusions/abc"
    assert _rules.diffusion_path("../admin?x=1") == "/v1/diffusions/..%2Fadmin%3Fx%3D1"


@pytest.mark.parametrize(
    ("prompt", "model", "parameters", "error", "match"),
    [
        ("", "midjourney", None, ValueError, "prompt must not be empty"),
        ("   ", "midjourney", None, ValueError, "prompt must not be empty"),
        (42, "midjourney", None, TypeError, "prompt must be a string, got int: 42"),
        (None, "midjourney", None, TypeError, "prompt must be a string"),
        ("a cat", "", None, ValueError, "model must not be empty"),
        ("a cat", 3, None, TypeError, "model must be a string, got int"),
        ("a cat", "midjourney", "size=1024", TypeError, "parameters must be a dict"),
        ("a cat", "midjourney", ["a"], TypeError, "parameters must be a dict"),
        ("a cat", "midjourney", {"prompt": "x"}, ValueError, "must not contain \\['prompt'\\]"),
        ("a cat", "midjourney", {"seed": object()}, TypeError, "JSON-serialisable"),
        ("a cat", "midjourney", {"seed": float("nan")}, TypeError, "JSON-serialisable"),
        ("a cat", "midjourney", {1: "x"}, TypeError, "keys must be strings"),
    ],
)
def test_submit_body_rejects_bad_input(
    prompt: Any, model: Any, parameters: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        _rules.submit_body(prompt, model, parameters)


def test_submit_body_passes_parameters_untouched() -> None:
    params = {"size": "1024x1024", "negative_prompt": "blur", "seed": 7, "nested": {"a": [1, 2]}}
    assert _rules.submit_body("a cat", " midjourney ", params) == {
        "prompt": "a cat",
        "model": "midjourney",
        **params,
    }


@pytest.mark.parametrize("value", [0, -1, float("inf"), float("nan"), "5", True, None])
def test_check_positive_rejects(value: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="poll_interval"):
        _rules.check_positive("poll_interval", value)


@pytest.mark.parametrize(
    ("cap", "waited", "expected"),
    [
        (None, 0.0, 5.0),  # no backoff: always the user's interval
        (None, 10_000.0, 5.0),
        (60.0, 0.0, 5.0),  # a quick generation is polled exactly as asked
        (60.0, 49.0, 5.0),  # up to ten intervals
        (60.0, 200.0, 20.0),  # then a tenth of the time waited
        (60.0, 3_000.0, 60.0),  # never more than the cap
        (5.0, 3_000.0, 5.0),  # a cap equal to the interval is no backoff
    ],
)
def test_next_poll_delay(cap: float | None, waited: float, expected: float) -> None:
    assert _rules.next_poll_delay(5.0, cap, waited) == pytest.approx(expected)


def test_check_max_poll_interval() -> None:
    assert _rules.check_max_poll_interval(None, 5.0) is None
    assert _rules.check_max_poll_interval(30, 5.0) == 30.0
    with pytest.raises(ValueError, match=r"max_poll_interval \(2\) must not be shorter than poll_interval"):
        _rules.check_max_poll_interval(2, 5.0)
    with pytest.raises(ValueError, match="max_poll_interval must be a positive"):
        _rules.check_max_poll_interval(-1, 5.0)


def test_parse_retry_after_forms() -> None:
    assert _rules.parse_retry_after("7") == 7.0
    assert _rules.parse_retry_after("1.5") == 1.5
    assert _rules.parse_retry_after(None) is None
    assert _rules.parse_retry_after("soon") is None
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert _rules.parse_retry_after(date, now=now) == pytest.approx(30, abs=1.0)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert _rules.parse_retry_after(past, now=now) == 0.0


def test_read_response() -> None:
    assert _rules.read_response(200, '{"id": "x"}').data == {"id": "x"}
    assert _rules.read_response(200, b'{"id": "x"}').data == {"id": "x"}
    assert _rules.read_response(401, b'{"error": "bad key \xff"}').message == "HTTP 401: bad key \ufffd"
    bad = _rules.read_response(200, "<html>oops</html>")
    assert bad.failure == "bad_body"
    assert bad.status_code == 200
    limited = _rules.read_response(429, '{"error": {"message": "slow down"}}', "3")
    assert (limited.failure, limited.status_code, limited.retry_after) == ("http", 429, 3.0)
    assert limited.message == "HTTP 429: slow down"


POLICY = RetryPolicy(max_attempts=5, backoff_base=1.0, backoff_max=8.0, retry_after_cap=20.0)
CONNECT = Attempt(failure="connect", message="refused")
READ_TIMEOUT = Attempt(failure="read_timeout")
LOST = Attempt(failure="connection_lost")
BAD_BODY = Attempt(failure="bad_body", status_code=200)
TLS = Attempt(failure="tls")
LOCAL = Attempt(failure="local")


def http(code: int, retry_after: float | None = None) -> Attempt:
    return Attempt(failure="http", status_code=code, retry_after=retry_after)


@pytest.mark.parametrize(
    ("method", "attempt", "retried"),
    [
        ("GET", CONNECT, True),
        ("GET", READ_TIMEOUT, True),
        ("GET", LOST, True),
        ("GET", BAD_BODY, True),
        ("GET", http(429), True),
        ("GET", http(500), True),
        ("GET", http(502), True),
        ("GET", http(503), True),
        ("GET", http(400), False),
        ("GET", http(401), False),
        ("GET", http(403), False),
        ("GET", http(404), False),
        ("GET", TLS, False),
        ("GET", LOCAL, False),
        ("POST", LOCAL, False),
        ("POST", CONNECT, True),
        ("POST", http(429), True),
        ("POST", http(503), True),
        ("POST", READ_TIMEOUT, False),
        ("POST", LOST, False),
        ("POST", BAD_BODY, False),
        ("POST", http(500), False),
        ("POST", http(502), False),
        ("POST", http(504), False),
        ("POST", http(400), False),
        ("POST", http(401), False),
    ],
)
def test_retry_decision_table(method: str, attempt: Attempt, retried: bool) -> None:
    assert (_rules.retry_decision(method, 1, attempt, POLICY, 0.5) is not None) is retried


def test_retry_backoff_grows_with_jitter_and_cap() -> None:
    waits = [_rules.retry_decision("GET", n, http(500), POLICY, 0.0) for n in range(1, 5)]
    assert waits == [0.5, 1.0, 2.0, 4.0]
    assert _rules.retry_decision("GET", 4, http(500), POLICY, 0.999) == pytest.approx(8.0, abs=0.01)
    assert _rules.retry_decision("GET", 5, http(500), POLICY, 0.5) is None  # attempts spent


def test_retry_after_is_honoured_and_capped() -> None:
    assert _rules.retry_decision("GET", 1, http(429, retry_after=3.0), POLICY, 0.9) == 3.0
    assert _rules.retry_decision("POST", 1, http(503, retry_after=4.0), POLICY, 0.9) == 4.0
    assert _rules.retry_decision("GET", 1, http(429, retry_after=999.0), POLICY, 0.9) == 20.0


@pytest.mark.parametrize(
    ("method", "attempt", "kind"),
    [
        ("GET", http(401), "auth"),
        ("POST", http(403), "auth"),
        ("GET", http(404), "not_found"),
        ("GET", http(429), "rate_limit"),
        ("POST", http(429), "rate_limit"),
        ("GET", http(500), "request"),
        ("POST", http(500), "ambiguous_submit"),
        ("POST", http(502), "ambiguous_submit"),
        ("POST", http(503), "request"),
        ("POST", READ_TIMEOUT, "ambiguous_submit"),
        ("POST", LOST, "ambiguous_submit"),
        ("POST", BAD_BODY, "ambiguous_submit"),
        ("POST", CONNECT, "request"),
        ("POST", http(400), "request"),
        ("POST", http(402), "request"),
        ("GET", TLS, "tls"),
        ("POST", TLS, "tls"),
        ("POST", LOCAL, "request"),
    ],
)
def test_error_kind(method: str, attempt: Attempt, kind: str) -> None:
    assert _rules.error_kind(method, attempt) == kind


def test_rules_import_no_airflow() -> None:
    """The rules stay pure: importing them loads no Airflow module (checked in a fresh interpreter)."""
    code = (
        "import sys, airflow_provider_getimage._rules; "
        "sys.exit(any(m == 'airflow' or m.startswith('airflow.') for m in sys.modules))"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# ------------------------------------------------------------------------------ hostile answers
KEY = "sk-live/secret+key=1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"Bearer {KEY}", "Bearer ***"),
        (f"echo: {KEY!r}", "echo: '***'"),
        ('{"auth": "Bearer sk-live\\/secret+key=1"}', '{"auth": "Bearer ***"}'),
        ("Authorization=Bearer%20sk-live%2Fsecret%2Bkey%3D1", "Authorization=Bearer%20***"),
        ("q=sk-live%2Fsecret%2Bkey%3D1&x", "q=***&x"),
        ("no key here", "no key here"),
    ],
)
def test_scrub_removes_every_form_of_the_key(text: str, expected: str) -> None:
    assert _rules.scrub(text, _rules.secret_forms(KEY)) == expected


def test_scrub_json_escaped_key() -> None:
    key = 'k"ey\\with-quote'
    text = json.dumps({"echo": f"Bearer {key}"})
    assert key not in json.loads(_rules.scrub(text, _rules.secret_forms(key)))["echo"]


def test_scrub_value_reaches_every_string_and_key() -> None:
    record = {"id": "d1", KEY: [f"Bearer {KEY}", {"deep": KEY}], "n": 5}
    assert _rules.scrub_value(record, _rules.secret_forms(KEY)) == {
        "id": "d1",
        "***": ["Bearer ***", {"deep": "***"}],
        "n": 5,
    }


def test_read_response_scrubs_records_and_error_messages_before_cutting() -> None:
    secrets = _rules.secret_forms(KEY)
    ok = _rules.read_response(200, json.dumps({"id": "d1", "message": f"Bearer {KEY}"}), secrets=secrets)
    assert ok.data == {"id": "d1", "message": "Bearer ***"}
    # The key straddles the 300-character cut: scrubbed first, so no part of it survives.
    body = "x" * 290 + f"Bearer {KEY}"
    failed = _rules.read_response(500, body, secrets=secrets)
    assert KEY[:8] not in failed.message
    assert "***" in failed.message
    escaped = _rules.read_response(401, json.dumps({"error": {"message": f"bad key {KEY}"}}), secrets=secrets)
    assert escaped.message == "HTTP 401: bad key ***"


def test_read_response_survives_deep_nesting() -> None:
    attempt = _rules.read_response(200, "[" * 100_000 + "]" * 100_000)
    assert attempt.failure == "bad_body"


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"id": "d1", "status": "FINISHED", "images": ["https://x/1.png"]}, None),
        ({"id": "d1", "images": None, "error": None}, None),
        ({"id": "d1", "images": {"url": "https://x/1.png"}}, None),
        ({"images": 5}, "field 'images' is a number, expected a list"),
        ({"status": {}}, "field 'status' is an object, expected a string"),
        ({"id": 7}, "field 'id' is a number, expected a string"),
        ({"images": ["https://x", 3]}, "field 'images[1]' is a number, expected a URL string or an object"),
        ({"images": [None]}, "field 'images[0]' is null, expected a URL string or an object"),
        ({"error": []}, "field 'error' is a list, expected a string or an object"),
        ({"message": True}, "field 'message' is a boolean, expected a string"),
        ({"finishedAt": 1700000000}, "field 'finishedAt' is a number, expected a string"),
        ([], "the answer is a list, not a JSON object"),
        ("FINISHED", "the answer is a string, not a JSON object"),
    ],
)
def test_record_problem(record: Any, problem: str | None) -> None:
    assert _rules.record_problem(record) == problem


@pytest.mark.parametrize(
    ("images", "expected"),
    [
        (["javascript:alert(1)", "https://x/1.png"], ["https://x/1.png"]),
        (["file:///etc/passwd", {"url": "data:image/png;base64,AA"}], []),
        (["//x/1.png", "ftp://x/1.png", "HTTP://X/1.png"], ["HTTP://X/1.png"]),
        ([f"https://x/{'a' * _rules.MAX_URL_LENGTH}"], []),
        ([f"https://x/{n}.png" for n in range(150)], [f"https://x/{n}.png" for n in range(100)]),
        (5, []),
        ([5, None, ["https://x/1.png"]], []),
    ],
)
def test_web_image_urls_only_web_urls_and_capped(images: Any, expected: list[str]) -> None:
    assert _rules.web_image_urls({"images": images}) == expected


def test_image_urls_never_raises_on_wrong_types() -> None:
    assert _rules.image_urls({"images": 5}) == []
    assert _rules.image_urls({"images": [5, None, {"url": 3}, "javascript:x"]}) == ["javascript:x"]
    assert _rules.image_urls([]) == []


def test_failure_reason_is_clipped() -> None:
    message = _rules.failure_reason({"status": "FAILED", "message": "x" * 5_000_000})
    assert len(message) < _rules.TEXT_LIMIT + 100
    assert message.endswith("more characters cut]")


def test_bounded_record_keeps_small_records_and_cuts_big_ones() -> None:
    small = {"id": "d1", "status": "FINISHED", "images": ["https://x/1.png"], "extra": "y"}
    assert _rules.bounded_record(small) == small
    big = {**small, "blob": "z" * 200_000}
    cut = _rules.bounded_record(big)
    assert (cut["id"], cut["status"], cut["images"]) == ("d1", "FINISHED", ["https://x/1.png"])
    assert "blob" not in cut
    assert "65536-byte cap" in cut["truncated"]
    assert len(json.dumps(cut)) < _rules.RECORD_LIMIT
    failed = _rules.bounded_record({"id": "d1", "status": "FAILED", "message": "m" * 100_000})
    assert failed["error"].startswith("m" * 100)
    assert len(failed["error"]) < _rules.TEXT_LIMIT + 100


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("636f02e3-2df1-11ee-91eb-ba334091ec99", None),
        (" d1\n", None),
        (".", "it is a path segment ('.' or '..')"),
        ("..", "it is a path segment ('.' or '..')"),
        ("a b", "it holds whitespace or a control character"),
        ("a\x00b", "it holds whitespace or a control character"),
        ("a\u200bb", "it holds whitespace or a control character"),
        ("a\tb", "it holds whitespace or a control character"),
        ("x" * 201, "it is 201 characters long, over the 200-character cap"),
        ("x" * 200, None),
        ("", "it is empty or blank"),
        (7, "it is a number, not a string"),
        (None, "it is null, not a string"),
    ],
)
def test_id_problem(value: Any, problem: str | None) -> None:
    assert _rules.id_problem(value) == problem


@pytest.mark.parametrize("value", [".", "..", "a\nb", "a b", "x" * 201, "", None])
def test_check_diffusion_id_refuses(value: Any) -> None:
    with pytest.raises(ValueError, match="diffusion_id"):
        _rules.check_diffusion_id(value)


def test_check_prompt_caps_the_length() -> None:
    assert _rules.check_prompt("p" * _rules.MAX_PROMPT_LENGTH)
    with pytest.raises(ValueError, match="10001 characters long, over the 10000-character cap"):
        _rules.check_prompt("p" * (_rules.MAX_PROMPT_LENGTH + 1))


@pytest.mark.parametrize(("value", "ok"), [(0.05, True), (0.1, True), (5, True), (0.01, False), (0.0, False)])
def test_check_poll_interval_has_a_floor(value: float, ok: bool) -> None:
    if ok:
        assert _rules.check_poll_interval(value) == value
    else:
        with pytest.raises(ValueError, match="poll_interval"):
            _rules.check_poll_interval(value)


# ---------------------------------------------------------------------------------------- pacing
def test_token_bucket_spaces_tokens_at_the_rate() -> None:
    bucket = _rules.TokenBucket(rate=4)
    waits = [bucket.take(now=10.0) for _ in range(4)]
    assert waits == [0.0, 0.25, 0.5, 0.75]
    assert bucket.take(now=11.0) == 0.0  # the schedule caught up: no debt carried
    assert bucket.wait(now=11.0) == 0.25


def test_token_bucket_burst_saves_up_only_burst_tokens() -> None:
    bucket = _rules.TokenBucket(rate=2, burst=3)
    assert [bucket.take(now=100.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]
    # An idle hour saves up no more than ``burst`` tokens.
    assert [bucket.take(now=3700.0) for _ in range(4)] == [0.0, 0.0, 0.0, 0.5]


def test_token_bucket_says_when_several_tokens_are_free() -> None:
    bucket = _rules.TokenBucket(rate=10, burst=4)
    assert bucket.wait(now=50.0, tokens=4) == 0.0  # idle: the saved tokens are there
    for _ in range(4):
        bucket.take(now=50.0)
    assert bucket.wait(now=50.0) == pytest.approx(0.1)
    assert bucket.wait(now=50.0, tokens=2) == pytest.approx(0.2)
    bucket.pause_until(51.0)
    assert bucket.wait(now=50.0, tokens=2) == pytest.approx(1.1)  # one at the pause's end, one later


def test_token_bucket_pause_holds_every_token_back() -> None:
    bucket = _rules.TokenBucket(rate=10)
    bucket.pause_until(5.0)
    assert bucket.take(now=1.0) == 4.0
    assert bucket.take(now=1.0) == pytest.approx(4.1)
    bucket.pause_until(2.0)  # an earlier pause never shortens a later one
    assert bucket.wait(now=1.0) == pytest.approx(4.2)


@pytest.mark.parametrize(("rate", "burst"), [(0, 1), (-1, 1), (math.inf, 1), (math.nan, 1), (1, 0.5)])
def test_token_bucket_refuses_bad_budgets(rate: float, burst: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        _rules.TokenBucket(rate=rate, burst=burst)


@pytest.mark.parametrize(
    "body",
    [
        b'{"message": "key sk-live-123"}',
        b'{"message": "key sk\\u002dlive-123"}',  # a JSON escape inside the key
        '{"message": "key sk-live-123"}'.encode("utf-16"),  # json.loads detects UTF-16
        '{"message": "key sk-live-123"}'.encode("utf-32-le"),
    ],
)
def test_read_response_scrubs_every_encoding_of_the_key(body: bytes) -> None:
    attempt = _rules.read_response(200, body, secrets=_rules.secret_forms("sk-live-123"))
    assert attempt.data == {"message": "key ***"}


def test_read_response_keeps_a_record_without_the_key_as_it_is() -> None:
    body = b'{"id": "abc", "status": "PROCESSING", "images": [{"url": "https://x/y.png"}]}'
    attempt = _rules.read_response(200, body, secrets=_rules.secret_forms("sk-live-123"))
    assert attempt.data == json.loads(body)


@pytest.mark.parametrize("status", ["FINISHED", "FAILED"])
def test_a_cut_record_holds_its_bound_at_the_maximum_of_every_field(status: str) -> None:
    record = widest_record(status)
    cut, urls = _rules.split_record(record)
    assert len(json.dumps(cut).encode()) <= _rules.RECORD_LIMIT
    assert urls is not None
    assert len(urls) == _rules.MAX_IMAGES
    assert all(len(json.dumps(url)) - 2 == _rules.MAX_URL_LENGTH for url in urls), "all at the maximum"
    assert len(json.dumps(urls).encode()) <= _rules.IMAGE_URLS_LIMIT
    assert cut["images"] == urls[: len(cut["images"])]
    assert f"{len(cut['images'])} of its {_rules.MAX_IMAGES} image URLs were kept" in cut["truncated"]
    assert _rules.bounded_record(record) == cut


def test_a_record_that_fits_is_kept_whole_with_no_urls_apart() -> None:
    record = {"id": "d1", "status": "FINISHED", "images": [{"url": "https://x/1.png"}]}
    assert _rules.split_record(record) == (record, None)


@pytest.mark.parametrize(
    ("url", "counted"),
    [
        ("https://x/" + "a" * (_rules.MAX_URL_LENGTH - 10), True),
        ("https://x/" + "a" * (_rules.MAX_URL_LENGTH - 9), False),
        ("https://x/" + "\u00e9" * 300, True),
        ("https://x/" + "\u00e9" * 400, False),  # 410 characters, 2,410 as JSON
    ],
)
def test_the_url_length_cap_counts_json_escapes(url: str, counted: bool) -> None:
    assert (_rules.web_image_urls({"images": [url]}) == [url]) is counted
