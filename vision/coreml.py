"""Core ML ML Program (.mlpackage) with coremltools: converts on any OS, predicts only on macOS."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmedge.errors import BackendUnavailableError, ConversionError
from vision.quiet import quiet

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision.job import ConvertJob
    from vision.targets import Target

MACOS_ONLY = (
    "Core ML prediction runs only on macOS (coremltools has no runtime elsewhere); "
    "copy the .mlpackage to a Mac and run `llmedge vision bench` there"
)


def can_predict() -> bool:
    return sys.platform == "darwin"


def convert(job: ConvertJob, target: Target) -> list[Path]:
    source = job.source
    if source.kind == "onnx":
        raise ConversionError(
            target.name,
            "coremltools has no ONNX front end since version 6; give the PyTorch model "
            "(.pt2, TorchScript or module:factory)",
        )
    from llmedge.extras import import_extra

    out = job.out_dir / target.filename
    with quiet("coremltools"):
        ct = import_extra("coremltools", "vision")
        # Core ML takes ATen-level programs; TorchScript goes in as it is.
        program = source.program
        model: Any = program.run_decompositions({}) if program is not None else source.module
        inputs = None if program is not None else [ct.TensorType(shape=source.input_shape)]
        mlmodel = ct.convert(
            model,
            inputs=inputs,
            convert_to="mlprogram",
            # The ML Program default is fp16; fp32 keeps the parity comparison meaningful.
            compute_precision=ct.precision.FLOAT32,
        )
        mlmodel.save(str(out))
    return [out]


def load(path: Path, target: Target, threads: int | None = None) -> CoreMlRunner:
    if not can_predict():
        raise BackendUnavailableError(MACOS_ONLY)
    return CoreMlRunner(path)


class CoreMlRunner:
    """A saved .mlpackage, predicted with Core ML on the CPU and GPU (macOS only)."""

    def __init__(self, path: Path) -> None:
        from llmedge.extras import import_extra

        with quiet("coremltools"):
            ct = import_extra("coremltools", "vision")
        self.model: Any = ct.models.MLModel(str(path), compute_units=ct.ComputeUnit.CPU_AND_GPU)
        spec = self.model.get_spec()
        self.input_name: str = spec.description.input[0].name
        self.output_name: str = spec.description.output[0].name

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        out = self.model.predict({self.input_name: x})[self.output_name]
        return np.asarray(out, dtype=np.float32)
