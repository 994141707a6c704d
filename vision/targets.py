"""The registry of conversion targets: what each one writes, where it runs, which module does it.

Each family module (`onnx_rt`, `openvino_ir`, `litert`, `coreml`, `tensorrt`) exposes
`convert(job, target) -> list[Path]` and `load(path, target, threads) -> Runner`; the registry
names them by string, so nothing heavy is imported until a target is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from llmedge.errors import InvalidRequestError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class Runner(Protocol):
    """A loaded model: one fixed-shape float32 batch in, the first output as float32 out."""

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...


@dataclass(frozen=True)
class Target:
    """One output format: the file it writes, the module that makes and runs it, where it runs."""

    name: str
    filename: str
    family: str
    int8: bool
    runs_on: str
    summary: str

    @property
    def module(self) -> str:
        return f"vision.{self.family}"


_ALL = (
    Target("onnx", "model.onnx", "onnx_rt", False, "any CPU", "ONNX (torch.onnx), ONNX Runtime"),
    Target(
        "ort-int8",
        "model.int8.onnx",
        "onnx_rt",
        True,
        "any CPU",
        "ONNX Runtime static INT8 (QDQ, calibrated)",
    ),
    Target("openvino", "openvino/model.xml", "openvino_ir", False, "any CPU", "OpenVINO IR fp32"),
    Target(
        "openvino-int8",
        "openvino-int8/model.xml",
        "openvino_ir",
        True,
        "any CPU",
        "OpenVINO IR INT8 (NNCF post-training)",
    ),
    Target(
        "tflite", "model.tflite", "litert", False, "any CPU", "LiteRT/TFLite fp32 (litert-torch)"
    ),
    Target(
        "tflite-int8",
        "model.int8.tflite",
        "litert",
        True,
        "any CPU",
        "LiteRT/TFLite full INT8 (PT2E, calibrated)",
    ),
    Target("coreml", "model.mlpackage", "coreml", False, "macOS", "Core ML ML Program fp32"),
    Target(
        "tensorrt", "model.plan", "tensorrt", False, "NVIDIA GPU", "TensorRT engine (from ONNX)"
    ),
)

TARGETS: dict[str, Target] = {t.name: t for t in _ALL}


def parse_targets(spec: str) -> list[Target]:
    """Turn `onnx,ort-int8` (or `all`) into targets, failing with the list of valid names."""
    names = [n.strip().lower() for n in spec.split(",") if n.strip()]
    if names == ["all"]:
        return list(_ALL)
    unknown = [n for n in names if n not in TARGETS]
    if unknown or not names:
        raise InvalidRequestError(
            f"unknown target {', '.join(unknown) or '(none)'}; "
            f"choose from: {', '.join(TARGETS)} (or `all`)",
            param="to",
        )
    return [TARGETS[n] for n in dict.fromkeys(names)]
