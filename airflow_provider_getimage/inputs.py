"""
Arguments of DAG authors, checked as early as they are known.

An operator checks each argument when the DAG is parsed if its value is already final (not a
Jinja template, an ``XComArg`` or a mapped input), and again once rendered: a bad submission costs
credits, and a typo should fail the DAG file, not a run.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import os
import sysconfig
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["check_count", "dag_file_line", "is_template", "known_deep", "known_now", "task_named"]

_PROVIDER_DIR = os.path.dirname(os.path.abspath(__file__))


@contextlib.contextmanager
def task_named(task_id: str, *, at_parse_time: bool = True) -> Iterator[None]:
    """
    Prefix a ``TypeError``/``ValueError`` raised inside with the task id, so an author with many
    tasks in one DAG file sees which one holds the bad value; at parse time, also say which line
    of the DAG file built the task (Airflow's import error shows only the last frames, inside the
    provider).

    :param at_parse_time: the check runs while the DAG file is parsed (the caller's line is the
        author's); at run time the stack is Airflow's own, so no line is given.
    """
    try:
        yield
    except (TypeError, ValueError) as err:
        where = dag_file_line() if at_parse_time else None
        suffix = f" ({where})" if where else ""
        raise type(err)(f"Task {task_id!r}: {err}{suffix}") from None


def _library_dirs() -> tuple[str, ...]:
    """The folders whose frames are not the author's: this provider, Airflow and the standard library."""
    dirs = [_PROVIDER_DIR]
    spec = importlib.util.find_spec("airflow")
    dirs += [os.path.abspath(path) for path in (spec.submodule_search_locations or [])] if spec else []
    paths = sysconfig.get_paths()
    dirs += [os.path.abspath(paths[key]) for key in ("stdlib", "platstdlib") if key in paths]
    return tuple(os.path.join(path, "") for path in dirs)


def dag_file_line() -> str | None:
    """
    ``<file>, line <n>`` of the innermost frame outside the provider, Airflow and the standard
    library: the author's line that built the task. None when there is none.
    """
    skipped = _library_dirs()
    frame = inspect.currentframe()
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith("<") and not os.path.abspath(filename).startswith(skipped):
            return f"{filename}, line {frame.f_lineno}"
        frame = frame.f_back
    return None


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
