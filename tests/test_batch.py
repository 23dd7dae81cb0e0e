"""The batch's pure-ish parts: input checks, fingerprint, durable state, manifest."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import pytest
from airflow.providers.common.compat.sdk import ObjectStoragePath

from airflow_provider_getimage import batch

if TYPE_CHECKING:
    from pathlib import Path


def folder(path: Path) -> ObjectStoragePath:
    return ObjectStoragePath(f"file://{path}")


class TestInputs:
    def test_strings_and_objects_get_the_operator_defaults(self) -> None:
        items = batch.batch_items(
            ["a fox", {"prompt": "a cat", "model": "sdxl", "parameters": {"seed": 1}, "key": " cat "}],
            "midjourney",
            {"size": "1:1", "seed": 0},
        )
        assert items == [
            batch.BatchItem(0, "a fox", "midjourney", {"size": "1:1", "seed": 0}),
            batch.BatchItem(1, "a cat", "sdxl", {"size": "1:1", "seed": 1}, "cat"),
        ]

    def test_every_bad_item_is_named_with_its_index_and_value(self) -> None:
        with pytest.raises(ValueError, match="nothing was submitted") as info:
            batch.batch_items(
                [
                    "ok",
                    "",
                    7,
                    {"prompt": "x", "colour": "red"},
                    {"model": "m"},
                    {"prompt": "y", "key": "k"},
                    {"prompt": "z", "key": "k"},
                    {"prompt": "p", "parameters": {"prompt": "again"}},
                ],
                "midjourney",
                None,
            )
        message = str(info.value)
        assert message.startswith("6 of 8 prompts are not valid")
        for fragment in (
            "item 1 (''): prompt must not be empty",
            "item 2 (7): an item must be a string",
            "item 3 ({'prompt': 'x', 'colour': 'red'}): unknown field(s) ['colour']",
            "item 4 ({'model': 'm'}): the item has no 'prompt'",
            "item 6: key 'k' is already the key of item 5",
            "item 7",
        ):
            assert fragment in message

    def test_many_bad_items_are_counted_not_all_listed(self) -> None:
        with pytest.raises(ValueError, match=r"and 15 more") as info:
            batch.batch_items([""] * 25, "midjourney", None)
        assert str(info.value).count("item ") == batch.BAD_ITEMS_SHOWN

    @pytest.mark.parametrize(
        ("prompts", "error"),
        [([], "prompts is empty"), ("a koi pond", "not a URI"), (42, "prompts must be a list")],
    )
    def test_not_a_list(self, prompts: object, error: str) -> None:
        with pytest.raises((TypeError, ValueError), match=error):
            batch.batch_items(prompts, "midjourney", None)

    def test_jsonl_file(self, tmp_path: Path) -> None:
        path = tmp_path / "prompts.jsonl"
        path.write_text('{"prompt": "a", "key": "sku-1"}\n\n"b"\n')
        items = batch.batch_items(f"file://{path}", "midjourney", None)
        assert [(i.prompt, i.key) for i in items] == [("a", "sku-1"), ("b", None)]
        path.write_text('{"prompt": "a"}\nnot json\n')
        with pytest.raises(ValueError, match="line 2 is not JSON"):
            batch.batch_items(str(path), "midjourney", None)

    def test_fingerprint_changes_with_any_input(self) -> None:
        base = batch.batch_items(["a", "b"], "m", None)
        assert batch.fingerprint(base) == batch.fingerprint(batch.batch_items(["a", "b"], "m", None))
        for other in (["a", "c"], ["b", "a"], ["a", {"prompt": "b", "key": "k"}]):
            assert batch.fingerprint(batch.batch_items(other, "m", None)) != batch.fingerprint(base)


class TestState:
    def test_events_fold_and_survive_a_reopen(self, tmp_path: Path) -> None:
        items = batch.batch_items(["a", "b", "c", "d"], "m", None)
        state = batch.BatchState.open(folder(tmp_path), items)
        state.record([{"i": 0, "e": "intent"}])
        state.record([{"i": 0, "e": "submitted", "id": "d-0"}])
        state.record([{"i": 1, "e": "intent"}])  # the crash comes here
        state.record([{"i": 2, "e": "intent"}, {"i": 2, "e": "released"}])
        again = batch.BatchState.open(folder(tmp_path), items)
        assert [s.status for s in again.states] == ["submitted", "intent", "pending", "pending"]
        assert again.states[0].diffusion_id == "d-0"
        again.record([{"i": 0, "e": "finished", "urls": ["https://x/0.png"]}])
        third = batch.BatchState.open(folder(tmp_path), items)
        assert third.states[0].status == "finished"
        assert third.states[0].image_urls == ["https://x/0.png"]

    def test_each_segment_is_small_and_whole(self, tmp_path: Path) -> None:
        items = batch.batch_items([f"p{n}" for n in range(200)], "m", None)
        state = batch.BatchState.open(folder(tmp_path), items)
        for index in range(200):
            state.record([{"i": index, "e": "intent"}])
            state.record([{"i": index, "e": "submitted", "id": f"d-{index}"}])
        files = list((tmp_path / batch.STATE_FOLDER).iterdir())
        assert not [f for f in files if f.name.endswith(".part")], "no partial file left"
        total = sum(f.stat().st_size for f in files)
        assert total < 200 * 150, f"state grows linearly: {total} bytes for 200 items"

    def test_changed_prompts_fail_clearly(self, tmp_path: Path) -> None:
        batch.BatchState.open(folder(tmp_path), batch.batch_items(["a", "b"], "m", None))
        with pytest.raises(ValueError, match="the prompts changed since the first try"):
            batch.BatchState.open(folder(tmp_path), batch.batch_items(["a", "B"], "m", None))

    def test_manifest_rows_in_input_order(self, tmp_path: Path) -> None:
        items = batch.batch_items(["a", {"prompt": "b", "key": "kb"}, "c"], "m", {"seed": 1})
        state = batch.BatchState.open(folder(tmp_path), items)
        state.record(
            [
                {"i": 0, "e": "submitted", "id": "d-0", "t": 100.0},
                {"i": 0, "e": "finished", "urls": ["https://x/a.png", "https://x/b.png"], "t": 160.0},
                {"i": 1, "e": "failed", "error": "nope"},
                {"i": 2, "e": "uncertain", "error": "lost answer"},
            ]
        )
        uri = state.write_manifest()
        assert uri == f"file://{tmp_path}/manifest.jsonl"
        rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
        assert set(rows[0]) == {
            "index",
            "key",
            "prompt",
            "model",
            "parameters",
            "diffusion_id",
            "status",
            "image_urls",
            "error",
            "submitted_at",
            "finished_at",
        }
        assert [(r["index"], r["key"], r["status"]) for r in rows] == [
            (0, None, "finished"),
            (1, "kb", "failed"),
            (2, None, "uncertain"),
        ]
        assert rows[0]["submitted_at"] == "1970-01-01T00:01:40.000+00:00"
        assert state.summary() == {
            "manifest": uri,
            "total": 3,
            "finished": 1,
            "failed": 1,
            "uncertain": 1,
            "timeout": 0,
            "images": 2,
        }
        assert list(batch.read_manifest(uri)) == rows


def test_state_and_manifest_on_an_object_store() -> None:
    """On a store without rename (fsspec's memory://), every file is one whole object."""
    from airflow_provider_getimage.storage import destination_path

    results = destination_path("memory://getimage-batch-test/run-1/")
    items = batch.batch_items(["a", "b"], "m", None)
    state = batch.BatchState.open(results, items)
    state.record([{"i": 0, "e": "intent"}, {"i": 0, "e": "submitted", "id": "d-0"}])
    state.record(
        [{"i": 0, "e": "finished", "urls": ["https://x/0.png"]}, {"i": 1, "e": "failed", "error": "no"}]
    )
    again = batch.BatchState.open(results, items)
    assert [s.status for s in again.states] == ["finished", "failed"]
    uri = again.write_manifest()
    assert [row["status"] for row in batch.read_manifest(uri)] == ["finished", "failed"]
    assert not [name for name in again.fs.find("/getimage-batch-test") if name.endswith(".part")]


def test_the_manifest_reader_is_bounded_and_checks_rows(tmp_path: Path) -> None:
    """One streaming reader serves the download and review operators: bounded, objects only."""
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"index": 0}\n\n{"index": 1}\n')
    assert [row["index"] for row in batch.read_manifest(str(manifest))] == [0, 1]
    with pytest.raises(ValueError, match=r"larger than 20 bytes"):
        list(batch.read_manifest(str(manifest), max_bytes=20))
    manifest.write_text('{"index": 0}\n[1, 2]\n')
    with pytest.raises(ValueError, match=r"not an object: b'\[1, 2"):
        list(batch.read_manifest(str(manifest)))
