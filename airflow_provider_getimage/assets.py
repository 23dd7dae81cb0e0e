"""
The ``extra`` of the asset events a provider task emits, built in one place for every operator.

A task with an ``Asset`` among its ``outlets`` announces what it made: the diffusion id(s), the
model, the prompt (truncated), the image URLs or the stored files, and for a batch its counts and
manifest URI. A consumer DAG scheduled on the asset reads it from ``triggering_asset_events``.
The extra is bounded (it is stored in the metadata database with every event) and holds only
values the task already has: no connection, no header, no key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_getimage import _rules

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from airflow.providers.common.compat.sdk import Context

__all__ = ["MAX_EXTRA_ITEMS", "PROMPT_LIMIT", "announce", "asset_extra"]

PROMPT_LIMIT = 200
"""Characters of the prompt kept in an asset event (the full prompt stays in the task's XCom)."""
MAX_EXTRA_ITEMS = 100
"""Most ids, URLs or file URIs listed in one event; the ``*_count`` fields give the true totals."""
COUNT_KEYS = ("total", "finished", "failed", "uncertain", "timeout", "images")
"""The counts of a batch result (SPEC 9) carried into its events."""


def _strings(name: str, values: Iterable[object] | None) -> list[str]:
    """A list of strings (one string is a list of one); anything else names the bad value."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    items = list(values)
    bad = next((item for item in items if not isinstance(item, str)), None)
    if bad is not None:
        raise TypeError(f"Asset extra {name}: expected strings, got {type(bad).__name__} {bad!r}.")
    return items  # type: ignore[return-value]  # every item checked above


def asset_extra(
    *,
    diffusion_ids: str | Sequence[str] | None = None,
    model: str | None = None,
    prompt: str | None = None,
    image_urls: Sequence[str] | None = None,
    files: Sequence[str] | None = None,
    counts: Mapping[str, int] | None = None,
    manifest: str | None = None,
) -> dict[str, Any]:
    """
    The ``extra`` of an asset event of a GetImage task: JSON only, bounded.

    Lists are cut to :data:`MAX_EXTRA_ITEMS` entries, with the true length in ``<name>_count``;
    the prompt is cut to :data:`PROMPT_LIMIT` characters. Fields left ``None`` are left out.

    :param diffusion_ids: the diffusion(s) the images come from.
    :param model: the model asked for.
    :param prompt: the prompt (a batch passes none: its prompts are in the manifest).
    :param image_urls: the image URLs (a generation).
    :param files: the stored file URIs (a download).
    :param counts: a batch result's counts (``total``, ``finished``, ``failed``, ``uncertain``,
        ``timeout``, ``images``); other keys are ignored.
    :param manifest: a batch's manifest URI.
    """
    extra: dict[str, Any] = {"source": "getimage"}
    for name, values in (("diffusion_ids", diffusion_ids), ("image_urls", image_urls), ("files", files)):
        if values is None:
            continue
        items = _strings(name, values)
        extra[name] = [_rules.clip(item, _rules.MAX_URL_LENGTH) for item in items[:MAX_EXTRA_ITEMS]]
        extra[f"{name.removesuffix('s')}_count"] = len(items)
    if model is not None:
        extra["model"] = _rules.clip(str(model), _rules.MAX_ID_LENGTH)
    if prompt is not None:
        extra["prompt"] = _rules.clip(str(prompt), PROMPT_LIMIT)
    if counts is not None:
        extra["counts"] = {
            key: int(counts[key])
            for key in COUNT_KEYS
            if isinstance(counts.get(key), int) and not isinstance(counts.get(key), bool)
        }
    if manifest is not None:
        extra["manifest"] = _rules.clip(str(manifest), _rules.MAX_URL_LENGTH)
    return extra


def announce(context: Context, outlets: Iterable[object], extra: Mapping[str, Any]) -> int:
    """
    Put ``extra`` on the event of every ``Asset`` among a task's outlets; returns how many.

    Other outlets (an ``AssetAlias``, a lineage-only object) are left alone: an alias needs the
    asset it resolves to, which only the DAG author knows.
    """
    assets = [outlet for outlet in outlets if _is_asset(outlet)]
    if not assets:
        return 0
    events = context["outlet_events"]
    for asset in assets:
        events[asset].extra.update(extra)  # type: ignore[index]
    return len(assets)


def _is_asset(outlet: object) -> bool:
    from airflow.providers.common.compat.sdk import Asset

    return isinstance(outlet, Asset)
