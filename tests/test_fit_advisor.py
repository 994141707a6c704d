"""The fit advisor over imagined hosts and real model shapes: pure functions, no probing."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmedge.cards import ModelCard
from llmedge.errors import InsufficientMemoryError
from llmedge.fit import ModelShape, advise, check_fits, shape_from_card, shape_of_file
from llmedge.fit.memory import (
    FitOptions,
    compute_bytes,
    estimate_memory,
    gpu_layers_that_fit,
    kv_layer_bytes,
)
from llmedge.hardware import AppleSiliconFacts, BackendFacts, GpuFacts, HostFacts

GIB, MIB = 1 << 30, 1 << 20
DATA = Path(__file__).parent / "data"
OFFLOAD = (BackendFacts("llama.cpp", True, "llama-cpp-python 0.3.36 (GPU offload)"),)
CPU_ONLY = (BackendFacts("llama.cpp", True, "llama-cpp-python 0.3.36 (CPU only)"),)


def host(total: float, available: float, **overrides: object) -> HostFacts:
    facts: dict[str, object] = dict(
        os_name="Linux",
        os_version="6.8",
        machine="x86_64",
        cpu_model="test CPU",
        physical_cores=8,
        logical_cores=8,
        usable_cores=8,
        simd=("AVX2",),
        total_ram_bytes=int(total * GIB),
        available_ram_bytes=int(available * GIB),
        backends=CPU_ONLY,
    )
    facts.update(overrides)
    return HostFacts(**facts)  # type: ignore[arg-type]


PHONE_8GB = host(8, 3.25, machine="aarch64", simd=("NEON", "DOTPROD"))
M2_16GB = host(
    16,
    11,
    os_name="Darwin",
    machine="arm64",
    backends=OFFLOAD,
    apple=AppleSiliconFacts("Apple M2", 16 * GIB, int(16 * GIB * 2 / 3)),
)
RTX_4090 = host(
    64,
    50,
    backends=OFFLOAD,
    gpus=(GpuFacts("nvidia", "NVIDIA GeForce RTX 4090", 24 * GIB, 23 * GIB),),
)
CI_2_CORE = host(7, 5.5, physical_cores=2, logical_cores=2, usable_cores=2)


def card(name: str, params: int, arch: dict[str, object], quants: list[str]) -> ModelCard:
    return ModelCard.model_validate(
        {
            "name": name,
            "summary": "test card",
            "license": "mit",
            "parameters": params,
            "chat": True,
            "default_quant": quants[0],
            "architecture": arch,
            "gguf": [{"repo": "test/repo", "files": {q: f"{q}.gguf" for q in quants}}],
        }
    )


LADDER = ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "f16"]
LLAMA_8B = card(
    "llama-3-8b",
    8_030_261_248,
    dict(
        family="llama",
        layers=32,
        hidden_size=4096,
        attention_heads=32,
        kv_heads=8,
        head_dim=128,
        vocab_size=128256,
        context_length=8192,
        tied_embeddings=False,
    ),
    LADDER,
)
PHI_3_MINI = card(
    "phi-3-mini",
    3_821_079_552,
    dict(
        family="phi3",
        layers=32,
        hidden_size=3072,
        attention_heads=32,
        kv_heads=32,
        head_dim=96,
        vocab_size=32064,
        context_length=4096,
        tied_embeddings=False,
    ),
    ["q4_k_m", "q8_0", "f16"],
)


def kv(kind: str) -> dict[str, str]:
    """K and V caches of one type."""
    return {"kv_type_k": kind, "kv_type_v": kind}


def shapes(model: ModelCard) -> list[ModelShape]:
    return [shape_from_card(model, quant) for quant in model.quantizations()]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf: Path) -> ModelShape:
    return shape_of_file(smollm2_gguf, "smollm2-135m")


@pytest.fixture(scope="module")
def gemma3() -> ModelShape:
    return ModelShape.from_dict(
        json.loads((DATA / "fit_models.json").read_text())["gemma3-270m-q4_k_m"]
    )


# --- imagined hosts -------------------------------------------------------------------------


def test_a_phone_cannot_hold_an_8b_model_but_holds_phi3_at_a_short_context() -> None:
    llama = advise(shapes(LLAMA_8B), PHONE_8GB, FitOptions())
    assert llama.recommendation is None
    assert "nothing fits" in llama.reasons[-2] and "--budget" in llama.reasons[-1]
    phi = advise(shapes(PHI_3_MINI), PHONE_8GB, FitOptions())
    assert phi.recommendation is not None
    assert (phi.recommendation.quantization, phi.recommendation.ctx_tokens) == ("q4_k_m", 2048)
    assert phi.recommendation.headroom_bytes >= 0


def test_a_16gb_m2_runs_an_8b_model_at_q8_within_metals_working_set() -> None:
    report = advise(shapes(LLAMA_8B), M2_16GB, FitOptions(), offload=M2_16GB.gpu_offload)
    assert report.budget_source == "Metal's recommended working set"
    assert report.budget_bytes == M2_16GB.apple.recommended_working_set_bytes  # type: ignore[union-attr]
    best = report.recommendation
    assert best is not None and (best.quantization, best.ctx_tokens) == ("q8_0", 8192)
    assert best.estimate.vram_bytes == 0  # unified memory: everything counts against RAM


def test_a_4090_takes_every_layer_of_an_8b_model_and_keeps_little_in_ram() -> None:
    report = advise(shapes(LLAMA_8B), RTX_4090, FitOptions(), offload=RTX_4090.gpu_offload)
    best = report.recommendation
    assert best is not None and best.quantization == "f16" and best.ctx_tokens == 8192
    assert best.estimate.gpu_layers == 33  # 32 blocks and the output layer
    assert best.estimate.vram_bytes <= 23 * GIB
    assert best.estimate.ram_bytes < 2 * GIB  # token embeddings and the runtime stay on the host


def test_vram_too_small_for_every_layer_offloads_part_of_the_model() -> None:
    f16 = shape_from_card(LLAMA_8B, "f16")
    layers = gpu_layers_that_fit(f16, FitOptions(), 8 * GIB)
    assert 0 < layers < 32
    assert estimate_memory(f16, FitOptions(), layers).vram_bytes <= 8 * GIB
    assert estimate_memory(f16, FitOptions(), layers + 1).vram_bytes > 0.95 * 8 * GIB


def test_a_2_core_ci_box_gets_a_small_quantization_with_a_useful_context() -> None:
    report = advise(shapes(LLAMA_8B), CI_2_CORE, FitOptions())
    best = report.recommendation
    assert best is not None and (best.quantization, best.ctx_tokens) == ("q4_k_m", 4096)
    better = [r for r in report.rows if r.quantization == "q5_k_m"]
    assert not any(r.fits and r.ctx_tokens >= 4096 for r in better)
    # Without flash attention the f32 attention scores cost a quantization step.
    plain = advise(shapes(LLAMA_8B), CI_2_CORE, FitOptions(flash_attn=False)).recommendation
    assert plain is not None and plain.quantization == "q3_k_m"


def test_smollm2_fits_everywhere_and_budgets_override_the_host(smollm2: ModelShape) -> None:
    for machine in (PHONE_8GB, M2_16GB, RTX_4090, CI_2_CORE):
        assert advise([smollm2], machine, FitOptions()).recommendation is not None
    tight = advise([smollm2], RTX_4090, FitOptions(), budget_bytes=100 * MIB)
    assert tight.budget_source == "--budget" and tight.recommendation is None


def test_rows_cover_each_quantization_and_context_best_quality_first() -> None:
    report = advise(shapes(PHI_3_MINI), CI_2_CORE, FitOptions(), contexts=[1024, 4096, 99999])
    assert [(r.quantization, r.ctx_tokens) for r in report.rows] == [
        (q, c) for q in ("f16", "q8_0", "q4_k_m") for c in (1024, 4096)
    ]  # contexts past the trained 4096 are capped to it
    for quant in ("f16", "q8_0", "q4_k_m"):
        totals = [r.estimate.total_bytes for r in report.rows if r.quantization == quant]
        assert totals == sorted(totals)


# --- the arithmetic ---------------------------------------------------------------------------


def test_kv_cache_matches_llama_cpp_for_smollm2(smollm2: ModelShape) -> None:
    # llama.cpp reports 90.00 MiB (f16) and 23.91 MiB (q8_0, 2048 cells) for this model.
    f16 = sum(kv_layer_bytes(smollm2, FitOptions(ctx_tokens=4096)))
    assert f16 == 30 * 4096 * 2 * 192 * 2 == 90 * MIB
    q8 = sum(kv_layer_bytes(smollm2, FitOptions(ctx_tokens=2048, **kv("q8_0"))))
    assert q8 == 30 * 2048 * 2 * (192 // 32) * 34  # 34 bytes per 32 values, not 1 per value
    q4 = sum(kv_layer_bytes(smollm2, FitOptions(ctx_tokens=2048, **kv("q4_0"))))
    assert q4 == 30 * 2048 * 2 * (192 // 32) * 18
    # K and V separately: a q8_0 K beside an f16 V.
    mixed = sum(kv_layer_bytes(smollm2, FitOptions(ctx_tokens=2048, kv_type_k="q8_0")))
    assert mixed == 30 * 2048 * ((192 // 32) * 34 + 192 * 2)


def test_context_is_padded_to_256_cells_and_parallel_multiplies_the_cache(
    smollm2: ModelShape,
) -> None:
    assert estimate_memory(smollm2, FitOptions(ctx_tokens=1000)).kv_cells == 1024
    one = estimate_memory(smollm2, FitOptions(ctx_tokens=2048))
    four = estimate_memory(smollm2, FitOptions(ctx_tokens=2048, parallel=4))
    assert four.kv_bytes == 4 * one.kv_bytes and four.output_bytes == 4 * one.output_bytes
    assert four.compute_bytes == one.compute_bytes  # each sequence attends over its own cells


def test_grouped_query_attention_shrinks_the_cache(smollm2: ModelShape) -> None:
    full_heads = replace(smollm2, n_kv_heads=(9,) * 30)
    options = FitOptions(ctx_tokens=4096)
    assert sum(kv_layer_bytes(full_heads, options)) == 3 * sum(kv_layer_bytes(smollm2, options))


def test_sliding_window_layers_keep_only_their_window(gemma3: ModelShape) -> None:
    assert gemma3.swa_layers.count(False) == 3 and gemma3.sliding_window == 512  # every 6th global
    options = FitOptions(ctx_tokens=32768, swa_full=False)
    windowed = sum(kv_layer_bytes(gemma3, options))
    full = sum(kv_layer_bytes(gemma3, replace(options, swa_full=True)))
    assert windowed == (3 * 32768 + 15 * 1024) * 2 * 256 * 2
    assert full / windowed > 5  # what an estimator blind to the window over-counts


def test_quantized_kv_needs_flash_attention_which_shrinks_compute(smollm2: ModelShape) -> None:
    with pytest.raises(ValueError, match="flash attention"):
        FitOptions(**kv("q8_0"), flash_attn=False)
    # llama.cpp refuses only a quantized V without flash attention; a quantized K runs.
    assert FitOptions(kv_type_k="q8_0", flash_attn=False).kv_type == "q8_0,f16"
    assert FitOptions(**kv("q8_0")).flash_attn and FitOptions().flash_attn  # llama.cpp's auto
    plain = compute_bytes(smollm2, FitOptions(ctx_tokens=8192, flash_attn=False))
    flash = compute_bytes(smollm2, FitOptions(ctx_tokens=8192, flash_attn=True))
    assert flash < plain / 5  # the f32 attention scores are never materialized


def test_mixture_of_experts_counts_the_routed_experts(smollm2: ModelShape) -> None:
    moe = replace(smollm2, n_experts=8, n_experts_used=2)
    assert compute_bytes(moe, FitOptions()) > compute_bytes(smollm2, FitOptions())


def test_tied_embeddings_and_exact_weights_from_the_header(smollm2: ModelShape) -> None:
    assert smollm2.exact and smollm2.tied_embeddings and smollm2.output_weight_bytes < 4096
    assert smollm2.weight_bytes == 96_576_768  # llama.cpp: "CPU model buffer size = 92.10 MiB"
    estimated = shape_from_card(
        card(
            "smollm2-test",
            134_515_008,
            dict(
                family="llama",
                layers=30,
                hidden_size=576,
                attention_heads=9,
                kv_heads=3,
                head_dim=64,
                vocab_size=49152,
                context_length=8192,
                tied_embeddings=True,
            ),
            ["q4_1"],
        ),
        "q4_1",
    )
    assert not estimated.exact
    assert abs(estimated.weight_bytes - smollm2.weight_bytes) / smollm2.weight_bytes < 0.2
    assert abs(estimated.n_ff - smollm2.n_ff) / smollm2.n_ff < 0.1


def test_check_fits_refuses_with_numbers_and_a_suggestion(smollm2: ModelShape) -> None:
    options = FitOptions(ctx_tokens=8192)
    need = estimate_memory(smollm2, options).ram_bytes
    assert check_fits(smollm2, options, need).ram_bytes == need
    with pytest.raises(InsufficientMemoryError) as caught:
        check_fits(smollm2, options, need - 1)
    assert caught.value.needed_bytes == need and caught.value.available_bytes == need - 1
    assert "--ctx 4096 fits" in str(caught.value)
    with pytest.raises(InsufficientMemoryError, match="weights alone"):
        check_fits(smollm2, options, 50 * MIB)


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="KV cache type 'q5_1'"):
        FitOptions(kv_type_v="q5_1")
    with pytest.raises(ValueError, match="at least 1"):
        FitOptions(parallel=0)
