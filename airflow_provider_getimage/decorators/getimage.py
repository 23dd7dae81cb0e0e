"""
``@task.getimage``: a TaskFlow task whose function returns the prompt, run as a diffusion.

Built as ``@task.docker`` and ``@task.kubernetes`` are: a ``DecoratedOperator`` subclass over the
operator that does the work (``GetImageDiffusionOperator``), made into a decorator by
``task_decorator_factory`` and registered in the provider info (``task-decorators``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.providers.common.compat.sdk import (
    DecoratedOperator,
    KeywordParameters,
    context_merge,
    task_decorator_factory,
)

from airflow_provider_getimage import _rules
from airflow_provider_getimage.inputs import task_named
from airflow_provider_getimage.operators.getimage import GetImageDiffusionOperator

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from airflow.providers.common.compat.sdk import Context, TaskDecorator

__all__ = ["GetImageDecoratedOperator", "getimage_task", "request_from"]

REQUEST_KEYS = frozenset({"prompt", "model", "parameters"})
_PROMPT_FROM_FUNCTION = "<the prompt the decorated function returns>"


def request_from(value: object, model: str | None, parameters: dict[str, Any] | None) -> dict[str, Any]:
    """
    The request a decorated function's return value stands for: ``prompt``, ``model``, ``parameters``.

    A string is the prompt; a mapping holds ``prompt`` and optionally ``model`` and ``parameters``,
    which replace the decorator's own. Checked here, before anything is submitted.

    :param value: what the function returned.
    :param model: the decorator's ``model`` (used when the mapping names none).
    :param parameters: the decorator's ``parameters`` (used when the mapping has none).
    :raises TypeError: for a value that is neither, naming it.
    :raises ValueError: for a missing or bad prompt, an unknown key, a bad model or parameters.
    """
    if isinstance(value, str):
        request: dict[str, Any] = {"prompt": value}
    elif isinstance(value, Mapping):
        unknown = sorted(str(key) for key in value if key not in REQUEST_KEYS)
        if unknown:
            raise ValueError(
                f"the @task.getimage function returned a mapping with unknown key(s) {unknown}; "
                f"allowed: {sorted(REQUEST_KEYS)}."
            )
        if "prompt" not in value:
            raise ValueError(f"the @task.getimage function returned a mapping with no 'prompt': {value!r}.")
        request = dict(value)
    else:
        raise TypeError(
            "the @task.getimage function must return a prompt string or a mapping with 'prompt' "
            "(and optionally 'model', 'parameters'), "
            f"got {type(value).__name__} {_rules.clip(repr(value), 200)}."
        )
    chosen_model = request.get("model", model)
    return {
        "prompt": _rules.check_prompt(request["prompt"]),
        "model": None if chosen_model is None else _rules.check_model(chosen_model),
        "parameters": _rules.check_parameters(request.get("parameters", parameters)),
    }


class GetImageDecoratedOperator(DecoratedOperator, GetImageDiffusionOperator):
    """
    The operator behind ``@task.getimage``: calls the function, then generates its prompt.

    Takes every argument of :class:`GetImageDiffusionOperator` except ``prompt`` (the function
    returns it). Returns the image URLs and pushes the operator's XComs.

    :param python_callable: the decorated function.
    :param op_args: its positional arguments (templated).
    :param op_kwargs: its keyword arguments (templated).
    """

    custom_operator_name = "@task.getimage"
    template_fields: Sequence[str] = (
        *DecoratedOperator.template_fields,
        "model",
        "parameters",
        "getimage_conn_id",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        "parameters": "json",
    }

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Sequence[Any] | None = None,
        op_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "prompt" in kwargs:
            raise TypeError(
                f"Task {kwargs.get('task_id', python_callable.__name__)!r}: @task.getimage takes no "
                "'prompt' argument: the decorated function returns the prompt."
            )
        if kwargs.get("multiple_outputs"):
            raise TypeError("@task.getimage returns a list of image URLs: multiple_outputs is not supported.")
        kwargs.pop("multiple_outputs", None)
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            prompt=_PROMPT_FROM_FUNCTION,
            **kwargs,
        )

    def execute(self, context: Context) -> list[str] | str:
        """Call the function, check what it returned, then submit and wait as the operator does."""
        context_merge(context, self.op_kwargs)
        keywords = KeywordParameters.determine(self.python_callable, self.op_args, context).unpacking()
        value = self.python_callable(*self.op_args, **keywords)
        with task_named(self.task_id):
            request = request_from(value, self.model, self.parameters)
        self._use(request)
        self.log.info(
            "Prompt from %s(): %s", self.python_callable.__name__, _rules.clip(request["prompt"], 200)
        )
        # The operator's execute itself, not DecoratedOperator.execute: on Airflow 3.0 that one
        # reads a removed ``self.xcom_push``; its only other work (assets among the function's
        # arguments or return value become inlets or outlets) does not apply to a prompt.
        return GetImageDiffusionOperator.execute(self, context)

    def _use(self, request: Mapping[str, Any]) -> None:
        self.prompt, self.model, self.parameters = request["prompt"], request["model"], request["parameters"]

    def defer(
        self, *, trigger: Any, method_name: str, kwargs: dict[str, Any] | None = None, timeout: Any = None
    ) -> Any:
        """Carry the function's request to the resumed task (a new instance that did not call it)."""
        request = {"prompt": self.prompt, "model": self.model, "parameters": self.parameters}
        return super().defer(
            trigger=trigger,
            method_name=method_name,
            kwargs={**(kwargs or {}), "request": request},
            timeout=timeout,
        )

    def execute_complete(
        self, context: Context, event: dict[str, Any] | None = None, request: dict[str, Any] | None = None
    ) -> list[str]:
        """
        Resume after the trigger with the request the function returned before deferring.

        The triggerer keeps it in the resume kwargs; ``dag.test()`` drops them (it resumes with the
        event only): then the prompt and model are unknown here, and the asset events leave them
        out rather than announce a placeholder (the function is not called twice).
        """
        if request is not None:
            self._use(request)
        else:
            self.prompt, self.model = None, None  # type: ignore[assignment]
        return super().execute_complete(context, event)


def getimage_task(
    python_callable: Callable[..., Any] | None = None,
    **kwargs: Any,
) -> TaskDecorator:
    """
    ``@task.getimage``: the decorated function returns a prompt or ``{"prompt", "model"?, "parameters"?}``.

    Takes the arguments of :class:`~airflow_provider_getimage.operators.getimage.GetImageDiffusionOperator`
    (``model``, ``parameters``, ``getimage_conn_id``, ``deferrable``, ``poll_interval``,
    ``timeout``, ...) except ``prompt``.

    .. seealso:: docs/howto/decorator.rst

    :param python_callable: the function (when used as ``@task.getimage`` without parentheses).
    """
    return task_decorator_factory(
        python_callable=python_callable,
        multiple_outputs=False,
        decorated_operator_class=GetImageDecoratedOperator,
        **kwargs,
    )
