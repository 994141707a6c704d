"""Getting models into the store: from a local GGUF file, or from the source a model card names."""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from llmedge.cards import ModelCard, all_cards, find_card
from llmedge.errors import InvalidRequestError, ModelNotFoundError
from llmedge.gguf_header import read_gguf_header
from llmedge.model_facts import facts_from_header
from llmedge.store import Manifest, ModelRef, Store

Progress = Callable[[int], None]


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


def import_gguf(
    store: Store,
    path: Path,
    ref: ModelRef,
    origin: dict[str, str],
    on_progress: Progress | None = None,
) -> Manifest:
    """Check a GGUF file's header, then store it as `ref` (default tag: its quantization)."""
    facts = facts_from_header(read_gguf_header(path))
    if ref.tag is None:
        ref = ModelRef(ref.name, facts.quantization.lower())
    return store.add_file(
        path, ref, format="gguf", origin=origin, facts=facts, on_progress=on_progress
    )


def name_from_path(path: Path) -> str:
    """A store name for a file whose user gave none: its stem, lowercased, with safe characters."""
    stem = "".join(c if c.isalnum() or c in "._-" else "-" for c in path.stem.lower()).strip("-._")
    return stem or "model"


def pull(
    store: Store,
    target: str,
    *,
    quant: str | None = None,
    name: str | None = None,
    on_progress: Progress | None = None,
) -> Manifest:
    """Store the model `target` names: a card name, `name:quant`, or a local .gguf path."""
    path = Path(target).expanduser()
    if path.suffix.lower() == ".gguf" or path.is_file():
        if not path.is_file():
            raise InvalidRequestError(f"no such file: {path}", param="model")
        ref = ModelRef.parse(name or name_from_path(path))
        origin = {"kind": "file", "path": str(path.resolve())}
        return import_gguf(
            store,
            path,
            ModelRef(ref.name, quant.lower() if quant else ref.tag),
            origin,
            on_progress,
        )

    ref = ModelRef.parse(target)
    card = find_card(ref.name)
    wanted = (quant or ref.tag or card.default_quant).lower()
    if wanted not in card.quantizations():
        available = ", ".join(card.quantizations())
        raise InvalidRequestError(
            f"{card.name} has no {wanted} quantization; available: {available}",
            param="quantization",
        )
    source = embedded_file(card)
    if card.embedded and card.embedded.quant == wanted and source is not None:
        origin = {"kind": "package", "package": card.embedded.package, "file": card.embedded.file}
        return import_gguf(store, source, ModelRef(card.name, wanted), origin, on_progress)
    raise ModelNotFoundError(
        f"{card.name}:{wanted}",
        "downloading from Hugging Face is not available in this build; "
        f"import a local file with `llmedge pull ./FILE.gguf --name {card.name}`",
    )


def ensure_model(store: Store, target: str) -> Manifest:
    """The stored model `target` names; the embedded default is imported on first use (offline)."""
    ref = ModelRef.parse(target)
    manifest = store.find(ref)
    if manifest is not None:
        return manifest
    card = all_cards().get(ref.name)
    if (
        card is not None
        and card.embedded
        and embedded_file(card)
        and ref.tag in (None, card.embedded.quant)
    ):
        return pull(store, card.name)
    return store.resolve(ref)
