"""
Save image URLs to storage: checked inputs, streamed downloads, atomic writes, any fsspec scheme.

The files side of ``GetImageDownloadOperator``: its inputs, the destination and the writes. The
HTTP side (no credential, streaming, size cap, the shared retry loop) is ``hooks.images``.

Each image is streamed (never held in memory) into a temporary name next to its target
(``.<name>.<random>.part``) and moved onto the target only once complete, so the target name
holds either the previous file or the whole new one, never a part:

- local files (``file://`` or a plain absolute path): the temporary file is fsynced, then
  renamed over the target (``rename(2)`` is atomic on POSIX);
- object stores (``s3://``, ``gs://``, ``abfs://``...): the move is a server-side copy, and an
  object store makes a copied or uploaded object visible only once it is complete; the
  temporary key is deleted after the move, or on failure;
- other filesystems (``sftp://``, ``memory://``...): their own ``mv``, a rename where they have one.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import posixpath
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, Unpack
from urllib.parse import urlsplit

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_getimage import _rules
from airflow_provider_getimage.hooks.images import (
    DEFAULT_DOWNLOAD_ATTEMPTS,
    DEFAULT_DOWNLOAD_TIMEOUT,
    DEFAULT_MAX_IMAGE_BYTES,
    FetchOptions,
    ImageFetcher,
)
from airflow_provider_getimage.hooks.transport import describe

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import TracebackType

    from fsspec import AbstractFileSystem

__all__ = [
    "DEFAULT_DESTINATION",
    "DEFAULT_DOWNLOAD_ATTEMPTS",
    "DEFAULT_DOWNLOAD_TIMEOUT",
    "DEFAULT_MAX_IMAGE_BYTES",
    "ImageStore",
    "destination_path",
    "diffusion_ids",
    "extension",
    "safe_stem",
    "url_batches",
]

DEFAULT_DESTINATION = "file:///tmp/getimage/{{ dag.dag_id }}/{{ run_id }}/"
"""Where images go unless a task says otherwise: a folder per DAG and run under ``/tmp/getimage``."""
_LOCAL_PROTOCOLS = frozenset({"file", "local"})
_EXTENSIONS = {
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/webp": "webp",
    "image/gif": "gif",
    "image/avif": "avif",
    "image/heic": "heic",
    "image/bmp": "bmp",
    "image/tiff": "tiff",
    "image/svg+xml": "svg",
}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
STEM_LIMIT = 120
"""Longest safe stem kept before its hash: file names stay well under the usual 255-byte limit."""


# ------------------------------------------------------------------------------------- inputs
def check_url(url: object) -> str:
    """An image URL must be an absolute http(s) URL with a host: no ``file://``, ``data:``, ``ftp://``."""
    if not isinstance(url, str):
        raise TypeError(f"Image URLs must be strings, got {type(url).__name__}: {url!r}.")
    text = url.strip()
    parts = urlsplit(text)
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        hint = ""
        if text.startswith("["):
            hint = (
                " It looks like a list rendered as text: pass the task's output "
                "(image_urls=generate.output) rather than a Jinja xcom_pull string."
            )
        raise ValueError(f"Refusing to download {url!r}: only http(s) image URLs are allowed.{hint}")
    return text


def url_batches(image_urls: object) -> list[list[str]]:
    """
    The image URLs as one list per diffusion, each URL checked.

    Accepts a single URL, a list of URLs (one diffusion's, the operator's ``return_value``) or a
    list of such lists (a mapped generation's outputs gathered by one task).

    :raises ValueError: nothing to download, or a URL that is not http(s) (named in the message).
    :raises TypeError: a value that is neither a string nor a list of them.
    """
    if isinstance(image_urls, str):
        return [[check_url(image_urls)]]
    if isinstance(image_urls, (bytes, Mapping)) or not isinstance(image_urls, Iterable):
        raise TypeError(
            "image_urls must be a list of URL strings (or a list of such lists), "
            f"got {type(image_urls).__name__}: {image_urls!r}."
        )
    # A mapped task's gathered output is Airflow's lazy sequence: iterating it reads one item past
    # the end, which Airflow logs as an ERROR ("XCom not found"); reading up to its length does not.
    items = (
        [image_urls[index] for index in range(len(image_urls))]
        if isinstance(image_urls, Sequence)
        else list(image_urls)
    )
    if not items:
        raise ValueError("image_urls is empty: there is no image to download.")
    if any(isinstance(item, str) for item in items):  # one diffusion's list: strings only
        for position, item in enumerate(items):
            if not isinstance(item, str):
                raise TypeError(
                    f"image_urls must be a list of URL strings; item {position} is "
                    f"{type(item).__name__}: {item!r}."
                )
        return [[check_url(url) for url in items]]
    batches = []
    for position, item in enumerate(items):
        if isinstance(item, (str, bytes, Mapping)) or not isinstance(item, Sequence):
            raise TypeError(
                "image_urls must be a list of URL strings or a list of such lists; "
                f"item {position} is {type(item).__name__}: {item!r}."
            )
        if not item:
            raise ValueError(f"image_urls item {position} is an empty list: no image to download there.")
        batches.append([check_url(url) for url in item])
    return batches


