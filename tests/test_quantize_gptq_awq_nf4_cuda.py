"""GPTQ, AWQ and NF4 on a CUDA GPU: quantized there, measured there, served there.

GPU only (marked `gpu`, skipped without one). The source is the real SmolLM2 when its package
is installed; on a GPU machine without it, a Llama of SmolLM2-135M's shape (30 layers, 576 wide)
with random weights, so the kernels and the timings are those of a 135M model even where its
text means nothing. Each test prints its report row and the decoding speed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from hf_quantized import QUESTION, SOURCE, SharedStore
from server_process import running_server

from llmedge import find_card
from llmedge.cards import embedded_file
from llmedge.store import Manifest, ModelRef

pytestmark = [pytest.mark.gpu, pytest.mark.e2e]


@pytest.fixture(scope="module")
def cuda_store(tmp_path_factory: pytest.TempPathFactory) -> SharedStore:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU and a CUDA build of torch")
    return SharedStore(tmp_path_factory.mktemp("cuda-home"), _source(tmp_path_factory))


def _source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    gguf = embedded_file(find_card("smollm2-135m"))
    if gguf is not None:
        from hf_from_gguf import build_hf_from_gguf

        return build_hf_from_gguf(gguf, base / "smollm2-hf")
    return _random_smollm2_shape(base)


def _random_smollm2_shape(base: Path) -> Path:
    """SmolLM2-135M's architecture with random weights and the tiny test tokenizer."""
    import torch
    from tiny_llama import VOCAB_SIZE, build_tiny_llama
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = base / "smollm2-shape"
    if (folder / "model.safetensors").is_file():
        return folder
    tokenizer = build_tiny_llama(base / "tiny-llama") / "tokenizer.model"
    config = LlamaConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).to(torch.float16).save_pretrained(folder)
    shutil.copy2(tokenizer, folder / "tokenizer.model")
    return folder


@pytest.fixture(scope="module")
def cuda_server(cuda_store: SharedStore) -> Iterator[str]:
    """One server on the GPU for the three tests; it loads each quantized model on demand."""
    with running_server(cuda_store.home, SOURCE, timeout_s=240) as url:
        yield url


def _quantize_and_serve(store: SharedStore, url: str, *args: str) -> Manifest:
    manifest, printed = store.quantize(*args, "--report", "--device", "cuda")
    print(f"\n{printed}")
    report = manifest.quant_report
    assert report is not None and report.perplexity is not None and report.source_perplexity
    assert manifest.size_bytes < store.store.resolve(ModelRef.parse(SOURCE)).size_bytes * 0.5
    assert 4.0 < report.bits_per_weight < 7.5
    assert 0.5 < report.perplexity / report.source_perplexity < 2.0
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=240)
    client.chat.completions.create(  # loads the model and compiles its kernels: not timed
        model=manifest.ref,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=1,
    )
    started = time.perf_counter()
    reply = client.chat.completions.create(
        model=manifest.ref,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=64,
        temperature=0,
    )
    seconds = time.perf_counter() - started
    assert reply.usage is not None and reply.usage.completion_tokens > 0
    tokens = reply.usage.completion_tokens
    print(f"{manifest.ref} on CUDA: {tokens} tokens in {seconds:.2f} s ({tokens / seconds:.1f}/s)")
    return manifest


def test_gptq_on_cuda(cuda_store: SharedStore, cuda_server: str) -> None:
    manifest = _quantize_and_serve(cuda_store, cuda_server, "--gptq")
    assert manifest.ref.endswith(":gptq-4bit-g128") and manifest.format == "gptq"


def test_awq_on_cuda(cuda_store: SharedStore, cuda_server: str) -> None:
    # SmolLM2's 576-wide layers take AWQ groups of 64, not 128.
    manifest = _quantize_and_serve(cuda_store, cuda_server, "--awq", "--group-size", "64")
    assert manifest.ref.endswith(":awq-4bit-g64") and manifest.format == "awq"


def test_nf4_on_cuda(cuda_store: SharedStore, cuda_server: str) -> None:
    manifest = _quantize_and_serve(cuda_store, cuda_server, "--nf4")
    assert manifest.ref.endswith(":nf4") and manifest.format == "nf4"
