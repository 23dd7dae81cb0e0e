"""``polling.DiffusionWatch``: the one judge of a poll, as a table, plus its clock and log lines."""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import (
    GetImageAuthError,
    GetImageDiffusionFailed,
    GetImageError,
    GetImageNotFoundError,
    GetImageTimeoutError,
)
from airflow_provider_getimage.polling import DiffusionWatch, push_finished, result_from_event
from tests.fakes import RecordingTI, task_context

if TYPE_CHECKING:
    from airflow_provider_getimage.polling import Outcome

LOG = logging.getLogger("tests.polling")
DIFFUSION_ID = "d-1"


def watch(**kwargs: Any) -> DiffusionWatch:
    return DiffusionWatch(DIFFUSION_ID, LOG, **kwargs)


@pytest.mark.parametrize(
    ("record", "outcome"),
    [
        ({"status": "FINISHED", "images": ["https://x/a.png"]}, "success"),
        ({"status": "finished"}, "success"),
        ({"status": "NEW"}, "running"),
        ({"status": "PROCESSING"}, "running"),
        ({"status": "QUEUED_SOMEWHERE"}, "running"),
        ({}, "running"),
        ({"status": None}, "running"),
        ({"status": "FAILED", "error": "nsfw"}, "failed"),
        ({"status": "cancelled"}, "failed"),
        ({"status": "EXPIRED"}, "failed"),
    ],
)
def test_a_record_is_judged_once_into_one_outcome(record: dict[str, Any], outcome: Outcome) -> None:
    poll = watch().judge(record)
    assert (poll.outcome, poll.record) == (outcome, record)
    if outcome == "failed":
        assert isinstance(poll.error, GetImageDiffusionFailed)
        assert poll.error.diffusion_id == DIFFUSION_ID
        assert DIFFUSION_ID in str(poll.error)
    else:
        assert poll.error is None


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (GetImageError("HTTP 503", status_code=503, transient=True), "running"),
        (GetImageError("connection reset", transient=True), "running"),
        (GetImageAuthError("HTTP 401", status_code=401), "error"),
        (GetImageNotFoundError("HTTP 404", status_code=404), "error"),
    ],
)
def test_a_failed_poll_is_an_outcome_not_a_raise(error: GetImageError, outcome: Outcome) -> None:
    poll = watch().judge_error(error)
    assert poll.outcome == outcome
    assert poll.record == {}
    assert poll.error is (error if outcome == "error" else None)


def test_check_fetches_with_the_id_and_judges_what_comes_back() -> None:
    asked: list[str] = []

    def fetch(diffusion_id: str) -> dict[str, Any]:
        asked.append(diffusion_id)
        return {"status": "PROCESSING"}

    def broken(diffusion_id: str) -> dict[str, Any]:
        raise GetImageAuthError("HTTP 401", status_code=401)

    one = watch()
    assert one.check(fetch).outcome == "running"
    assert one.record == {"status": "PROCESSING"}
    assert asked == [DIFFUSION_ID]
    assert one.check(broken).outcome == "error"
    assert one.record == {"status": "PROCESSING"}, "a failed poll keeps the latest record"


def test_each_status_change_is_logged_once_and_an_unknown_status_warns_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger=LOG.name):
        one = watch()  # the watch asks once whether DEBUG is on
        for status in ["NEW", "NEW", "WEIRD", "WEIRD", "PROCESSING", "WEIRD", "FINISHED"]:
            one.judge({"status": status})
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    changes = [line.split(" (")[0] for line in infos]
    assert changes == [
        "Diffusion d-1: submitted -> NEW",
        "Diffusion d-1: NEW -> WEIRD",
        "Diffusion d-1: WEIRD -> PROCESSING",
        "Diffusion d-1: PROCESSING -> WEIRD",
        "Diffusion d-1: WEIRD -> FINISHED",
    ]
    assert len(warnings) == 1
    assert "'WEIRD'" in warnings[0]
    assert sum(r.levelno == logging.DEBUG for r in caplog.records) == 2, "unchanged polls log at DEBUG"


def test_no_debug_call_at_all_when_debug_is_off(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOG.name):
        one = watch()
        one.judge({"status": "NEW"})
        one.judge({"status": "NEW"})
    assert not one.debug
    assert [r.levelno for r in caplog.records] == [logging.INFO]


def test_a_transient_poll_failure_warns_with_the_reason(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger=LOG.name):
        watch().judge_error(GetImageError("HTTP 503: busy", transient=True))
    assert [r.getMessage() for r in caplog.records] == [
        "Diffusion d-1: poll failed, will poll again: HTTP 503: busy"
    ]


