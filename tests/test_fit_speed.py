"""The speed estimate and the recommendation it shapes: pure functions over imagined hosts, and
the estimate against decoding measured here (tests/data/fit_speed.json, scripts/fit_speed.py)."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import pytest
from test_fit_advisor import CI_2_CORE, LLAMA_8B, PHI_3_MINI, RTX_4090, host, kv, shapes

from llmedge.cli.main import build_parser
from llmedge.errors import InsufficientMemoryError
from llmedge.fit import FitOptions, ModelShape, advise, check_fits, estimate_memory, shape_of_file
from llmedge.fit.shape import quant_rank
from llmedge.fit.speed import decode_read_bytes, estimate_speed
from llmedge.hardware import BandwidthFacts, BandwidthPoint, HostFacts

GIB, MIB, GB = 1 << 30, 1 << 20, 1e9
REPO = Path(__file__).resolve().parent.parent


def flat(bytes_per_s: float, threads: int = 8) -> BandwidthFacts:
    """A host whose bandwidth is the same for every working set: `bytes_per_s` for all its
    threads together, a third of it for one."""
    point = BandwidthPoint(1 * GIB, bytes_per_s / 3, bytes_per_s)
    return BandwidthFacts(threads, (point,))


def measured(facts: HostFacts, bytes_per_s: float) -> HostFacts:
    return replace(facts, bandwidth=flat(bytes_per_s, facts.usable_cores), cpu_mhz=3000.0)


# A 16-core workstation: its cores outrun its memory, so big models are bandwidth-bound.
CORES_16 = {"physical_cores": 16, "logical_cores": 16, "usable_cores": 16}
DESKTOP = measured(host(64, 48, simd=("AVX2", "FMA"), **CORES_16), 40 * GB)
BOX_2_CORE = measured(host(24, 22, physical_cores=2, logical_cores=2, usable_cores=2), 11 * GB)


def speed_of(shape: ModelShape, facts: HostFacts, **options: object) -> float:
    chosen = FitOptions(**options)  # type: ignore[arg-type]
    found = estimate_speed(shape, chosen, facts, estimate_memory(shape, chosen).kv_bytes)
    assert found is not None
    return found.decode_tokens_per_s


def test_a_large_model_decodes_near_bandwidth_over_its_bytes() -> None:
    q4 = next(s for s in shapes(LLAMA_8B) if s.quantization == "q4_k_m")
    every = DESKTOP.bandwidth.read_bytes_per_s(q4.weight_bytes, 16)  # type: ignore[union-attr]
    wall = every / decode_read_bytes(q4)  # all 16 cores reading: the bandwidth wall
    predicted = speed_of(q4, DESKTOP)
    assert 0.7 * wall <= predicted <= wall  # never past the wall, and close to it
    faster = measured(DESKTOP, 80 * GB)
    assert speed_of(q4, faster) > 1.4 * predicted  # mostly memory-bound: twice the bandwidth


def test_speed_falls_with_bytes_context_and_fewer_threads(smollm2_gguf: Path) -> None:
    f16, q4 = (next(s for s in shapes(LLAMA_8B) if s.quantization == q) for q in ("f16", "q4_k_m"))
    assert speed_of(f16, DESKTOP) < speed_of(q4, DESKTOP) / 2
    smollm2 = shape_of_file(smollm2_gguf)
    one = estimate_speed(smollm2, FitOptions(threads=1), BOX_2_CORE, 0)
    two = estimate_speed(smollm2, FitOptions(threads=2), BOX_2_CORE, 0)
    assert one and two and two.decode_tokens_per_s > one.decode_tokens_per_s
    assert one.bound == "compute"  # a 92 MiB model on one core: the arithmetic, not the reads
    options = FitOptions(ctx_tokens=8192)
    full = estimate_speed(smollm2, options, BOX_2_CORE, 0)
    quantized = estimate_speed(smollm2, replace(options, **kv("q8_0")), BOX_2_CORE, 0)
    assert full and quantized
    assert full.decode_full_tokens_per_s < full.decode_tokens_per_s  # 8k cells to read per token
    assert quantized.decode_full_tokens_per_s > full.decode_full_tokens_per_s
    four = estimate_speed(smollm2, replace(options, parallel=4), BOX_2_CORE, 0)
    assert four and four.parallel_tokens_per_s > full.decode_full_tokens_per_s  # batching pays
    assert full.prompt_tokens_per_s > full.decode_tokens_per_s  # a batch shares each weight read


def test_no_bandwidth_or_a_gpu_means_no_speed_and_no_speed_limit() -> None:
    report = advise(shapes(LLAMA_8B), CI_2_CORE, FitOptions())  # bandwidth never measured
    assert all(r.speed is None for r in report.rows)
    assert any("speed not predicted" in reason for reason in report.reasons)
    gpu = advise(shapes(LLAMA_8B), measured(RTX_4090, 50 * GB), FitOptions(), offload=True)
    assert gpu.recommendation is not None and gpu.recommendation.speed is None
    assert gpu.recommendation.quantization == "f16"  # on the GPU: quality alone decides


def test_a_2_core_box_gets_what_decodes_at_a_usable_speed_not_f16() -> None:
    phi = shapes(PHI_3_MINI)
    quality_only = advise(phi, replace(BOX_2_CORE, bandwidth=None), FitOptions())
    assert quality_only.recommendation and quality_only.recommendation.quantization == "f16"
    report = advise(phi, BOX_2_CORE, FitOptions())  # the default: >= 10 tokens/s
    best = report.recommendation
    assert best is not None and best.speed is not None and best.quantization != "f16"
    useful = [r for r in report.rows if r.fits and r.speed and r.ctx_tokens >= 4096]
    fastest = max(r.speed.decode_full_tokens_per_s for r in useful)  # type: ignore[union-attr]
    assert best.speed.decode_full_tokens_per_s == fastest  # none reaches 10: the fastest
    assert any("nothing that fits reaches 10 tokens/s" in r for r in report.reasons)
    assert any("f16 fits but is too slow" in r for r in report.reasons)
    for floor in (2.0, 1.5, 1.0):
        chosen = advise(phi, BOX_2_CORE, FitOptions(), min_speed_tokens_per_s=floor)
        pick = chosen.recommendation
        assert pick is not None and pick.speed is not None
        assert pick.speed.decode_full_tokens_per_s >= floor
        better = [
            r
            for r in chosen.rows
            if r.fits and r.ctx_tokens >= pick.ctx_tokens and r.speed
            if quant_rank(r.quantization) > quant_rank(pick.quantization)
        ]
        assert all(r.speed.decode_full_tokens_per_s < floor for r in better)  # type: ignore[union-attr]
    slow_ok = advise(phi, BOX_2_CORE, FitOptions(), min_speed_tokens_per_s=1.0).recommendation
    assert slow_ok is not None and slow_ok.quantization == "f16"  # a low floor buys quality


def test_the_advice_only_ever_names_flags_that_exist(smollm2_gguf: Path) -> None:
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    real = {
        o for name in ("serve", "fit") for a in commands[name]._actions for o in a.option_strings
    }
    texts: list[str] = []
    for options in (FitOptions(parallel=4), FitOptions(**kv("q8_0")), FitOptions(flash_attn=False)):
        for facts, budget in ((BOX_2_CORE, None), (BOX_2_CORE, 10 * MIB), (CI_2_CORE, None)):
            texts += advise(shapes(LLAMA_8B), facts, options, budget_bytes=budget).reasons
    smollm2 = shape_of_file(smollm2_gguf)
    for need in (120 * MIB, 200 * MIB, 300 * MIB):
        try:
            check_fits(smollm2, FitOptions(ctx_tokens=8192), need)
        except InsufficientMemoryError as exc:
            texts.append(str(exc))
    named = {flag for text in texts for flag in re.findall(r"(--[a-z][a-z-]+)", text)}
    assert named >= {"--kv-type", "--parallel", "--budget", "--ctx", "--min-speed"}
    assert named <= real, f"advice names flags no command has: {named - real}"


def test_a_smaller_kv_cache_is_suggested_when_it_is_what_fits(smollm2_gguf: Path) -> None:
    smollm2 = shape_of_file(smollm2_gguf)
    options = FitOptions(ctx_tokens=8192)
    q8 = estimate_memory(smollm2, replace(options, **kv("q8_0"))).ram_bytes
    with pytest.raises(InsufficientMemoryError, match="--kv-type q8_0"):
        check_fits(smollm2, options, q8)


@pytest.fixture(scope="module")
def speed_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fit_speed", REPO / "scripts" / "fit_speed.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_predicted_decode_is_within_25_percent_of_what_was_measured(
    speed_script: ModuleType,
) -> None:
    data = json.loads(speed_script.SPEED.read_text())
    models = {row["model"] for row in data["rows"]}
    assert len(models) == 4 and {m.split("-")[0] for m in models} == {"smollm2", "gemma3"}
    off = []
    for row in data["rows"]:
        decode, _ = speed_script.predict(data["host"], row["model"], row["threads"])
        for source in ("bench_tg", "llmedge_tg"):
            if row.get(source) and abs(decode / row[source] - 1) > 0.25:
                off.append(f"{row['model']} x{row['threads']} {source}: {decode / row[source]:.2f}")
    assert sum(1 for row in data["rows"] if row.get("bench_tg")) >= 4
    assert not off, f"outside +-25 %: {off}"
