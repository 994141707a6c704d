"""Vision-model conversion for the models that run beside the LLM on an edge device.

PyTorch → ONNX → ONNX Runtime (fp32, INT8), OpenVINO (fp32, NNCF INT8), TensorRT (NVIDIA GPU
only); PyTorch → LiteRT/TFLite (fp32, INT8) and Core ML (converts anywhere, predicts on macOS
only). `convert` writes a folder, `bench` measures it. The heavy libraries are imported inside
the functions that use them, so importing this package costs nothing.
"""

from __future__ import annotations

from vision.bench import BenchRow, bench
from vision.convert import TargetResult, VisionManifest, convert
from vision.targets import TARGETS, Target, parse_targets

__all__ = [
    "TARGETS",
    "BenchRow",
    "Target",
    "TargetResult",
    "VisionManifest",
    "bench",
    "convert",
    "parse_targets",
]