def diffusion_ids(diffusion_id: object, batches: int) -> list[str]:
    """
    One checked diffusion id per list of URLs: a string for one list, else a list of strings.

    :raises ValueError: a blank id, or not as many ids as lists of URLs.
    """
    ids = [diffusion_id] if isinstance(diffusion_id, str) else diffusion_id
    if isinstance(ids, (bytes, Mapping)) or not isinstance(ids, Iterable):
        raise TypeError(
            f"diffusion_id must be a string or a list of strings, got {type(diffusion_id).__name__}: "
            f"{diffusion_id!r}."
        )
    checked = [_rules.check_diffusion_id(value) for value in ids]
    if len(checked) != batches:
        raise ValueError(
            f"diffusion_id has {len(checked)} id(s) for {batches} list(s) of image URLs: "
            "give one id per list, in the same order."
        )
    return checked


def safe_stem(text: str) -> str:
    """
    A file-name-safe form of an id: no separators, no leading dot (``../x`` becomes ``x_<hash>``).

    When the safe form differs from the id, a short hash of the id is added: ``a/b`` and ``a?b``
    would otherwise both become ``a_b`` and overwrite each other in a folder tasks share.
    """
    stem = _UNSAFE.sub("_", text).strip("._")[:STEM_LIMIT] or "image"
    if stem == text:
        return stem
    return f"{stem}_{hashlib.sha256(text.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def extension(content_type: str) -> str:
    """The file extension (without the dot) for an ``image/*`` content type; ``img`` if unknown."""
    known = _EXTENSIONS.get(content_type)
    if known:
        return known
    guessed = mimetypes.guess_extension(content_type, strict=False)
    return guessed.lstrip(".") if guessed else "img"


def conn_id_of(path: ObjectStoragePath) -> str | None:
    """The path's Airflow connection id (an attribute since Airflow 3.1; a storage option before)."""
    conn_id = getattr(path, "conn_id", None) or path.storage_options.get("conn_id")
    return str(conn_id) if conn_id else None


def _options(path: ObjectStoragePath) -> dict[str, Any]:
    """The path's storage options but its connection (passed on its own)."""
    return {key: value for key, value in path.storage_options.items() if key != "conn_id"}


def destination_path(destination: object, conn_id: str | None = None) -> ObjectStoragePath:
    """
    The destination folder as an ``ObjectStoragePath``, checked without touching the storage.

    :param destination: a URI (``file:///data/images/``, ``s3://bucket/prefix/``...), an absolute
        local path (taken as ``file://``) or an ``ObjectStoragePath``.
    :param conn_id: the Airflow connection of the storage, if any (overrides one in the path).
    :raises ValueError: a relative path, a ``file://`` URI with a host, an http(s) URL, no scheme.
    """
    if isinstance(destination, ObjectStoragePath):
        path = destination
        if conn_id is not None and conn_id != conn_id_of(path):
            path = ObjectStoragePath(str(path), conn_id=conn_id, **_options(path))
    elif isinstance(destination, (str, os.PathLike)):
        text = os.fspath(destination).strip()
        if not text:
            raise ValueError("destination must not be empty: give a URI or an absolute path.")
        parts = urlsplit(text)
        if "://" not in text:
            if not text.startswith("/"):
                raise ValueError(
                    f"destination {text!r} is a relative path: give an absolute path or a URI "
                    "such as 'file:///data/images/' or 's3://bucket/images/'."
                )
            return ObjectStoragePath(text, protocol="file", conn_id=conn_id)
        scheme = parts.scheme.lower()
        if not scheme:
            raise ValueError(f"destination {text!r} has no scheme before '://'.")
        if scheme in ("http", "https"):
            raise ValueError(
                f"destination {text!r} is a web URL: images are stored to a filesystem or object "
                "store (file://, s3://, gs://...), not uploaded to a web server."
            )
        if scheme in _LOCAL_PROTOCOLS and parts.netloc:
            raise ValueError(
                f"destination {text!r} names a host ({parts.netloc!r}): a local URI has three "
                "slashes and an absolute path, e.g. 'file:///data/images/'."
            )
        try:
            path = ObjectStoragePath(text, conn_id=conn_id)
        except (ValueError, TypeError) as err:  # a scheme neither Airflow nor fsspec knows
            raise ValueError(f"destination {text!r}: no filesystem for scheme {scheme!r} ({err}).") from None
    else:
        raise TypeError(
            "destination must be a URI string, an absolute path or an ObjectStoragePath, "
            f"got {type(destination).__name__}: {destination!r}."
        )
    if not path.protocol:  # an ObjectStoragePath made from a plain path
        path = ObjectStoragePath(path.path, protocol="file", conn_id=conn_id_of(path))
    return path


