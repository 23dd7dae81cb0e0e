"""
A broken or hostile API, played by ``hostile_server.HostileServer`` on loopback, on every path.

Each scenario is one hostile answer on one path (the sync hook's wait, the trigger, an image
download, a submission, the connection), with the outcome it must come to. Every scenario also
asserts the time (a ratio to the configured timeout) and that the API key, in any form, reaches no
log line, error, event or record; the endless and huge bodies also run the sync hook in a child
process with an address-space limit. The "hostile API" table of docs/reliability.md is printed from this list
(``python -m tests.reliability.test_hostile_api``) and a test keeps the two in step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

import pytest

from airflow_provider_getimage import _rules, storage
from airflow_provider_getimage.exceptions import GetImageError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator
from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger
from tests.fakes import RecordingTI, task_context
from tests.reliability.hostile_server import HostileServer, Play, echo_headers, json_body, widest_record

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

Path_ = Literal["sync hook", "trigger", "download", "submit", "connection", "input"]
RELIABILITY_PAGE = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
KEY = "sk-live-hostile/4f2a+9c1e"
WAIT = 3.0
"""The wait's timeout (``wait_for_diffusion(timeout=...)``, the trigger's ``end_time``)."""
REQUEST_TIMEOUT = 2.0
"""The connection's ``request_timeout`` (and the downloads')."""
FAST = _rules.RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.1, retry_after_cap=0.1)
DIFFUSION = "/v1/diffusions/d1"
IMAGE = "/images/d1.png"
OK_URL = "https://cdn.example.com/d1/1.png"


@dataclass(frozen=True)
class Result:
    """What one scenario came to: the outcome's name, the error or event/record, and the time."""

    outcome: str
    error: BaseException | None = None
    data: dict[str, Any] | None = None
    elapsed: float = 0.0
    hits: dict[str, int] = field(default_factory=dict)
    """Requests the server saw, per path."""

    @property
    def text(self) -> str:
        """Everything the provider made of the answer, as text (to look for the key in)."""
        return f"{self.error!s} {json.dumps(self.data, default=str)}"


@dataclass(frozen=True)
class Scenario:
    """
    One hostile answer on one path.

    :param answer: the answer, for the table.
    :param path: where it is played.
    :param play: what the server sends (at the diffusion, image or submission path).
    :param outcome: the error class name, or the trigger event's status, or ``success``.
    :param says: texts the error, the event or the record must hold.
    :param memory: also run the sync hook in a child process under an address-space limit.
    """

    answer: str
    path: Path_
    play: Play | None
    outcome: str
    says: tuple[str, ...] = ()
    memory: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    check: Callable[[Result], None] | None = None

    @property
    def id(self) -> str:
        return f"{self.path}: {self.answer}".replace(" ", "-")


def record(**fields: Any) -> Play:
    return Play(body=json_body({"id": "d1", **fields}))


def finished(**fields: Any) -> Play:
    return record(status="FINISHED", images=[OK_URL], **fields)


ENDLESS = Play(body=b'{"id": "d1", "status": "PROCESSING", "pad": "' + b"x" * 1024, stream="endless")
HUGE = Play(body=b" ", stream="huge")
TRICKLE = Play(body=json_body({"id": "d1", "status": "FINISHED", "images": [OK_URL]}), stream="trickle")
HEADERS_TRICKLE = Play(
    body=json_body({"id": "d1", "status": "FINISHED", "images": [OK_URL]}), stream="headers_trickle"
)
IMAGE_HEADERS_TRICKLE = Play(body=b"\x89PNG\r\n\x1a\n", stream="headers_trickle", content_type="image/png")
IMAGE_ENDLESS = Play(body=b"\x89PNG" * 1024, stream="endless", content_type="image/png")
IMAGE_TRICKLE = Play(body=b"\x89PNG\r\n\x1a\n" * 4, stream="trickle", content_type="image/png")
ECHO_500 = Play(500, echo_headers(lambda headers: {"error": {"message": f"upstream said: {headers}"}}))
ECHO_401 = Play(401, echo_headers(lambda headers: {"detail": f"bad auth {quote(headers)} {headers!r}"}))
ECHO_FAILED = Play(body=echo_headers(lambda h: {"id": "d1", "status": "FAILED", "message": f"refused: {h}"}))
ECHO_FINISHED = Play(
    body=echo_headers(lambda h: {"id": "d1", "status": "FINISHED", "images": [OK_URL], "debug": h})
)


