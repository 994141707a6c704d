"""The store's namespace: which names exist, where each lives, and that no name, folder or damaged
manifest can break the others."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmedge.errors import CorruptModelError, InvalidRequestError, ModelNotFoundError, StoreError
from llmedge.store import Manifest, ModelRef, Store
from llmedge.store.names import MAX_NAME_CHARS, ref_from_key


def add(store: Store, tmp_path: Path, ref: str, content: bytes) -> Manifest:
    source = tmp_path / f"{len(list(tmp_path.iterdir()))}.bin"
    source.write_bytes(content)
    return store.add_file(source, ModelRef.parse(ref), format="gguf", origin={"kind": "test"})


@pytest.mark.parametrize(
    ("text", "name", "tag", "version"),
    [
        ("SmolLM2-135M", "smollm2-135m", None, None),
        ("hf.co/Owner/Repo.GGUF:Q4_K_M", "hf.co/owner/repo.gguf", "q4_k_m", None),
        ("a/b/c/d:latest@3", "a/b/c/d", "latest", 3),
    ],
)
def test_names_parse_to_name_tag_and_version(
    text: str, name: str, tag: str | None, version: int | None
) -> None:
    ref = ModelRef.parse(text)
    assert (ref.name, ref.tag, ref.version) == (name, tag, version)
    if tag:
        assert ref_from_key(ref.key) == ModelRef(name, tag)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("foo.json", "suffix the store uses"),
        ("m:latest.tmp", "suffix the store uses"),
        ("hf.co/test/m.part", "suffix the store uses"),
        ("../x", "may hold only"),
        ("a..b", "contains '..'"),
        ("a//b", "empty part"),
        ("a/b/c/d/e", "more than 4 parts"),
        ("x" * (MAX_NAME_CHARS + 1), "longer than"),
        ("a:b:c", "':' appears twice"),
        ("a+b", "may hold only"),
        ("a=b", "may hold only"),
        ("a@1", "needs its tag"),
        ("a:b@0", "a version is @N"),
        ("a:b@x", "a version is @N"),
    ],
)
def test_names_the_store_cannot_hold_are_refused(text: str, complaint: str) -> None:
    with pytest.raises(InvalidRequestError, match=complaint):
        ModelRef.parse(text)


def test_a_colon_and_a_slash_never_share_a_folder(store: Store, tmp_path: Path) -> None:
    colon = [add(store, tmp_path, "a:b", f"a:b {i}".encode()) for i in range(2)]
    slash = [add(store, tmp_path, "a/b:latest", f"a/b {i}".encode()) for i in range(2)]
    assert store.history("a", "b")[0].digest == colon[0].digest
    store.remove(ModelRef.parse("a:b"))
    assert [m.digest for m in store.history("a/b", "latest")] == [slash[0].digest]
    restored, _ = store.rollback(ModelRef.parse("a/b:latest"))
    assert restored.digest == slash[0].digest
    with pytest.raises(ModelNotFoundError):
        store.resolve(ModelRef.parse("a:b"))


def test_latest_means_the_newest_version_unless_a_tag_latest_exists(
    store: Store, tmp_path: Path
) -> None:
    add(store, tmp_path, "m:q8_0", b"older")
    newer = add(store, tmp_path, "m:q4_k_m", b"newer")
    assert store.resolve(ModelRef.parse("m:latest")).digest == newer.digest
    tagged = add(store, tmp_path, "m:latest", b"tagged")
    add(store, tmp_path, "m:q2_k", b"newest")
    assert store.resolve(ModelRef.parse("m:latest")).digest == tagged.digest
    with pytest.raises(ModelNotFoundError):
        store.resolve(ModelRef.parse("other:latest"))


def test_versions_are_numbered_and_an_earlier_one_can_be_removed(
    store: Store, tmp_path: Path
) -> None:
    made = [add(store, tmp_path, "v:q4_0", f"version {i}".encode()) for i in range(3)]
    numbered = store.versions("v", "q4_0")
    assert [(n, m.digest) for n, m in numbered] == [
        (3, made[2].digest),
        (2, made[1].digest),
        (1, made[0].digest),
    ]
    with pytest.raises(StoreError, match="is the current version; `llmedge rollback v:q4_0`"):
        store.remove(ModelRef.parse("v:q4_0@3"))
    with pytest.raises(ModelNotFoundError, match="lists its versions"):
        store.remove(ModelRef.parse("v:q4_0@9"))
    assert store.resolve(ModelRef.parse("v:q4_0@2")).digest == made[1].digest  # runnable
    assert store.remove(ModelRef.parse("v:q4_0@1")) == ["v:q4_0@1"]
    assert not store.blob_path(made[0].digest).exists()
    assert [n for n, _ in store.versions("v", "q4_0")] == [3, 2]
    restored, _ = store.rollback(ModelRef.parse("v:q4_0"))
    assert restored.digest == made[1].digest
    assert [n for n, _ in store.versions("v", "q4_0")] == [2]  # numbers do not move


def mutate(store: Store, good: Manifest) -> list[Path]:
    """Plant every kind of damage next to one good model; returns the damaged files' paths."""
    models = store.models_dir
    (models / "not-a-model-folder").mkdir()
    (models / "stray-file").write_text("hello")
    (models / "foo.json=latest").mkdir()  # a name the store refuses
    bad_json = models / "bad=q4_0" / "current.json"
    bad_json.parent.mkdir()
    bad_json.write_text("{not json")
    escape = models / "escape=q4_0" / "current.json"
    escape.parent.mkdir()
    data = json.loads(good.to_json())
    escape.write_text(
        json.dumps({**data, "name": "escape", "tag": "q4_0", "digest": "sha256:../../x"})
    )
    wrong = models / "wrong=q4_0" / "current.json"
    wrong.parent.mkdir()
    wrong.write_text(good.to_json())  # it describes another reference
    folder = models / "dir=q4_0" / "current.json"
    folder.mkdir(parents=True)  # a folder where the manifest should be
    typed = models / "typed=q4_0" / "current.json"
    typed.parent.mkdir()
    typed.write_text(json.dumps({**data, "name": "typed", "tag": "q4_0", "size_bytes": "big"}))
    return [bad_json, escape, wrong, folder, typed]


