"""Measure every converted target against the reference: size, load time, latency, parity, accuracy.

Latency is per call at the model's fixed batch (batch 1 for the usual exports), on this host,
one call at a time, with `threads` CPU threads per runtime when given (else each one's default).
Load time is a second load, so importing the runtime library is not counted. Parity is the
largest |difference| from the reference outputs and the share of rows whose top-1 class
agrees; accuracy needs labels (`y` in the data file).
"""

from __future__ import annotations

import importlib
import importlib.util
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmedge.errors import (
    BackendUnavailableError,
    ConversionError,
    ExtraNotInstalledError,
    InvalidRequestError,
)
from vision.convert import TargetResult, VisionManifest
from vision.data import Samples, batches, load_samples
from vision.source import load_reference
from vision.targets import TARGETS, Runner

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

MIN_TIMED_CALLS = 30
WARMUP_CALLS = 10


@dataclass(frozen=True)
class BenchRow:
    """One line of the bench table; None where a figure could not be measured here."""

    target: str
    runs_on: str
    status: str  # "ok", or why the row has no measurements
    size_bytes: int | None = None
    load_s: float | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    max_abs_diff: float | None = None
    top1_agreement: float | None = None
    accuracy: float | None = None


@dataclass(frozen=True)
class Measured:
    outputs: npt.NDArray[np.float32]
    load_s: float
    p50_ms: float
    p90_ms: float


def bench(
    out_dir: Path, data: Path | None = None, max_rows: int = 1000, threads: int | None = None
) -> list[BenchRow]:
    """Bench the reference and every target recorded in `out_dir`, on `data` or the probe set."""
    manifest = VisionManifest.load(out_dir)
    shape = tuple(manifest.input_shape)
    samples = load_samples(data or out_dir / manifest.probe, shape).head(max_rows)
    with _torch_threads(threads):
        reference = _measure(
            lambda: load_reference(out_dir / manifest.reference, threads), samples, shape[0]
        )
        ref_name = "onnx-source" if manifest.source_kind == "onnx" else "pytorch"
        ref_size = _size(out_dir, [manifest.reference])
        rows = [_row(ref_name, "any CPU", reference, reference.outputs, samples, ref_size)]
        for result in manifest.results.values():
            rows.append(
                _bench_target(out_dir, result, samples, shape[0], reference.outputs, threads)
            )
    return rows


@contextmanager
def _torch_threads(threads: int | None) -> Iterator[None]:
    """PyTorch's intra-op thread count for the run; it is process-wide, so restore it after."""
    if threads is None or importlib.util.find_spec("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _bench_target(
    out_dir: Path,
    result: TargetResult,
    samples: Samples,
    batch: int,
    expected: npt.NDArray[np.float32],
    threads: int | None,
) -> BenchRow:
    target = TARGETS[result.target]
    if result.status != "ok":
        return BenchRow(target.name, target.runs_on, f"not converted: {result.message}")
    size = _size(out_dir, result.files)
    path = out_dir / result.files[0]
    module = importlib.import_module(target.module)
    try:
        measured = _measure(lambda: module.load(path, target, threads), samples, batch)
    except (BackendUnavailableError, ExtraNotInstalledError) as exc:
        return BenchRow(target.name, target.runs_on, f"converted; cannot run here: {exc}", size)
    except ConversionError as exc:
        return BenchRow(target.name, target.runs_on, f"converted; failed to run: {exc}", size)
    except Exception as exc:  # a runtime library's own error: report it in the row, go on
        note = f"converted; failed to run: {type(exc).__name__}: {exc}"
        return BenchRow(target.name, target.runs_on, note, size)
    return _row(target.name, target.runs_on, measured, expected, samples, size)


def _measure(load: Callable[[], Runner], samples: Samples, batch: int) -> Measured:
    """Load twice (timing the second), run every batch once timing each call, top up the calls."""
    import numpy as np

    load()  # imports the runtime and warms the file cache
    started = time.perf_counter()
    runner: Runner = load()
    load_s = time.perf_counter() - started
    inputs = batches(samples, batch)
    if not inputs:
        raise InvalidRequestError(
            f"the data has {len(samples)} rows but the model takes batches of {batch}; "
            "give at least one full batch",
            param="data",
        )
    for _ in range(WARMUP_CALLS):
        runner(inputs[0])
    outputs, times = [], []
    for x in inputs:
        started = time.perf_counter()
        outputs.append(runner(x))
        times.append(time.perf_counter() - started)
    while len(times) < MIN_TIMED_CALLS:
        started = time.perf_counter()
        runner(inputs[len(times) % len(inputs)])
        times.append(time.perf_counter() - started)
    ms = np.asarray(times) * 1000
    return Measured(
        np.concatenate(outputs),
        load_s,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 90)),
    )


def _row(
    name: str,
    runs_on: str,
    measured: Measured,
    expected: npt.NDArray[np.float32],
    samples: Samples,
    size: int,
) -> BenchRow:
    import numpy as np

    out = measured.outputs.reshape(len(measured.outputs), -1)
    ref = expected.reshape(len(expected), -1)
    top1 = out.argmax(axis=1)
    labels = None if samples.y is None else samples.y[: len(top1)]
    return BenchRow(
        target=name,
        runs_on=runs_on,
        status="ok",
        size_bytes=size,
        load_s=measured.load_s,
        p50_ms=measured.p50_ms,
        p90_ms=measured.p90_ms,
        max_abs_diff=float(np.abs(out - ref).max()),
        top1_agreement=float((top1 == ref.argmax(axis=1)).mean()),
        accuracy=None if labels is None else float((top1 == labels).mean()),
    )


def _size(out_dir: Path, files: list[str]) -> int:
    """Bytes on disk, counting every file inside a folder target such as .mlpackage."""
    total = 0
    for name in files:
        path = out_dir / name
        paths = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        total += sum(p.stat().st_size for p in paths if p.exists())
    return total
