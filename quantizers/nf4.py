"""NF4: 4-bit NormalFloat weights from bitsandbytes, with the scales quantized again.

No calibration: each block of 64 weights is mapped onto 16 levels spaced like a normal
distribution, and with double quantization the per-block scales are themselves stored in 8
bits (about 0.4 bits per weight saved). transformers' `BitsAndBytesConfig` does the work as it
loads the model, on CPU or CUDA; the result is stored as `NAME:nf4` (format `nf4`).
"""

from __future__ import annotations

import gc
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from llmedge.errors import ExtraNotInstalledError
from quantizers.calibration import Calibration
from quantizers.hf_method import Quantized
from quantizers.perplexity import DEFAULT_SCORED_TOKENS


@dataclass(frozen=True)
class Nf4:
    """NF4 with (by default) double quantization of the block scales."""

    double_quant: bool = True
    format: ClassVar[str] = "nf4"
    library: ClassVar[str] = "bitsandbytes"
    calibrated: ClassVar[bool] = False

    @property
    def tag(self) -> str:
        return self.format if self.double_quant else f"{self.format}-single"

    def check(self, source: Path) -> None:
        pass  # any linear layer works: bitsandbytes pads the last block

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
        if importlib.util.find_spec("bitsandbytes") is None:
            raise ExtraNotInstalledError("quantize", "bitsandbytes")
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig
        from transformers.utils import logging

        cuda = device == "cuda"
        # Matrix products run in this type; older GPUs have no bfloat16.
        compute = torch.float16 if cuda and not torch.cuda.is_bf16_supported() else torch.bfloat16
        config = BitsAndBytesConfig(  # type: ignore[no-untyped-call,unused-ignore]
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=self.double_quant,
            bnb_4bit_compute_dtype=compute,
        )
        logging.disable_progress_bar()  # type: ignore[no-untyped-call,unused-ignore]
        model = AutoModelForCausalLM.from_pretrained(
            source, quantization_config=config, device_map=device
        )
        try:
            model.save_pretrained(out)
            AutoTokenizer.from_pretrained(source).save_pretrained(out)
        finally:
            del model
            gc.collect()
        return Quantized()  # timed and measured by the caller, in this process
