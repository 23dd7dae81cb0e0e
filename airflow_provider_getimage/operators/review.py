"""
``GetImageReviewOperator``: a human picks the images to keep, in Airflow's Required Actions form.

Built on the standard provider's human-in-the-loop operators, which need Airflow 3.1+: importing
this module on an older Airflow raises an error that names the version needed, so a DAG using the
operator fails to parse with it. The form's rules (options, Markdown, answer) are pure and live in
``review_form``.
"""

from __future__ import annotations

from importlib.metadata import version
from typing import TYPE_CHECKING, Any

from packaging.version import Version

from airflow_provider_getimage.inputs import known_now, task_named

AIRFLOW_VERSION = Version(Version(version("apache-airflow")).base_version)
REQUIRED_AIRFLOW = Version("3.1")
REQUIRED_MESSAGE = (
    "GetImageReviewOperator needs Apache Airflow 3.1 or newer (it is built on the human-in-the-loop "
    f"operators of the standard provider); this is Airflow {AIRFLOW_VERSION}. Upgrade Airflow to 3.1+ "
    "or remove the review step from the DAG."
)

if AIRFLOW_VERSION < REQUIRED_AIRFLOW:
    from airflow.providers.common.compat.sdk import AirflowOptionalProviderFeatureException

    raise AirflowOptionalProviderFeatureException(REQUIRED_MESSAGE)

from airflow.providers.common.compat.sdk import AirflowSkipException, TaskDeferred  # noqa: E402 (after the version gate)
from airflow.providers.standard.exceptions import HITLRejectException  # noqa: E402 (after the version gate)
from airflow.providers.standard.operators.hitl import HITLOperator  # noqa: E402 (after the version gate)

from airflow_provider_getimage import _rules, batch, review_form  # noqa: E402 (after the version gate)
from airflow_provider_getimage.review_form import REJECT_ALL, ReviewImage  # noqa: E402 (after the version gate)

try:  # Airflow 3.3+: HITL tasks wait in the awaiting_input state, with no trigger
    from airflow.sdk.exceptions import TaskAwaitingInput
except ImportError:  # Airflow 3.1/3.2: they defer to HITLTrigger
    TaskAwaitingInput = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import timedelta

    from airflow.providers.common.compat.sdk import Context
    from airflow.sdk.bases.notifier import BaseNotifier
    from airflow.sdk.execution_time.hitl import HITLUser

__all__ = ["REQUIRED_MESSAGE", "GetImageReviewOperator", "read_batch_images"]

DEFAULT_SUBJECT = "Pick the generated image(s) to keep"
#: A manifest larger than this is not read for a review (the form shows at most 50 images anyway).
MAX_MANIFEST_BYTES = 16 * 1024 * 1024


def read_batch_images(result: dict[str, Any], conn_id: str | None = None) -> list[ReviewImage]:
    """
    The images of a batch result (SPEC 9): each row of ``result["manifest"]`` (JSONL) gives its
    ``image_urls`` and ``prompt``. Reads no more than ``MAX_MANIFEST_BYTES`` and stops once there
    are more images than a form shows.

    :param result: the batch operator's return value, ``{"manifest": <URI>, ...}``.
    :param conn_id: the Airflow connection of the manifest's storage (None: default credentials).
    """
    rows: list[object] = []
    images = 0
    for row in batch.read_manifest(str(result["manifest"]), conn_id, MAX_MANIFEST_BYTES):
        rows.append(row)
        urls = row.get("image_urls")
        images += len(urls) if isinstance(urls, list) else 0
        if images > review_form.MAX_REVIEW_IMAGES:
            break  # enough to fail the check of the count
    return review_form.manifest_images(rows)