def no_images_beyond_the_cap(result: Result) -> None:
    urls = _rules.web_image_urls(result.data or {})
    assert urls == [f"https://cdn.example.com/{n}.png" for n in range(_rules.MAX_IMAGES)]


def bounded_event(result: Result) -> None:
    assert len(json.dumps(result.data)) < _rules.RECORD_LIMIT + 4096


WIDEST = widest_record("FINISHED", max_url_length=_rules.MAX_URL_LENGTH, max_images=_rules.MAX_IMAGES)
EVENT_LIMIT = _rules.RECORD_LIMIT + _rules.IMAGE_URLS_LIMIT + 1024
"""A success event: its record, its image URLs apart, and a few short fields."""


def every_url_reaches_the_task(result: Result) -> None:
    """The event holds its bound, and execute_complete returns every image URL from it."""
    event = result.data or {}
    assert len(json.dumps(event).encode()) <= EVENT_LIMIT
    assert len(json.dumps(event["diffusion"]).encode()) <= _rules.RECORD_LIMIT
    expected = _rules.web_image_urls(WIDEST)
    assert len(expected) == _rules.MAX_IMAGES
    for task in (
        GetImageDiffusionOperator(task_id="make", prompt="a fox"),
        GetImageDiffusionSensor(task_id="wait", diffusion_id="d1"),
    ):
        ti = RecordingTI()
        assert task.execute_complete(task_context(ti), event) == expected
        assert len(json.dumps(ti.pushed["diffusion"]).encode()) <= _rules.RECORD_LIMIT


def sent_once(result: Result) -> None:
    assert result.hits == {"/v1/diffusions": 1}, "a submission whose answer was lost is never resent"


def bounded(result: Result) -> None:
    """The error is short, or the event is bounded."""
    if result.error is not None:
        assert len(str(result.error)) < _rules.TEXT_LIMIT + 300
    else:
        bounded_event(result)


def on_paths(
    paths: tuple[Path_, ...], answer: str, play: Play, outcomes: dict[str, str], **kw: Any
) -> list[Scenario]:
    """The same answer on several paths, each with its own outcome."""
    return [Scenario(answer, path, play, outcomes[path], **kw) for path in paths]


POLLS: tuple[Path_, ...] = ("sync hook", "trigger")
TIMEOUT = {"sync hook": "GetImageTimeoutError", "trigger": "timeout", "download": "GetImageError"}
ERROR = {"sync hook": "GetImageError", "trigger": "error"}

