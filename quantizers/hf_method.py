"""The shape of a quantization method for safetensors folders: GPTQ, AWQ and NF4 implement it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from quantizers.calibration import Calibration
from quantizers.perplexity import DEFAULT_SCORED_TOKENS, Perplexity


@dataclass(frozen=True)
class Quantized:
    """What a method reports back beside the folder it wrote."""

    seconds: float | None = None  # time spent quantizing, when it measured it itself
    perplexity: Perplexity | None = None  # when it measured the result itself


class Method(Protocol):
    """One way to quantize a safetensors folder (quantizers.gptq.Gptq, .awq.Awq, .nf4.Nf4)."""

    format: str  # the manifest's format, which says which backend serves it
    library: str
    calibrated: bool  # reads calibration text (GPTQ, AWQ) or not (NF4)

    @property
    def tag(self) -> str: ...

    def check(self, source: Path) -> None:
        """Refuse, before any work, what this method cannot do to this model."""

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
        """Write the quantized folder to `out`; with `eval_text`, it may measure it too (on
        `eval_tokens` of its tokens)."""
