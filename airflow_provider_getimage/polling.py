"""
How a poll is read: the same rules for the worker's wait, the sensor and the trigger.

Kept apart from the hooks (requests, aiohttp, the HTTP provider) so the trigger module stays light:
the triggerer imports a trigger's module inside its event loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from airflow_provider_getimage import _rules
from airflow_provider_getimage.exceptions import GetImageDiffusionFailed, GetImageError

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["Poll", "diffusion_failed", "poll_error", "read_poll"]


@dataclass(frozen=True)
class Poll:
    """What one poll came to: the classified status and the record (empty when there was none)."""

    outcome: _rules.Classification
    record: dict[str, Any]


def poll_error(log: Any, diffusion_id: str, error: GetImageError) -> Poll:
    """
    Judge a poll that failed after the hook's retries: the same way for the worker, sensor, trigger.

    A transient error (network, 5xx, 429) counts as still running, so an outage never ends a
    wait of minutes; any other error (a refused key, an unknown id) is raised again.
    """
    if not error.transient:
        raise error
    log.warning("Diffusion %s: poll failed, will poll again: %s", diffusion_id, error)
    return Poll("running", {})


def read_poll(
    log: Any, diffusion_id: str, record: dict[str, Any], watch: _rules.StatusWatch, elapsed: float
) -> Poll:
    """
    Interpret one polled record, the same way for the worker's wait, the sensor and the trigger.

    A status change is logged once (INFO), an unknown status once (WARNING), each poll at DEBUG.
    """
    status = record.get("status")
    previous = watch.last
    changed, newly_unknown = watch.observe(status)
    if newly_unknown:
        log.warning(
            "Diffusion %s reports status %r, which this provider does not know; treating it as running.",
            diffusion_id,
            status,
        )
    if changed:
        log.info(
            "Diffusion %s: %s -> %s (%.1f s elapsed)",
            diffusion_id,
            previous or "submitted",
            watch.last,
            elapsed,
        )
    else:
        log.debug("Diffusion %s still %s (%.1f s elapsed)", diffusion_id, watch.last, elapsed)
    return Poll(_rules.classify(status), record)


def diffusion_failed(diffusion_id: str, record: Mapping[str, Any]) -> GetImageDiffusionFailed:
    """The error for a diffusion that ended in a terminal failure status."""
    status, reason = record.get("status"), _rules.failure_message(record)
    return GetImageDiffusionFailed(
        f"Diffusion {diffusion_id} ended with status {status}: {reason}",
        diffusion_id=diffusion_id,
    )