SCENARIOS: list[Scenario] = [
    # ----------------------------------------------------------------- bounded memory and time
    *on_paths(("sync hook", "trigger"), "endless body", ENDLESS, TIMEOUT, memory=True),
    Scenario("endless image", "download", IMAGE_ENDLESS, "GetImageError", says=("max_image_bytes",)),
    *on_paths(POLLS, "200 MB body (Content-Length declared)", HUGE, TIMEOUT, memory=True),
    Scenario(
        "200 MB image", "download", Play(body=b" ", stream="huge", content_type="image/png"), "GetImageError"
    ),
    *on_paths(POLLS, "1 byte a second", TRICKLE, TIMEOUT),
    Scenario("image at 1 byte a second", "download", IMAGE_TRICKLE, "GetImageError", says=("2 s",)),
    *on_paths(POLLS, "status line and headers at 1 byte a second", HEADERS_TRICKLE, TIMEOUT),
    Scenario(
        "status line and headers at 1 byte a second",
        "submit",
        HEADERS_TRICKLE,
        "GetImageSubmitUncertainError",
        says=("within 2 s", "may have been created"),
        check=sent_once,
    ),
    Scenario(
        "image whose status line and headers come at 1 byte a second",
        "download",
        IMAGE_HEADERS_TRICKLE,
        "GetImageError",
        says=("within 2 s",),
    ),
    # ----------------------------------------------------------------------------- key echoed
    Scenario("500 echoing the request headers", "sync hook", ECHO_500, "GetImageTimeoutError"),
    Scenario("401 echoing the headers, raw and percent-encoded", "sync hook", ECHO_401, "GetImageAuthError"),
    Scenario("401 echoing the headers, raw and percent-encoded", "trigger", ECHO_401, "error", says=("401",)),
    *on_paths(
        POLLS,
        "FAILED whose reason echoes the headers",
        ECHO_FAILED,
        {"sync hook": "GetImageDiffusionFailed", "trigger": "failed"},
        says=("refused", "***"),
    ),
    *on_paths(
        POLLS,
        "FINISHED echoing the headers in a field",
        ECHO_FINISHED,
        {"sync hook": "success", "trigger": "success"},
    ),
    Scenario("API key pasted with a line break", "connection", None, "GetImageError", says=("line break",)),
    # ------------------------------------------------------------------------- wrong types
    *on_paths(
        POLLS, "FINISHED with images: 5", record(status="FINISHED", images=5), ERROR, says=("'images'", "d1")
    ),
    *on_paths(POLLS, "status: {}", record(status={}), ERROR, says=("'status'", "d1")),
    *on_paths(
        POLLS,
        "images entry that is a number",
        record(status="FINISHED", images=[OK_URL, 3]),
        ERROR,
        says=("images[1]",),
    ),
    *on_paths(POLLS, "id: 7", record(id=7, status="FINISHED"), ERROR, says=("'id'",)),
    *on_paths(POLLS, "FAILED with error: []", record(status="FAILED", error=[]), ERROR, says=("'error'",)),
    Scenario("a JSON list instead of an object", "sync hook", Play(body=b"[1, 2]"), "GetImageTimeoutError"),
    # ------------------------------------------------------------------------ bounded records
    *on_paths(
        POLLS,
        "900 kB failure reason",
        record(status="FAILED", message="r" * 900_000),
        {"sync hook": "GetImageDiffusionFailed", "trigger": "failed"},
        says=("characters cut",),
        check=bounded,
    ),
    Scenario(
        "500 kB FINISHED record",
        "trigger",
        finished(blob="b" * 500_000),
        "success",
        says=("truncated",),
        check=bounded_event,
    ),
    Scenario(
        "FINISHED record at the maximum of every field (0.9 MB, widest escapes, 120 URLs)",
        "trigger",
        Play(body=json.dumps(WIDEST, ensure_ascii=False).encode()),
        "success",
        says=("truncated", "image URLs were kept"),
        check=every_url_reaches_the_task,
    ),
    Scenario(
        "javascript:/file: URLs and 150 images",
        "sync hook",
        record(
            status="FINISHED",
            images=[
                "javascript:alert(1)",
                "file:///etc/passwd",
                *(f"https://cdn.example.com/{n}.png" for n in range(150)),
            ],
        ),
        "success",
        check=no_images_beyond_the_cap,
    ),
    # ----------------------------------------------------------------------------------- ids
    *(
        Scenario(
            f"submission answer with id {shown}",
            "submit",
            Play(body=json_body(body)),
            "GetImageSubmitUncertainError",
            says=("may exist and was charged",),
        )
        for shown, body in (
            ("'..'", {"id": "..", "status": "NEW"}),
            ("''", {"id": "", "status": "NEW"}),
            ("7", {"id": 7, "status": "NEW"}),
            ("'a\\nb'", {"id": "a\nb", "status": "NEW"}),
            ("missing", {"status": "NEW"}),
        )
    ),
    Scenario("(none: the DAG asks for id '..')", "input", None, "ValueError", says=("'.' or '..'",)),
]