def test_damage_is_reported_and_skipped_never_fatal(store: Store, tmp_path: Path) -> None:
    good = add(store, tmp_path, "good:q4_0", b"the good model")
    damaged = mutate(store, good)
    manifests, problems = store.scan()
    assert [m.ref for m in manifests] == ["good:q4_0"]
    reported = {p.path for p in problems}
    assert set(damaged) <= reported and store.models_dir / "stray-file" in reported
    assert store.resolve(ModelRef.parse("good")).digest == good.digest
    with pytest.raises(CorruptModelError, match="manifest cannot be read"):
        store.resolve(ModelRef.parse("bad:q4_0"))
    assert store.verified_blob(good).read_bytes() == b"the good model"
    assert {c.status for c in store.verify()} == {"ok", "unreadable"}
    for name in ("bad", "escape", "wrong", "dir", "typed"):
        assert store.remove(ModelRef.parse(name)) == [f"{name}:q4_0"]
    assert store.blob_path(good.digest).is_file()


def test_blobs_an_unreadable_manifest_names_are_kept(store: Store, tmp_path: Path) -> None:
    kept = add(store, tmp_path, "kept:q4_0", b"only a damaged manifest points here")
    current = store.models_dir / ModelRef.parse("kept:q4_0").key / "current.json"
    current.write_text(current.read_text()[:-20])  # cut short: unreadable
    add(store, tmp_path, "other:q4_0", b"another")
    store.remove(ModelRef.parse("other"))  # collects garbage
    assert store.blob_path(kept.digest).is_file()


def old_layout(root: Path, good: Manifest) -> None:
    """A store as the earlier layout wrote it, with the collisions that layout had."""
    data = json.loads(good.to_json())

    def write(path: Path, **fields: object) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({**data, **fields}))

    write(root / "manifests" / "a" / "b.json", name="a", tag="b", created_at="2")
    write(root / "history" / "a" / "b" / "1.json", name="a", tag="b", created_at="1")
    write(root / "manifests" / "a" / "b" / "latest.json", name="a/b", tag="latest")
    write(root / "history" / "a" / "b" / "latest" / "1.json", name="a/b", tag="latest")
    write(root / "manifests" / "foo.json" / "latest.json", name="foo.json", tag="latest")
    (root / "manifests" / "broken").mkdir(parents=True)
    (root / "manifests" / "broken" / "x.json").write_text("{")


