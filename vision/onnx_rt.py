"""ONNX export (torch.onnx, needs onnxscript) and ONNX Runtime static INT8 quantization (QDQ)."""

from __future__ import annotations

import importlib
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmedge.errors import ConversionError
from vision.quiet import quiet
from vision.runners import OrtRunner

if TYPE_CHECKING:
    from vision.job import ConvertJob
    from vision.targets import Target


def convert(job: ConvertJob, target: Target) -> list[Path]:
    if target.name == "onnx":
        return [export_onnx(job)]
    return [quantize_int8(job, target)]


def export_onnx(job: ConvertJob) -> Path:
    """Write the fp32 ONNX file once per job; every ONNX-based target starts from it."""
    from llmedge.extras import import_extra

    out = job.onnx_path
    if out.exists():
        return out
    onnx = import_extra("onnx", "vision")
    source = job.source
    if source.kind == "onnx":
        assert source.onnx_path is not None
        # Load and save again so external weight files become one self-contained model.
        onnx.save(onnx.load(str(source.onnx_path)), str(out))
        return out
    import_extra("onnxscript", "vision")
    import torch

    sample = (torch.from_numpy(source.sample()),)
    model = source.program if source.program is not None else source.module
    # TorchScript cannot go through torch.export; only the older TorchScript exporter reads it.
    dynamo = source.kind != "torchscript"
    try:
        with quiet("torch.onnx"):
            torch.onnx.export(
                model, sample, str(out), dynamo=dynamo, external_data=False, verbose=False
            )
    except Exception as exc:  # the exporter raises many types; all mean the same here
        out.unlink(missing_ok=True)
        raise ConversionError(
            "onnx",
            f"torch.onnx.export failed ({type(exc).__name__}: {exc}); "
            "check that the model runs under torch.export.export with this input shape",
        ) from exc
    return out


def quantize_int8(job: ConvertJob, target: Target) -> Path:
    """Static INT8 with per-channel weights, U8 activations, MinMax ranges from --calib."""
    from llmedge.extras import import_extra

    import_extra("onnxruntime", "vision")  # the package first: its absence means the extra
    quantization = importlib.import_module("onnxruntime.quantization")
    batches = job.calib_batches(target.name)
    fp32 = export_onnx(job)
    out = job.out_dir / target.filename
    input_name = OrtRunner(fp32).input_name
    feeds = iter([{input_name: batch} for batch in batches])

    def get_next(self: object) -> dict[str, Any] | None:
        return next(feeds, None)

    reader = type("Reader", (quantization.CalibrationDataReader,), {"get_next": get_next})()

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        try:
            # Shape inference and graph folding first, as ONNX Runtime's docs advise.
            quantization.shape_inference.quant_pre_process(str(fp32), str(prepared))
        except Exception:  # a model the pre-pass cannot handle still quantizes without it
            shutil.copyfile(fp32, prepared)
        quantization.quantize_static(
            str(prepared),
            str(out),
            reader,
            quant_format=quantization.QuantFormat.QDQ,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            per_channel=True,
        )
    return out


def load(path: Path, target: Target, threads: int | None = None) -> OrtRunner:
    return OrtRunner(path, threads)