# ---------------------------------------------------------------------------------------- runs
@pytest.fixture
def server() -> Iterator[HostileServer]:
    hostile = HostileServer().start()
    yield hostile
    hostile.stop()


def connection(server: HostileServer, password: str = KEY) -> str:
    extra = {"request_timeout": REQUEST_TIMEOUT}
    return json.dumps({"conn_type": "getimage", "password": password, "host": server.url, "extra": extra})


def outcome_of(error: BaseException) -> str:
    return type(error).__name__


def run(scenario: Scenario, server: HostileServer, tmp_path: Path) -> Result:
    """Play one scenario: serve its answer, call its path, and time it."""
    if scenario.play is not None:
        where = {"download": IMAGE, "submit": "/v1/diffusions"}.get(scenario.path, DIFFUSION)
        server.play(where, scenario.play)
    started = time.monotonic()
    try:
        outcome, data = call(scenario.path, server, tmp_path)
    except (GetImageError, ValueError) as err:
        return Result(outcome_of(err), error=err, elapsed=time.monotonic() - started, hits=dict(server.hits))
    return Result(outcome, data=data, elapsed=time.monotonic() - started, hits=dict(server.hits))


def call(path: Path_, server: HostileServer, tmp_path: Path) -> tuple[str, dict[str, Any] | None]:
    hook = GetImageHook(retry_policy=FAST)
    if path == "sync hook":
        return "success", hook.wait_for_diffusion("d1", poll_interval=0.1, timeout=WAIT)
    if path == "submit":
        return "success", hook.submit_diffusion("a hostile fox")
    if path == "connection":
        os.environ["AIRFLOW_CONN_GETIMAGE_DEFAULT"] = connection(server, password="sk-live-\nhostile-key")
        return "success", GetImageHook(retry_policy=FAST).get_diffusion("d1")
    if path == "input":
        return "success", hook.get_diffusion("..")
    if path == "download":
        destination = storage.destination_path(str(tmp_path))
        options: dict[str, Any] = {
            "request_timeout": REQUEST_TIMEOUT,
            "attempts": 1,
            "max_image_bytes": 8 * 1024 * 1024,
        }
        with storage.ImageStore(destination, logging.getLogger("test"), **options) as images:
            return "success", {"file": images.save(server.url + IMAGE, "d1", 0)}
    trigger = GetImageDiffusionTrigger("d1", poll_interval=0.1, end_time=time.time() + WAIT)

    async def events() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (payload,) = asyncio.run(events())
    return payload["status"], payload


SLACK = 0.25
"""The share of a ``request_timeout`` allowed on top of a time bound: start-up and a loaded machine."""


def time_bound(path: Path_) -> float:
    """How long a path may take: within one ``request_timeout`` of its deadline (or of one request)."""
    return {"sync hook": WAIT, "trigger": WAIT, "download": REQUEST_TIMEOUT}.get(
        path, REQUEST_TIMEOUT
    ) + REQUEST_TIMEOUT * (1 + SLACK)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
def test_hostile_answer(
    scenario: Scenario,
    server: HostileServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    default_retry_policy: Callable[[_rules.RetryPolicy], _rules.RetryPolicy],
) -> None:
    default_retry_policy(FAST)  # the trigger's own hook too
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", connection(server))

    result = run(scenario, server, tmp_path)

    assert result.outcome == scenario.outcome, result.text[:500]
    for text in scenario.says:
        assert text in result.text
    if scenario.check is not None:
        scenario.check(result)
    assert result.elapsed < time_bound(scenario.path), f"took {result.elapsed:.1f} s"
    captured = capfd.readouterr()
    seen = result.text + caplog.text + captured.out + captured.err
    assert not [form for form in _rules.secret_forms(KEY) if form in seen], "the key was echoed"
    if scenario.path in ("connection", "input"):
        assert not server.hits, "nothing was sent"