def test_a_store_in_the_old_layout_is_moved_in_place_once(store: Store, tmp_path: Path) -> None:
    good = add(store, tmp_path, "seed:q4_0", b"weights")
    store.remove(ModelRef.parse("seed"))
    store.blobs_dir.mkdir(parents=True, exist_ok=True)
    (store.blobs_dir / f"sha256-{good.sha256}").write_bytes(b"weights")
    old_layout(store.root, good)

    fresh = Store(store.root)
    assert [m.ref for m in fresh.manifests()] == ["a:b", "a/b:latest"]
    assert len(fresh.history("a", "b")) == 1 and len(fresh.history("a/b", "latest")) == 1
    assert not (store.root / "manifests").exists() and not (store.root / "history").exists()
    damaged = sorted(p.name for p in fresh.damaged_dir.iterdir())
    assert damaged == ["manifests+broken+x.json", "manifests+foo.json+latest.json"]
    assert fresh.blob_path(good.digest).is_file()  # the damaged manifests still protect it

    again = Store(store.root)  # nothing left to move: the same store
    assert [m.ref for m in again.manifests()] == ["a:b", "a/b:latest"]
    fresh.remove(ModelRef.parse("a:b"))
    assert len(fresh.history("a/b", "latest")) == 1


def test_lock_files_of_earlier_downloads_are_removed(store: Store) -> None:
    partial = store.partial_path("sha256-" + "1" * 64)
    partial.write_bytes(b"half")
    stale = partial.with_name(partial.name + ".lock")
    stale.write_bytes(b"")
    Store(store.root).manifests()
    assert partial.exists() and not stale.exists()


def test_a_move_cut_short_is_finished_by_the_next_open(store: Store, tmp_path: Path) -> None:
    good = add(store, tmp_path, "seed:q4_0", b"weights")
    store.remove(ModelRef.parse("seed"))
    old_layout(store.root, good)
    Store(store.root).manifests()
    # As if a crash came after the new copy was written and before the old one was deleted:
    old = store.root / "history" / "a" / "b" / "1.json"
    old.parent.mkdir(parents=True)
    old.write_text((store.models_dir / "a=b" / "1.json").read_text())
    reopened = Store(store.root)
    assert len(reopened.history("a", "b")) == 1
    assert not (store.root / "history").exists()


@pytest.mark.e2e
def test_a_damaged_store_still_lists_and_serves_the_good_model(
    store: Store, llmedge_home: Path, smollm2_gguf: Path
) -> None:
    import os
    import subprocess
    import sys

    import httpx
    from server_process import running_server

    from llmedge.hub import pull

    good = pull(store, str(smollm2_gguf), name="good")
    mutate(store, good)
    env = {**os.environ, "LLMEDGE_HOME": str(llmedge_home), "COLUMNS": "200"}

    def llmedge(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "llmedge.cli", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)

    listed = llmedge("list")
    assert listed.returncode == 0 and "good:q4_1" in listed.stdout, listed.stderr
    assert "warning: skipped" in listed.stderr and "bad=q4_0" in listed.stderr
    with running_server(llmedge_home, "good") as url:
        base = url.removesuffix("/v1")
        names = [m["name"] for m in httpx.get(f"{base}/api/tags").json()["models"]]
        assert names == ["good:q4_1"]
        chat = {"model": "good", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
        answer = httpx.post(
            f"{base}/api/chat", json={**chat, "options": {"num_predict": 3}}, timeout=120
        )
        assert answer.status_code == 200 and answer.json()["done"]
        broken = httpx.post(f"{base}/api/chat", json={**chat, "model": "bad:q4_0"}, timeout=60)
        assert broken.status_code == 500 and "cannot be read" in broken.json()["error"]
    verified = llmedge("verify")
    assert verified.returncode == 0 and "unreadable" in verified.stdout
    assert llmedge("rm", "bad", "escape", "typed").returncode == 0