def filesystem(destination: ObjectStoragePath) -> AbstractFileSystem:
    """
    The filesystem a destination is written with.

    Airflow's own (``file`` and the schemes of installed providers, with the path's connection)
    when it has one; else fsspec's for that scheme (``memory``, ``sftp``...), with fsspec's own
    default credentials, so any scheme fsspec knows works unchanged.

    :raises ValueError: neither Airflow nor fsspec knows the scheme (say, its package is missing).
    """
    try:
        return destination.fs
    except ValueError as airflow_error:
        if conn_id_of(destination) is not None:
            raise ValueError(
                f"destination {destination}: Airflow has no filesystem for scheme "
                f"{destination.protocol!r}, so connection {conn_id_of(destination)!r} cannot be used "
                f"(is the provider for {destination.protocol!r} installed?). {airflow_error}"
            ) from None
    import fsspec

    try:
        return fsspec.filesystem(destination.protocol, **destination.storage_options)
    except (ValueError, ImportError) as fsspec_error:
        raise ValueError(
            f"destination {destination}: no filesystem for scheme {destination.protocol!r} "
            f"(neither an Airflow provider nor fsspec knows it, or its package is missing): {fsspec_error}"
        ) from None


# ------------------------------------------------------------------------------------- downloads
class ImageStore:
    """
    Download images into one destination folder, each written atomically.

    The HTTP side (no credentials, streaming, size cap, retries) is ``hooks.images.ImageFetcher``;
    this class owns the files. Use as a context manager (the fetcher's session is closed at the
    end). Every check that needs no download (the destination's scheme, its filesystem) is made
    when the store is created.

    :param destination: the folder, from :func:`destination_path`.
    :param log: the task's logger (a stdlib or structlog logger).
    :param options: the downloads' limits (``hooks.images.FetchOptions``: ``max_image_bytes``,
        ``request_timeout``, ``attempts``, ``retry_policy``).
    """

    def __init__(self, destination: ObjectStoragePath, log: Any, **options: Unpack[FetchOptions]) -> None:
        self.destination = destination
        self.log = log
        self.fs = filesystem(destination)
        self.local = destination.protocol in _LOCAL_PROTOCOLS
        self.folder = destination.path.rstrip("/") or destination.path
        self.fetcher = ImageFetcher(log, **options)
        self._folder_ready = False

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self.fetcher.close()

    def save(self, url: str, stem: str, index: int) -> str:
        """
        Download ``url`` to ``<stem>_<index>.<ext>`` in the destination; return the stored URI.

        :raises GetImageError: the answer was not an image, too large, or still failing after
            every attempt (the message names the URL and the last error).
        """
        name = f"{safe_stem(stem)}_{index}"

        def write(content_type: str, chunks: Iterator[bytes]) -> str:
            file_name = f"{name}.{extension(content_type)}"
            size = self._write(chunks, file_name)
            stored = str(self.destination / file_name)
            self.log.info("Saved %s (%d bytes, %s)", stored, size, content_type)
            return stored

        return self.fetcher.fetch(url, write)

    def _write(self, chunks: Iterator[bytes], file_name: str) -> int:
        """Stream the chunks into a temporary name beside the target, then move it onto the target."""
        self._ensure_folder()
        target = posixpath.join(self.folder, file_name)
        partial = posixpath.join(self.folder, f".{file_name}.{uuid.uuid4().hex[:12]}.part")
        size = 0
        try:
            with self.fs.open(partial, "wb") as out:
                for chunk in chunks:
                    size += len(chunk)
                    out.write(chunk)
                if self.local:
                    out.flush()
                    os.fsync(out.fileno())  # the data is on disk before the name points to it
            self.fs.mv(partial, target)
        except BaseException:
            with contextlib.suppress(Exception):
                if self.fs.exists(partial):
                    self.fs.rm(partial)
            raise
        return size

    def _ensure_folder(self) -> None:
        """Create the folder where a filesystem needs one (object stores have none: a no-op there)."""
        if self._folder_ready:
            return
        try:
            self.fs.makedirs(self.folder, exist_ok=True)
        except Exception as err:  # the write says what is wrong, with the storage's own error
            self.log.debug("Could not create %s (%s); writing anyway", self.destination, describe(err))
        self._folder_ready = True


def rendered_destination(destination: Any, render: Any) -> Any:
    """
    An ``ObjectStoragePath`` destination with a Jinja template in it, rendered.

    Airflow renders strings in template fields but passes other objects through, so a path such
    as ``ObjectStoragePath("s3://bucket/{{ run_id }}/")`` is rendered here, its connection kept.

    :param render: ``lambda text: operator.render_template(text, context)``.
    """
    if isinstance(destination, ObjectStoragePath) and ("{{" in str(destination) or "{%" in str(destination)):
        return ObjectStoragePath(
            render(str(destination)), conn_id=conn_id_of(destination), **_options(destination)
        )
    return destination
