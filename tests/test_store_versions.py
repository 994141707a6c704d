"""Versions in the store: a replaced model is kept, rolled back, pruned; `verify` finds damage."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmedge.errors import CorruptModelError, ModelNotFoundError
from llmedge.store import ModelRef, QuantReport, Store, sha256_of
from llmedge.store.store import KEPT_VERSIONS

REF = ModelRef("demo", "q4_k_m")


def add(store: Store, tmp_path: Path, content: bytes, revision: str) -> str:
    source = tmp_path / f"{revision}.bin"
    source.write_bytes(content)
    store.add_file(source, REF, format="gguf", origin={"kind": "test", "revision": revision})
    return sha256_of(source)


def test_a_new_version_keeps_the_old_one_until_rolled_back(store: Store, tmp_path: Path) -> None:
    first = add(store, tmp_path, b"first version", "r1")
    second = add(store, tmp_path, b"second version", "r2")
    assert store.resolve(REF).sha256 == second
    assert [m.sha256 for m in store.history("demo", "q4_k_m")] == [first]
    assert store.blob_path(first).is_file()  # still there: history points to it

    restored, dropped = store.rollback(ModelRef("demo"))
    assert (restored.sha256, dropped.sha256) == (first, second)
    assert store.resolve(REF).source["revision"] == "r1"
    assert store.history("demo", "q4_k_m") == []
    assert not store.blob_path(second).exists()  # nothing points to it any more
    with pytest.raises(ModelNotFoundError, match="no earlier version"):
        store.rollback(REF)


def test_the_same_file_again_is_not_a_new_version(store: Store, tmp_path: Path) -> None:
    add(store, tmp_path, b"same", "r1")
    add(store, tmp_path, b"same", "r2")
    assert store.history("demo", "q4_k_m") == []
    assert store.resolve(REF).source["revision"] == "r2"


def test_old_versions_are_pruned_with_their_blobs(store: Store, tmp_path: Path) -> None:
    count = KEPT_VERSIONS + 2
    shas = [add(store, tmp_path, f"version {i}".encode(), f"r{i}") for i in range(count)]
    kept = [m.sha256 for m in store.history("demo", "q4_k_m")]
    assert kept == shas[-2 : -KEPT_VERSIONS - 2 : -1]  # newest earlier version first
    assert not store.blob_path(shas[0]).exists()
    removed = store.remove(ModelRef("demo"))
    assert removed == [str(REF)]
    assert list(store.blobs_dir.iterdir()) == []
    assert list(store.models_dir.iterdir()) == []


def test_a_quant_report_round_trips_through_the_manifest(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "q.bin"
    source.write_bytes(b"quantized")
    report = QuantReport("demo:f16", "ab" * 32, 4.85, 1.5, 12.5, 12.0, 256, "perplexity.txt")
    store.add_file(source, REF, format="gguf", origin={}, quant_report=report)
    stored = store.resolve(REF).quant_report
    assert stored == report
    assert stored is not None and stored.perplexity_change == pytest.approx(12.5 / 12.0 - 1)


def test_verify_rehashes_everything_and_names_the_damage(store: Store, tmp_path: Path) -> None:
    good = add(store, tmp_path, b"x" * 4096, "r1")
    other = tmp_path / "other.bin"
    other.write_bytes(b"y" * 4096)
    store.add_file(other, ModelRef("other", "f16"), format="gguf", origin={})
    assert {c.status for c in store.verify()} == {"ok"}

    blob = store.blob_path(good)
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))  # same size: only a full re-hash notices
    (store.blobs_dir / ("sha256-" + "0" * 64)).write_bytes(b"stray")
    store.partial_path("sha256-" + "1" * 64).write_bytes(b"half")
    checks = {c.status: c for c in store.verify()}
    assert checks["corrupt"].refs == ("demo:q4_k_m",)
    assert checks["ok"].refs == ("other:f16",)
    assert "orphan" in checks and "partial" in checks
    with pytest.raises(CorruptModelError, match="sha256 is"):
        store.verified_blob(store.resolve(REF))

    blob.write_bytes(b"short")
    assert {c.status for c in store.verify() if c.refs} == {"truncated", "ok"}
    blob.unlink()
    assert "missing" in {c.status for c in store.verify()}
