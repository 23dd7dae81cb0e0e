"""Pytest fixtures that run a GetImage.io emulator in-process (registered through ``pytest11``).

Pytest loads this module in every run of every project that installs the provider, so it imports
nothing heavy at module level: the server (aiohttp, cryptography) is imported inside the fixtures.

Fixtures:

- ``getimage_emulator``: a started emulator with test-friendly defaults (``latency=0.5``,
  ``seed=0``); knobs can be set per test with ``@pytest.mark.getimage_emulator(latency=0.1, ...)``.
- ``getimage_emulator_factory``: ``factory(**knobs) -> Emulator`` for tests that need several
  emulators or different knobs.
- ``getimage_airflow_conn``: the ``getimage_emulator``, with ``AIRFLOW_CONN_GETIMAGE_DEFAULT``
  pointing at it for the duration of the test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from airflow_provider_getimage.emulator.runner import Emulator

#: Knobs of the fixtures unless a test overrides them: quick generations, reproducible randomness.
TEST_DEFAULTS: dict[str, Any] = {"latency": 0.5, "seed": 0}


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker so ``--strict-markers`` runs accept it."""
    config.addinivalue_line(
        "markers",
        "getimage_emulator(**knobs): EmulatorConfig knobs for the getimage_emulator fixture, "
        "e.g. @pytest.mark.getimage_emulator(latency=0.1, failing_prompts=('nsfw',))",
    )


@pytest.fixture
def getimage_emulator_factory() -> Iterator[Callable[..., Emulator]]:
    """Start emulators on demand: ``factory(**knobs)`` returns a started :class:`Emulator`.

    Knobs are :class:`~airflow_provider_getimage.emulator.EmulatorConfig` fields (``latency``,
    ``failure_rate``, ``tls``, ``rate_limit``...) over the test defaults ``latency=0.5, seed=0``.
    Every emulator started through the factory is stopped at teardown.
    """
    from airflow_provider_getimage.emulator.runner import Emulator

    started: list[Emulator] = []

    def factory(**knobs: Any) -> Emulator:
        emulator = Emulator(**{**TEST_DEFAULTS, **knobs})
        emulator.start()
        started.append(emulator)
        return emulator

    try:
        yield factory
    finally:
        for emulator in reversed(started):
            emulator.stop()


@pytest.fixture
def getimage_emulator(
    request: pytest.FixtureRequest, getimage_emulator_factory: Callable[..., Emulator]
) -> Emulator:
    """A started GetImage.io emulator, stopped after the test.

    Use ``.url``, ``.api_key``, ``.stats()``, ``.inject(Fault(...))``, ``.configure(...)`` and
    ``.airflow_connection()``. Defaults: ``latency=0.5``, ``seed=0``; override per test with
    ``@pytest.mark.getimage_emulator(**knobs)``.
    """
    knobs: dict[str, Any] = {}
    for marker in reversed(list(request.node.iter_markers("getimage_emulator"))):
        knobs.update(marker.kwargs)  # closest marker (function over class over module) wins
    return getimage_emulator_factory(**knobs)


@pytest.fixture
def getimage_airflow_conn(getimage_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The ``getimage_emulator``, reachable as Airflow connection ``getimage_default``.

    Sets ``AIRFLOW_CONN_GETIMAGE_DEFAULT`` (with ``verify`` = the CA bundle in TLS mode) for the test.
    """
    for name, value in getimage_emulator.airflow_env().items():
        monkeypatch.setenv(name, value)
    return getimage_emulator