class GetImageReviewOperator(HITLOperator):
    """
    Show generated images to a person in the Required Actions form and return the ones they pick.

    Options are ``"Image 1".."Image n"`` and ``"Reject all"``, built when the task runs and carried
    through its wait, so a resumed task checks the answer against this run's images. Returns the
    chosen URLs and pushes XCom ``chosen_indexes`` (0-based positions in the reviewed list).
    Needs Airflow 3.1+.

    .. seealso::
        :doc:`/howto/review`

    :param image_urls: the images (templated): a diffusion's or a sensor's ``.output`` (a list of
        URLs), a mapped generation's (a list of lists), or a batch's result (its manifest is read).
    :param subject: the form's headline (templated).
    :param body: Markdown shown above the images (templated; the author's text, not escaped).
    :param prompt: the prompt shown with the images (templated); default: the upstream record's.
    :param multiple: let the reviewer pick several images.
    :param on_reject: what "Reject all" does: ``"fail"`` fails the task, ``"skip"`` skips it, so
        its downstream tasks skip and a task with ``trigger_rule="all_skipped"`` can regenerate.
    :param assigned_users: who may answer (``{"id": ..., "name": ...}`` or a list of them).
    :param notifiers: notifiers called when the form is ready (e.g. to send its link).
    :param response_timeout: how long to wait for an answer; then ``defaults`` is taken, or the
        task fails if there is none.
    :param defaults: the option(s) taken at the timeout, e.g. ``"Image 1"`` or ``"Reject all"``.
    :param manifest_conn_id: the storage connection of a batch's manifest (None: default credentials).
    """

    template_fields: Sequence[str] = ("image_urls", "subject", "body", "prompt", "manifest_conn_id")
    template_fields_renderers = {"image_urls": "json", "body": "md"}
    ui_color = "#f5e6c6"

    def __init__(
        self,
        *,
        image_urls: Any,
        subject: str = DEFAULT_SUBJECT,
        body: str | None = None,
        prompt: str | None = None,
        multiple: bool = False,
        on_reject: str = "fail",
        assigned_users: HITLUser | list[HITLUser] | None = None,
        notifiers: Sequence[BaseNotifier] | BaseNotifier | None = None,
        response_timeout: timedelta | None = None,
        defaults: str | list[str] | None = None,
        manifest_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = str(kwargs.get("task_id"))
        with task_named(task_id):
            self.on_reject = review_form.check_on_reject(on_reject)
            checked_defaults = review_form.check_defaults(defaults, multiple)
        # The options are this run's images: only a placeholder exists before the task runs.
        super().__init__(
            subject=subject,
            options=[REJECT_ALL],
            body=body,
            defaults=checked_defaults,
            multiple=multiple,
            notifiers=notifiers,
            assigned_users=assigned_users,
            response_timeout=response_timeout,
            **kwargs,
        )
        self.image_urls = image_urls
        self.prompt = prompt
        self.manifest_conn_id = manifest_conn_id
        if known_now(image_urls) and not _rules.is_batch_result(image_urls):
            with task_named(self.task_id):
                review_form.check_images([ReviewImage(url) for url in review_form.flatten_urls(image_urls)])

    def validate_defaults(self) -> None:
        """Defaults name options that exist only at run time: ``__init__`` and ``execute`` check them."""

    # -- before the wait -------------------------------------------------------------------------
    def execute(self, context: Context) -> Any:
        """Build this run's form (options and thumbnails), write it, then wait for the answer."""
        with task_named(self.task_id):
            images = review_form.check_images(self._images())
            self.defaults = review_form.check_defaults(self.defaults, self.multiple, count=len(images))
            prompt = self.prompt if isinstance(self.prompt, str) else self._upstream_prompt(context)
            self.options = review_form.review_options(len(images))
            self.body = review_form.review_body(images, prompt=prompt, intro=self.body)
        urls = [image.url for image in images]
        self.log.info("Review of %d image(s): options %s", len(urls), self.options)
        resume = {"review_urls": urls}
        try:
            return super().execute(context)
        except TaskDeferred as deferred:  # Airflow 3.1/3.2: carry the URLs through the trigger's wait
            raise TaskDeferred(
                trigger=deferred.trigger,
                method_name=deferred.method_name,
                kwargs={**(deferred.kwargs or {}), **resume},
                timeout=deferred.timeout,
            ) from None
        except BaseException as parked:
            if TaskAwaitingInput is not None and isinstance(parked, TaskAwaitingInput):
                raise TaskAwaitingInput(
                    method_name=parked.method_name,
                    kwargs={**(parked.kwargs or {}), **resume},
                    timeout=parked.timeout,
                ) from None
            raise

    def _images(self) -> list[ReviewImage]:
        if _rules.is_batch_result(self.image_urls):
            return read_batch_images(self.image_urls, conn_id=self.manifest_conn_id)
        return [ReviewImage(url) for url in review_form.flatten_urls(self.image_urls)]

    def _upstream_prompt(self, context: Context) -> str | None:
        """The prompt in the final record (XCom ``diffusion``) of a direct upstream GetImage task."""
        for task_id in sorted(self.upstream_task_ids):
            task = self.dag.get_task(task_id)
            cls = task.operator_class if getattr(task, "is_mapped", False) else type(task)
            if not getattr(cls, "returns_image_urls", False) or getattr(task, "is_mapped", False):
                continue
            record = context["ti"].xcom_pull(task_ids=task_id, key="diffusion")
            if isinstance(record, dict) and isinstance(record.get("prompt"), str):
                return str(record["prompt"])
        return None

    # -- after the answer ------------------------------------------------------------------------
    def execute_complete(
        self, context: Context, event: dict[str, Any], review_urls: list[str] | None = None
    ) -> list[str]:
        """Map the answer to this run's URLs; push ``chosen_indexes``; fail or skip on a rejection."""
        if review_urls is None:
            raise ValueError(
                f"Task {self.task_id!r}: resumed without the reviewed URLs; clear the task to ask again."
            )
        self.options = review_form.review_options(len(review_urls))
        answer = super().execute_complete(context=context, event=event)
        with task_named(self.task_id):
            chosen = review_form.verdict(answer["chosen_options"], review_urls)
        context["ti"].xcom_push(key="chosen_indexes", value=chosen.indexes)
        if chosen.rejected:
            self.log.info("Reviewer rejected all %d image(s)", len(review_urls))
            if self.on_reject == "fail":
                raise HITLRejectException(f"Task {self.task_id!r}: the reviewer chose {REJECT_ALL!r}.")
            raise AirflowSkipException(f"The reviewer chose {REJECT_ALL!r}: skipping downstream tasks.")
        self.log.info("Reviewer chose image(s) %s", [index + 1 for index in chosen.indexes])
        return chosen.urls
