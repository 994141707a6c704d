"""Convert one source model to many targets, and record the outcome in `OUTDIR/vision.json`.

Output folder:

    OUTDIR/
      vision.json          what was converted from what, each target's files, status, seconds
      reference.pt2        the source kept for `bench` (or reference.ts / reference.onnx)
      probe.npz            inputs `bench` uses when given no --data (calibration rows or noise)
      model.onnx           fp32 ONNX; also the starting point of ort-int8, openvino*, tensorrt
      model.int8.onnx, openvino/, openvino-int8/, model.tflite, model.int8.tflite,
      model.mlpackage/, model.plan

Each run writes a fresh manifest for the targets it was asked for. A target that cannot be made
here (no GPU, a missing package) is recorded with the reason and the next step; the rest go on.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

from llmedge.errors import (
    BackendUnavailableError,
    ConversionError,
    ExtraNotInstalledError,
    InvalidRequestError,
)
from vision.data import load_samples, random_samples
from vision.job import ConvertJob
from vision.source import load_source, save_reference
from vision.targets import TARGETS, Target

MANIFEST = "vision.json"
PROBE_ROWS = 256
Status = Literal["ok", "unavailable", "failed"]


@dataclass
class TargetResult:
    """How one target's conversion went."""

    target: str
    status: Status
    files: list[str] = field(default_factory=list)  # relative to the output folder
    seconds: float = 0.0
    message: str = ""


@dataclass
class VisionManifest:
    """The record `bench` reads: the source, its input shape, and each target's result."""

    source: str
    source_kind: str
    input_shape: list[int]
    reference: str
    probe: str
    results: dict[str, TargetResult] = field(default_factory=dict)

    def save(self, out_dir: Path) -> None:
        text = json.dumps(asdict(self), indent=2) + "\n"
        tmp = out_dir / f".{MANIFEST}.tmp"
        tmp.write_text(text)
        tmp.replace(out_dir / MANIFEST)

    @classmethod
    def load(cls, out_dir: Path) -> VisionManifest:
        path = out_dir / MANIFEST
        if not path.is_file():
            raise InvalidRequestError(
                f"{out_dir} holds no {MANIFEST}; run `llmedge vision convert MODEL -o {out_dir}` "
                "first",
                param="outdir",
            )
        raw = json.loads(path.read_text())
        results = {k: TargetResult(**v) for k, v in raw.pop("results").items()}
        return cls(**raw, results=results)


def convert(
    model: str,
    targets: Sequence[Target],
    out_dir: Path,
    *,
    calib: Path | None = None,
    input_shape: tuple[int, ...] | None = None,
    litert_python: Path | None = None,
    on_result: Callable[[TargetResult], None] | None = None,
) -> VisionManifest:
    """Convert MODEL to each target in order; failures are recorded, not raised."""
    source = load_source(model, input_shape)
    out_dir.mkdir(parents=True, exist_ok=True)
    samples = load_samples(calib, source.input_shape) if calib is not None else None
    wanted = frozenset(t.name for t in targets)
    job = ConvertJob(source, out_dir, samples, litert_python, wanted)
    # Never build on another run's files: the ONNX file feeds other targets, and TFLite
    # variants made together are found by their files.
    source_file = source.onnx_path.resolve() if source.onnx_path else None
    for name in [*wanted, "onnx"]:
        path = out_dir / TARGETS[name].filename.split("/")[0]
        if path.resolve() != source_file:  # `convert model.onnx -o .` must keep model.onnx
            _remove(path)
    probe = (
        samples.head(PROBE_ROWS) if samples is not None else random_samples(source.input_shape, 16)
    )
    probe.save(out_dir / "probe.npz")
    manifest = VisionManifest(
        source=model,
        source_kind=source.kind,
        input_shape=list(source.input_shape),
        reference=save_reference(source, out_dir),
        probe="probe.npz",
    )
    for target in targets:
        result = convert_one(job, target)
        manifest.results[target.name] = result
        manifest.save(out_dir)
        if on_result is not None:
            on_result(result)
    return manifest


def convert_one(job: ConvertJob, target: Target) -> TargetResult:
    """Run one target's converter and classify what happened."""
    started = time.perf_counter()
    try:
        make = importlib.import_module(target.module).convert
        files: list[Path] = make(job, target)
    except BackendUnavailableError as exc:
        return TargetResult(target.name, "unavailable", message=str(exc))
    except (ConversionError, ExtraNotInstalledError) as exc:
        return _failed(target, started, str(exc))
    except Exception as exc:  # a converter library's own error: keep it and go on
        return _failed(target, started, f"{type(exc).__name__}: {exc}")
    rel = [str(f.relative_to(job.out_dir)) for f in files]
    return TargetResult(target.name, "ok", rel, round(time.perf_counter() - started, 3))


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _failed(target: Target, started: float, message: str) -> TargetResult:
    return TargetResult(
        target.name, "failed", seconds=round(time.perf_counter() - started, 3), message=message
    )
