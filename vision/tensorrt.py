"""TensorRT engines built from the ONNX file; building and running both need an NVIDIA GPU.

Device buffers are PyTorch CUDA tensors, so a CUDA build of torch is needed beside TensorRT.
An engine is tied to the GPU model and TensorRT version it was built with.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmedge.errors import BackendUnavailableError, ConversionError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision.job import ConvertJob
    from vision.targets import Target

WORKSPACE_BYTES = 1 << 30


def unavailable_reason() -> str | None:
    """Why TensorRT cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return (
            "TensorRT runs only with an NVIDIA GPU and a CUDA build of torch, and this host has "
            "none; run `llmedge vision convert MODEL --to tensorrt` on the GPU machine"
        )
    try:
        _import_tensorrt()
    except ImportError as exc:
        return (
            f"TensorRT does not import ({exc}); `pip install tensorrt-cu13` (CUDA 13) or "
            "`tensorrt-cu12` (CUDA 12), matching torch.version.cuda"
        )
    return None


def _import_tensorrt() -> Any:
    try:
        return importlib.import_module("tensorrt")
    except ImportError:
        # The bindings wheel alone (with the libraries from tensorrt-*-libs or the system).
        return importlib.import_module("tensorrt_bindings")


def _tensorrt() -> Any:
    reason = unavailable_reason()
    if reason is not None:
        raise BackendUnavailableError(reason)
    return _import_tensorrt()


def convert(job: ConvertJob, target: Target) -> list[Path]:
    from vision.onnx_rt import export_onnx

    trt = _tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode since TensorRT 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(export_onnx(job).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConversionError(target.name, f"TensorRT's ONNX parser refused the model: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ConversionError(target.name, "TensorRT built no engine; its log above says why")
    out = job.out_dir / target.filename
    out.write_bytes(bytes(engine))
    return [out]


def load(path: Path, target: Target, threads: int | None = None) -> TensorRtRunner:
    return TensorRtRunner(path)


class TensorRtRunner:
    """A deserialized engine run on the current CUDA stream, fp32 in and out."""

    def __init__(self, path: Path) -> None:
        import torch

        trt = _tensorrt()
        self.torch = torch
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine: Any = runtime.deserialize_cuda_engine(path.read_bytes())
        if self.engine is None:
            raise ConversionError(
                "tensorrt", f"{path} does not load here; rebuild it on this GPU and TensorRT"
            )
        self.context: Any = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name = inputs[0]
        self.output_name = next(n for n in names if n not in inputs)
        shape = tuple(self.engine.get_tensor_shape(self.output_name))
        self.output = torch.empty(shape, dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self.output_name, self.output.data_ptr())

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        torch = self.torch
        device_x = torch.from_numpy(x).to("cuda").contiguous()
        self.context.set_tensor_address(self.input_name, device_x.data_ptr())
        stream = torch.cuda.current_stream()
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise ConversionError("tensorrt", "TensorRT refused to run the engine")
        stream.synchronize()
        result: npt.NDArray[np.float32] = self.output.cpu().numpy().copy()
        return result
