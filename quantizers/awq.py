"""AWQ: 4-bit weights whose scales protect the channels the activations lean on most.

Through GPTQModel's AWQ (the maintained successor of the deprecated AutoAWQ), on CPU with its
torch kernels or on CUDA. The checkpoint is AWQ's GEMM layout, which transformers and vLLM load;
it is stored as `NAME:awq-4bit-g128` (format `awq`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

from llmedge.errors import InvalidRequestError
from quantizers.gptqmodel_run import GptqModelMethod
from quantizers.hf_folder import linear_widths

GROUP_SIZES = (32, 64, 128)


@dataclass(frozen=True)
class Awq(GptqModelMethod):
    """AWQ at 4 bits with one scale per `group_size` inputs."""

    format: ClassVar[Literal["awq"]] = "awq"

    @property
    def tag(self) -> str:
        return f"{self.format}-{self.bits}bit-g{self.group_size}"

    def check(self, source: Path) -> None:
        if self.bits != 4:
            raise InvalidRequestError("AWQ makes 4-bit weights; leave out --bits", param="bits")
        if self.group_size not in GROUP_SIZES:
            raise InvalidRequestError(
                f"choose an AWQ --group-size of {', '.join(map(str, GROUP_SIZES))}",
                param="group_size",
            )
        # AWQ's search needs whole groups in every layer's input (GPTQ copes with a ragged end).
        widths = linear_widths(source)
        ragged = {k: v for k, v in widths.items() if v % self.group_size}
        if ragged:
            fits = [g for g in GROUP_SIZES if all(v % g == 0 for v in widths.values())]
            hint = f"use --group-size {max(fits)}" if fits else "use --gptq instead"
            raise InvalidRequestError(
                f"AWQ groups of {self.group_size} do not divide this model's "
                f"{', '.join(f'{k} ({v})' for k, v in ragged.items())}; {hint}",
                param="group_size",
            )
