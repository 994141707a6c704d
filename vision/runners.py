"""Runners for the source model and the ONNX targets: a batch in, the first output out."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class TorchRunner:
    """PyTorch inference without autograd, first output only."""

    def __init__(self, module: Any) -> None:
        self.module = module

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import torch

        with torch.no_grad():
            return first_output(self.module(torch.from_numpy(x)))


def first_output(out: Any) -> npt.NDArray[np.float32]:
    """The first tensor of a model's output (tensor, tuple, list or dict) as a float32 array."""
    import numpy as np

    while isinstance(out, (tuple, list, dict)):
        out = next(iter(out.values())) if isinstance(out, dict) else out[0]
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.asarray(out, dtype=np.float32)


class OrtRunner:
    """An ONNX Runtime session on the CPU execution provider."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from llmedge.extras import import_extra

        ort = import_extra("onnxruntime", "vision")
        options = ort.SessionOptions()
        if threads is not None:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name: str = self.session.get_inputs()[0].name

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        out = self.session.run(None, {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32)
