"""
``GetImageDiffusionOperator``: submit a GetImage.io diffusion and wait for its images.

``GetImageDownloadOperator`` lives in ``operators.download`` and is importable from here too
(SPEC 4 names it in this module). ``GetImageReviewOperator`` (``operators.review``, SPEC 10) is
importable from here too, loaded on first use: it needs Airflow 3.1+, and this module must keep
importing on Airflow 3.0.
"""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ResumableJobMixin, conf

from airflow_provider_getimage import _rules, assets
from airflow_provider_getimage.exceptions import GetImageNotFoundError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.inputs import known_now, task_named
from airflow_provider_getimage.links.getimage import GetImageImagesLink, logs_gallery_url
from airflow_provider_getimage.operators.batch import GetImageBatchOperator
from airflow_provider_getimage.operators.download import GetImageDownloadOperator
from airflow_provider_getimage.polling import (
    DiffusionWatch,
    failure_recorded,
    push_finished,
    result_from_event,
)
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

    from airflow_provider_getimage.operators.review import GetImageReviewOperator

__all__ = [
    "GetImageBatchOperator",
    "GetImageDiffusionOperator",
    "GetImageDownloadOperator",
    "GetImageReviewOperator",
]


class GetImageDiffusionOperator(ResumableJobMixin, BaseOperator):
    """
    Submit a prompt to GetImage.io and wait for the images.

    Pushes XCom ``diffusion_id`` right after the submission, before any wait, so the id is never
    lost; returns the image URLs (the id with ``wait_for_completion=False``) and the final record
    in XCom ``diffusion``. Deferrable: the wait and its deadline live in the trigger. Durable on
    Airflow 3.3+: a retry reconnects to the diffusion it submitted instead of paying twice.

    .. seealso::
        The modes, the XCom contract and the retry rules: :ref:`howto/operator:GetImageDiffusionOperator`.

    :param prompt: the text to draw (templated).
    :param model: the model (templated); ``None`` uses the connection's ``default_model`` extra.
    :param parameters: extra generation parameters (size, seed, ...), sent untouched (templated).
    :param getimage_conn_id: the GetImage.io connection (templated).
    :param wait_for_completion: wait for the images (default) or return the id at once.
    :param deferrable: wait in the triggerer instead of the worker; defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param timeout: seconds to wait for the generation before failing with ``GetImageTimeoutError``.
    :param max_poll_interval: opt-in backoff for long generations: polls spaced a tenth of the
        time waited so far, up to this many seconds; None (default) polls every ``poll_interval``.
    :param durable: keep the diffusion id in the task state store (Airflow 3.3+), so a retry
        reconnects instead of submitting again; False submits on every try.
    """

    template_fields: Sequence[str] = ("prompt", "model", "parameters", "getimage_conn_id")
    external_id_key = "getimage_diffusion_id"
    template_fields_renderers = {"parameters": "json"}
    operator_extra_links = (GetImageImagesLink(),)
    returns_image_urls = True
    """Its return value is a diffusion's image URLs and it pushes ``diffusion_id`` (read by downloads)."""
    diffusion_pushed = False
    """Whether this try pushed its diffusion to XCom (the extra link reads XCom only then)."""
    ui_color = "#d7c6f5"

    def __init__(
        self,
        *,
        prompt: str,
        model: str | None = _rules.DEFAULT_MODEL,
        parameters: dict[str, Any] | None = None,
        getimage_conn_id: str = _rules.DEFAULT_CONN_ID,
        wait_for_completion: bool = True,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        poll_interval: float = _rules.DEFAULT_POLL_INTERVAL,
        timeout: float = _rules.DEFAULT_WAIT_TIMEOUT,
        max_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.prompt = prompt
        self.model = model
        self.parameters = parameters
        self.getimage_conn_id = getimage_conn_id
        self.wait_for_completion = wait_for_completion
        self.deferrable = deferrable
        self._submission: dict[str, Any] | None = None
        self._result: list[str] | str | None = None
        self._diffusion_id: str | None = None
        self._image_urls: list[str] = []
        with task_named(self.task_id):
            self.poll_interval = _rules.check_poll_interval(poll_interval)
            self.timeout = _rules.check_positive("timeout", timeout)
            self.max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, self.poll_interval)
        self._check_inputs(at_parse_time=True)

    def _check_inputs(self, at_parse_time: bool = False) -> tuple[str, str | None, dict[str, Any]]:
        """Check prompt, model, parameters and conn id; at parse time only the values already final."""
        with task_named(self.task_id, at_parse_time=at_parse_time):
            return self._checked_inputs(at_parse_time)

    def _checked_inputs(self, at_parse_time: bool) -> tuple[str, str | None, dict[str, Any]]:

        def final(value: object) -> bool:
            return not at_parse_time or known_now(value)

        prompt = _rules.check_prompt(self.prompt) if final(self.prompt) else self.prompt
        model = self.model
        if model is not None and final(model):
            model = _rules.check_model(model)
        parameters = _rules.check_parameters(self.parameters) if final(self.parameters) else {}
        if final(self.getimage_conn_id) and (
            not isinstance(self.getimage_conn_id, str) or not self.getimage_conn_id.strip()
        ):
            raise ValueError(f"getimage_conn_id must be a non-empty string, got {self.getimage_conn_id!r}.")
        return prompt, model, parameters

    @cached_property
    def hook(self) -> GetImageHook:
        """The hook of this task's connection (one keep-alive session for submit and polls)."""
        return GetImageHook(getimage_conn_id=self.getimage_conn_id)

    def execute(self, context: Context) -> list[str] | str:
        with failure_recorded(context):  # the gallery page shows why the task failed
            self._check_inputs()  # fail before any submission, whatever path follows
            try:
                with logs_gallery_url(self, context):
                    return self.execute_resumable(context)
            finally:
                self.hook.close()

    # ResumableJobMixin: the diffusion id lives in the task state store, so a retry after a crash
    # reconnects to the diffusion instead of paying for a second one. XComs are cleared before a
    # retry; the task state store is not.
    def submit_job(self, context: Context) -> str:
        """Submit the (rendered, checked) prompt; the id returned is persisted before any wait."""
        prompt, model, parameters = self._check_inputs()
        record = self.hook.submit_diffusion(prompt, model, **parameters)
        self._submission = record
        return str(record["id"])

    def get_job_status(self, external_id: Any, context: Context) -> str:
        """The status of the diffusion an earlier try submitted (unknown ids resubmit)."""
        try:
            return str(self.hook.get_diffusion(str(external_id)).get("status"))
        except GetImageNotFoundError:
            return "NOT_FOUND"

    def is_job_active(self, status: str) -> bool:
        return _rules.classify(status) == "running" and status != "NOT_FOUND"

    def is_job_succeeded(self, status: str) -> bool:
        return _rules.classify(status) == "success"

    def poll_until_complete(self, external_id: Any, context: Context) -> list[str] | str:  # type: ignore[override]
        """
        Push ``diffusion_id`` at once, then wait (in the worker or the triggerer) for the images.

        Returns the task's result: on a reconnect the mixin returns this value as it is.
        """
        diffusion_id = str(external_id)
        context["ti"].xcom_push(key="diffusion_id", value=diffusion_id)
        self.diffusion_pushed = True
        # The latest record known so far; the final one replaces it when the diffusion finishes.
        latest = _rules.bounded_record(self._submission or {"id": diffusion_id})
        context["ti"].xcom_push(key="diffusion", value=latest)
        if not self.wait_for_completion:
            self._diffusion_id, self._result = diffusion_id, diffusion_id
            self._announce(context)
            return diffusion_id
        if self.deferrable:
            final = self._check_then_defer(diffusion_id, end_time=time.time() + self.timeout)
        else:
            final = self.hook.wait_for_diffusion(
                diffusion_id, self.poll_interval, self.timeout, self.max_poll_interval
            )
        self._result = self._finished(context, diffusion_id, final)
        return self._result

    def get_job_result(self, external_id: Any, context: Context) -> list[str] | str:
        """The task's return value; after an earlier try's success, read from the service."""
        if self._result is None:
            diffusion_id = str(external_id)
            context["ti"].xcom_push(key="diffusion_id", value=diffusion_id)
            self.diffusion_pushed = True
            self._result = self._finished(context, diffusion_id, self.hook.get_diffusion(diffusion_id))
        return self._result

    def _check_then_defer(self, diffusion_id: str, end_time: float) -> dict[str, Any]:
        """Check once (a quick generation needs no triggerer): the finished record, or defer."""
        # An outage counts as running: the trigger will poll through it.
        poll = DiffusionWatch(diffusion_id, self.log).check(self.hook.get_diffusion)
        if poll.error is not None:
            raise poll.error
        if poll.outcome == "success":
            return poll.record
        self.log.info("Deferring: diffusion %s is waited for in the triggerer", diffusion_id)
        self.defer(
            trigger=GetImageDiffusionTrigger(
                diffusion_id=diffusion_id,
                getimage_conn_id=self.getimage_conn_id,
                poll_interval=self.poll_interval,
                end_time=end_time,
                max_poll_interval=self.max_poll_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        """Resume after the trigger: the image URLs, or a task failure that names the diffusion."""
        self.diffusion_pushed = True  # before deferring, the try pushed ``diffusion_id``
        with failure_recorded(context), logs_gallery_url(self, context):
            record = result_from_event(event)
            # The trigger's own id (checked when it was built), not whatever the record claims.
            diffusion_id = str((event or {}).get("diffusion_id") or record.get("id"))
            return self._finished(context, diffusion_id, record)

    def _finished(self, context: Context, diffusion_id: str, record: dict[str, Any]) -> list[str]:
        """Push the finished diffusion's XComs, remember it for lineage, announce it to the outlets."""
        urls = push_finished(context, self.log, diffusion_id, record)
        self._diffusion_id, self._image_urls = diffusion_id, urls
        self._announce(context)
        return urls

    def _announce(self, context: Context) -> None:
        """Put what this task made on the events of its ``Asset`` outlets (``assets.asset_extra``)."""
        extra = assets.asset_extra(
            diffusion_ids=[self._diffusion_id] if self._diffusion_id else [],
            model=self.model,
            prompt=self.prompt,
            image_urls=self._image_urls,
        )
        assets.announce(context, self.outlets, extra)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the image URLs as outputs, the diffusion id as the external query."""
        from airflow_provider_getimage.lineage import operator_lineage

        return operator_lineage(diffusion_ids=self._diffusion_id, image_urls=self._image_urls)

    def on_kill(self) -> None:
        """GetImage.io has no cancel call: say which diffusion keeps running, close the session."""
        self.log.warning("Task killed; the submitted diffusion (see XCom 'diffusion_id') is not cancelled.")
        if "hook" in self.__dict__:
            self.hook.close()


def __getattr__(name: str) -> Any:
    """``GetImageReviewOperator`` on first use; on Airflow < 3.1 its import error names the version."""
    if name == "GetImageReviewOperator":
        from airflow_provider_getimage.operators.review import GetImageReviewOperator

        return GetImageReviewOperator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
