"""
Arguments of DAG authors, checked as early as they are known.

An operator checks each argument when the DAG is parsed if its value is already final (not a
Jinja template, an ``XComArg`` or a mapped input), and again once rendered: a bad submission costs
credits, and a typo should fail the DAG file, not a run.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["check_count", "is_template", "known_deep", "known_now", "task_named"]


@contextlib.contextmanager
def task_named(task_id: str) -> Iterator[None]:
    """
    Prefix a ``TypeError``/``ValueError`` raised inside with the task id, so an author with many
    tasks in one DAG file sees which one holds the bad value.
    """
    try:
        yield
    except (TypeError, ValueError) as err:
        raise type(err)(f"Task {task_id!r}: {err}") from None


def is_template(value: object) -> bool:
    """Whether a string holds Jinja (rendered only when the task runs)."""
    return isinstance(value, str) and ("{{" in value or "{%" in value)


def known_now(value: object) -> bool:
    """Whether a value is final at parse time (not a template, an XComArg or a mapped input)."""
    if is_template(value):
        return False
    return value is None or isinstance(value, (str, bytes, bool, int, float, list, tuple, dict, set))


def known_deep(value: object) -> bool:
    """Like :func:`known_now`, for lists too: no template and no XComArg anywhere inside."""
    if isinstance(value, (list, tuple)):
        return all(known_deep(item) for item in value)
    return known_now(value)


def check_count(name: str, value: object) -> int:
    """A count (bytes, attempts) must be a positive integer."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}.")
    return value
