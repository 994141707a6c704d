"""NF4 (bitsandbytes, double quantization) on the real SmolLM2: quantized on CPU, stored with
its quality report, and answering a chat through `llmedge serve` with the openai client."""

from __future__ import annotations

from pathlib import Path

import pytest
from fake_hub import FakeHub, cli_env, run_llmedge
from hf_quantized import (
    MODEL,
    SharedStore,
    ask,
    run_quantize,
)
from tiny_llama import build_tiny_llama

from llmedge import find_card
from llmedge.store import ModelRef, Store

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_nf4_quantizes_on_cpu_stores_a_report_and_serves(
    shared_store: SharedStore, shared_server: str
) -> None:
    manifest, printed = shared_store.quantize(
        "--nf4", "--report", "--ppl-tokens", "512", "--device", "cpu"
    )
    assert manifest.ref == f"{MODEL}:nf4" and manifest.format == "nf4"
    assert manifest.source["library"] == "bitsandbytes" and "calibration" not in manifest.source
    assert f"perplexity of {MODEL}:hf:" in printed and "on 512 tokens of perplexity.txt" in printed
    shared_store.check_report(manifest, max_bits=7.5, max_ratio=1.6)
    assert ask(shared_server, manifest.ref).strip()


def test_cuda_is_refused_with_advice_where_there_is_none(llmedge_home: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA")
    result = run_quantize(llmedge_home, f"{MODEL}:hf", "--nf4", "--device", "cuda")
    assert result.returncode == 2
    assert "no CUDA GPU is usable here (or this torch build has no CUDA); use --device cpu" in (
        result.stderr
    )


def test_a_model_without_a_stored_source_is_fetched_from_its_cards_repository(
    tmp_path: Path, llmedge_home: Path
) -> None:
    # The card's safetensors repository, on a loopback hub; a tiny Llama stands in for
    # SmolLM2's weights there, so the download and the NF4 run take seconds.
    folder = build_tiny_llama(tmp_path / "tiny")
    with FakeHub() as hub:
        hub.push(find_card(MODEL).source_repo, {p.name: p for p in folder.iterdir()})
        env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
        result = run_llmedge(env, "quantize", MODEL, "--nf4")
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(llmedge_home / "store")
    source = store.resolve(ModelRef(MODEL, "hf"))
    assert source.format == "safetensors" and source.source["kind"] == "hub"
    assert source.source["repo"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    made = store.resolve(ModelRef(MODEL, "nf4"))
    assert made.quant_report is not None and made.quant_report.source_sha256 == source.sha256
    # The downloaded folder went into the store and is gone from downloads/.
    assert not [*store.downloads_dir.glob("*@*"), *store.downloads_dir.glob("*.part")]


def test_a_hub_repository_named_as_hf_co_is_downloaded_and_quantized(
    tmp_path: Path, llmedge_home: Path
) -> None:
    folder = build_tiny_llama(tmp_path / "tiny")
    with FakeHub() as hub:
        hub.push("someone/Tiny-Llama", {p.name: p for p in folder.iterdir()})
        env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
        result = run_llmedge(env, "quantize", "hf.co/someone/Tiny-Llama", "--nf4")
    assert result.returncode == 0, result.stdout + result.stderr
    store = Store(llmedge_home / "store")
    source = store.resolve(ModelRef("hf.co/someone/tiny-llama", "hf"))
    assert source.source["repo"] == "someone/Tiny-Llama" and source.format == "safetensors"
    made = store.resolve(ModelRef("hf.co/someone/tiny-llama", "nf4"))
    assert made.quant_report is not None and made.quant_report.source_sha256 == source.sha256
