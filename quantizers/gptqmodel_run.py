"""GPTQ and AWQ through GPTQModel, run in a child process.

GPTQModel rewires transformers' quantizer tables when it is imported and draws progress bars on
the terminal; a child process keeps both out of llmedge's own process and hands the memory of
calibration back when it ends. The child's output goes to a log file, whose tail is shown if it
fails. The kernel that packs the result is the one the transformers backend serves it with.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar, Literal

from llmedge.errors import ExtraNotInstalledError, QuantizationError
from quantizers.calibration import Calibration, calibration_samples
from quantizers.hf_folder import tensor_stats
from quantizers.hf_method import Quantized
from quantizers.perplexity import DEFAULT_SCORED_TOKENS, Perplexity

_TAIL_CHARS = 2000
_RESULT = "result.json"


@dataclass(frozen=True)
class GptqModelJob:
    """Everything the child needs: what to quantize, how, where, and the calibration tokens."""

    method: Literal["gptq", "awq"]
    source: str
    out: str
    bits: int
    group_size: int
    device: str
    offload_to_disk: bool  # layers wait on disk, not in memory (for models near the RAM size)
    samples: list[list[int]]
    eval_text: str | None = None  # measure the result's perplexity on it, GPTQModel loaded
    eval_tokens: int = DEFAULT_SCORED_TOKENS


def make_job(
    method: Literal["gptq", "awq"],
    bits: int,
    group_size: int,
    source: Path,
    out: Path,
    calibration: Calibration,
    device: str,
    eval_text: str | None,
    eval_tokens: int = DEFAULT_SCORED_TOKENS,
) -> GptqModelJob:
    """A job whose calibration windows are cut with the source model's own tokenizer."""
    import psutil
    from transformers import AutoTokenizer

    samples = calibration_samples(AutoTokenizer.from_pretrained(source), calibration)
    # Layers wait on disk only when the unquantized weights would crowd memory (slower).
    crowded = tensor_stats(source).nbytes > psutil.virtual_memory().available // 2
    return GptqModelJob(
        method=method,
        source=str(source),
        out=str(out),
        bits=bits,
        group_size=group_size,
        device=device,
        offload_to_disk=crowded,
        samples=samples,
        eval_text=eval_text,
        eval_tokens=eval_tokens,
    )


def run_job(job: GptqModelJob, work: Path) -> Quantized:
    """Quantize in a child process (and measure the result when the job has an eval text).

    Raises QuantizationError with the child's output when it fails.
    """
    if importlib.util.find_spec("gptqmodel") is None:
        raise ExtraNotInstalledError("quantize", "GPTQModel")
    spec = work / "job.json"
    spec.write_text(json.dumps(asdict(job)), encoding="utf-8")
    log = work / "gptqmodel.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    # The child runs this same checkout's quantizers, whatever its working folder puts first.
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # GPTQModel sizes its worker pool from the CPU count and will not start with one worker.
    env.setdefault("GPTQMODEL_CPU_WORKERS", str(max(2, (os.cpu_count() or 2) // 2)))
    command = [sys.executable, "-m", "quantizers.gptqmodel_run", str(spec)]
    with log.open("w", encoding="utf-8") as out:
        # In the work folder: GPTQModel writes a logs/ folder into its current directory.
        code = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=work
        ).returncode
    if code != 0 or not (work / _RESULT).is_file():
        tail = log.read_text(encoding="utf-8", errors="replace")[-_TAIL_CHARS:]
        raise QuantizationError(
            f"GPTQModel could not {job.method.upper()}-quantize {job.source} (exit {code}); "
            f"try fewer --calibration-samples if it ran out of memory. Its last output:\n{tail}"
        )
    found = json.loads((work / _RESULT).read_text(encoding="utf-8"))
    measured = found.get("perplexity")
    return Quantized(found["seconds"], Perplexity(**measured) if measured else None)


@dataclass(frozen=True)
class GptqModelMethod:
    """A method GPTQModel runs (GPTQ and AWQ): the same job, other formats and checks."""

    bits: int = 4
    group_size: int = 128
    format: ClassVar[Literal["gptq", "awq"]]
    library: ClassVar[str] = "GPTQModel"
    calibrated: ClassVar[bool] = True

    def quantize(
        self,
        source: Path,
        out: Path,
        work: Path,
        calibration: Calibration,
        device: str,
        eval_text: str | None,
        eval_tokens: int = DEFAULT_SCORED_TOKENS,
    ) -> Quantized:
        job = make_job(
            self.format,
            self.bits,
            self.group_size,
            source,
            out,
            calibration,
            device,
            eval_text,
            eval_tokens,
        )
        return run_job(job, work)


def _exit_with_parent() -> None:
    """End this process when the llmedge process that started it is gone (killed, say)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _main(spec: Path) -> None:
    _exit_with_parent()
    job = GptqModelJob(**json.loads(spec.read_text(encoding="utf-8")))
    from gptqmodel import (  # type: ignore[import-untyped,unused-ignore]
        AWQConfig,
        GPTQConfig,
        GPTQModel,
    )

    from llmedge.backends.transformers.backend import gptqmodel_kernel
    from quantizers.hf_perplexity import measure

    config_class = GPTQConfig if job.method == "gptq" else AWQConfig
    config = config_class(
        bits=job.bits, group_size=job.group_size, offload_to_disk=job.offload_to_disk
    )
    kernel = gptqmodel_kernel(job.method, job.device, job.bits)
    started = time.perf_counter()
    model = GPTQModel.load(job.source, config, device=job.device)
    samples = [{"input_ids": ids, "attention_mask": [1] * len(ids)} for ids in job.samples]
    model.quantize(samples, batch_size=1, backend=kernel)
    model.save(job.out)
    result: dict[str, object] = {"seconds": time.perf_counter() - started}
    if job.eval_text is not None:
        # Measured here, where GPTQModel is already imported, rather than in the parent.
        del model
        gc.collect()
        result["perplexity"] = asdict(
            measure(Path(job.out), job.device, job.eval_text, job.eval_tokens)
        )
    (spec.parent / _RESULT).write_text(json.dumps(result), encoding="utf-8")


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
