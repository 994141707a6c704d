"""Where a pull comes from: target parsing and the choice of file, without any network."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmedge.cards import all_cards
from llmedge.errors import InvalidRequestError, ModelNotFoundError
from llmedge.hub.plan import (
    card_choices,
    choose,
    gguf_quants,
    parse_target,
    repo_choices,
    source_files,
)


def test_card_targets_take_the_quant_from_a_suffix_or_a_flag() -> None:
    assert parse_target("phi-3-mini").quant is None
    assert parse_target("phi-3-mini:Q4_K_M").quant == "q4_k_m"
    target = parse_target("phi-3-mini:q8_0", quant="Q5-K-M")
    assert (target.kind, target.name, target.quant) == ("card", "phi-3-mini", "q5_k_m")


@pytest.mark.parametrize(
    "text",
    ["hf.co/Owner/Repo-GGUF:Q4_K_M", "https://huggingface.co/Owner/Repo-GGUF:q4_k_m"],
)
def test_hugging_face_targets_keep_the_repo_case_and_store_lowercase(text: str) -> None:
    target = parse_target(text)
    assert (target.kind, target.repo, target.quant) == ("hf", "Owner/Repo-GGUF", "q4_k_m")
    assert target.name == "hf.co/owner/repo-gguf"


def test_malformed_and_unknown_targets_say_what_to_write() -> None:
    with pytest.raises(InvalidRequestError, match=r"hf.co/OWNER/REPO\[:QUANT\]"):
        parse_target("hf.co/just-a-name")
    with pytest.raises(ModelNotFoundError, match=r"known models: .*phi-3-mini"):
        parse_target("no-such-model")
    with pytest.raises(InvalidRequestError, match="no such file"):
        parse_target("./missing.gguf")
    with pytest.raises(InvalidRequestError, match=r"looks like a file; write it as a path: \./x"):
        parse_target("x.gguf")


def test_a_local_file_is_read_only_when_written_as_a_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smollm2-135m").write_bytes(b"GGUF")  # a file named like a model card
    assert parse_target("smollm2-135m").kind == "card"
    assert parse_target("./smollm2-135m").kind == "file"
    for text in ("./smollm2-135m", "/etc/passwd", "~/x.gguf", "x.gguf", "../x"):
        with pytest.raises(InvalidRequestError, match=r"not a model name|pull a model name"):
            parse_target(text, allow_files=False)


def test_a_local_file_is_named_after_itself(tmp_path: Path) -> None:
    path = tmp_path / "My Model.Q8_0.gguf"
    path.write_bytes(b"GGUF")
    target = parse_target(str(path))
    assert (target.kind, target.name, target.path) == ("file", "my-model.q8_0", path)


def test_gguf_file_names_map_to_quantizations() -> None:
    files = [
        "Model-Q4_K_M.gguf",
        "model.q8_0.gguf",
        "model-fp16.gguf",
        "model-BF16.gguf",
        "mmproj-model-f16.gguf",  # a vision projector, not a model
        "big-Q6_K-00001-of-00002.gguf",  # a split model: named by its first part
        "big-Q6_K-00002-of-00002.gguf",
        "half-Q5_K_M-00001-of-00002.gguf",  # its second part is missing: not offered
        "Q3_K_L/any-name-00001-of-00001.gguf",  # a folder per quantization
        "README.md",
    ]
    assert gguf_quants(files) == {
        "q4_k_m": "Model-Q4_K_M.gguf",
        "q8_0": "model.q8_0.gguf",
        "f16": "model-fp16.gguf",
        "bf16": "model-BF16.gguf",
        "q6_k": "big-Q6_K-00001-of-00002.gguf",
        "q3_k_l": "Q3_K_L/any-name-00001-of-00001.gguf",
    }
    q6 = choose(repo_choices("o/r", files), "q6_k", "q4_k_m", "o/r")
    assert q6.parts == ("big-Q6_K-00001-of-00002.gguf", "big-Q6_K-00002-of-00002.gguf")
    assert "and 1 more parts" in q6.describe()


def test_a_single_file_wins_over_a_split_copy_of_the_same_type() -> None:
    files = ["m-Q8_0-00001-of-00002.gguf", "m-Q8_0-00002-of-00002.gguf", "m-Q8_0.gguf"]
    assert choose(repo_choices("o/r", files), "q8_0", "q8_0", "o/r").parts == ("m-Q8_0.gguf",)


def test_choose_prefers_the_default_then_a_single_file_and_lists_the_rest() -> None:
    both = repo_choices("o/r", ["a-Q4_K_M.gguf", "a-Q8_0.gguf"])
    assert choose(both, None, "q4_k_m", "o/r").file == "a-Q4_K_M.gguf"
    single = repo_choices("o/r", ["a-Q8_0.gguf"])
    assert choose(single, None, "q4_k_m", "o/r").quant == "q8_0"
    with pytest.raises(InvalidRequestError, match="o/r has no q2_k quantization; available: "):
        choose(both, "q2_k", "q4_k_m", "o/r")
    with pytest.raises(InvalidRequestError, match="neither GGUF models nor safetensors"):
        choose(repo_choices("o/r", ["README.md"]), None, "q4_k_m", "o/r")


def test_a_safetensors_repo_offers_every_type_by_conversion() -> None:
    files = ["config.json", "model.safetensors", "tokenizer.json", "README.md", "original/x.pth"]
    choices = repo_choices("o/r", files)
    assert {c.how for c in choices} == {"convert"}
    assert "q3_k_s" in {c.quant for c in choices}
    assert source_files(files) == ["config.json", "model.safetensors", "tokenizer.json"]


def test_a_card_without_the_type_lists_what_it_has() -> None:
    card = all_cards()["smollm2-135m"]
    target = parse_target("smollm2-135m:q7_x")
    with pytest.raises(InvalidRequestError, match=r"smollm2-135m has no q7_x .*q4_1.*q8_0"):
        choose(card_choices(card, True), target.quant, "q4_1", card.name)
