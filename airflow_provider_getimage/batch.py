"""
The batch's inputs, its durable state and its manifest (``GetImageBatchOperator`` is thin over this).

- :func:`batch_items`: the whole input list checked before anything is submitted (a submission
  costs credits); each bad item named by index and value.
- :class:`BatchState`: the batch's progress under its ``results`` folder, as small immutable
  segment files (each written atomically; object stores have no append), so a retry re-attaches
  instead of paying twice. A fingerprint of the inputs guards it.
- :meth:`BatchState.write_manifest`: ``manifest.jsonl``, one row per input, written atomically.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import posixpath
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_getimage import _rules, storage

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping, Sequence

    from fsspec import AbstractFileSystem

__all__ = [
    "MANIFEST_NAME",
    "MAX_BATCH_SIZE",
    "MAX_MANIFEST_BYTES",
    "STATE_FOLDER",
    "BatchItem",
    "BatchState",
    "ItemState",
    "Status",
    "batch_items",
    "fingerprint",
    "read_manifest",
]

MANIFEST_NAME = "manifest.jsonl"
STATE_FOLDER = "state"
STATE_VERSION = 1
MAX_BATCH_SIZE = 100_000
"""The most prompts one batch takes (its state is folded in memory, one small record an item)."""
MAX_KEY_LENGTH = 200
ITEM_FIELDS = frozenset({"prompt", "model", "parameters", "key"})
BAD_ITEMS_SHOWN = 10
"""Bad items named in an input error (the count says how many more)."""

Status = Literal["pending", "intent", "submitted", "finished", "failed", "uncertain", "timeout"]
FINAL_STATUSES: frozenset[str] = frozenset({"finished", "failed", "uncertain", "timeout"})
"""The statuses a manifest row can have."""


# ----------------------------------------------------------------------------------------- inputs
@dataclass(frozen=True)
class BatchItem:
    """One checked input of a batch, with the operator's defaults applied."""

    index: int
    prompt: str
    model: str
    parameters: dict[str, Any]
    key: str | None = None


def _item(index: int, raw: object, model: str, parameters: Mapping[str, Any]) -> BatchItem:
    """One input (a string or an object) checked, defaults applied; raises naming the problem."""
    if isinstance(raw, str):
        return BatchItem(index, _rules.check_prompt(raw), model, dict(parameters))
    if not isinstance(raw, dict):
        raise TypeError(f"an item must be a string or an object with 'prompt', got {type(raw).__name__}")
    unknown = sorted(str(name) for name in set(raw) - ITEM_FIELDS)
    if unknown:
        raise ValueError(f"unknown field(s) {unknown}; an item has {sorted(ITEM_FIELDS)}")
    if "prompt" not in raw:
        raise ValueError("the item has no 'prompt'")
    key = raw.get("key")
    if key is not None:
        if not isinstance(key, str) or not key.strip():
            raise ValueError(f"key must be a non-blank string, got {key!r}")
        if len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"key is over {MAX_KEY_LENGTH} characters")
        key = key.strip()
    item_model = raw.get("model")
    item_parameters = raw.get("parameters")
    merged = {**parameters, **_rules.check_parameters(item_parameters)}
    return BatchItem(
        index,
        _rules.check_prompt(raw["prompt"]),
        _rules.check_model(item_model) if item_model is not None else model,
        merged,
        key,
    )


