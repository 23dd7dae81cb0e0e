"""What a fixture knows at teardown of the test it served (reports kept by ``tests/conftest.py``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pytest


def call_failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test failed in its call phase: diagnostics (logs, screenshots) are due then."""
    report = getattr(request.node, "report_call", None)
    return report is not None and bool(report.failed)


def print_log_tails_if_failed(request: pytest.FixtureRequest, fixture: str) -> None:
    """
    Print the log tails of the deployment in ``fixture`` when the test using it failed.

    The reason is usually there, and the deployment's home is deleted afterwards.
    """
    if call_failed(request) and fixture in request.fixturenames:
        deployment = request.getfixturevalue(fixture)
        print(f"\n===== {fixture} after {request.node.nodeid} failed =====")
        print(deployment.describe(lines=80))
