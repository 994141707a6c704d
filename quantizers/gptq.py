"""GPTQ: weights rounded layer by layer to 2, 3, 4 or 8 bits, correcting the error as it goes.

Through GPTQModel (the maintained successor of the abandoned AutoGPTQ), on CPU with its torch
kernels or on CUDA. The result is a standard GPTQ checkpoint that transformers, vLLM and
SGLang load, stored as `NAME:gptq-4bit-g128` (format `gptq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from llmedge.errors import InvalidRequestError
from quantizers.gptqmodel_run import GptqModelMethod

BITS = (2, 3, 4, 8)
GROUP_SIZES = (-1, 16, 32, 64, 128, 256, 512, 1024)


@dataclass(frozen=True)
class Gptq(GptqModelMethod):
    """GPTQ with `bits` per weight and one scale per `group_size` inputs (-1: per column)."""

    format: ClassVar[Literal["gptq"]] = "gptq"

    @property
    def tag(self) -> str:
        group = f"-g{self.group_size}" if self.group_size > 0 else ""
        return f"{self.format}-{self.bits}bit{group}"

    def check(self, source: Path) -> None:
        if self.bits not in BITS:
            raise InvalidRequestError(
                f"GPTQ makes {', '.join(map(str, BITS))}-bit weights, not {self.bits}",
                param="bits",
            )
        if self.group_size not in GROUP_SIZES:
            raise InvalidRequestError(
                f"choose a --group-size of {', '.join(map(str, GROUP_SIZES))}", param="group_size"
            )
