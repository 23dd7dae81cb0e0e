"""``GetImageDownloadOperator``: save the images of a generation to any storage."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator, ObjectStoragePath

from airflow_provider_getimage import _rules, assets, batch, storage
from airflow_provider_getimage.inputs import check_count, is_template, known_deep, known_now, task_named

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context
    from airflow.providers.openlineage.extractors import OperatorLineage

__all__ = ["GetImageDownloadOperator"]


def _static_destination(value: object) -> bool:
    """Whether a destination is final at parse time (an ObjectStoragePath may hold a template)."""
    if isinstance(value, ObjectStoragePath):
        return not is_template(str(value))
    return known_now(value)


def _makes_image_urls(task: Any) -> bool:
    """
    Whether a task (mapped or not) returns a diffusion's image URLs and pushes ``diffusion_id``.

    Such operators say so with the class attribute ``returns_image_urls`` (the diffusion operator,
    the sensor), so this module imports neither.
    """
    cls = task.operator_class if getattr(task, "is_mapped", False) else type(task)
    return bool(getattr(cls, "returns_image_urls", False))


class GetImageDownloadOperator(BaseOperator):
    """
    Save generated images to a folder of any storage: local, S3, GCS, Azure, any fsspec scheme.

    Takes the image URLs a GetImage task returned (``GetImageDiffusionOperator``,
    ``GetImageDiffusionSensor``, mapped or not) and stores each image as
    ``<diffusion_id>_<index>.<ext>`` in ``destination``, written atomically; returns the stored
    files as URI strings, in the order of the URLs. Without ``diffusion_id`` each URL is named
    after the diffusion found in its upstream task's XComs. Inputs are checked before the first
    download (at parse time when final).

    .. seealso::
        The naming rules, the retries and the storage schemes:
        :ref:`howto/operator:GetImageDownloadOperator`.

    :param image_urls: the URLs to download (templated): usually ``generate.output`` (a list of
        URLs) or a mapped generation's ``.output`` (a list of lists); a single URL is accepted.
    :param destination: the folder to save into (templated, also inside an ``ObjectStoragePath``):
        a URI such as ``file:///data/images/{{ run_id }}/`` or ``s3://bucket/images/``, or an
        absolute local path. Default ``file:///tmp/getimage/{{ dag.dag_id }}/{{ run_id }}/``.
    :param diffusion_id: the diffusion id(s) to name the files after (templated); only needed
        when the URLs do not come straight from a GetImage task.
    :param destination_conn_id: the Airflow connection of the storage (templated), e.g.
        ``aws_default`` for ``s3://``; ``None`` uses the storage's default credentials.
    :param max_image_bytes: the largest image accepted, in bytes (default 50 MiB).
    :param request_timeout: seconds one attempt at one image may take in all, its whole body included.
    :param download_attempts: attempts per image, the first included (default 4).
    :param manifest_conn_id: for a batch's result, the storage connection of its manifest.
    :param max_concurrency: for a batch's result, images downloaded at once (default 4).

    Given a ``GetImageBatchOperator`` result (its summary dict), it reads the batch's manifest and
    saves every finished item's images as ``<key or index>_<n>.<ext>``, ``max_concurrency`` at a
    time, and returns ``{"destination", "files", "manifest"}`` (not thousands of URIs in XCom).
    """

    template_fields: Sequence[str] = ("image_urls", "destination", "diffusion_id", "destination_conn_id")
    template_fields_renderers = {"image_urls": "json", "diffusion_id": "json"}
    ui_color = "#c6dcf5"

    def __init__(
        self,
        *,
        image_urls: str | Sequence[str] | Sequence[Sequence[str]],
        destination: str | ObjectStoragePath = storage.DEFAULT_DESTINATION,
        diffusion_id: str | Sequence[str] | None = None,
        destination_conn_id: str | None = None,
        max_image_bytes: int = storage.DEFAULT_MAX_IMAGE_BYTES,
        request_timeout: float = storage.DEFAULT_DOWNLOAD_TIMEOUT,
        download_attempts: int = storage.DEFAULT_DOWNLOAD_ATTEMPTS,
        manifest_conn_id: str | None = None,
        max_concurrency: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.image_urls = image_urls
        self.destination = destination
        self.diffusion_id = diffusion_id
        self.destination_conn_id = destination_conn_id
        self.manifest_conn_id = manifest_conn_id
        self._saved: list[tuple[str, str]] = []
        """(diffusion id or batch key, stored file URI) of each image saved, for asset events and lineage."""
        self._manifest: str | None = None
        # What is final at parse time is checked now: a typo fails the DAG file, not a run.
        with task_named(self.task_id):
            self.max_image_bytes = check_count("max_image_bytes", max_image_bytes)
            self.download_attempts = check_count("download_attempts", download_attempts)
            self.request_timeout = _rules.check_positive("request_timeout", request_timeout)
            self.max_concurrency = check_count("max_concurrency", max_concurrency)
            if _rules.is_batch_result(image_urls):
                return
            batches = storage.url_batches(image_urls) if known_deep(image_urls) else None
            if known_now(destination_conn_id) and _static_destination(destination):
                storage.destination_path(destination, destination_conn_id)
            if diffusion_id is not None and known_deep(diffusion_id):
                ids = [diffusion_id] if isinstance(diffusion_id, str) else diffusion_id
                storage.diffusion_ids(diffusion_id, len(batches) if batches is not None else len(list(ids)))

    def execute(self, context: Context) -> list[str] | dict[str, Any]:
        destination = storage.destination_path(
            storage.rendered_destination(self.destination, lambda text: self.render_template(text, context)),
            self.destination_conn_id,
        )
        if _rules.is_batch_result(self.image_urls):
            return self._save_batch(context, destination)
        batches = storage.url_batches(self.image_urls)
        plan = self._plan(context, batches)
        self.log.info("Saving %d image(s) to %s", len(plan), destination)
        with self._image_store(destination) as store:
            self._saved = [(stem, store.save(url, stem, index)) for url, stem, index in plan]
        files = [uri for _, uri in self._saved]
        assets.announce(
            context, self.outlets, assets.asset_extra(diffusion_ids=self._diffusion_ids(), files=files)
        )
        return files

    def _image_store(self, destination: ObjectStoragePath) -> storage.ImageStore:
        """A store for ``destination`` with this task's bounds (one per download thread of a batch)."""
        return storage.ImageStore(
            destination,
            self.log,
            max_image_bytes=self.max_image_bytes,
            request_timeout=self.request_timeout,
            attempts=self.download_attempts,
        )

    def _diffusion_ids(self) -> list[str]:
        """The diffusions of the saved images, each once, in order."""
        return list(dict.fromkeys(diffusion_id for diffusion_id, _ in self._saved))

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> OperatorLineage:
        """OpenLineage: the stored files as outputs, the diffusion id(s) as the external query."""
        from airflow_provider_getimage.lineage import operator_lineage

        files = [uri for _, uri in self._saved]
        if self._manifest is not None:  # a batch's images are named by key; its ids are in the manifest
            return operator_lineage(diffusion_ids=[], files=files, manifest=self._manifest)
        return operator_lineage(diffusion_ids=self._diffusion_ids(), files=files)

    def _save_batch(self, context: Context, destination: ObjectStoragePath) -> dict[str, Any]:
        """Every finished item of a batch's manifest, ``max_concurrency`` downloads at a time."""
        result: Any = self.image_urls
        manifest = str(result["manifest"])
        rows = batch.read_manifest(manifest, self.manifest_conn_id)
        plan = [
            (str(url), str(row["key"]) if row.get("key") else str(row["index"]), number)
            for row in rows
            if row.get("status") == "finished"
            for number, url in enumerate(row.get("image_urls") or [])
        ]
        self.log.info("Saving %d image(s) of batch %s to %s", len(plan), manifest, destination)
        local = threading.local()
        stores: list[storage.ImageStore] = []
        lock = threading.Lock()

        def save(entry: tuple[str, str, int]) -> str:
            store = getattr(local, "store", None)
            if store is None:
                store = local.store = self._image_store(destination)
                with lock:
                    stores.append(store)
            return store.save(*entry)

        try:
            with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
                files = list(pool.map(save, plan))
        finally:
            for store in stores:
                store.close()
        self._manifest = manifest
        self._saved = [(stem, uri) for (_, stem, _), uri in zip(plan, files, strict=True)]
        assets.announce(context, self.outlets, assets.asset_extra(files=files, manifest=manifest))
        return {"destination": str(destination), "files": len(files), "manifest": manifest}

    def _plan(self, context: Context, batches: list[list[str]]) -> list[tuple[str, str, int]]:
        """Each URL with the diffusion id and index it is saved under; no two images share a name."""
        if self.diffusion_id is not None:
            ids = storage.diffusion_ids(self.diffusion_id, len(batches))
            plan = [
                (url, ids[number], index)
                for number, batch in enumerate(batches)
                for index, url in enumerate(batch)
            ]
        else:
            found = self._diffusions_upstream(context, [url for batch in batches for url in batch])
            plan = [(url, *found[url]) for batch in batches for url in batch]
        names: dict[tuple[str, int], str] = {}
        for url, diffusion_id, index in plan:
            other = names.setdefault((storage.safe_stem(diffusion_id), index), url)
            if other != url:
                raise ValueError(
                    f"Two image URLs would be saved under the same name ({diffusion_id}_{index}): "
                    f"{other!r} and {url!r}; check diffusion_id (one id per list of URLs)."
                )
        return plan

    def _diffusions_upstream(self, context: Context, urls: list[str]) -> dict[str, tuple[str, int]]:
        """
        Find each URL in the output of a direct upstream GetImage task: its diffusion id and index.

        A mapped task's own map index is read first, so a download mapped over a mapped
        generation reads one XCom pair, not every one.
        """
        wanted = set(urls)
        found: dict[str, tuple[str, int]] = {}
        sources = [
            task
            for task in (self.dag.get_task(task_id) for task_id in sorted(self.upstream_task_ids))
            if _makes_image_urls(task)
        ]
        for source in sources:
            for source_urls, diffusion_id in self._outputs(context, source):
                if not isinstance(source_urls, list) or not isinstance(diffusion_id, str):
                    continue  # a failed or skipped generation, or one that returned its id
                for index, url in enumerate(source_urls):
                    if url in wanted:
                        found.setdefault(url, (diffusion_id, index))
                if len(found) == len(wanted):
                    return found
        missing = next(url for url in urls if url not in found)
        looked_in = ", ".join(task.task_id for task in sources) or "none"
        raise ValueError(
            f"No diffusion id for image URL {missing!r}: diffusion_id is not set, and no direct "
            f"upstream GetImage task (looked in: {looked_in}) returned this URL. Pass diffusion_id."
        )

    @staticmethod
    def _outputs(context: Context, source: Any) -> Iterator[tuple[Any, Any]]:
        """(image URLs, diffusion id) of each try of ``source``: its own map index first if mapped."""
        ti = context["ti"]
        task_id = source.task_id

        def pull(map_index: int | None) -> tuple[Any, Any]:
            if map_index is None:
                return ti.xcom_pull(task_ids=task_id), ti.xcom_pull(task_ids=task_id, key="diffusion_id")
            return (
                ti.xcom_pull(task_ids=task_id, map_indexes=map_index),
                ti.xcom_pull(task_ids=task_id, key="diffusion_id", map_indexes=map_index),
            )

        if not getattr(source, "is_mapped", False):
            yield pull(None)
            return
        own = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        if own is not None:
            yield pull(own)
        count = ti.get_ti_count(dag_id=ti.dag_id, task_ids=[task_id], run_ids=[ti.run_id])
        for map_index in range(count):
            if map_index != own:
                yield pull(map_index)