def batch_items(
    prompts: object,
    model: str,
    parameters: Mapping[str, Any] | None,
    conn_id: str | None = None,
) -> list[BatchItem]:
    """
    The whole input list, checked before anything is submitted.

    :param prompts: a list of strings or of objects (``prompt``, ``model``?, ``parameters``?,
        ``key``?), or the URI of a JSONL file of those (read with ``conn_id``).
    :param model: the model of items that name none.
    :param parameters: parameters every item starts from (an item's own ones override them).
    :raises ValueError: naming each bad item (index and value) and how many there are.
    """
    model = _rules.check_model(model)
    defaults = _rules.check_parameters(parameters)
    if isinstance(prompts, (str, ObjectStoragePath)):
        raw_items = read_jsonl(prompts, conn_id)
    elif isinstance(prompts, (list, tuple)):
        raw_items = list(prompts)
    else:
        raise TypeError(
            "prompts must be a list of strings or objects, or the URI of a JSONL file, got "
            f"{type(prompts).__name__}: {_rules.clip(repr(prompts), 100)}."
        )
    if not raw_items:
        raise ValueError("prompts is empty: a batch needs at least one prompt.")
    if len(raw_items) > MAX_BATCH_SIZE:
        raise ValueError(f"prompts holds {len(raw_items)} items, over the {MAX_BATCH_SIZE} a batch takes.")
    items: list[BatchItem] = []
    problems: list[str] = []
    seen_keys: dict[str, int] = {}
    for index, raw in enumerate(raw_items):
        try:
            item = _item(index, raw, model, defaults)
        except (TypeError, ValueError) as err:
            problems.append(f"item {index} ({_rules.clip(repr(raw), 80)}): {str(err).rstrip('.')}")
            continue
        if item.key is not None:
            first = seen_keys.setdefault(item.key, index)
            if first != index:
                problems.append(f"item {index}: key {item.key!r} is already the key of item {first}")
                continue
        items.append(item)
    if problems:
        shown = "; ".join(problems[:BAD_ITEMS_SHOWN])
        more = f" (and {len(problems) - BAD_ITEMS_SHOWN} more)" if len(problems) > BAD_ITEMS_SHOWN else ""
        raise ValueError(
            f"{len(problems)} of {len(raw_items)} prompts are not valid, nothing was submitted: "
            f"{shown}{more}."
        )
    return items


def read_jsonl(uri: str | ObjectStoragePath, conn_id: str | None) -> list[object]:
    """The objects of a JSONL file on any storage (blank lines skipped); errors name the line."""
    if isinstance(uri, str) and "://" not in uri and not uri.startswith("/"):
        raise ValueError(
            f"prompts is a string but not a URI or an absolute path: {_rules.clip(repr(uri), 100)}; "
            "pass a list of prompts, or the URI of a JSONL file."
        )
    path = storage.destination_path(uri, conn_id)
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"prompts file {path} cannot be read: {err}") from None
    rows: list[object] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as err:
            raise ValueError(f"prompts file {path}, line {number} is not JSON: {err}.") from None
    return rows


def fingerprint(items: Sequence[BatchItem]) -> str:
    """A digest of the inputs: a retry whose prompts changed must not mix two batches."""
    digest = hashlib.sha256()
    for item in items:
        row = [item.prompt, item.model, item.parameters, item.key]
        digest.update(json.dumps(row, sort_keys=True, separators=(",", ":")).encode())
        digest.update(b"\n")
    return digest.hexdigest()


# ------------------------------------------------------------------------------------------ state
@dataclass
class ItemState:
    """What the batch knows of one item, folded from its state's events."""

    status: Status = "pending"
    diffusion_id: str | None = None
    submitted_at: float | None = None
    finished_at: float | None = None
    image_urls: list[str] = field(default_factory=list)
    error: str | None = None
    resubmits: int = 0
    """Times the user had an uncertain submission sent again (``resubmit_uncertain``)."""

    def apply(self, event: Mapping[str, Any]) -> None:
        """Fold one event into the item (events are applied in the order they were written)."""
        kind = event.get("e")
        when = event.get("t")
        if kind == "intent":
            self.status = "intent"
        elif kind == "released":  # provably not taken by the service (429, connection refused)
            self.status = "pending"
        elif kind == "resubmit":
            self.status, self.error = "pending", None
            self.resubmits += 1
        elif kind == "submitted":
            self.status, self.diffusion_id, self.submitted_at = "submitted", str(event["id"]), when
        elif kind == "finished":
            self.status, self.finished_at = "finished", when
            self.image_urls = [str(url) for url in event.get("urls", [])]
        elif kind in ("failed", "uncertain", "timeout"):
            self.status, self.finished_at = kind, when
            self.error = str(event["error"]) if event.get("error") is not None else None


