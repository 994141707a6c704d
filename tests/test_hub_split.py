"""Split GGUF models (llama.cpp's gguf-split format) from the loopback hub: pulled part by part,
stored as one model, laid out for llama.cpp's split loader, answering through `serve`."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_hub import FakeHub, Faults, cli_env, run_llmedge, start_llmedge, wait_for_size
from server_process import running_server
from split_gguf import split_gguf

from llmedge import Engine, Settings
from llmedge.generation import ChatMessage, SamplingParams
from llmedge.hub import pull
from llmedge.store import ModelRef, Store

pytestmark = pytest.mark.e2e

REPO = "test/SmolLM2-Split-GGUF"
REF = "hf.co/test/smollm2-split-gguf:q4_1"
FIRST, SECOND = "SmolLM2-Q4_1-00001-of-00002.gguf", "SmolLM2-Q4_1-00002-of-00002.gguf"
SLOW_AFTER = 20 << 20  # two of huggingface_hub's 10 MiB download chunks


@pytest.fixture(scope="session")
def parts(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> list[Path]:
    """The real SmolLM2 in two parts (80 and 18 MB), as gguf-split would cut it."""
    folder = tmp_path_factory.mktemp("split")
    return split_gguf(smollm2_gguf, folder / "SmolLM2-Q4_1.gguf", 200)


@pytest.fixture
def hub(parts: list[Path]) -> Iterator[FakeHub]:
    with FakeHub() as server:
        server.push(REPO, {p.name: p for p in parts})
        yield server


@pytest.fixture
def hub_env(hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("hub_env")
def test_a_split_model_is_one_model_that_llama_cpp_runs(
    store: Store, settings: Settings, hub: FakeHub, parts: list[Path]
) -> None:
    manifest = pull(store, f"hf.co/{REPO}")
    assert manifest.ref == REF and [p.file for p in manifest.parts] == [p.name for p in parts]
    assert manifest.size_bytes == sum(p.stat().st_size for p in parts)
    assert hub.served_bytes == manifest.size_bytes
    assert [m.ref for m in store.manifests()] == [REF]
    assert manifest.facts is not None and manifest.facts.parameters == 134_515_008  # all parts

    first = store.verified_blob(manifest)
    assert first.name == "model-00001-of-00002.gguf"
    assert first.with_name("model-00002-of-00002.gguf").read_bytes() == parts[1].read_bytes()

    engine = Engine(settings, store, backend="llama.cpp")
    try:
        prompt = engine.prepare_chat(
            REF, [ChatMessage("user", "hi")], SamplingParams(max_tokens=4, temperature=0)
        )
        chunks = list(engine.stream_sync(prompt))
    finally:
        engine.close()
    assert chunks[-1].finish_reason in ("stop", "length") and chunks[-1].generated_tokens >= 1

    assert pull(store, f"hf.co/{REPO}").digest == manifest.digest  # up to date: nothing fetched
    assert hub.served_bytes == manifest.size_bytes
    store.remove(ModelRef.parse(REF))
    assert list(store.blobs_dir.iterdir()) == [] and list(store.files.splits_dir.iterdir()) == []


@pytest.mark.usefixtures("hub_env")
def test_split_quants_are_found_in_quant_folders_and_by_name(
    store: Store, hub: FakeHub, parts: list[Path]
) -> None:
    files: dict[str, Path | bytes] = {
        f"Q8_0/anything-0000{i}-of-00002.gguf": p for i, p in enumerate(parts, 1)
    }
    files["model-Q4_0-00001-of-00002.gguf"] = parts[0]  # its second part is missing
    hub.push("test/Folders-GGUF", files)
    manifest = pull(store, "hf.co/test/Folders-GGUF:Q8_0")
    assert manifest.tag == "q8_0" and len(manifest.parts) == 2
    with pytest.raises(Exception, match="no q4_0 quantization; available: q8_0"):
        pull(store, "hf.co/test/Folders-GGUF:q4_0")


def test_a_split_pull_killed_mid_part_resumes_and_serves(
    hub: FakeHub, llmedge_home: Path, tmp_path: Path, store: Store, smollm2_gguf: Path
) -> None:
    env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
    big, small = hub.file(REPO, FIRST), hub.file(REPO, SECOND)
    hub.faults[big.sha256] = Faults(slow_after_bytes=SLOW_AFTER)
    partial = store.partial_path(f"sha256-{big.sha256}")
    process = start_llmedge(env, "pull", f"hf.co/{REPO}")
    try:
        wait_for_size(store.partial_path(f"sha256-{small.sha256}"), small.size)  # in parallel
        wait_for_size(partial, SLOW_AFTER)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    finally:
        process.kill()
    stopped_at = partial.stat().st_size
    assert store.manifests() == [] and not list(store.blobs_dir.glob("sha256-*"))
    assert not list(store.downloads_dir.glob("*.lock"))

    hub.faults.clear()
    hub.requests.clear()
    resumed = run_llmedge(env, "pull", f"hf.co/{REPO}")
    assert resumed.returncode == 0, resumed.stderr
    assert hub.ranges() == [f"bytes={stopped_at}-"]  # the finished part is not fetched again
    assert not list(store.downloads_dir.iterdir())

    listed = run_llmedge(env, "list")
    rows = [line for line in listed.stdout.splitlines() if "hf.co/" in line]
    assert len(rows) == 1 and REF in rows[0] and "gguf (2 parts)" in rows[0], listed.stdout
    shown = run_llmedge(env, "show", REF)
    assert "part 2 of 2" in shown.stdout and SECOND in shown.stdout

    assert run_llmedge(env, "pull", str(smollm2_gguf), "--name", "whole").returncode == 0
    with running_server(llmedge_home, REF, env=env) as url:
        client = openai.OpenAI(base_url=url, api_key="x", max_retries=0)
        answers = [
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "What is the capital of France?"}],
                max_tokens=12,
                temperature=0,
            )
            .choices[0]
            .message.content
            for model in (REF, "whole")
        ]
    assert answers[0] and answers[0] == answers[1]  # the parts are the whole model, exactly

    removed = run_llmedge(env, "rm", REF)
    assert removed.returncode == 0 and f"removed {REF}" in removed.stdout
    assert not any(store.blob_path(f.sha256).exists() for f in (big, small))
    assert not list(store.files.splits_dir.iterdir())
