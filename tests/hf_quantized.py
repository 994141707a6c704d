"""What the GPTQ, AWQ and NF4 tests share: the real SmolLM2 as a safetensors folder, one store
that holds it and every quantization made from it, and one `llmedge serve` over that store.

The folder is rebuilt from the shipped GGUF (no hub). Sharing one store and one server keeps
the three end-to-end tests near a minute each on two cores: the source is stored and measured
once, and the server (torch, transformers, GPTQModel imported once) loads each model on demand.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hf_from_gguf import build_hf_from_gguf
from server_process import running_server

from llmedge.store import Manifest, ModelRef, Store
from quantizers.hf_source import import_folder

MODEL = "smollm2-135m"
SOURCE = f"{MODEL}:hf"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]
# Small calibration keeps GPTQ and AWQ near a minute on two cores. AWQ's scale search costs in
# proportion to the calibration tokens (20 trial scales, each a forward pass), GPTQ's hardly.
QUICK_CALIBRATION = ("--calibration-samples", "4", "--calibration-tokens", "128")
AWQ_CALIBRATION = ("--calibration-samples", "1", "--calibration-tokens", "64")


@pytest.fixture(scope="session")
def smollm2_hf(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct as config.json, model.safetensors and tokenizer files."""
    return build_hf_from_gguf(smollm2_gguf, tmp_path_factory.getbasetemp() / "smollm2-hf")


def run_quantize(home: Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """`llmedge quantize ARGS` in a child process, on the store under `home`."""
    env = {**os.environ, "LLMEDGE_HOME": str(home), "COLUMNS": "200"}
    command = [sys.executable, "-m", "llmedge.cli", "quantize", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


class SharedStore:
    """One LLMEDGE_HOME for the session, with the source stored as `smollm2-135m:hf`."""

    def __init__(self, home: Path, source_dir: Path) -> None:
        self.home = home
        self.store = Store(home / "store")
        import_folder(self.store, source_dir, MODEL, {"kind": "test"})

    def quantize(self, *args: str) -> tuple[Manifest, str]:
        """Quantize the source; insist it worked; return the stored result and the printout."""
        result = run_quantize(self.home, SOURCE, *args)
        assert result.returncode == 0, result.stdout + result.stderr
        ref = next(line.split()[0] for line in result.stdout.splitlines() if f" {MODEL}:" in line)
        return self.store.resolve(ModelRef.parse(ref)), result.stdout

    def check_report(self, manifest: Manifest, *, max_bits: float, max_ratio: float) -> None:
        """A 4-bit model's figures: smaller than the source, perplexity measured and sane."""
        report = manifest.quant_report
        source = self.store.resolve(ModelRef.parse(SOURCE))
        assert report is not None and report.source == SOURCE
        assert report.source_sha256 == source.sha256
        assert manifest.size_bytes < source.size_bytes * 0.5
        assert 4.0 < report.bits_per_weight < max_bits
        assert report.eval_text == "perplexity.txt" and report.eval_tokens == 512
        assert report.perplexity_error and 0 < report.perplexity_error < report.perplexity / 5
        assert report.perplexity is not None and report.source_perplexity is not None
        assert math.isfinite(report.perplexity) and report.seconds > 0
        # Rounding to 4 bits costs a little; a broken model is off by orders of magnitude.
        assert report.source_perplexity < report.perplexity < report.source_perplexity * max_ratio
        assert manifest.facts is not None and source.facts is not None
        assert manifest.facts.parameters == source.facts.parameters


# Test modules import these fixtures, and pytest makes one fixture per importing module; the
# store and the server live here instead, so every module gets the same ones.
_SHARED: dict[str, Any] = {}


@pytest.fixture(scope="session")
def shared_store(smollm2_hf: Path, tmp_path_factory: pytest.TempPathFactory) -> SharedStore:
    if "store" not in _SHARED:
        _SHARED["store"] = SharedStore(tmp_path_factory.mktemp("quantized-home"), smollm2_hf)
    store: SharedStore = _SHARED["store"]
    return store


@pytest.fixture(scope="session")
def shared_server(shared_store: SharedStore) -> Iterator[str]:
    """`llmedge serve` on the shared store (the router picks transformers); yields its /v1 URL."""
    if "server" in _SHARED:
        yield _SHARED["server"]
        return
    with running_server(shared_store.home, SOURCE, timeout_s=300) as url:
        _SHARED["server"] = url
        try:
            yield url
        finally:
            del _SHARED["server"]


def ask(url: str, ref: str, max_tokens: int = 8) -> str:
    """Ask the served `ref` the question with the openai client; check the reply's shape."""
    client = openai.OpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)
    reply = client.chat.completions.create(
        model=ref,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=max_tokens,
        temperature=0,
    )
    choice = reply.choices[0]
    assert reply.model == ref and choice.finish_reason in ("stop", "length")
    assert reply.usage is not None and 0 < reply.usage.completion_tokens <= max_tokens
    return choice.message.content or ""
