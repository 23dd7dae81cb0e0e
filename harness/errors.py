"""What the harness raises: a test fails on the first, skips on the second."""

from __future__ import annotations


class DeploymentError(RuntimeError):
    """The deployment did not do what a test waited for; the message carries the evidence."""


class DatabaseUnavailable(DeploymentError):
    """The PostgreSQL server a test needs does not answer (a test skips on this, it does not fail)."""