def test_echoed_key_is_scrubbed_from_retry_lines(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """The retry lines of a 500 that echoes the headers are logged, scrubbed."""
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", connection(server))
    server.play(DIFFUSION, ECHO_500)
    with pytest.raises(GetImageError):
        GetImageHook(retry_policy=FAST).get_diffusion("d1")
    out = capfd.readouterr().out
    assert "retry 1 of 2" in out
    assert '"Authorization": "Bearer ***"' in out
    assert KEY not in out


def test_echoed_key_and_big_record_are_not_stored_in_xcom(
    server: HostileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XCom ``diffusion`` from the sensor holds a scrubbed record, cut to the record bound."""
    monkeypatch.setenv("AIRFLOW_CONN_GETIMAGE_DEFAULT", connection(server))
    server.play(
        DIFFUSION,
        Play(
            body=echo_headers(lambda h: {"id": "d1", "status": "FINISHED", "images": [OK_URL], "h": h * 400})
        ),
    )
    ti = RecordingTI()
    sensor = GetImageDiffusionSensor(task_id="wait", diffusion_id="d1")
    assert sensor.poke(task_context(ti)).xcom_value == [OK_URL]
    stored = json.dumps(ti.pushed)
    assert KEY not in stored
    assert "truncated" in stored
    assert len(stored) < _rules.RECORD_LIMIT + 4096


# ------------------------------------------------------------------------------ bounded memory
CHILD = textwrap.dedent(
    """
    import os, resource, sys
    from airflow_provider_getimage._rules import RetryPolicy
    from airflow_provider_getimage.hooks.getimage import GetImageHook

    hook = GetImageHook(retry_policy=RetryPolicy(max_attempts=3, backoff_base=0.05, backoff_max=0.1))
    hook.get_conn()  # the connection read and the session built before the limit
    used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + 200 * 1024 * 1024, hard))
    try:
        hook.wait_for_diffusion("d1", poll_interval=0.1, timeout=float(sys.argv[1]))
        outcome = "success"
    except MemoryError:
        outcome = "MemoryError"
    except Exception as err:
        outcome = type(err).__name__
    print("OUTCOME=" + outcome)
    """
)

MEMORY = [s for s in SCENARIOS if s.memory and s.path == "sync hook"]


@pytest.mark.parametrize("scenario", MEMORY, ids=[s.id for s in MEMORY])
def test_memory_stays_bounded(scenario: Scenario, server: HostileServer) -> None:
    """Under an address-space limit of current use + 200 MB, the wait ends with its error, not MemoryError."""
    assert scenario.play is not None
    server.play(DIFFUSION, scenario.play)
    env = {**os.environ, "AIRFLOW_CONN_GETIMAGE_DEFAULT": connection(server)}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(WAIT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    outcomes = [line for line in done.stdout.splitlines() if line.startswith("OUTCOME=")]
    assert outcomes == [f"OUTCOME={scenario.outcome}"], done.stdout[-2000:] + done.stderr[-2000:]


# ------------------------------------------------------------------------------ docs table
def outcome_text(scenario: Scenario) -> str:
    if scenario.outcome == "success":
        return "success"
    if scenario.path == "trigger":
        return f"`{scenario.outcome}` event"
    return f"fails: `{scenario.outcome}`"


def markdown_table() -> str:
    """The "hostile API" table of docs/reliability.md for these scenarios."""
    lines = ["| hostile answer | path | outcome |", "|---|---|---|"]
    lines += [f"| {s.answer} | {s.path} | {outcome_text(s)} |" for s in SCENARIOS]
    return "\n".join(lines)


def test_docs_table_matches_the_scenarios() -> None:
    assert markdown_table() in RELIABILITY_PAGE.read_text(), (
        "docs/reliability.md's hostile API table is stale: "
        "python -m tests.reliability.test_hostile_api prints it"
    )


if __name__ == "__main__":
    print(markdown_table())
