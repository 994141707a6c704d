"""Calibration text for GPTQ and AWQ: what the model reads while its weights are rounded.

The shipped text (`data/calibration.txt`, varied English prose, a dialogue, a letter and a
little code) is deliberately not the perplexity text, so a report never scores a model on what
it was calibrated with. A user's own file can replace it. The text is tokenized once and cut
into `samples` windows of `tokens` tokens, spread evenly over it (overlapping when it is short).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from llmedge.errors import InvalidRequestError

CALIBRATION_TEXT_NAME = "calibration.txt"
DEFAULT_SAMPLES = 16
DEFAULT_TOKENS = 256


@dataclass(frozen=True)
class Calibration:
    """Where the calibration text comes from and how much of it the quantizer sees."""

    path: Path | None = None  # None: the text shipped with llmedge
    samples: int = DEFAULT_SAMPLES
    tokens: int = DEFAULT_TOKENS  # per sample

    @property
    def name(self) -> str:
        return str(self.path) if self.path else CALIBRATION_TEXT_NAME


def calibration_text(calibration: Calibration) -> str:
    if calibration.path is None:
        data = resources.files("quantizers") / "data" / CALIBRATION_TEXT_NAME
        return data.read_text(encoding="utf-8")
    try:
        return calibration.path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidRequestError(
            f"cannot read the calibration text {calibration.path}: {exc}; "
            "give a UTF-8 text file, or leave --calibration out to use the shipped one",
            param="calibration",
        ) from exc


def calibration_samples(tokenizer: Any, calibration: Calibration) -> list[list[int]]:
    """Token windows of the calibration text, as GPTQModel's `quantize` takes them."""
    if calibration.samples < 1 or calibration.tokens < 16:
        raise InvalidRequestError(
            "calibration needs at least 1 sample of at least 16 tokens", param="calibration"
        )
    ids: list[int] = tokenizer(calibration_text(calibration), add_special_tokens=False).input_ids
    if len(ids) < calibration.tokens:
        raise InvalidRequestError(
            f"the calibration text {calibration.name} is {len(ids)} tokens long, shorter than "
            f"one sample ({calibration.tokens}); use a longer text or fewer --calibration-tokens",
            param="calibration",
        )
    last_start = len(ids) - calibration.tokens
    count = calibration.samples
    starts = [round(i * last_start / max(count - 1, 1)) for i in range(count)]
    return [ids[s : s + calibration.tokens] for s in starts]
