"""What one conversion run works from: the source, the output folder, calibration samples."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from llmedge.errors import ConversionError
from vision.data import Samples, batches
from vision.source import SourceModel

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

# Enough to settle activation ranges on small models; more only slows calibration.
CALIB_LIMIT = 300


@dataclass(frozen=True)
class ConvertJob:
    """Inputs shared by every target converter."""

    source: SourceModel
    out_dir: Path
    calib: Samples | None = None
    litert_python: Path | None = None  # an interpreter with litert-torch, when not this one
    wanted: frozenset[str] = frozenset()  # every target of this run, so siblings can share work

    @property
    def onnx_path(self) -> Path:
        """The fp32 ONNX file that ONNX Runtime INT8, OpenVINO and TensorRT start from."""
        return self.out_dir / "model.onnx"

    def calib_batches(self, target: str) -> list[npt.NDArray[np.float32]]:
        """Calibration inputs at the model's batch size; INT8 without real data is refused."""
        if self.calib is None or len(self.calib) == 0:
            raise ConversionError(
                target,
                "INT8 needs calibration data that looks like real inputs; pass --calib with a "
                ".npz (`x`: NxCxHxW float32, preprocessed) or a folder of .npy files",
            )
        return batches(self.calib.head(CALIB_LIMIT), self.source.input_shape[0])
