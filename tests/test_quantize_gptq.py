"""GPTQ through GPTQModel on the real SmolLM2: quantized on CPU with the shipped calibration
text, stored with its quality report, and answering a chat through `llmedge serve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hf_quantized import (
    MODEL,
    QUICK_CALIBRATION,
    SOURCE,
    SharedStore,
    ask,
    run_quantize,
)

from llmedge.store.folders import unpacked_dir

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_gptq_quantizes_on_cpu_stores_a_report_and_serves(
    shared_store: SharedStore, shared_server: str
) -> None:
    manifest, _ = shared_store.quantize(
        "--gptq",
        "--group-size",
        "64",
        "--report",
        "--ppl-tokens",
        "512",
        "--device",
        "cpu",
        *QUICK_CALIBRATION,
    )
    assert manifest.ref == f"{MODEL}:gptq-4bit-g64" and manifest.format == "gptq"
    assert manifest.source["calibration"] == "calibration.txt (4 x 128 tokens)"
    shared_store.check_report(manifest, max_bits=7.5, max_ratio=2.0)
    folder = unpacked_dir(shared_store.store.verified_blob(manifest), shared_store.home / "u")
    config = json.loads((folder / "config.json").read_text())["quantization_config"]
    assert (config["quant_method"], config["bits"], config["group_size"]) == ("gptq", 4, 64)
    assert ask(shared_server, manifest.ref).strip()


def test_gptq_refuses_a_bit_width_it_cannot_make(shared_store: SharedStore) -> None:
    result = run_quantize(shared_store.home, SOURCE, "--gptq", "--bits", "5")
    assert result.returncode == 2
    assert "GPTQ makes 2, 3, 4, 8-bit weights, not 5" in result.stderr


def test_a_calibration_text_shorter_than_one_sample_is_refused(
    shared_store: SharedStore, tmp_path: Path
) -> None:
    short = tmp_path / "short.txt"
    short.write_text("Too short to calibrate anything.", encoding="utf-8")
    result = run_quantize(shared_store.home, SOURCE, "--gptq", "--calibration", str(short))
    assert result.returncode == 2
    assert "shorter than one sample (256)" in result.stderr
