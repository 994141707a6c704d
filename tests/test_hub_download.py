"""Pulling from a Hugging-Face-compatible hub on loopback: the real SmolLM2 GGUF as a repository.

huggingface_hub does every request (HF_ENDPOINT points at the fake hub); these tests check what
llmedge builds on it: resumption, hash checks, gated repositories, offline use, versions.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, Faults

from llmedge.errors import (
    HashMismatchError,
    HubAccessError,
    HubUnreachableError,
    InvalidRequestError,
    ModelNotFoundError,
)
from llmedge.hub import pull
from llmedge.store import ModelRef, Store

REPO = "test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGET = f"hf.co/{REPO}"
REF = "hf.co/test/smollm2-135m-instruct-gguf:q4_1"


@pytest.fixture(scope="session")
def renamed_gguf(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """The same model with one metadata byte changed: a valid GGUF with another hash."""
    path = tmp_path_factory.getbasetemp() / "smollm2-renamed.gguf"
    if not path.exists():
        path.write_bytes(smollm2_gguf.read_bytes().replace(b"SmolLM", b"SmolXM", 1))
    return path


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, smollm2_gguf: Path) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.push(REPO, {FILE: smollm2_gguf, "README.md": b"# SmolLM2 GGUF\n"})
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # no saved login is used
        for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
            monkeypatch.delenv(name, raising=False)
        yield server


def lfs_gets(hub: FakeHub) -> int:
    return sum(r.method == "GET" and r.path.startswith("/lfs/") for r in hub.requests)


def test_a_pre_quantized_repo_is_pulled_verified_and_described(
    store: Store, hub: FakeHub, smollm2_gguf: Path
) -> None:
    manifest = pull(store, TARGET)  # no q4_k_m there: the single GGUF file is the default
    served = hub.file(REPO, FILE)
    assert manifest.ref == REF
    assert manifest.sha256 == served.sha256
    assert manifest.facts is not None and manifest.facts.architecture == "llama"
    assert manifest.source["revision"] == hub.repos[REPO].commits[-1][0]
    assert store.verified_blob(manifest).read_bytes() == smollm2_gguf.read_bytes()
    assert list(store.downloads_dir.glob("*.part")) == []

    again = pull(store, f"{TARGET}:Q4_1")
    assert again.digest == manifest.digest and lfs_gets(hub) == 1  # up to date: no download


def test_a_dropped_connection_resumes_where_it_stopped(store: Store, hub: FakeHub) -> None:
    served = hub.file(REPO, FILE)
    hub.faults[served.sha256] = Faults(drop_after_bytes=20 << 20)
    manifest = pull(store, TARGET)
    assert hub.ranges() == [f"bytes={20 << 20}-"]
    assert manifest.sha256 == served.sha256


def test_a_partial_file_left_by_a_dead_process_is_resumed(
    store: Store, hub: FakeHub, smollm2_gguf: Path
) -> None:
    served = hub.file(REPO, FILE)
    done = 12_345_678
    store.partial_path(f"sha256-{served.sha256}").write_bytes(smollm2_gguf.read_bytes()[:done])
    assert pull(store, TARGET).sha256 == served.sha256
    assert hub.ranges() == [f"bytes={done}-"]


def test_a_damaged_download_is_refused_and_nothing_is_stored(store: Store, hub: FakeHub) -> None:
    served = hub.file(REPO, FILE)
    hub.faults[served.sha256] = Faults(corrupt=True)
    with pytest.raises(HashMismatchError, match="arrived damaged") as caught:
        pull(store, TARGET)
    assert caught.value.expected == served.sha256 != caught.value.actual
    assert store.manifests() == []
    assert list(store.downloads_dir.glob("*.part")) == []  # the next pull starts clean
    hub.faults.clear()
    assert pull(store, TARGET).sha256 == served.sha256


def test_a_gated_repo_asks_for_a_token_and_honours_hf_token(
    store: Store, hub: FakeHub, smollm2_gguf: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub.push("org/Gated-GGUF", {FILE: smollm2_gguf}, gated=True, token="hf_granted")
    with pytest.raises(HubAccessError, match=r"accept its license at .*HF_TOKEN") as caught:
        pull(store, "hf.co/org/Gated-GGUF")
    assert (caught.value.status, caught.value.gated) == (401, True)

    monkeypatch.setenv("HF_TOKEN", "hf_not_granted")
    with pytest.raises(HubAccessError, match="HF_TOKEN has no access yet") as caught:
        pull(store, "hf.co/org/Gated-GGUF")
    assert caught.value.status == 403

    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert pull(store, "hf.co/org/Gated-GGUF").ref == "hf.co/org/gated-gguf:q4_1"
    resolves = [r for r in hub.requests if "/resolve/" in r.path]
    assert resolves[-1].authorization == "Bearer hf_granted"
    # the token never leaves the hub for the CDN host
    assert {r.authorization for r in hub.requests if r.path.startswith("/lfs/")} == {None}


def test_an_unknown_quantization_lists_the_available_ones(store: Store, hub: FakeHub) -> None:
    with pytest.raises(InvalidRequestError, match=f"hf.co/{REPO} has no q5_k_m .*: q4_1$"):
        pull(store, TARGET, quant="q5_k_m")
    with pytest.raises(ModelNotFoundError, match="no such repository"):
        pull(store, "hf.co/test/does-not-exist")


def test_offline_pulls_say_so_and_keep_stored_models(
    store: Store, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnreachableError, match=r"HF_HUB_OFFLINE is set.*keep working offline"):
        pull(store, TARGET)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    stored = pull(store, TARGET)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert pull(store, f"{TARGET}:q4_1") == stored


def test_an_unreachable_hub_is_reported_as_such(
    store: Store, hub: FakeHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port}")
    with pytest.raises(HubUnreachableError, match=r"cannot reach http://127\.0\.0\.1"):
        pull(store, TARGET)


def test_a_new_revision_keeps_the_previous_one_for_rollback(
    store: Store, hub: FakeHub, renamed_gguf: Path
) -> None:
    first = pull(store, TARGET)
    second_commit = hub.push(REPO, {FILE: renamed_gguf})
    second = pull(store, TARGET)
    assert second.source["revision"] == second_commit and second.digest != first.digest
    assert [m.digest for m in store.history(second.name, second.tag)] == [first.digest]
    restored, dropped = store.rollback(ModelRef.parse(REF))
    assert (restored.digest, dropped.digest) == (first.digest, second.digest)
    assert store.resolve(ModelRef.parse(REF)).source["revision"] == first.source["revision"]


def test_a_revision_pins_the_pull_to_that_commit(
    store: Store, hub: FakeHub, renamed_gguf: Path
) -> None:
    first_commit = hub.repos[REPO].commits[-1][0]
    first_sha = hub.file(REPO, FILE).sha256
    hub.push(REPO, {FILE: renamed_gguf})
    pinned = pull(store, TARGET, revision=first_commit)
    assert (pinned.sha256, pinned.source["revision"]) == (first_sha, first_commit)