def _iso(epoch: float | None) -> str | None:
    if epoch is None:
        return None
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).isoformat(timespec="milliseconds")


class BatchState:
    """
    A batch's durable progress under ``<results>/state/``.

    ``batch.json`` holds the inputs' fingerprint; each :meth:`record` call writes one immutable
    segment file of events (an intent before a submission, the diffusion id after it, outcomes),
    so the bytes written grow with the number of items, never with its square, on any storage.

    :param folder: the ``results`` folder.
    :param items: the checked inputs.
    """

    def __init__(self, folder: ObjectStoragePath, items: Sequence[BatchItem]) -> None:
        self.folder = folder
        self.items = list(items)
        self.fs: AbstractFileSystem = storage.filesystem(folder)
        self.local = folder.protocol in ("file", "local")
        self.root = folder.path.rstrip("/") or folder.path
        self.state_dir = posixpath.join(self.root, STATE_FOLDER)
        self.states = [ItemState() for _ in self.items]
        self._sequence = 0
        self._ready = False

    # ------------------------------------------------------------------------------ opening
    @classmethod
    def open(cls, folder: ObjectStoragePath, items: Sequence[BatchItem]) -> BatchState:
        """
        The batch's state: new (fingerprint written) or an earlier try's, read back.

        :raises ValueError: the folder holds the state of other inputs (the prompts changed).
        """
        state = cls(folder, items)
        digest = fingerprint(state.items)
        header_path = posixpath.join(state.state_dir, "batch.json")
        if state.fs.exists(header_path):
            header = json.loads(state.fs.cat_file(header_path))
            if header.get("fingerprint") != digest or header.get("total") != len(state.items):
                raise ValueError(
                    f"The results folder {folder} holds the state of another batch ({header.get('total')} "
                    f"prompts, fingerprint {str(header.get('fingerprint'))[:12]}), not of these "
                    f"{len(state.items)} prompts (fingerprint {digest[:12]}): the prompts changed since "
                    "the first try. Use a new results folder for new prompts, or delete the old state."
                )
            state._load()
        else:
            state._ensure_dirs()
            header = {"version": STATE_VERSION, "fingerprint": digest, "total": len(state.items)}
            state._write_atomic(header_path, json.dumps(header).encode())
        return state

    def _ensure_dirs(self) -> None:
        if not self._ready:
            with contextlib.suppress(Exception):  # object stores have no folders
                self.fs.makedirs(self.state_dir, exist_ok=True)
            self._ready = True

    def _segments(self) -> list[str]:
        try:
            names = self.fs.ls(self.state_dir, detail=False)
        except FileNotFoundError:
            return []
        return sorted(
            name
            for name in (str(n) for n in names)
            if posixpath.basename(name).startswith("seg-") and name.endswith(".jsonl")
        )

    def _load(self) -> None:
        self._ready = True
        segments = self._segments()
        # One call for every segment: object stores (s3fs, gcsfs) fetch them concurrently.
        contents = self.fs.cat(segments) if segments else {}
        for name in segments:
            for line in contents[name].decode().splitlines():
                if line.strip():
                    event = json.loads(line)
                    self.states[int(event["i"])].apply(event)
        if segments:
            self._sequence = int(posixpath.basename(segments[-1]).split("-")[1]) + 1

    # ------------------------------------------------------------------------------ writing
    def record(self, events: Iterable[dict[str, Any]]) -> None:
        """Write events as one new segment (atomic), then fold them in."""
        events = list(events)
        if not events:
            return
        now = time.time()
        for event in events:
            event.setdefault("t", now)
        data = "".join(json.dumps(event, separators=(",", ":")) + "\n" for event in events).encode()
        self._ensure_dirs()
        name = f"seg-{self._sequence:09d}-{uuid.uuid4().hex[:8]}.jsonl"
        self._sequence += 1
        self._write_atomic(posixpath.join(self.state_dir, name), data)
        for event in events:
            self.states[int(event["i"])].apply(event)

    def _write_atomic(self, target: str, data: bytes) -> None:
        """A complete file or none: temp + rename on disk, one whole object on object stores."""
        if not self.local:
            self.fs.pipe_file(target, data)
            return
        partial = f"{target}.{uuid.uuid4().hex[:12]}.part"
        try:
            with open(partial, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(partial, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(partial)
            raise

    # ------------------------------------------------------------------------------ views
    def with_status(self, *statuses: str) -> list[int]:
        """Indexes of the items in one of ``statuses``, in input order."""
        return [index for index, item in enumerate(self.states) if item.status in statuses]

    def all_final(self) -> bool:
        return all(item.status in FINAL_STATUSES for item in self.states)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("finished", "failed", "uncertain", "timeout"), 0)
        for item in self.states:
            if item.status in counts:
                counts[item.status] += 1
        return counts

    def typical_generation(self) -> float | None:
        """The median generation time of the finished items, if any (a hint for the next window)."""
        times = sorted(
            s.finished_at - s.submitted_at
            for s in self.states
            if s.status == "finished" and s.finished_at is not None and s.submitted_at is not None
        )
        return times[len(times) // 2] if times else None

    # ------------------------------------------------------------------------------ manifest
    @property
    def manifest_uri(self) -> str:
        return str(self.folder / MANIFEST_NAME)

    def manifest_rows(self) -> list[dict[str, Any]]:
        """One row per input, in input order (SPEC 9)."""
        return [
            {
                "index": item.index,
                "key": item.key,
                "prompt": item.prompt,
                "model": item.model,
                "parameters": item.parameters,
                "diffusion_id": state.diffusion_id,
                "status": state.status,
                "image_urls": state.image_urls,
                "error": state.error,
                "submitted_at": _iso(state.submitted_at),
                "finished_at": _iso(state.finished_at),
            }
            for item, state in zip(self.items, self.states, strict=True)
        ]

    def write_manifest(self) -> str:
        """Write ``manifest.jsonl`` atomically; returns its URI."""
        data = "".join(json.dumps(row, separators=(",", ":")) + "\n" for row in self.manifest_rows())
        self._ensure_dirs()
        self._write_atomic(posixpath.join(self.root, MANIFEST_NAME), data.encode())
        return self.manifest_uri

    def summary(self) -> dict[str, Any]:
        """The task's return value: the manifest URI, counts by outcome, number of images."""
        return {
            "manifest": self.manifest_uri,
            "total": len(self.items),
            **self.counts(),
            "images": sum(len(state.image_urls) for state in self.states),
        }


MAX_MANIFEST_BYTES = 1024 * 1024 * 1024
"""The largest ``manifest.jsonl`` read back (a full batch of ``MAX_BATCH_SIZE`` rows is far smaller)."""


def read_manifest(
    uri: str, conn_id: str | None = None, max_bytes: int = MAX_MANIFEST_BYTES
) -> Iterator[dict[str, Any]]:
    """
    The rows of a batch's ``manifest.jsonl``, streamed (the download and review operators read it).

    :param max_bytes: the file's bound; a larger one raises ``ValueError`` naming it, before its
        rows past the bound are read.
    """
    path = storage.destination_path(uri, conn_id)
    read = 0
    with storage.filesystem(path).open(path.path, "rb") as manifest:
        for line in manifest:
            read += len(line)
            if read > max_bytes:
                raise ValueError(f"batch manifest {uri} is larger than {max_bytes} bytes.")
            if line.strip():
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(
                        f"batch manifest {uri} holds a row that is not an object: {line[:100]!r}"
                    )
                yield row


def read_text(path: ObjectStoragePath) -> str:
    """A UTF-8 file's text, read with the filesystem the batch writes with (fsspec's if Airflow has none)."""
    data: bytes = storage.filesystem(path).cat_file(path.path)
    return data.decode("utf-8")
