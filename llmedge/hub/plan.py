"""Deciding where a pulled model comes from: pure functions over a target, a card and file lists.

A target is a local `.gguf` file written as a path (`./x.gguf`, `/models/x.gguf`: a bare
`x.gguf` is refused, so a name never reads a file from the working folder), a model card name
(`phi-3-mini`, `phi-3-mini:q4_k_m`), or a Hugging Face repository (`hf.co/OWNER/REPO[:QUANT]`). A
pre-quantized GGUF model wins, in one file or split into parts (`…-00001-of-00003.gguf`, also in
a folder per quantization); otherwise a safetensors repository is converted to GGUF and
quantized locally.
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
# A part of a GGUF split by llama.cpp's gguf-split: `<prefix>-00001-of-00003.gguf`.
_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})(\.gguf)$", re.IGNORECASE)
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
    file: str | None = None  # a split model's first part
    parts: tuple[str, ...] = ()  # every part of a split model, in order

    def describe(self) -> str:
        if self.how == "embedded":
            return "bundled with llmedge (offline)"
        if self.how == "gguf" and len(self.parts) > 1:
            return f"download {self.repo}/{self.file} (and {len(self.parts) - 1} more parts)"
        if self.how == "gguf":
            return f"download {self.repo}/{self.file}"
        return f"download {self.repo} (safetensors), convert and quantize locally"


def looks_like_path(text: str) -> bool:
    """Whether `text` is written as a path (never a bare name, which might be a model's)."""
    return text.startswith(("/", "./", "../", "~")) or "\\" in text


def parse_target(
    text: str, quant: str | None = None, name: str | None = None, *, allow_files: bool = True
) -> Target:
    """Classify a pull target; a `--quant` flag wins over a `:quant` suffix. Without
    `allow_files` (a remote client), anything written as a path is refused unread."""
    wanted = normalize(quant) if quant else None
    if looks_like_path(text):
        if not allow_files:
            raise InvalidRequestError(
                f"{text[:200]!r} is not a model name; pull a model card name (e.g. "
                "smollm2-135m) or hf.co/OWNER/REPO[:QUANT]",
                param="model",
            )
        path = Path(text).expanduser()
        if not path.is_file():
            raise InvalidRequestError(f"no such file: {path}", param="model")
        ref = ModelRef.parse(name or name_from_path(path))
        return Target("file", ref.name, wanted or ref.tag, path=path)
    lowered = text.lower()
    if lowered.endswith(".gguf") and not lowered.startswith(HF_PREFIXES):
        hint = f"write it as a path: ./{text}" if allow_files else "pull a model name"
        raise InvalidRequestError(f"{text[:200]!r} looks like a file; {hint}", param="model")
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
            found.setdefault(quant, Choice(quant, "gguf", repo.repo, file, split_parts(file)))
    if card.source_repo:
        for quant in ALL_TYPES:
            found.setdefault(quant, Choice(quant, "convert", card.source_repo))
    return sorted(found.values(), key=lambda c: sort_key(c.quant))


def split_parts(file: str) -> tuple[str, ...]:
    """Every part's name when `file` is the first part of a split GGUF, else just `file`."""
    match = _SPLIT_PART.search(file)
    if not match or int(match.group(1)) != 1 or int(match.group(2)) < 1:
        return (file,)
    prefix, count, suffix = file[: match.start()], int(match.group(2)), match.group(3)
    return tuple(f"{prefix}-{i:05d}-of-{count:05d}{suffix}" for i in range(1, count + 1))


def _quant_of(path: str) -> str | None:
    """The quantization a file's name states, else the one its folders state (`Q4_K_M/…`)."""
    for piece in reversed(Path(path.lower()).parts):
        match = _QUANT_IN_NAME.search(piece)
        if match:
            return "f16" if match.group(1) == "fp16" else match.group(1)
    return None


def gguf_models(files: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """quantization -> the files of one GGUF model among a repository's files: one file, or
    every part of a split one (only when all of them are there). A single file wins."""
    names = set(files)
    singles, splits = [], []
    for file in sorted(names):
        lower = file.lower()
        if not lower.endswith(".gguf") or "mmproj" in lower:
            continue
        match = _SPLIT_PART.search(file)
        if match is None:
            singles.append((file,))
        elif int(match.group(1)) == 1 and all(p in names for p in split_parts(file)):
            splits.append(split_parts(file))
    found: dict[str, tuple[str, ...]] = {}
    for model in singles + splits:
        quant = _quant_of(model[0])
        if quant:
            found.setdefault(quant, model)
    return found


def gguf_quants(files: Iterable[str]) -> dict[str, str]:
    """quantization -> file (a split model's first part), for the GGUF models among files."""
    return {quant: model[0] for quant, model in gguf_models(files).items()}


def is_convertible(files: Iterable[str]) -> bool:
    names = set(files)
    return "config.json" in names and any(f.endswith(".safetensors") for f in names)


def repo_choices(repo: str, files: Iterable[str]) -> list[Choice]:
    """What a Hugging Face repository offers: its GGUF files, and local conversion if it can."""
    names = list(files)
    found = {q: Choice(q, "gguf", repo, m[0], m) for q, m in gguf_models(names).items()}
    if is_convertible(names):
        for quant in ALL_TYPES:
            found.setdefault(quant, Choice(quant, "convert", repo))
    return sorted(found.values(), key=lambda c: sort_key(c.quant))


def choose(choices: list[Choice], wanted: str | None, default: str, what: str) -> Choice:
    """The choice for `wanted` (or the default); an unknown one lists those that exist."""
    if not choices:
        raise InvalidRequestError(
            f"{what} has neither GGUF models nor safetensors weights to convert",
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
