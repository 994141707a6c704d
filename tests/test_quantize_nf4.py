"""NF4 (bitsandbytes, double quantization) on the real SmolLM2: quantized on CPU, stored with
its quality report, and answering a chat through `llmedge serve` with the openai client."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_quantized import (
    MODEL,
    SharedStore,
    ask,
    run_quantize,
    shared_server,
    shared_store,
    smollm2_hf,
)

__all__ = ["shared_server", "shared_store", "smollm2_hf"]  # fixtures, imported for pytest
pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_nf4_quantizes_on_cpu_stores_a_report_and_serves(
    shared_store: SharedStore, shared_server: str
) -> None:
    manifest, printed = shared_store.quantize("--nf4", "--report", "--device", "cpu")
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
