"""Where the fit advisor's shapes come from: a GGUF path, a card file, or a model name.

A name resolves to exact shapes for every GGUF file at hand (stored versions, a card's embedded
file) and to estimated shapes for the card's other quantizations.
"""

from __future__ import annotations

from pathlib import Path

from llmedge.cards import ModelCard, all_cards, embedded_file, load_card
from llmedge.errors import ModelNotFoundError
from llmedge.fit.guard import shape_of_file
from llmedge.fit.shape import QUANT_BITS_PER_WEIGHT, ModelShape, shape_from_card
from llmedge.store import ModelRef, Store


def shapes_for(target: str, store: Store) -> list[ModelShape]:
    """Shapes for a GGUF path, a card file, or a model name (`name` or `name:quant`)."""
    path = Path(target).expanduser()
    if path.suffix.lower() == ".gguf" or (path.is_file() and path.suffix.lower() != ".toml"):
        return [shape_of_file(path)]
    if path.suffix.lower() == ".toml":
        return _card_shapes(load_card(path), {}, None)
    ref = ModelRef.parse(target)
    exact: dict[str, ModelShape] = {}
    for manifest in store.manifests():
        if manifest.name == ref.name and manifest.format == "gguf":
            blob = store.model_file(manifest)
            if blob.is_file():
                shape = shape_of_file(blob, manifest.name)
                exact.setdefault(manifest.tag, shape)
    card = all_cards().get(ref.name)
    if card is None and not exact:
        known = ", ".join(sorted(all_cards()))
        raise ModelNotFoundError(ref.name, f"known models: {known}; or pass a .gguf file")
    shapes = _card_shapes(card, exact, ref.tag) if card else list(exact.values())
    if ref.tag:
        shapes = [s for s in shapes if ref.tag in (s.quantization, _tag_of(s, exact))]
        if not shapes:
            raise ModelNotFoundError(str(ref), f"{ref.name} has no {ref.tag} quantization")
    return shapes


def _tag_of(shape: ModelShape, exact: dict[str, ModelShape]) -> str:
    return next((tag for tag, s in exact.items() if s is shape), "")


def _card_shapes(
    card: ModelCard, exact: dict[str, ModelShape], tag: str | None
) -> list[ModelShape]:
    """Exact shapes where a file is at hand, estimates for the card's other quantizations."""
    shapes = dict(exact)
    embedded = embedded_file(card)
    if card.embedded and embedded is not None and card.embedded.quant not in shapes:
        shapes[card.embedded.quant] = shape_of_file(embedded, card.name)
    have = {s.quantization for s in shapes.values()}
    for quant in card.quantizations():
        if quant not in have and quant not in shapes and quant in QUANT_BITS_PER_WEIGHT:
            shapes[quant] = shape_from_card(card, quant)
    return list(shapes.values())
