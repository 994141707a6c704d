"""Deciding where a pulled model comes from: pure functions over a target, a card and file lists.

A target is a local `.gguf` path, a model card name (`phi-3-mini`, `phi-3-mini:q4_k_m`), or a
Hugging Face repository (`hf.co/OWNER/REPO[:QUANT]`). A pre-quantized GGUF file wins; otherwise a
safetensors repository is converted to GGUF and quantized locally.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from llmedge.cards import ModelCard, find_card
from llmedge.errors import InvalidRequestError
from llmedge.gguf.quant_types import ALL_TYPES, DEFAULT_QUANT, normalize, sort_key
from llmedge.store import ModelRef

HF_PREFIXES = ("https://huggingface.co/", "https://hf.co/", "huggingface.co/", "hf.co/")
_REPO_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
# A quantization named inside a file name: `Model-Q4_K_M.gguf`, `model.q8_0.gguf`, `m-fp16.gguf`.
_QUANT_WORDS = "|".join(sorted((*ALL_TYPES, "fp16"), key=len, reverse=True))
_QUANT_IN_NAME = re.compile(rf"(?<![a-z0-9])({_QUANT_WORDS})(?![a-z0-9])")
_SPLIT_PART = re.compile(r"-\d{5}-of-\d{5}\.gguf$")
# Files the converter reads from a safetensors repository; weights in other formats are skipped.
_SOURCE_SUFFIXES = (".json", ".safetensors", ".model", ".txt", ".jinja", ".tiktoken")


@dataclass(frozen=True)
class Target:
    """What the user asked to pull, before anything is fetched."""

    kind: Literal["file", "card", "hf"]
    name: str
    quant: str | None
    path: Path | None = None
    card: ModelCard | None = None
    repo: str | None = None


@dataclass(frozen=True)
class Choice:
    """Where one quantization of a model comes from."""

    quant: str
    how: Literal["embedded", "gguf", "convert"]
    repo: str | None = None
    file: str | None = None

    def describe(self) -> str:
        if self.how == "embedded":
            return "bundled with llmedge (offline)"
        if self.how == "gguf":
            return f"download {self.repo}/{self.file}"
        return f"download {self.repo} (safetensors), convert and quantize locally"


def parse_target(text: str, quant: str | None = None, name: str | None = None) -> Target:
    """Classify a pull target; a `--quant` flag wins over a `:quant` suffix."""
    wanted = normalize(quant) if quant else None
    path = Path(text).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise InvalidRequestError(f"no such file: {path}", param="model")
        ref = ModelRef.parse(name or name_from_path(path))
        return Target("file", ref.name, wanted or ref.tag, path=path)
    for prefix in HF_PREFIXES:
        if text.lower().startswith(prefix):
            repo, _, tag = text[len(prefix) :].strip("/").partition(":")
            if not _REPO_ID.match(repo):
                raise InvalidRequestError(
                    f"{text!r} does not name a repository; write hf.co/OWNER/REPO[:QUANT]",
                    param="model",
                )
            store_name = name or f"hf.co/{repo}"
            ModelRef.parse(store_name)  # refuse names the store cannot hold, before any download
            return Target("hf", store_name.lower(), wanted or normalize(tag) or None, repo=repo)
    ref = ModelRef.parse(text)
    card = find_card(ref.name)
    return Target("card", card.name, wanted or ref.tag, card=card)


def name_from_path(path: Path) -> str:
    """A store name for a file whose user gave none: its stem, lowercased, with safe characters."""
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem.lower()).strip("-._")
    return stem or "model"


def card_choices(card: ModelCard, embedded_available: bool) -> list[Choice]:
    """Every quantization a card offers, one choice each: bundled, then GGUF repos, then local."""
    found: dict[str, Choice] = {}
    if card.embedded and embedded_available:
        found[card.embedded.quant] = Choice(card.embedded.quant, "embedded")
    for repo in card.gguf:
        for quant, file in repo.files.items():
            found.setdefault(quant, Choice(quant, "gguf", repo.repo, file))
    if card.source_repo:
        for quant in ALL_TYPES:
            found.setdefault(quant, Choice(quant, "convert", card.source_repo))
    return sorted(found.values(), key=lambda c: sort_key(c.quant))


def gguf_quants(files: Iterable[str]) -> dict[str, str]:
    """quantization -> file, for the single-file GGUF models among a repository's files."""
    found: dict[str, str] = {}
    for file in sorted(files):
        lower = file.lower()
        if not lower.endswith(".gguf") or "mmproj" in lower or _SPLIT_PART.search(lower):
            continue
        match = _QUANT_IN_NAME.search(Path(lower).name)
        if match:
            quant = "f16" if match.group(1) == "fp16" else match.group(1)
            found.setdefault(quant, file)
    return found


def is_convertible(files: Iterable[str]) -> bool:
    names = set(files)
    return "config.json" in names and any(f.endswith(".safetensors") for f in names)


def repo_choices(repo: str, files: Iterable[str]) -> list[Choice]:
    """What a Hugging Face repository offers: its GGUF files, and local conversion if it can."""
    names = list(files)
    found = {q: Choice(q, "gguf", repo, f) for q, f in gguf_quants(names).items()}
    if is_convertible(names):
        for quant in ALL_TYPES:
            found.setdefault(quant, Choice(quant, "convert", repo))
    return sorted(found.values(), key=lambda c: sort_key(c.quant))


def choose(choices: list[Choice], wanted: str | None, default: str, what: str) -> Choice:
    """The choice for `wanted` (or the default); an unknown one lists those that exist."""
    if not choices:
        raise InvalidRequestError(
            f"{what} has neither single-file GGUF models nor safetensors weights to convert",
            param="model",
        )
    by_quant = {c.quant: c for c in choices}
    if wanted is None:
        if default in by_quant:
            return by_quant[default]
        if len(choices) == 1:
            return choices[0]
        wanted = default
    if wanted in by_quant:
        return by_quant[wanted]
    raise InvalidRequestError(
        f"{what} has no {wanted} quantization; available: {', '.join(by_quant)}",
        param="quantization",
    )


def card_default(card: ModelCard) -> str:
    return normalize(card.default_quant) if card.default_quant else DEFAULT_QUANT


def source_files(files: Iterable[str]) -> list[str]:
    """The files of a safetensors repository the converter needs (top level only)."""
    return sorted(
        f for f in files if "/" not in f and f.endswith(_SOURCE_SUFFIXES) and not f.startswith(".")
    )
