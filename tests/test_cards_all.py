"""Every shipped model card validates, offers what it promises, and matches the real model."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from llmedge.cards import all_cards, load_card
from llmedge.errors import InvalidModelFileError
from llmedge.gguf import facts_from_header, read_gguf_header
from llmedge.gguf.quant_types import ALL_TYPES, LADDER
from llmedge.hub.plan import card_choices, card_default, gguf_quants

ON_DEVICE_MODELS = {
    "phi-3-mini",
    "gemma-2-2b",
    "llama-3.2-1b",
    "llama-3.2-3b",
    "qwen2.5-3b",
    "smollm2-1.7b",
    "llama-3.1-8b",
    "gemma-3-270m",
    "smollm2-135m",
}


def card_files() -> list[Path]:
    root = resources.files("model_cards")
    return sorted(Path(str(e)) for e in root.iterdir() if e.name.endswith(".toml"))


def test_every_card_file_loads_and_the_on_device_models_are_there() -> None:
    loaded = {load_card(path).name for path in card_files()}
    assert loaded == set(all_cards())
    assert loaded >= ON_DEVICE_MODELS


@pytest.mark.parametrize("name", sorted(ON_DEVICE_MODELS))
def test_card_is_consistent(name: str) -> None:
    card = all_cards()[name]
    arch = card.architecture
    assert arch.attention_heads % arch.kv_heads == 0  # grouped-query attention groups evenly
    assert card.source_repo, "every card names its safetensors repository"
    assert card.parameters > arch.layers * arch.hidden_size
    if arch.sliding_window_pattern is not None:
        assert arch.sliding_window is not None
    for repo in card.gguf:
        for quant, file in repo.files.items():
            assert quant in ALL_TYPES and file.endswith(".gguf")
            # where a file name states its type, it states the one the card files it under
            named = gguf_quants([file])
            assert named in ({}, {quant: file}), (quant, file)
    offered = {c.quant for c in card_choices(card, embedded_available=True)}
    assert card_default(card) in offered
    assert set(LADDER) <= offered  # a source repository makes the whole ladder possible


def test_smollm2_card_states_the_facts_of_its_real_gguf(smollm2_gguf: Path) -> None:
    facts = facts_from_header(read_gguf_header(smollm2_gguf))
    arch = all_cards()["smollm2-135m"].architecture
    assert (arch.family, arch.layers, arch.hidden_size) == (
        facts.architecture,
        facts.n_layers,
        facts.n_embd,
    )
    assert (arch.attention_heads, arch.kv_heads) == (facts.n_heads, facts.n_kv_heads)
    assert (arch.vocab_size, arch.context_length) == (facts.vocab_size, facts.ctx_train_tokens)


def test_phi3_prefers_microsofts_file_and_converts_what_nobody_ships() -> None:
    choices = {c.quant: c for c in card_choices(all_cards()["phi-3-mini"], False)}
    assert choices["q4_k_m"].how == "gguf"
    assert choices["q4_k_m"].repo == "microsoft/Phi-3-mini-4k-instruct-gguf"
    assert choices["q4_k_m"].file == "Phi-3-mini-4k-instruct-q4.gguf"
    assert choices["q4_1"].how == "convert"
    assert choices["q4_1"].repo == "microsoft/Phi-3-mini-4k-instruct"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("name = 'broken'\n", "invalid model card"),
        ("not toml at all [", "invalid model card"),
    ],
)
def test_a_broken_card_is_refused_with_its_path(tmp_path: Path, text: str, complaint: str) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(InvalidModelFileError, match=complaint) as caught:
        load_card(path)
    assert str(path) in str(caught.value)


def test_a_card_with_an_impossible_architecture_is_refused(tmp_path: Path) -> None:
    source = next(p for p in card_files() if p.stem == "smollm2-135m").read_text()
    path = tmp_path / "smollm2-135m.toml"
    path.write_text(source.replace("layers = 30", "layers = -1"))
    with pytest.raises(InvalidModelFileError, match="layers"):
        load_card(path)
