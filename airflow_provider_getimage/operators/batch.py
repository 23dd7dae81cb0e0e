"""
``GetImageBatchOperator``: thousands of prompts in one task, each paid once, at the API's pace.

Thin over ``batch`` (inputs, durable state, manifest), ``batch_window`` (poll order, pacing) and
``triggers.batch``. Importable from ``operators.getimage`` (SPEC 9).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import AirflowFailException, BaseOperator, conf

from airflow_provider_getimage import _rules, assets, batch, storage
from airflow_provider_getimage.batch_window import BatchPacing, WindowOutcome, WindowWait
from airflow_provider_getimage.exceptions import (
    GetImageAuthError,
    GetImageError,
    GetImageNotFoundError,
    GetImageRateLimitError,
    GetImageSubmitUncertainError,
)
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.inputs import check_count, known_deep, known_now, task_named
from airflow_provider_getimage.triggers.batch import MAX_WINDOW, GetImageBatchTrigger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["GetImageBatchOperator"]

REFILL_SHARE = 0.25
"""The share of the window that must end before the trigger fires and the worker submits more."""
SUBMIT_OUTAGE_LIMIT = 5
"""Submissions in a row that provably did not reach the service before the task gives up."""
REASONS_SHOWN = 5


def _final_inputs(prompts: object, model: object, parameters: object) -> bool:
    """Whether the inputs are final at parse time (no template, no XComArg, inline list)."""
    if not (known_now(model) and known_deep(parameters) and isinstance(prompts, (list, tuple))):
        return False
    return all(known_deep(list(p.values())) if isinstance(p, dict) else known_deep(p) for p in prompts)


class GetImageBatchOperator(BaseOperator):
    """
    Generate images for a list of prompts in one task, at the API's pace, never paying twice.

    Submits from the worker (at most ``max_submissions_per_second``, at most ``max_in_flight``
    unfinished), waits in the triggerer (or the worker) for a window to drain, and repeats. Its
    progress lives under ``results`` (written before and after each submission), so a retry
    re-attaches. Writes ``<results>/manifest.jsonl``; returns a small summary (SPEC 9).

    .. seealso:: the how-to page ``docs/howto/batch.rst``.

    :param prompts: a list of strings or objects (``prompt``, ``model``, ``parameters``, ``key``),
        or the URI of a JSONL file of those (templated).
    :param model: the model of items that name none (templated).
    :param parameters: parameters of every item; an item's own override them (templated).
    :param results: the batch's folder URI: manifest and state (templated).
    :param results_conn_id: the storage connection of ``results`` (and of a prompts file).
    :param getimage_conn_id: the GetImage.io connection.
    :param max_submissions_per_second: the submission budget.
    :param max_in_flight: the most diffusions submitted and not yet ended.
    :param max_polls_per_second: the poll budget.
    :param poll_interval: seconds between two polls of one diffusion.
    :param timeout: seconds after its submission an item is given up (``timeout`` status).
    :param max_failures: items without images (failed, uncertain, timeout) tolerated.
    :param resubmit_uncertain: submit again, once, items whose submission may or may not have
        been taken (they may be paid twice).
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    """

    template_fields: Sequence[str] = (
        "prompts",
        "model",
        "parameters",
        "results",
        "results_conn_id",
        "getimage_conn_id",
    )
    template_fields_renderers = {"prompts": "json", "parameters": "json"}
    ui_color = "#d7c6f5"

    def __init__(
        self,
        *,
        prompts: str | Sequence[str | dict[str, Any]],
        model: str = _rules.DEFAULT_MODEL,
        parameters: dict[str, Any] | None = None,
        results: str,
        results_conn_id: str | None = None,
        getimage_conn_id: str = _rules.DEFAULT_CONN_ID,
        max_submissions_per_second: float = 2.0,
        max_in_flight: int = 100,
        max_polls_per_second: float = 10.0,
        poll_interval: float = _rules.DEFAULT_POLL_INTERVAL,
        timeout: float = _rules.DEFAULT_WAIT_TIMEOUT,
        max_failures: int = 0,
        resubmit_uncertain: bool = False,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompts = prompts
        self.model = model
        self.parameters = parameters
        self.results = results
        self.results_conn_id = results_conn_id
        self.getimage_conn_id = getimage_conn_id
        self.resubmit_uncertain = bool(resubmit_uncertain)
        self.deferrable = deferrable
        with task_named(self.task_id):
            self.max_submissions_per_second = _rules.check_positive(
                "max_submissions_per_second", max_submissions_per_second
            )
            self.max_polls_per_second = _rules.check_positive("max_polls_per_second", max_polls_per_second)
            self.max_in_flight = check_count("max_in_flight", max_in_flight)
            if self.max_in_flight > MAX_WINDOW:
                raise ValueError(f"max_in_flight must be at most {MAX_WINDOW}, got {max_in_flight!r}.")
            self.poll_interval = _rules.check_poll_interval(poll_interval)
            self.timeout = _rules.check_positive("timeout", timeout)
            if isinstance(max_failures, bool) or not isinstance(max_failures, int) or max_failures < 0:
                raise ValueError(f"max_failures must be a non-negative integer, got {max_failures!r}.")
            self.max_failures = max_failures
            # What is final now is checked now: a typo fails the DAG file, not a run.
            if _final_inputs(prompts, model, parameters):
                batch.batch_items(prompts, model, parameters)
            if known_now(results) and known_now(results_conn_id):
                storage.destination_path(results, results_conn_id)
        self._typical: float | None = None
        self._finished_ids: list[str] = []
        self._manifest: str | None = None

    # ------------------------------------------------------------------------------ entry points
    def execute(self, context: Context) -> dict[str, Any]:
        state = self._open_state(first=True)
        return self._advance(context, state)

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after a window drained: record what ended, then submit more or finish."""
        state = self._open_state(first=False)
        outcome = WindowOutcome.from_payload(event or {})
        if outcome.fatal is not None:
            raise GetImageAuthError(f"Batch {self.task_id}: {outcome.fatal}")
        self._typical = outcome.typical
        return self._advance(context, state, outcome)

    # ------------------------------------------------------------------------------ state
    def _open_state(self, first: bool) -> batch.BatchState:
        """The checked inputs and the batch's state; an earlier try's in-flight submissions marked."""
        with task_named(self.task_id):
            items = batch.batch_items(self.prompts, self.model, self.parameters, self.results_conn_id)
            folder = storage.destination_path(self.results, self.results_conn_id)
        state = batch.BatchState.open(folder, items)
        in_flight = state.with_status("intent")
        if in_flight:
            self.log.warning(
                "%d submission(s) were in flight when an earlier try stopped (items %s): marked uncertain",
                len(in_flight),
                in_flight[:20],
            )
            state.record(
                {
                    "i": index,
                    "e": "uncertain",
                    "error": "the submission was in flight when an earlier try stopped; it may have "
                    "been taken and charged, so it was not sent again",
                }
                for index in in_flight
            )
        if first and self.resubmit_uncertain:
            again = [
                i
                for i in state.with_status("uncertain")
                if state.states[i].diffusion_id is None and state.states[i].resubmits == 0
            ]
            if again:
                self.log.warning("Resubmitting %d uncertain item(s) (resubmit_uncertain=True)", len(again))
                state.record({"i": index, "e": "resubmit"} for index in again)
        self.log.info(
            "Batch of %d prompts in %s: %s",
            len(items),
            folder,
            {**state.counts(), "pending": len(state.with_status("pending"))},
        )
        return state

    def _pacing(self) -> BatchPacing:
        return BatchPacing(self.max_submissions_per_second, self.max_polls_per_second)

    # ------------------------------------------------------------------------------ the loop
    def _advance(
        self, context: Context, state: batch.BatchState, outcome: WindowOutcome | None = None
    ) -> dict[str, Any]:
        """
        Submit and wait, window after window, until every item ended; then the manifest.

        :param outcome: what the last window's wait found, not yet recorded: the items it saw end
            make room at once, and their results are read while submissions wait for their budget.
        """
        pacing = self._pacing()
        with GetImageHook(getimage_conn_id=self.getimage_conn_id) as hook:
            while not state.all_final():
                watched = self._submit_round(state, hook, pacing, outcome)
                if outcome is not None:
                    self._record_outcome(state, hook, pacing, outcome)
                    outcome = None
                if watched is not None:
                    self._record_outcome(state, hook, pacing, watched)
                    self._typical = watched.typical
                if state.with_status("pending") and len(state.with_status("submitted")) < self.max_in_flight:
                    continue  # room again (or submissions held back by a 429): submit more first
                window = state.with_status("submitted")
                if not window:
                    continue
                pending = len(state.with_status("pending"))
                # With nothing left to submit it still fires early: the worker's re-reads of the
                # ended then overlap the rest's generations instead of all coming at the end.
                fire_after = max(1, math.ceil(self.max_in_flight * REFILL_SHARE))
                ids = [str(state.states[i].diffusion_id) for i in window]
                submitted_at = [float(state.states[i].submitted_at or time.time()) for i in window]
                typical = self._typical if self._typical is not None else state.typical_generation()
                if self.deferrable:
                    self.log.info("Deferring: %d diffusion(s) in flight, %d to submit", len(window), pending)
                    self.defer(
                        trigger=GetImageBatchTrigger(
                            diffusion_ids=ids,
                            submitted_at=submitted_at,
                            getimage_conn_id=self.getimage_conn_id,
                            poll_interval=self.poll_interval,
                            max_polls_per_second=self.max_polls_per_second,
                            timeout=self.timeout,
                            fire_after=fire_after,
                            typical=typical,
                        ),
                        method_name="execute_complete",
                    )
                outcome = self._wait_in_worker(hook, ids, submitted_at, fire_after, typical)
                self._typical = outcome.typical
        return self._finish(context, state)

    def _submit_round(
        self,
        state: batch.BatchState,
        hook: GetImageHook,
        pacing: BatchPacing,
        outcome: WindowOutcome | None = None,
    ) -> WindowOutcome | None:
        """
        Submit pending items until the window is full, each paced, with an intent written first.

        While a submission waits for its budget, the poll budget (the worker's while no trigger
        runs) reads the results of ``outcome``'s ended items first, then polls the window's due
        diffusions, which then need no trigger and no re-read. Returns what those polls found
        (not yet recorded), or None when nothing was submitted.
        """
        ended = set(outcome.finished) | set(outcome.failed) | set(outcome.expired) if outcome else set()
        to_read = (
            [i for i in (*outcome.finished, *outcome.expired) if i not in outcome.records] if outcome else []
        )
        outages = 0
        watch: WindowWait | None = None
        while True:
            pending = state.with_status("pending")
            in_window = [
                i for i in state.with_status("submitted") if state.states[i].diffusion_id not in ended
            ]
            if watch is not None:
                in_window = in_window[: max(0, len(in_window) - watch.ended)]
            if not pending or len(in_window) >= self.max_in_flight:
                return None if watch is None else watch.outcome
            if watch is None:
                watch = self._watch(state, ended, pacing)
            index = pending[0]
            item = state.items[index]
            until = time.monotonic() + pacing.before_submit(time.monotonic())
            while (
                outcome is not None
                and to_read
                and time.monotonic() + pacing.polls.wait(time.monotonic()) < until
            ):
                diffusion_id = to_read.pop(0)
                record = self._reread(hook, pacing, diffusion_id)
                if record is not None:
                    outcome.records[diffusion_id] = record
            self._poll_until(hook, watch, until)
            if (delay := until - time.monotonic()) > 0:
                time.sleep(delay)
            state.record([{"i": index, "e": "intent"}])
            try:
                record = hook.submit_diffusion(item.prompt, item.model, **item.parameters)
            except GetImageRateLimitError as err:
                state.record([{"i": index, "e": "released"}])
                pause = pacing.rate_limited(time.monotonic(), err.retry_after)
                self.log.warning("Rate limited (429): the whole batch pauses %.1f s", pause)
            except GetImageSubmitUncertainError as err:
                state.record([{"i": index, "e": "uncertain", "error": _rules.clip(str(err), 500)}])
                self.log.warning("Item %d: submission uncertain, not sent again: %s", index, err)
            except GetImageAuthError:
                state.record([{"i": index, "e": "released"}])
                raise
            except GetImageError as err:
                if not err.transient:  # the service refused this item (400, 422): it was not taken
                    state.record([{"i": index, "e": "failed", "error": _rules.clip(str(err), 500)}])
                    continue
                state.record([{"i": index, "e": "released"}])  # provably not taken (connect, 503)
                outages += 1
                if outages >= SUBMIT_OUTAGE_LIMIT:
                    raise
                pacing.rate_limited(time.monotonic(), err.retry_after)
            else:
                outages = 0
                state.record([{"i": index, "e": "submitted", "id": record["id"]}])
                watch.add(str(record["id"]), float(state.states[index].submitted_at or time.time()))

    def _watch(self, state: batch.BatchState, ended: set[str], pacing: BatchPacing) -> WindowWait:
        """The wait on the window in flight, polled in the gaps between submissions (never done early)."""
        window = [i for i in state.with_status("submitted") if state.states[i].diffusion_id not in ended]
        return WindowWait(
            [str(state.states[i].diffusion_id) for i in window],
            [float(state.states[i].submitted_at or time.time()) for i in window],
            self.poll_interval,
            self.max_polls_per_second,
            self.timeout,
            fire_after=sys.maxsize,
            typical=self._typical if self._typical is not None else state.typical_generation(),
            keep_records=True,
            pacing=pacing,
        )

    def _poll_until(self, hook: GetImageHook, watch: WindowWait, until: float) -> None:
        """Poll the window's due diffusions until ``until`` (monotonic), within the poll budget."""
        while (left := until - time.monotonic()) > 0:
            action, value = watch.step()
            if action == "sleep" and float(value) < left:  # type: ignore[arg-type]
                time.sleep(float(value))  # type: ignore[arg-type]
                continue
            if action != "poll":
                return
            self._poll_one(hook, watch, int(value))  # type: ignore[arg-type]

    def _wait_in_worker(
        self,
        hook: GetImageHook,
        ids: list[str],
        submitted_at: list[float],
        fire_after: int,
        typical: float | None,
    ) -> WindowOutcome:
        """The trigger's wait, in the worker (non-deferrable): same order, same budget."""
        wait = WindowWait(
            ids,
            submitted_at,
            self.poll_interval,
            self.max_polls_per_second,
            self.timeout,
            fire_after,
            typical,
            keep_records=True,
        )
        while True:
            action, value = wait.step()
            if action == "done":
                return wait.outcome
            if action == "sleep":
                time.sleep(float(value))  # type: ignore[arg-type]
                continue
            self._poll_one(hook, wait, int(value))  # type: ignore[arg-type]

    def _poll_one(self, hook: GetImageHook, wait: WindowWait, position: int) -> None:
        """One poll of a window's entry in the worker, reported to its wait; a refused key raises."""
        deadline = wait.plan.submitted_at[position] + self.timeout
        try:
            record = hook.get_diffusion(wait.ids[position], deadline=deadline)
        except GetImageError as err:
            wait.on_error(position, err)
        else:
            wait.on_record(position, record)
        if wait.outcome.fatal is not None:
            raise GetImageAuthError(f"Batch {self.task_id}: {wait.outcome.fatal}")

    def _record_outcome(
        self, state: batch.BatchState, hook: GetImageHook, pacing: BatchPacing, outcome: WindowOutcome
    ) -> None:
        """Write what a window's wait found: image URLs (re-read when the event had none), reasons."""
        by_id = {state.states[i].diffusion_id: i for i in state.with_status("submitted")}
        events: list[dict[str, Any]] = []
        for diffusion_id in [*outcome.finished, *outcome.expired]:
            index = by_id.get(diffusion_id)
            if index is None:
                continue  # not this batch's, or already recorded
            record = outcome.records.get(diffusion_id) or self._reread(hook, pacing, diffusion_id)
            verdict = _rules.classify(record.get("status")) if record is not None else "running"
            if verdict == "success":
                events.append({"i": index, "e": "finished", "urls": _rules.web_image_urls(record)})
            elif verdict == "failed":
                events.append(
                    {"i": index, "e": "failed", "error": _rules.clip(_rules.failure_reason(record), 500)}
                )
            elif diffusion_id in outcome.expired:
                status = (record or {}).get("status", "unknown")
                events.append(
                    {
                        "i": index,
                        "e": "timeout",
                        "error": f"not finished {self.timeout:g} s after its submission (last status "
                        f"{status}); it may still finish",
                    }
                )
        for diffusion_id, reason in outcome.failed.items():
            index = by_id.get(diffusion_id)
            if index is not None:
                events.append({"i": index, "e": "failed", "error": reason})
        state.record(events)

    def _reread(self, hook: GetImageHook, pacing: BatchPacing, diffusion_id: str) -> dict[str, Any] | None:
        """One GET of a diffusion the trigger saw end (its event carries no image URLs)."""
        delay = pacing.before_poll(time.monotonic())
        if delay > 0:
            time.sleep(delay)
        try:
            return hook.get_diffusion(diffusion_id)
        except GetImageNotFoundError as err:
            return {"status": "FAILED", "message": str(err)}
        except GetImageAuthError:
            raise
        except GetImageError as err:
            self.log.warning(
                "Diffusion %s: could not read its result, will poll it again: %s", diffusion_id, err
            )
            return None

    def _finish(self, context: Context, state: batch.BatchState) -> dict[str, Any]:
        """Write the manifest; fail (after it) when more than ``max_failures`` items have no images."""
        manifest = state.write_manifest()
        summary = state.summary()
        self.log.info("Batch done: %s", summary)
        missing = summary["failed"] + summary["uncertain"] + summary["timeout"]
        if missing > self.max_failures:
            reasons = [
                f"item {i}{f' ({item.key})' if item.key else ''}: {s.status}: "
                f"{_rules.clip(s.error or '', 200)}"
                for i, (item, s) in enumerate(zip(state.items, state.states, strict=True))
                if s.status != "finished"
            ][:REASONS_SHOWN]
            raise AirflowFailException(
                f"Batch {self.task_id}: {missing} of {summary['total']} items have no images "
                f"(failed {summary['failed']}, uncertain {summary['uncertain']}, timeout "
                f"{summary['timeout']}), more than max_failures={self.max_failures}. Manifest: "
                f"{manifest}. First reasons: " + "; ".join(reasons)
            )
        self._finished_ids = [
            item.diffusion_id for item in state.states if item.status == "finished" and item.diffusion_id
        ]
        self._manifest = str(manifest)
        extra = assets.asset_extra(
            diffusion_ids=self._finished_ids, model=self.model, counts=summary, manifest=self._manifest
        )
        assets.announce(context, self.outlets, extra)
        return summary

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the manifest as output, the finished diffusions' ids as the external query."""
        from airflow_provider_getimage.lineage import operator_lineage

        inputs = [self.prompts] if isinstance(self.prompts, str) else None
        return operator_lineage(diffusion_ids=self._finished_ids, inputs=inputs, manifest=self._manifest)

    def on_kill(self) -> None:
        self.log.warning(
            "Task killed; submitted diffusions keep running (the batch state under results has them)."
        )
