"""Sensor that waits for a submitted GetImage.io diffusion and returns its image URLs."""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import (
    AirflowSensorTimeout,
    AirflowSkipException,
    BaseSensorOperator,
    PokeReturnValue,
    conf,
)

from airflow_provider_getimage import _rules, assets
from airflow_provider_getimage.exceptions import GetImageTimeoutError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.inputs import known_now, task_named
from airflow_provider_getimage.links.getimage import GetImageImagesLink, logs_gallery_url
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

__all__ = ["GetImageDiffusionSensor"]


class GetImageDiffusionSensor(BaseSensorOperator):
    """
    Wait until a diffusion is FINISHED; return its image URLs (XCom ``return_value``).

    Pairs with ``GetImageDiffusionOperator(wait_for_completion=False)``. A diffusion that ends in
    a failure status fails the task at once instead of poking until the sensor's timeout. The full
    record goes to XCom ``diffusion``. Works in ``poke``, ``reschedule`` and deferrable mode (the
    wait then happens in the triggerer, deadline included).

    .. seealso::
        :ref:`howto/sensor:GetImageDiffusionSensor`

    :param diffusion_id: the diffusion to wait for (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='submit', key='diffusion_id') }}"``.
    :param getimage_conn_id: the GetImage.io connection (templated).
    :param deferrable: wait in the triggerer; defaults to ``[operators] default_deferrable``.
    :param max_poll_interval: opt-in backoff for long generations, in seconds, as on
        ``GetImageDiffusionOperator`` (in the triggerer). In ``poke``/``reschedule`` mode it turns
        on Airflow's own ``exponential_backoff`` with this cap as ``max_wait``.
    """

    template_fields: Sequence[str] = ("diffusion_id", "getimage_conn_id")
    operator_extra_links = (GetImageImagesLink(),)
    returns_image_urls = True
    """Its return value is a diffusion's image URLs and it pushes ``diffusion_id`` (read by downloads)."""
    diffusion_pushed = False
    """Whether this try pushed its diffusion to XCom (the extra link reads XCom only then)."""
    ui_color = "#e8dcfa"

    def __init__(
        self,
        *,
        diffusion_id: str,
        getimage_conn_id: str = _rules.DEFAULT_CONN_ID,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        max_poll_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("poke_interval", _rules.DEFAULT_POLL_INTERVAL)
        super().__init__(**kwargs)
        self.max_poll_interval = _rules.check_max_poll_interval(
            max_poll_interval, self._poke_interval_seconds()
        )
        if self.max_poll_interval is not None:
            self.exponential_backoff = True
            self.max_wait = timedelta(seconds=self.max_poll_interval)
        if known_now(diffusion_id):  # a typo fails the DAG file, not a run
            with task_named(self.task_id):
                _rules.check_diffusion_id(diffusion_id)
        self.diffusion_id = diffusion_id
        self.getimage_conn_id = getimage_conn_id
        self.deferrable = deferrable
        self._watch: DiffusionWatch | None = None

    @cached_property
    def hook(self) -> GetImageHook:
        return GetImageHook(getimage_conn_id=self.getimage_conn_id)

    def _poke_interval_seconds(self) -> float:
        interval = self.poke_interval
        return interval.total_seconds() if isinstance(interval, timedelta) else float(interval)

    def _diffusion_id(self) -> str:
        """The rendered id, checked: an empty one (say, a missing XCom) must not reach the API."""
        return _rules.check_diffusion_id(self.diffusion_id)

    def watch(self) -> DiffusionWatch:
        """The watch of the rendered diffusion (one per task try: its status changes are logged once)."""
        diffusion_id = self._diffusion_id()
        if self._watch is None or self._watch.diffusion_id != diffusion_id:
            self._watch = DiffusionWatch(diffusion_id, self.log)
        return self._watch

    def poke(self, context: Context) -> PokeReturnValue:
        watch = self.watch()
        poll = watch.check(self.hook.get_diffusion)
        if poll.error is not None:
            raise poll.error
        if poll.outcome == "running":
            return PokeReturnValue(is_done=False)
        self.diffusion_pushed = True
        return PokeReturnValue(
            is_done=True, xcom_value=self._finished(context, watch.diffusion_id, poll.record)
        )

    def execute(self, context: Context) -> Any:
        with failure_recorded(context), logs_gallery_url(self, context):  # the gallery shows why it failed
            return self._execute(context)

    def _execute(self, context: Context) -> Any:
        try:
            if not self.deferrable:
                return super().execute(context)
            done = self.poke(context)  # a finished diffusion needs no triggerer
            if done.is_done:
                return done.xcom_value
            # The latest record, so the extra link has something to read while the task is deferred.
            latest = self.watch().record or {"id": self._diffusion_id()}
            context["ti"].xcom_push(key="diffusion", value=_rules.bounded_record(latest))
            self.diffusion_pushed = True
        finally:
            self.hook.close()
        timeout = self.timeout.total_seconds() if isinstance(self.timeout, timedelta) else float(self.timeout)
        self.defer(
            trigger=GetImageDiffusionTrigger(
                diffusion_id=self._diffusion_id(),
                getimage_conn_id=self.getimage_conn_id,
                poll_interval=self._poke_interval_seconds(),
                end_time=time.time() + timeout,
                max_poll_interval=self.max_poll_interval,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> list[str]:
        """Resume after the trigger: the image URLs, or a failure (a skip with ``soft_fail``)."""
        self.diffusion_pushed = True  # before deferring, the try pushed ``diffusion``
        with logs_gallery_url(self, context):
            try:
                with failure_recorded(context):
                    record = result_from_event(event)
            except GetImageTimeoutError as err:
                if self.soft_fail:
                    raise AirflowSkipException(str(err)) from err
                raise AirflowSensorTimeout(str(err)) from err
            with failure_recorded(context):
                return self._finished(context, self._diffusion_id(), record)

    def _finished(self, context: Context, diffusion_id: str, record: dict[str, Any]) -> list[str]:
        """Push the finished diffusion's XComs and announce it to the ``Asset`` outlets."""
        urls = push_finished(context, self.log, diffusion_id, record)
        extra = assets.asset_extra(diffusion_ids=[diffusion_id], image_urls=urls)
        assets.announce(context, self.outlets, extra)
        return urls
