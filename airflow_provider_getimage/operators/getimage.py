"""Operators: submit a GetImage.io diffusion and wait for its images; save the images to storage."""

from __future__ import annotations

import time
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath, ResumableJobMixin, conf

from airflow_provider_getimage import _rules, storage
from airflow_provider_getimage.exceptions import GetImageError, GetImageNotFoundError
from airflow_provider_getimage.hooks.getimage import GetImageHook
from airflow_provider_getimage.links.getimage import GetImageImagesLink
from airflow_provider_getimage.polling import diffusion_failed, poll_error, read_poll
from airflow_provider_getimage.triggers.getimage import GetImageDiffusionTrigger, result_from_event

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context

__all__ = ["GetImageDiffusionOperator", "GetImageDownloadOperator", "push_finished"]


def _is_template(value: object) -> bool:
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def _known_now(value: object) -> bool:
    """Whether a value is final at parse time (not a template, an XComArg or a mapped input)."""
    if _is_template(value):
        return False
    return value is None or isinstance(value, (str, bytes, bool, int, float, list, tuple, dict, set))


def _known_deep(value: object) -> bool:
    """Like ``_known_now``, for lists too: no template and no XComArg anywhere inside."""
    if isinstance(value, (list, tuple)):
        return all(_known_deep(item) for item in value)
    return _known_now(value)


class GetImageDiffusionOperator(ResumableJobMixin, BaseOperator):
    """
    Submit a prompt to GetImage.io and wait for the images.

    The diffusion id is pushed to XCom (key ``diffusion_id``) right after the submission, before
    any wait, so it is never lost. When waiting, the return value is the list of image URLs and
    the final record is in XCom ``diffusion``; with ``wait_for_completion=False`` the return value
    is the diffusion id (pair it with ``GetImageDiffusionSensor``).

    With ``deferrable=True`` the wait happens in the triggerer (``GetImageDiffusionTrigger``), so
    no worker slot is held for the minutes a generation takes; the deadline (``timeout``) is kept
    by the trigger itself, so it always ends in ``execute_complete`` with a clear error.

    Arguments known when the DAG is parsed are checked then, with an error naming the argument:
    a bad submission would cost credits.

    On Airflow 3.3+ the operator is durable (``ResumableJobMixin``): the diffusion id is kept in
    the task state store, so a retry after a crashed worker reconnects to the running or finished
    diffusion instead of submitting it again; a retry after a failed diffusion submits afresh.
    Pass ``durable=False`` to submit on every try. Older Airflow submits on every try.

    :param prompt: the text to draw (templated).
    :param model: the model (templated); ``None`` uses the connection's ``default_model`` extra.
    :param parameters: extra generation parameters (size, seed, ...), sent untouched (templated).
    :param getimage_conn_id: the GetImage.io connection (templated).
    :param wait_for_completion: wait for the images (default) or return the id at once.
    :param deferrable: wait in the triggerer instead of the worker; defaults to
        ``[operators] default_deferrable``.
    :param poll_interval: seconds between status checks while waiting.
    :param timeout: seconds to wait for the generation before failing with ``GetImageTimeoutError``.
    :param max_poll_interval: opt-in backoff for long generations: once the wait has lasted ten
        poll intervals, polls are spaced a tenth of the time waited so far, up to this many seconds.
        None (default) polls every ``poll_interval``. Never shorter than ``poll_interval``.
    """

    template_fields: Sequence[str] = ("prompt", "model", "parameters", "getimage_conn_id")
    external_id_key = "getimage_diffusion_id"
    template_fields_renderers = {"parameters": "json"}
    operator_extra_links = (GetImageImagesLink(),)
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
        self.poll_interval = _rules.check_positive("poll_interval", poll_interval)
        self.timeout = _rules.check_positive("timeout", timeout)
        self.max_poll_interval = _rules.check_max_poll_interval(max_poll_interval, self.poll_interval)
        self._check_inputs(at_parse_time=True)

    def _check_inputs(self, at_parse_time: bool = False) -> tuple[str, str | None, dict[str, Any]]:
        """Check prompt, model, parameters and conn id; at parse time only the values already final."""

        def final(value: object) -> bool:
            return not at_parse_time or _known_now(value)

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
        self._check_inputs()  # fail before any submission, whatever path follows
        try:
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
        # The latest record known so far; the final one replaces it when the diffusion finishes.
        context["ti"].xcom_push(key="diffusion", value=self._submission or {"id": diffusion_id})
        if not self.wait_for_completion:
            self._result = diffusion_id
            return diffusion_id
        if self.deferrable:
            final = self._check_then_defer(diffusion_id, end_time=time.time() + self.timeout)
        else:
            final = self.hook.wait_for_diffusion(
                diffusion_id, self.poll_interval, self.timeout, self.max_poll_interval
            )
        self._result = push_finished(context, self.log, diffusion_id, final)
        return self._result

    def get_job_result(self, external_id: Any, context: Context) -> list[str] | str:
        """The task's return value; after an earlier try's success, read from the service."""
        if self._result is None:
            diffusion_id = str(external_id)
            context["ti"].xcom_push(key="diffusion_id", value=diffusion_id)
            self._result = push_finished(
                context, self.log, diffusion_id, self.hook.get_diffusion(diffusion_id)
            )
        return self._result

    def _check_then_defer(self, diffusion_id: str, end_time: float) -> dict[str, Any]:
        """Check once (a quick generation needs no triggerer): the finished record, or defer."""
        try:
            poll = read_poll(
                self.log, diffusion_id, self.hook.get_diffusion(diffusion_id), _rules.StatusWatch(), 0
            )
        except GetImageError as err:
            poll = poll_error(self.log, diffusion_id, err)  # an outage: the trigger will poll through it
        if poll.outcome == "failed":
            raise diffusion_failed(diffusion_id, poll.record)
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
        record = result_from_event(event)
        return push_finished(
            context, self.log, str(record.get("id") or (event or {}).get("diffusion_id")), record
        )

    def on_kill(self) -> None:
        """GetImage.io has no cancel call: say which diffusion keeps running, close the session."""
        self.log.warning("Task killed; the submitted diffusion (see XCom 'diffusion_id') is not cancelled.")
        if "hook" in self.__dict__:
            self.hook.close()


