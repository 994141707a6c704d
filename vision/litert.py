"""LiteRT/TFLite: converted by litert-torch (here or in its own venv), run by ai-edge-litert.

litert-torch is the maintained successor of ai-edge-torch and needs no TensorFlow. Its
dependencies clash with pydantic ≥2.12 (see `litert_worker`), so when it is not importable here
the conversion runs `litert_worker.py` under another interpreter: `--litert-python`
(LLMEDGE_LITERT_PYTHON), or the environment llmedge makes for it under LLMEDGE_HOME on first use
(`litert_env`). When both variants are asked for, one run makes both, and the first one's time
includes both.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmedge.errors import ConversionError
from llmedge.settings import Settings
from vision.litert_env import litert_python
from vision.targets import TARGETS

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from vision.job import ConvertJob
    from vision.targets import Target

LITERT_SETUP = (
    "give an interpreter that has litert-torch with --litert-python, or unset it (and "
    "LLMEDGE_LITERT_PYTHON) to let llmedge make one under LLMEDGE_HOME"
)
WORKER_TIMEOUT_S = 900
FP32, INT8 = "tflite", "tflite-int8"


def convert(job: ConvertJob, target: Target) -> list[Path]:
    import numpy as np

    source = job.source
    if source.program is None:
        raise ConversionError(
            target.name,
            f"litert-torch converts torch.export programs, and {source.spec} is {source.kind}; "
            "give a .pt2 file or a module:factory",
        )
    out = job.out_dir / target.filename
    if out.exists():  # made beside its sibling earlier in this run, which starts by clearing
        return [out]
    # One litert-torch start makes both variants when both are wanted: starting costs seconds.
    fp32, int8 = job.out_dir / TARGETS[FP32].filename, job.out_dir / TARGETS[INT8].filename
    make_fp32 = not target.int8 or (FP32 in job.wanted and not fp32.exists())
    make_int8 = target.int8 or (INT8 in job.wanted and job.calib is not None and not int8.exists())
    outputs = {"out": fp32 if make_fp32 else None, "int8_out": int8 if make_int8 else None}
    calib = np.stack(job.calib_batches(INT8)) if make_int8 else None
    if job.litert_python is None and importlib.util.find_spec("litert_torch") is not None:
        from vision.litert_worker import convert_module

        for path, rows in ((outputs["out"], None), (outputs["int8_out"], calib)):
            if path is not None:
                convert_module(source.program.module(), source.input_shape, path, rows)
    else:
        python = job.litert_python or litert_python(Settings().home, _note)
        _convert_elsewhere(python, source.program, outputs, calib, target.name)
    if not out.exists():
        raise ConversionError(target.name, f"litert-torch wrote no {out.name}")
    return [out]


def _note(text: str) -> None:
    print(f"tflite: {text}", file=sys.stderr, flush=True)


def _convert_elsewhere(
    python: Path, program: Any, outputs: dict[str, Path | None], calib: Any, name: str
) -> None:
    """Run the worker script under another interpreter, handing over files, not objects."""
    import numpy as np
    import torch

    from vision import litert_worker

    if not python.is_file():
        raise ConversionError(name, f"--litert-python {python} does not exist; {LITERT_SETUP}")
    with tempfile.TemporaryDirectory() as tmp:
        program_path = Path(tmp) / "program.pt2"
        torch.export.save(program, str(program_path))
        command = [str(python), litert_worker.__file__, "--program", str(program_path)]
        for flag, path in outputs.items():
            if path is not None:
                command += [f"--{flag.replace('_', '-')}", str(path)]
        if calib is not None:
            np.save(Path(tmp) / "calib.npy", calib)
            command += ["--calib", str(Path(tmp) / "calib.npy")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-8:])
        raise ConversionError(name, f"litert-torch under {python} failed:\n{tail}")


def load(path: Path, target: Target, threads: int | None = None) -> LiteRtRunner:
    return LiteRtRunner(path, threads)


class LiteRtRunner:
    """ai-edge-litert's interpreter; quantized inputs and outputs are scaled to and from float."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        from llmedge.extras import import_extra

        import_extra("ai_edge_litert", "vision")  # the package first: its absence means the extra
        interpreter = importlib.import_module("ai_edge_litert.interpreter")
        self.interpreter: Any = interpreter.Interpreter(model_path=str(path), num_threads=threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        import numpy as np

        dtype = self.input["dtype"]
        if dtype != np.float32:
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        out = self.interpreter.get_tensor(self.output["index"])
        if out.dtype != np.float32:
            scale, zero = self.output["quantization"]
            return np.asarray((out.astype(np.float32) - zero) * scale, dtype=np.float32)
        return np.asarray(out, dtype=np.float32)
