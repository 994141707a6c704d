"""The model to convert: a torch.export `.pt2`, a TorchScript file, a `module:factory`, or ONNX.

The source is also the reference every target is compared with, so `save_reference` keeps a
copy in the output folder (`reference.pt2`, `reference.ts` or `reference.onnx`) for `bench`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from llmedge.errors import InvalidRequestError
from vision.runners import OrtRunner, TorchRunner

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision.targets import Runner

SourceKind = Literal["torch-export", "torchscript", "onnx"]
DEFAULT_SHAPE = (1, 3, 224, 224)
FORMS = "a torch.export .pt2 file, a TorchScript file, an .onnx file, or module:factory"
REFERENCE_FILES: dict[str, SourceKind] = {
    "reference.pt2": "torch-export",
    "reference.ts": "torchscript",
    "reference.onnx": "onnx",
}


@dataclass(frozen=True)
class SourceModel:
    """A loaded source: the torch module (absent for ONNX) and the fixed input shape."""

    spec: str
    kind: SourceKind
    input_shape: tuple[int, ...]
    module: Any = None
    program: Any = None  # torch.export.ExportedProgram, when the model exports
    onnx_path: Path | None = None

    def sample(self) -> npt.NDArray[np.float32]:
        import numpy as np

        return np.zeros(self.input_shape, dtype=np.float32)


def parse_shape(text: str) -> tuple[int, ...]:
    """`1x3x224x224` → (1, 3, 224, 224)."""
    try:
        shape = tuple(int(part) for part in text.lower().split("x"))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise InvalidRequestError(
            f"bad input shape {text!r}; write it as NxCxHxW, e.g. 1x3x224x224", param="input-shape"
        )
    return shape


def load_source(spec: str, input_shape: tuple[int, ...] | None = None) -> SourceModel:
    """Load MODEL as given on the command line; `input_shape` is needed only for factories."""
    path = Path(spec).expanduser()
    if path.is_file():
        if path.suffix == ".onnx":
            return _load_onnx(spec, path, input_shape)
        if path.suffix == ".pt2":
            return _load_program(spec, path, input_shape)
        return _load_torchscript(spec, path, input_shape)
    if ":" in spec and not path.exists():
        return _load_factory(spec, input_shape or DEFAULT_SHAPE)
    raise InvalidRequestError(f"cannot find model {spec!r}; give {FORMS}", param="model")


def _check_shape(spec: str, found: tuple[int, ...], asked: tuple[int, ...] | None) -> None:
    if asked is not None and asked != found:
        raise InvalidRequestError(
            f"{spec} takes inputs of shape {'x'.join(map(str, found))}, not "
            f"{'x'.join(map(str, asked))}; drop --input-shape or re-export the model",
            param="input-shape",
        )


def _load_program(spec: str, path: Path, asked: tuple[int, ...] | None) -> SourceModel:
    import torch

    program = torch.export.load(str(path))
    placeholders = [
        node.meta["val"]
        for node in program.graph.nodes
        if node.op == "placeholder" and node.name in program.graph_signature.user_inputs
    ]
    if len(placeholders) != 1:
        raise InvalidRequestError(
            f"{spec} takes {len(placeholders)} inputs; vision conversion handles one image tensor",
            param="model",
        )
    shape = tuple(int(d) for d in placeholders[0].shape)
    _check_shape(spec, shape, asked)
    return SourceModel(spec, "torch-export", shape, module=program.module(), program=program)


def _load_torchscript(spec: str, path: Path, asked: tuple[int, ...] | None) -> SourceModel:
    import torch

    try:
        module = torch.jit.load(str(path), map_location="cpu").eval()  # type: ignore[no-untyped-call]
    except RuntimeError as exc:
        raise InvalidRequestError(
            f"{spec} is not a TorchScript file ({exc}); give {FORMS}"
        ) from exc
    return SourceModel(spec, "torchscript", asked or DEFAULT_SHAPE, module=module)


def _load_onnx(spec: str, path: Path, asked: tuple[int, ...] | None) -> SourceModel:
    from llmedge.extras import import_extra

    onnx = import_extra("onnx", "vision")
    graph = onnx.load(str(path), load_external_data=False).graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    if len(inputs) != 1:
        raise InvalidRequestError(f"{spec} takes {len(inputs)} inputs; expected one image tensor")
    dims = [d.dim_value for d in inputs[0].type.tensor_type.shape.dim]
    if any(d < 1 for d in dims):
        if asked is None:
            raise InvalidRequestError(
                f"{spec} has dynamic input dimensions; pass --input-shape, e.g. 1x3x224x224",
                param="input-shape",
            )
        return SourceModel(spec, "onnx", asked, onnx_path=path)
    _check_shape(spec, tuple(dims), asked)
    return SourceModel(spec, "onnx", tuple(dims), onnx_path=path)


def _load_factory(spec: str, shape: tuple[int, ...]) -> SourceModel:
    import torch

    module_name, _, attr = spec.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidRequestError(
            f"cannot load {spec!r} ({exc}); is the package installed and the name right?",
            param="model",
        ) from exc
    module = factory().eval()
    program = torch.export.export(module, (torch.zeros(shape),))
    return SourceModel(spec, "torch-export", shape, module=module, program=program)


def save_reference(source: SourceModel, out_dir: Path) -> str:
    """Keep the source in `out_dir` so `bench` can compare against it; returns the file name."""
    import shutil

    import torch

    if source.kind == "onnx":
        assert source.onnx_path is not None
        target = out_dir / "reference.onnx"
        if not target.exists() or not target.samefile(source.onnx_path):
            shutil.copyfile(source.onnx_path, target)
        return "reference.onnx"
    if source.program is not None:
        torch.export.save(source.program, str(out_dir / "reference.pt2"))
        return "reference.pt2"
    torch.jit.save(source.module, str(out_dir / "reference.ts"))
    return "reference.ts"


def load_reference(path: Path, threads: int | None = None) -> Runner:
    """The reference as a runner: PyTorch on the CPU, or ONNX Runtime for an ONNX source.

    PyTorch's thread count is process-wide, so `bench` sets it rather than this runner.
    """
    kind = REFERENCE_FILES.get(path.name)
    if kind == "onnx":
        return OrtRunner(path, threads)
    import torch

    if kind == "torch-export":
        return TorchRunner(torch.export.load(str(path)).module())
    return TorchRunner(torch.jit.load(str(path), map_location="cpu").eval())  # type: ignore[no-untyped-call]