def push_finished(context: Context, log: Any, diffusion_id: str, record: dict[str, Any]) -> list[str]:
    """
    Push a finished diffusion's record (XCom ``diffusion``) and return its image URLs.

    Shared by the operator and the sensor; both also (re)push ``diffusion_id``, so a downstream
    ``GetImageDownloadOperator`` can name the images after their diffusion. A FINISHED record with
    no image URL fails the task: downstream steps would otherwise run on nothing.
    """
    context["ti"].xcom_push(key="diffusion_id", value=diffusion_id)
    context["ti"].xcom_push(key="diffusion", value=record)
    urls = _rules.image_urls(record)
    if not urls:
        raise GetImageError(
            f"Diffusion {diffusion_id} is FINISHED but lists no image URL; "
            "its full record is in XCom 'diffusion'.",
            diffusion_id=diffusion_id,
        )
    log.info("Diffusion %s finished with %d image(s)", diffusion_id, len(urls))
    return urls


def _check_count(name: str, value: object) -> int:
    """A count (bytes, attempts) must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value


def _static_destination(value: object) -> bool:
    """Whether a destination is final at parse time (an ObjectStoragePath may hold a template)."""
    if isinstance(value, ObjectStoragePath):
        return not _is_template(str(value))
    return _known_now(value)


def _makes_image_urls(task: Any) -> bool:
    """Whether a task (mapped or not) returns a diffusion's image URLs and pushes ``diffusion_id``."""
    from airflow_provider_getimage.sensors.getimage import GetImageDiffusionSensor

    cls = task.operator_class if getattr(task, "is_mapped", False) else type(task)
    return isinstance(cls, type) and issubclass(cls, (GetImageDiffusionOperator, GetImageDiffusionSensor))


