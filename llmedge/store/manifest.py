"""What the store records about a model version: its reference, its blob, and where it came from."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from llmedge.errors import InvalidRequestError
from llmedge.gguf import ModelFacts

_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}(/[a-z0-9][a-z0-9._-]{0,127}){0,3}$")
_TAG = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelRef:
    """A model reference, `name[:tag]`, checked so it cannot leave the store."""

    name: str
    tag: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        name, _, tag = text.strip().lower().partition(":")
        if not _NAME.match(name) or ".." in name:
            raise InvalidRequestError(
                f"{text!r} is not a valid model name (letters, digits, '.', '_', '-')",
                param="model",
            )
        if tag and not _TAG.match(tag):
            raise InvalidRequestError(f"{tag!r} is not a valid tag", param="model")
        return cls(name, tag or None)

    def __str__(self) -> str:
        return f"{self.name}:{self.tag}" if self.tag else self.name


@dataclass(frozen=True)
class QuantReport:
    """How a locally quantized model compares with the file it was made from."""

    source: str
    source_sha256: str
    bits_per_weight: float
    seconds: float
    perplexity: float | None = None
    source_perplexity: float | None = None
    eval_tokens: int | None = None
    eval_text: str | None = None

    @property
    def perplexity_change(self) -> float | None:
        """Relative perplexity change against the source (0.02 = 2 % worse)."""
        if self.perplexity is None or not self.source_perplexity:
            return None
        return self.perplexity / self.source_perplexity - 1


@dataclass(frozen=True)
class Manifest:
    """One stored model version."""

    name: str
    tag: str
    format: str
    digest: str
    size_bytes: int
    created_at: str
    source: dict[str, str] = field(default_factory=dict)
    facts: ModelFacts | None = None
    quant_report: QuantReport | None = None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.tag}"

    @property
    def sha256(self) -> str:
        return self.digest.removeprefix("sha256:")

    def to_json(self) -> str:
        data: dict[str, Any] = {
            k: v for k, v in self.__dict__.items() if k not in ("facts", "quant_report")
        }
        data["facts"] = self.facts.to_dict() if self.facts else None
        data["quant_report"] = asdict(self.quant_report) if self.quant_report else None
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        facts = data.pop("facts", None)
        report = data.pop("quant_report", None)
        return cls(
            **data,
            facts=ModelFacts.from_dict(facts) if facts else None,
            quant_report=QuantReport(**report) if report else None,
        )