def test_no_deadline_waits_forever() -> None:
    one = watch()
    assert not one.expired()
    assert one.until_deadline(7.5) == 7.5
    assert one.next_delay(5.0, None) == 5.0


def test_the_deadline_cuts_every_wait_short_and_then_expires() -> None:
    soon = watch(end_time=time.time() + 2.0)
    assert 1.0 < soon.next_delay(5.0, None) <= 2.0
    assert not soon.expired()
    past = watch(end_time=time.time() - 1)
    assert past.expired()
    assert past.until_deadline(5.0) == 0.0
    assert past.next_delay(5.0, 60.0) == 0.0


def test_backoff_spaces_polls_by_the_time_waited_within_the_cap() -> None:
    old = watch(started=time.monotonic() - 1000)
    assert old.next_delay(5.0, None) == 5.0, "no cap, no backoff"
    assert old.next_delay(5.0, 60.0) == 60.0, "a tenth of 1000 s, capped at 60"
    assert watch().next_delay(5.0, 60.0) == 5.0, "a young wait polls as asked"


def test_the_timeout_error_names_the_diffusion_and_its_last_status() -> None:
    one = watch()
    assert "last status unknown" in one.timeout_message()
    one.judge({"status": "PROCESSING"})
    error = one.timeout_error("after 3 s")
    assert isinstance(error, GetImageTimeoutError)
    assert error.diffusion_id == DIFFUSION_ID
    assert (
        str(error)
        == "Diffusion d-1 was not finished after 3 s (last status PROCESSING); it may still finish."
    )


def test_push_finished_pushes_both_xcoms_and_refuses_a_record_without_images() -> None:
    ti = RecordingTI()
    record = {
        "id": DIFFUSION_ID,
        "status": "FINISHED",
        "images": [{"url": "https://x/a.png"}, "https://x/b.png"],
    }
    assert push_finished(task_context(ti), LOG, DIFFUSION_ID, record) == [
        "https://x/a.png",
        "https://x/b.png",
    ]
    assert ti.pushed == {"diffusion_id": DIFFUSION_ID, "diffusion": record}
    with pytest.raises(GetImageError, match="FINISHED but lists no image URL") as err:
        push_finished(task_context(RecordingTI()), LOG, DIFFUSION_ID, {"status": "FINISHED", "images": []})
    assert err.value.diffusion_id == DIFFUSION_ID


URLS = [f"https://cdn.example.com/{n}/".ljust(_rules.MAX_URL_LENGTH, "u") for n in range(_rules.MAX_IMAGES)]
BIG = {"id": DIFFUSION_ID, "status": "FINISHED", "images": URLS, "blob": "b" * 100_000}


def test_a_cut_record_comes_back_with_every_image_url() -> None:
    """The trigger's event carries a cut record's URLs apart; the task returns them all."""
    cut, urls = _rules.split_record(BIG)
    assert urls == URLS
    assert len(cut["images"]) < len(URLS), "the record alone could not keep them all"
    event = {
        "status": "success",
        "diffusion_id": DIFFUSION_ID,
        "message": "",
        "diffusion": cut,
        "images": urls,
    }
    ti = RecordingTI()
    assert push_finished(task_context(ti), LOG, DIFFUSION_ID, result_from_event(event)) == URLS
    assert len(json.dumps(ti.pushed["diffusion"]).encode()) <= _rules.RECORD_LIMIT


def test_an_event_of_the_previous_version_is_still_read() -> None:
    """A trigger deferred before an upgrade sent its cut record with every URL inside, no ``images``."""
    old_cut = {
        "id": DIFFUSION_ID,
        "status": "FINISHED",
        "images": URLS,
        "truncated": "the record was 300000 bytes, over the 65536-byte cap: only id, status, ...",
    }
    event = {"status": "success", "diffusion_id": DIFFUSION_ID, "message": "", "diffusion": old_cut}
    ti = RecordingTI()
    assert push_finished(task_context(ti), LOG, DIFFUSION_ID, result_from_event(event)) == URLS
    assert len(json.dumps(ti.pushed["diffusion"]).encode()) <= _rules.RECORD_LIMIT


def test_image_urls_apart_are_type_checked() -> None:
    event = {"status": "success", "diffusion_id": "d", "diffusion": {"id": "d"}, "images": ["https://x/1", 3]}
    assert result_from_event(event)["images"] == ["https://x/1"]
