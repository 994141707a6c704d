"""OpenVINO IR from the ONNX file, and INT8 by NNCF post-training quantization."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision.job import ConvertJob
    from vision.targets import Target


def convert(job: ConvertJob, target: Target) -> list[Path]:
    from llmedge.extras import import_extra
    from vision.onnx_rt import export_onnx

    ov = import_extra("openvino", "vision")
    out = job.out_dir / target.filename
    out.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(export_onnx(job)))
    if target.int8:
        nncf = import_extra("nncf", "vision")
        batches = job.calib_batches(target.name)
        # NNCF draws progress bars on stdout; keep stdout for results (tables, --json).
        with contextlib.redirect_stdout(sys.stderr):
            model = nncf.quantize(
                model, nncf.Dataset(batches), subset_size=len(batches), fast_bias_correction=True
            )
    # Keep fp32 weights: fp16 compression would blur the parity this target is measured on.
    ov.save_model(model, str(out), compress_to_fp16=False)
    return [out, out.with_suffix(".bin")]


def load(path: Path, target: Target, threads: int | None = None) -> OpenVinoRunner:
    return OpenVinoRunner(path, threads)


class OpenVinoRunner:
    """A model compiled for OpenVINO's CPU plugin at fp32 precision."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from llmedge.extras import import_extra

        ov = import_extra("openvino", "vision")
        # The CPU plugin otherwise picks bf16 on CPUs that have it, which is not an fp32 result.
        config: dict[str, str | int] = {"INFERENCE_PRECISION_HINT": "f32"}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        self.compiled: Any = ov.Core().compile_model(str(path), "CPU", config)

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        return np.asarray(self.compiled(x)[0], dtype=np.float32)
