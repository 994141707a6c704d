"""AWQ through GPTQModel (torch kernels) on the real SmolLM2: quantized on CPU, stored with its
quality report, and answering a chat through `llmedge serve`."""

from __future__ import annotations

from pathlib import Path

import pytest
from hf_quantized import (
    AWQ_CALIBRATION,
    MODEL,
    SharedStore,
    ask,
    run_quantize,
)

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_awq_quantizes_on_cpu_stores_a_report_and_serves(
    shared_store: SharedStore, shared_server: str
) -> None:
    manifest, _ = shared_store.quantize(
        "--awq",
        "--group-size",
        "64",
        "--report",
        "--ppl-tokens",
        "512",
        "--device",
        "cpu",
        *AWQ_CALIBRATION,
    )
    assert manifest.ref == f"{MODEL}:awq-4bit-g64" and manifest.format == "awq"
    assert manifest.source["library"] == "GPTQModel"
    assert manifest.source["calibration"] == "calibration.txt (1 x 64 tokens)"
    shared_store.check_report(manifest, max_bits=7.5, max_ratio=2.0)
    assert ask(shared_server, manifest.ref).strip()


def test_awq_names_the_group_size_that_fits_the_model(smollm2_hf: Path, llmedge_home: Path) -> None:
    # Through --source on an empty store: the folder is stored first, then checked. SmolLM2's
    # hidden size is 576: groups of 128 leave a ragged end, groups of 64 divide it.
    result = run_quantize(llmedge_home, MODEL, "--awq", "--source", str(smollm2_hf))
    assert result.returncode == 2
    assert "do not divide this model's hidden_size (576)" in result.stderr
    assert "use --group-size 64" in result.stderr
    assert "storing" in result.stdout + result.stderr
