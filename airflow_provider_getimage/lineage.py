"""
OpenLineage for the provider's operators: one builder that the diffusion, download and batch
operators call from ``get_openlineage_facets_on_complete``.

The outputs are the stored files (namespace and name from ``ObjectStoragePath``, as the common.io
file transfer operator reports them) or, before anything is stored, the image URLs; the diffusion
id goes into an ``ExternalQueryRunFacet`` with source ``getimage``. OpenLineage is imported inside
the functions, as the official providers do: without the OpenLineage provider nothing here loads.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["MAX_OUTPUTS", "SOURCE", "file_dataset", "operator_lineage", "url_dataset"]

SOURCE = "getimage"
"""The ``source`` of the run facet that names the diffusion."""
MAX_OUTPUTS = 1000
"""Most output datasets in one event (a batch may store many thousands of images)."""
_MAX_EXTERNAL_ID = 2000


def file_dataset(uri: str) -> Dataset:
    """
    A stored file as a dataset: namespace and name from its ``ObjectStoragePath``.

    A local file keeps its absolute path as the name (namespace ``file``), as OpenLineage names
    local files and as Airflow's own ``file://`` assets translate.
    """
    from airflow.providers.common.compat.openlineage.facet import Dataset
    from airflow.providers.common.compat.sdk import ObjectStoragePath

    path = ObjectStoragePath(uri)
    namespace = getattr(path, "namespace", None) or (
        f"{path.protocol}://{path.bucket}" if path.bucket else path.protocol
    )
    name = path.key
    if path.protocol in ("file", "local", "") and not name.startswith("/"):
        name = "/" + name
    return Dataset(namespace=namespace or "file", name=name)


def url_dataset(url: str) -> Dataset:
    """An image URL as a dataset: ``scheme://host[:port]`` and the path (the query is dropped)."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    parts = urlsplit(url)
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}", name=parts.path or "/")


def operator_lineage(
    *,
    diffusion_ids: str | Sequence[str] | None,
    image_urls: Sequence[str] | None = None,
    files: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
    manifest: str | None = None,
) -> OperatorLineage:
    """
    The lineage of a GetImage task.

    :param diffusion_ids: the diffusion(s) of the task; one id is the run facet's
        ``externalQueryId``, several (a batch) are joined with commas (bounded).
    :param image_urls: the image URLs, the outputs when ``files`` is not given.
    :param files: the stored file URIs (a download, a batch's stored images), preferred as outputs.
    :param inputs: object storage URIs the task read (a batch's JSONL of prompts).
    :param manifest: a batch's manifest URI, an output of its own (first, before the images).
    """
    from airflow.providers.common.compat.openlineage.facet import ExternalQueryRunFacet
    from airflow.providers.openlineage.extractors import OperatorLineage

    outputs: list[Dataset] = (
        [file_dataset(uri) for uri in files[:MAX_OUTPUTS]]
        if files
        else [url_dataset(url) for url in (image_urls or [])[:MAX_OUTPUTS]]
    )
    if manifest:
        outputs.insert(0, file_dataset(manifest))
    run_facets: dict[str, Any] = {}
    ids = [diffusion_ids] if isinstance(diffusion_ids, str) else list(diffusion_ids or [])
    if ids:
        run_facets["externalQuery"] = ExternalQueryRunFacet(
            externalQueryId=",".join(ids)[:_MAX_EXTERNAL_ID], source=SOURCE
        )
    return OperatorLineage(
        inputs=[file_dataset(uri) for uri in inputs or []],
        outputs=outputs,
        run_facets=run_facets,
    )
