"""Every shipped model card validates, offers what it promises, and matches the real model."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

from llmedge.cards import all_cards, load_card
from llmedge.errors import InvalidModelFileError
from llmedge.gguf import facts_from_header, read_gguf_header
from llmedge.gguf.quant_types import ALL_TYPES, LADDER
from llmedge.hub.plan import card_choices, card_default, gguf_quants, split_parts

LISTINGS = Path(__file__).parent / "data" / "listings"

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
    "qwen3-0.6b",
    "qwen3-1.7b",
    "qwen3-4b",
    "gemma-3-1b",
    "smollm3-3b",
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


def listing(repo: str) -> dict[str, int | None]:
    """The files a repository was recorded to hold (tests/data/listings; refreshed by
    scripts/refresh_cards.py where the Hub is reachable)."""
    path = LISTINGS / (repo.replace("/", "__") + ".json")
    assert path.is_file(), f"no recorded listing for {repo}: run scripts/refresh_cards.py"
    data = json.loads(path.read_text())
    assert data["repo"] == repo
    files: dict[str, int | None] = data["files"]
    return files


@pytest.mark.parametrize("name", sorted(ON_DEVICE_MODELS))
def test_every_file_a_card_names_is_in_its_repositorys_listing(name: str) -> None:
    for repo in all_cards()[name].gguf:
        held = listing(repo.repo)
        for quant, file in repo.files.items():
            missing = [part for part in split_parts(file) if part not in held]
            assert not missing, f"{name} {quant}: {repo.repo} has no {', '.join(missing)}"


def test_the_wrong_entries_are_gone() -> None:
    cards = all_cards()
    qwen_f16 = next(c for c in card_choices(cards["qwen2.5-3b"], False) if c.quant == "f16")
    assert qwen_f16.parts == (
        "qwen2.5-3b-instruct-fp16-00001-of-00002.gguf",
        "qwen2.5-3b-instruct-fp16-00002-of-00002.gguf",
    )
    gemma = {c.quant: c for c in card_choices(cards["gemma-2-2b"], False)}
    assert gemma["q2_k"].repo == "unsloth/gemma-2-it-GGUF"
    assert "Q2_K" not in json.dumps(listing("bartowski/gemma-2-2b-it-GGUF"))


def test_phi3_downloads_and_converts_the_same_june_weights() -> None:
    card = all_cards()["phi-3-mini"]
    choices = {c.quant: c for c in card_choices(card, False)}
    assert choices["q4_k_m"].how == "gguf"
    assert choices["q4_k_m"].repo == "bartowski/Phi-3.1-mini-4k-instruct-GGUF"
    assert choices["q4_k_m"].file == "Phi-3.1-mini-4k-instruct-Q4_K_M.gguf"
    assert choices["f16"].how == choices["q4_1"].how == "convert"
    assert choices["f16"].repo == "microsoft/Phi-3-mini-4k-instruct"
    # the April-2024 files are not offered beside the June ones
    assert {r.repo for r in card.gguf} == {"bartowski/Phi-3.1-mini-4k-instruct-GGUF"}


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


def test_refresh_cards_records_a_listing_and_names_what_is_missing(
    tmp_path: Path, smollm2_gguf: Path
) -> None:
    import os
    import subprocess
    import sys

    from conftest import REPO_ROOT
    from fake_hub import FakeHub

    repo = "bartowski/SmolLM2-135M-Instruct-GGUF"
    with FakeHub() as hub:
        hub.push(repo, {"SmolLM2-135M-Instruct-Q8_0.gguf": smollm2_gguf, "README.md": b"hi\n"})
        env = {**os.environ, "HF_ENDPOINT": hub.url, "PYTHONPATH": str(REPO_ROOT)}
        script = str(REPO_ROOT / "scripts" / "refresh_cards.py")
        command = [sys.executable, script, "--only", repo, "--out", str(tmp_path)]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    assert f"smollm2-135m q4_k_m: {repo} has no SmolLM2-135M-Instruct-Q4_K_M.gguf" in done.stdout
    assert "q8_0" not in done.stdout.split("missing", 1)[1]  # that one is there
    written = json.loads((tmp_path / "bartowski__SmolLM2-135M-Instruct-GGUF.json").read_text())
    assert written["complete"] and written["files"] == {
        "README.md": 3,
        "SmolLM2-135M-Instruct-Q8_0.gguf": smollm2_gguf.stat().st_size,
    }
