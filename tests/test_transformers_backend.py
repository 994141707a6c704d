"""The transformers backend on the real SmolLM2 (unquantized safetensors, CPU): the LoadedModel
contract, perplexity on llama.cpp's scale, packed model folders, and `llmedge serve`."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_backend import generate_all
from hf_quantized import QUESTION, SOURCE, SharedStore

from llmedge.backends import get_backend
from llmedge.backends.base import LoadedModel, LoadOptions
from llmedge.backends.transformers.backend import TransformersModel, quant_method
from llmedge.engine import GenerationStream
from llmedge.errors import GenerationCancelledError, InvalidRequestError, PackedModelError
from llmedge.generation import ChatMessage, GenerationChunk, SamplingParams
from llmedge.settings import Settings
from llmedge.store import ModelRef, Store
from llmedge.store.folders import store_dir, unpacked_dir
from quantizers.gguf_perplexity import perplexity
from quantizers.hf_perplexity import perplexity_hf
from quantizers.perplexity import eval_text

pytestmark = pytest.mark.e2e
GREEDY = SamplingParams(temperature=0, max_tokens=12)


@pytest.fixture(scope="module")
def model(smollm2_hf: Path) -> Iterator[TransformersModel]:
    loaded = get_backend("transformers").load(smollm2_hf, LoadOptions(ctx_tokens=1024, threads=2))
    assert isinstance(loaded, TransformersModel)
    yield loaded
    loaded.close()


def _run(model: LoadedModel, params: SamplingParams, cancel: bool = False) -> list[GenerationChunk]:
    prompt = model.tokenize(model.render_chat([ChatMessage("user", QUESTION[0]["content"])]))
    return generate_all(model, prompt, params, cancel)


def test_the_backend_is_registered_and_probes_this_host() -> None:
    backend = get_backend("transformers")
    assert {"safetensors", "gptq", "awq", "nf4"} <= set(backend.formats)
    availability = backend.probe()
    assert availability.available and "torch" in availability.reason


def test_greedy_chat_answers_and_reports_its_counters(model: TransformersModel) -> None:
    assert isinstance(model, LoadedModel) and model.parallel == 1 and model.ctx_tokens == 1024
    chunks = _run(model, GREEDY)
    text = "".join(c.text for c in chunks)
    assert "Paris" in text
    last = chunks[-1]
    assert last.finish_reason in ("stop", "length") and all(
        c.finish_reason is None for c in chunks[:-1]
    )
    assert last.generated_tokens == sum(len(c.token_ids) for c in chunks) <= 12
    assert last.prompt_tokens > 10 and last.time_to_first_token_s and last.peak_memory_bytes


def test_stop_strings_length_and_cancel_end_a_generation(model: TransformersModel) -> None:
    stopped = _run(model, SamplingParams(temperature=0, max_tokens=12, stop=("Paris",)))
    assert stopped[-1].finish_reason == "stop"
    assert "Paris" not in "".join(c.text for c in stopped)
    short = _run(model, SamplingParams(temperature=0, max_tokens=2))
    assert short[-1].finish_reason == "length" and short[-1].generated_tokens == 2
    with pytest.raises(GenerationCancelledError):
        _run(model, GREEDY, cancel=True)


def test_a_seed_makes_sampling_repeatable_and_logprobs_are_reported(
    model: TransformersModel,
) -> None:
    params = SamplingParams(temperature=1.0, max_tokens=6, seed=7, logprobs=True, top_logprobs=3)
    first, second = _run(model, params), _run(model, params)
    assert [c.token_ids for c in first] == [c.token_ids for c in second]
    chosen = first[0].logprobs[0]
    assert chosen.logprob <= 0 and len(chosen.top) == 3
    assert chosen.top[0][1] >= chosen.top[1][1] >= chosen.top[2][1]


def test_grammars_and_overlong_prompts_are_refused_with_advice(model: TransformersModel) -> None:
    with pytest.raises(InvalidRequestError, match=r"backend llama\.cpp"):
        _run(model, SamplingParams(grammar='root ::= "yes"'))
    with pytest.raises(InvalidRequestError, match="larger --ctx"):
        model.submit(GenerationStream((1,) * 1024, GREEDY, None))


def test_embeddings_are_unit_vectors_that_tell_texts_apart(model: TransformersModel) -> None:
    (a, b, c), tokens = model.embed(["a red apple", "a green apple", "tax law"])
    assert tokens > 6 and abs(sum(x * x for x in a) - 1) < 1e-4

    def dot(u: list[float], v: list[float]) -> float:
        return sum(x * y for x, y in zip(u, v, strict=True))

    assert dot(a, b) > dot(a, c)


def test_perplexity_matches_llama_cpp_on_the_same_weights(
    model: TransformersModel, smollm2_gguf: Path
) -> None:
    # The safetensors folder holds the GGUF's own weights: both measurements must agree.
    ours = perplexity_hf(model._model, model._tokenizer, eval_text(), scored_tokens=512)
    reference = perplexity(smollm2_gguf, eval_text(), threads=2, scored_tokens=512)
    assert ours.tokens == reference.tokens == 512
    assert abs(ours.value / reference.value - 1) < 0.01
    assert abs(ours.error / reference.error - 1) < 0.05


def test_a_packed_folder_hashes_the_same_and_unpacks_once(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "sub" / "weights.bin").write_bytes(b"\x00" * 1000)
    store = Store(Settings().store_dir)
    first = store_dir(store, folder, ModelRef("tiny", "a"), format="safetensors", origin={})
    (folder / "config.json").touch()  # a new mtime must not change the hash
    second = store_dir(store, folder, ModelRef("tiny", "b"), format="safetensors", origin={})
    assert first.digest == second.digest
    unpacked = unpacked_dir(store.verified_blob(first))
    assert (unpacked / "sub" / "weights.bin").read_bytes() == b"\x00" * 1000
    assert unpacked.name == first.sha256 and unpacked_dir(store.verified_blob(second)) == unpacked
    store.remove(ModelRef("tiny"))
    other = store_dir(store, folder / "sub", ModelRef("other", "a"), format="mlx", origin={})
    unpacked_dir(store.verified_blob(other))
    assert not unpacked.exists()  # pruned: its blob left the store


def test_a_tar_that_escapes_its_folder_is_refused(tmp_path: Path) -> None:
    blob = tmp_path / "evil.tar"
    with tarfile.open(blob, "w") as tar:
        info = tarfile.TarInfo("../escaped.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    with pytest.raises(PackedModelError, match="does not unpack"):
        unpacked_dir(blob, tmp_path / "cache")
    assert not (tmp_path / "escaped.txt").exists()
    assert list((tmp_path / "cache").iterdir()) == []


def test_a_folder_of_unknown_quantization_is_named(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"quantization_config": {"quant_method": "hqq"}}')
    with pytest.raises(InvalidRequestError, match="quantized with hqq"):
        quant_method(tmp_path)


def test_serve_answers_the_openai_client_from_a_stored_safetensors_model(
    shared_store: SharedStore, shared_server: str
) -> None:
    stored = shared_store.store.resolve(ModelRef.parse(SOURCE))
    assert stored.format == "safetensors" and stored.facts is not None
    assert stored.facts.n_layers == 30 and stored.facts.ctx_train_tokens == 8192
    client = openai.OpenAI(base_url=shared_server, api_key="unused", max_retries=0)
    args = {"model": SOURCE, "messages": QUESTION, "max_tokens": 10, "temperature": 0}
    plain = client.chat.completions.create(**args)  # type: ignore[call-overload]
    streamed = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(**args, stream=True)  # type: ignore[call-overload]
        if chunk.choices
    )
    assert "Paris" in (plain.choices[0].message.content or "")
    assert streamed == plain.choices[0].message.content