class GetImageDownloadOperator(BaseOperator):
    """
    Save generated images to a folder of any storage: local, S3, GCS, Azure, any fsspec scheme.

    Takes the image URLs a ``GetImageDiffusionOperator`` (or ``GetImageDiffusionSensor``)
    returned and stores each image as ``<diffusion_id>_<index>.<ext>`` (the extension from the
    answer's ``Content-Type``) in ``destination``. Returns the stored files as a list of URI
    strings (``file:///data/images/<run id>/<diffusion id>_0.png``), in the order of the URLs.

    The common wirings need no more than the upstream task's output::

        generate = GetImageDiffusionOperator(task_id="generate", prompt="...")
        GetImageDownloadOperator(
            task_id="download",
            image_urls=generate.output,
            destination="s3://my-bucket/images/{{ ds }}/{{ run_id }}/",
            destination_conn_id="aws_default",
        )

        # A mapped generation: one download task for every prompt's images...
        generated = GetImageDiffusionOperator.partial(task_id="generate").expand(prompt=prompts)
        GetImageDownloadOperator(task_id="download", image_urls=generated.output)
        # ...or one download per prompt, mapped the same way.
        GetImageDownloadOperator.partial(task_id="download_each").expand(image_urls=generated.output)

    **Naming.** Without ``diffusion_id``, each URL is named after the diffusion that produced it:
    the operator reads the ``return_value`` and ``diffusion_id`` XComs of its direct upstream
    GetImage tasks (operator or sensor, mapped or not) and finds the URL there, so the name is
    right however the URLs were gathered or mapped. URLs that come through another task (a
    filter, say) need ``diffusion_id``: a string for one list of URLs, or one id per list.

    **Checks.** Every URL must be http(s), the list must not be empty and the destination must be
    a URI or an absolute path of a known scheme; all of this is checked before the first
    download (at parse time too, for values that are not templates), with an error that names
    the bad value. An answer that is not ``image/*`` or is larger than ``max_image_bytes`` fails
    the task and saves nothing.

    **Downloads.** Streamed in chunks over one keep-alive session; no credential is sent (image
    URLs are public links, and the GetImage.io key is never read). Transient errors (network,
    timeouts, 5xx, 429 with ``Retry-After``) are retried with exponential backoff and jitter, up
    to ``download_attempts`` in all; a GET is safe to repeat. 4xx answers are not retried.

    **Atomic writes.** Each image is written to a temporary name beside its target and moved onto
    it only once complete (locally: fsync, then an atomic rename; on object stores the move is a
    server-side copy, and a copied object appears only whole). A failure, even mid-stream, leaves
    the previous file (if any) untouched and no partial file at the target name. A re-run writes
    the same names again, so it replaces the earlier images instead of adding copies.

    **Storage.** ``destination`` is an ``ObjectStoragePath`` or its URI, with the storage's
    connection in ``destination_conn_id`` (or in the URI, ``s3://conn_id@bucket/...``). Schemes
    come from Airflow (``file`` and those of installed providers: ``s3`` from the Amazon provider,
    ``gs`` from Google, ``abfs`` from Microsoft Azure...) or, for a scheme no provider registers,
    straight from fsspec (``memory``, ``sftp``...) with fsspec's default credentials. Missing
    folders are created, as ``ObjectStoragePath.copy`` does.

    :param image_urls: the URLs to download (templated): usually ``generate.output`` (a list of
        URLs) or a mapped generation's ``.output`` (a list of lists); a single URL is accepted.
    :param destination: the folder to save into (templated, also inside an ``ObjectStoragePath``):
        a URI such as ``file:///data/images/{{ run_id }}/`` or ``s3://bucket/images/``, or an
        absolute local path. Default ``file:///tmp/getimage/{{ dag.dag_id }}/{{ run_id }}/``.
    :param diffusion_id: the diffusion id(s) to name the files after (templated); only needed
        when the URLs do not come straight from a GetImage task (see **Naming**).
    :param destination_conn_id: the Airflow connection of the storage (templated), e.g.
        ``aws_default`` for ``s3://``; ``None`` uses the storage's default credentials.
    :param max_image_bytes: the largest image accepted, in bytes (default 50 MiB).
    :param request_timeout: seconds to wait for an answer, and between two chunks of it.
    :param download_attempts: attempts per image, the first included (default 4).
    """

    template_fields: Sequence[str] = ("image_urls", "destination", "diffusion_id", "destination_conn_id")
    template_fields_renderers = {"image_urls": "json", "diffusion_id": "json"}
    ui_color = "#c6dcf5"

    def __init__(
        self,
        *,
        image_urls: str | Sequence[str] | Sequence[Sequence[str]],
        destination: str | ObjectStoragePath = storage.DEFAULT_DESTINATION,
        diffusion_id: str | Sequence[str] | None = None,
        destination_conn_id: str | None = None,
        max_image_bytes: int = storage.DEFAULT_MAX_IMAGE_BYTES,
        request_timeout: float = storage.DEFAULT_DOWNLOAD_TIMEOUT,
        download_attempts: int = storage.DEFAULT_DOWNLOAD_ATTEMPTS,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_urls = image_urls
        self.destination = destination
        self.diffusion_id = diffusion_id
        self.destination_conn_id = destination_conn_id
        self.max_image_bytes = _check_count("max_image_bytes", max_image_bytes)
        self.download_attempts = _check_count("download_attempts", download_attempts)
        self.request_timeout = _rules.check_positive("request_timeout", request_timeout)
        # What is final at parse time is checked now: a typo fails the DAG file, not a run.
        batches = storage.url_batches(image_urls) if _known_deep(image_urls) else None
        if _known_now(destination_conn_id) and _static_destination(destination):
            storage.destination_path(destination, destination_conn_id)
        if diffusion_id is not None and _known_deep(diffusion_id):
            ids = [diffusion_id] if isinstance(diffusion_id, str) else diffusion_id
            storage.diffusion_ids(diffusion_id, len(batches) if batches is not None else len(list(ids)))

    def execute(self, context: Context) -> list[str]:
        batches = storage.url_batches(self.image_urls)
        destination = storage.destination_path(
            storage.rendered_destination(self.destination, lambda text: self.render_template(text, context)),
            self.destination_conn_id,
        )
        plan = self._plan(context, batches)
        self.log.info("Saving %d image(s) to %s", len(plan), destination)
        with storage.ImageStore(
            destination,
            self.log,
            max_image_bytes=self.max_image_bytes,
            request_timeout=self.request_timeout,
            attempts=self.download_attempts,
        ) as store:
            return [store.save(url, stem, index) for url, stem, index in plan]

    def _plan(self, context: Context, batches: list[list[str]]) -> list[tuple[str, str, int]]:
        """Each URL with the diffusion id and index it is saved under; no two images share a name."""
        if self.diffusion_id is not None:
            ids = storage.diffusion_ids(self.diffusion_id, len(batches))
            plan = [
                (url, ids[number], index)
                for number, batch in enumerate(batches)
                for index, url in enumerate(batch)
            ]
        else:
            found = self._diffusions_upstream(context, [url for batch in batches for url in batch])
            plan = [(url, *found[url]) for batch in batches for url in batch]
        names: dict[tuple[str, int], str] = {}
        for url, diffusion_id, index in plan:
            other = names.setdefault((storage.safe_stem(diffusion_id), index), url)
            if other != url:
                raise ValueError(
                    f"Two image URLs would be saved under the same name ({diffusion_id}_{index}): "
                    f"{other!r} and {url!r}; check diffusion_id (one id per list of URLs)."
                )
        return plan

    def _diffusions_upstream(self, context: Context, urls: list[str]) -> dict[str, tuple[str, int]]:
        """
        Find each URL in the output of a direct upstream GetImage task: its diffusion id and index.

        A mapped task's own map index is read first, so a download mapped over a mapped
        generation reads one XCom pair, not every one.
        """
        wanted = set(urls)
        found: dict[str, tuple[str, int]] = {}
        sources = [
            task
            for task in (self.dag.get_task(task_id) for task_id in sorted(self.upstream_task_ids))
            if _makes_image_urls(task)
        ]
        for source in sources:
            for source_urls, diffusion_id in self._outputs(context, source):
                if not isinstance(source_urls, list) or not isinstance(diffusion_id, str):
                    continue  # a failed or skipped generation, or one that returned its id
                for index, url in enumerate(source_urls):
                    if url in wanted:
                        found.setdefault(url, (diffusion_id, index))
                if len(found) == len(wanted):
                    return found
        missing = next(url for url in urls if url not in found)
        looked_in = ", ".join(task.task_id for task in sources) or "none"
        raise ValueError(
            f"No diffusion id for image URL {missing!r}: diffusion_id is not set, and no direct "
            f"upstream GetImage task (looked in: {looked_in}) returned this URL. Pass diffusion_id."
        )

    @staticmethod
    def _outputs(context: Context, source: Any) -> Iterator[tuple[Any, Any]]:
        """(image URLs, diffusion id) of each try of ``source``: its own map index first if mapped."""
        ti = context["ti"]
        task_id = source.task_id

        def pull(map_index: int | None) -> tuple[Any, Any]:
            if map_index is None:
                return ti.xcom_pull(task_ids=task_id), ti.xcom_pull(task_ids=task_id, key="diffusion_id")
            return (
                ti.xcom_pull(task_ids=task_id, map_indexes=map_index),
                ti.xcom_pull(task_ids=task_id, key="diffusion_id", map_indexes=map_index),
            )

        if not getattr(source, "is_mapped", False):
            yield pull(None)
            return
        own = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        if own is not None:
            yield pull(own)
        count = ti.get_ti_count(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
        for map_index in range(count):
            if map_index != own:
                yield pull(map_index)
